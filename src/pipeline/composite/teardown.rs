//! Inputs taken out of the composite: stopped one after another on a thread of their own
//! ([`Teardowns`]), their mixer pads released between one mixed buffer and the next
//! ([`PadReleases`]).

use crate::pipeline::PipelineError;
use gst::prelude::*;
use std::sync::{Arc, Mutex};

/// The thread that stops inputs taken out of the composite, one at a time, in the order they
/// were taken out; started with the first. Stopping an input waits for its streaming threads,
/// so it is not done on the caller's thread; and not on a thread per input either: every
/// element stopping posts its state changes to the pipeline's bus, whose queue lets one
/// poster at a time finish while the others spin, so a hundred inputs stopping at once on two
/// cores stalled for up to a minute (a burst of sixty leaves: adding the next inputs took 72 s
/// instead of 7). It ends once the composite is gone and the last input is stopped.
#[derive(Default)]
pub(super) struct Teardowns(Mutex<Option<std::sync::mpsc::Sender<Stop>>>);

/// Stops one input.
pub(super) type Stop = Box<dyn FnOnce() + Send>;

impl Teardowns {
    /// Queues `stop` behind the inputs already being stopped.
    pub(super) fn run(&self, stop: Stop) -> Result<(), PipelineError> {
        let mut tx = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let stop = match tx.as_ref() {
            Some(t) => match t.send(stop) {
                Ok(()) => return Ok(()),
                Err(std::sync::mpsc::SendError(stop)) => stop,
            },
            None => stop,
        };
        let (next, queue) = std::sync::mpsc::channel::<Stop>();
        std::thread::Builder::new()
            .name("input-teardown".into())
            .spawn(move || {
                for stop in queue {
                    stop();
                }
            })
            .map_err(|e| PipelineError::Setup(format!("teardown thread: {e}")))?;
        let _ = next.send(stop);
        *tx = Some(next);
        Ok(())
    }
}

/// Request pads of a mixer waiting to be released. They are released on the mixer's own output
/// thread, between one mixed buffer and the next, never while it mixes: releasing a pad from
/// another thread while the audio mixer aggregated crashed it (a hundred inputs leaving in one
/// burst).
#[derive(Clone, Default)]
pub(super) struct PadReleases(Arc<Mutex<Vec<gst::Pad>>>);

impl PadReleases {
    /// Releases `mixer`'s pads queued here as each of its buffers leaves it.
    pub(super) fn install(&self, mixer: &gst::Element) -> Result<(), PipelineError> {
        let pending = self.0.clone();
        let weak = mixer.downgrade();
        mixer
            .static_pad("src")
            .ok_or_else(|| PipelineError::setup("mixer src"))?
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                let pads = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
                if let (false, Some(mixer)) = (pads.is_empty(), weak.upgrade()) {
                    for pad in pads {
                        mixer.release_request_pad(&pad);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        Ok(())
    }

    /// Queues `pad` for release.
    pub(super) fn release(&self, pad: gst::Pad) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(pad);
    }
}

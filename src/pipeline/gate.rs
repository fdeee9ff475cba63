//! Holding a pipeline's outputs at a point in time while something is changed (an offline
//! composite's layout at the time of the next room events): each watched pad's streaming
//! thread waits in a probe once its buffers reach the gate, and goes on when the gate moves.

use gst::prelude::*;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Holds outputs at a time: a buffer at or past it waits until the gate moves on.
pub struct OutputGate {
    state: Mutex<GateState>,
    moved: Condvar,
}

struct GateState {
    /// Outputs wait at this time (none: nothing waits).
    at: Option<gst::ClockTime>,
    /// Outputs waiting at `at` or finished.
    arrived: usize,
    /// Outputs that have ended.
    ended: usize,
}

impl OutputGate {
    /// Watches `pads` (buffers wait there once at or past the gate; end-of-stream counts as
    /// arrived for good). Open until [`OutputGate::set`].
    pub fn install(pads: &[gst::Pad]) -> Arc<OutputGate> {
        let gate = Arc::new(OutputGate {
            state: Mutex::new(GateState {
                at: None,
                arrived: 0,
                ended: 0,
            }),
            moved: Condvar::new(),
        });
        for pad in pads {
            let g = gate.clone();
            pad.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
                move |_, info| {
                    match &info.data {
                        Some(gst::PadProbeData::Buffer(b)) => {
                            if let Some(pts) = b.pts() {
                                g.wait(pts);
                            }
                        }
                        Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::Eos => {
                            let mut s = g.state.lock().unwrap();
                            s.ended += 1;
                            g.moved.notify_all();
                        }
                        _ => {}
                    }
                    gst::PadProbeReturn::Ok
                },
            );
        }
        gate
    }

    /// On a streaming thread: waits while `pts` is at or past the gate.
    fn wait(&self, pts: gst::ClockTime) {
        let mut s = self.state.lock().unwrap();
        let mut counted = None;
        while let Some(at) = s.at.filter(|at| pts >= *at) {
            if counted != Some(at) {
                counted = Some(at);
                s.arrived += 1;
                self.moved.notify_all();
            }
            s = self.moved.wait(s).unwrap();
        }
    }

    /// Moves the gate to `at`: outputs behind it run on, outputs at or past it wait.
    pub fn set(&self, at: gst::ClockTime) {
        let mut s = self.state.lock().unwrap();
        s.at = Some(at);
        s.arrived = 0;
        self.moved.notify_all();
    }

    /// Waits until all `outputs` are at the gate (or ended), at most `limit`; false if they
    /// did not get there.
    pub fn reached(&self, outputs: usize, limit: Duration) -> bool {
        let mut s = self.state.lock().unwrap();
        let deadline = Instant::now() + limit;
        while s.arrived + s.ended < outputs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.moved.wait_timeout(s, left).unwrap().0;
        }
        true
    }

    /// Lets everything through.
    pub fn open(&self) {
        let mut s = self.state.lock().unwrap();
        s.at = None;
        self.moved.notify_all();
    }
}

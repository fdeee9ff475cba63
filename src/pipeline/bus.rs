//! Reading a pipeline's bus from tokio: one conversion of error messages into
//! [`PipelineError`] (warnings are logged), and one bounded wait for end-of-stream. Used by the
//! recording runner, RTMP destinations and MP4 finalizing.

use super::PipelineError;
use futures::StreamExt;
use gst::prelude::*;
use std::time::Duration;
use tracing::warn;

/// The name of the element that posted `msg`.
pub fn source_name(msg: &gst::Message) -> String {
    msg.src().map(|s| s.name().to_string()).unwrap_or_default()
}

/// `Err` for an error message (naming its element), `Ok` for anything else; warnings are
/// logged on the way.
pub fn check(msg: &gst::Message) -> Result<(), PipelineError> {
    match msg.view() {
        gst::MessageView::Error(e) => Err(PipelineError::Runtime {
            element: source_name(msg),
            message: format!("{} ({:?})", e.error(), e.debug()),
        }),
        gst::MessageView::Warning(w) => {
            warn!(element = %source_name(msg), warning = %w.error(), "pipeline warning");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Waits up to `limit` for end-of-stream on `bus`. An error fails the wait when `fatal` says
/// it matters (errors from inputs that are winding down may not); `what` names the wait in
/// the timeout error.
pub async fn wait_eos(
    bus: &mut gst::bus::BusStream,
    limit: Duration,
    what: &'static str,
    fatal: impl Fn(&gst::Message) -> bool,
) -> Result<(), PipelineError> {
    let wait = async {
        while let Some(msg) = bus.next().await {
            match msg.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(_) if fatal(&msg) => check(&msg)?,
                _ => {}
            }
        }
        Err(PipelineError::setup("bus closed before EOS"))
    };
    match tokio::time::timeout(limit, wait).await {
        Ok(r) => r,
        Err(_) => Err(PipelineError::Timeout {
            what,
            secs: limit.as_secs(),
        }),
    }
}

/// Blocks until the pipeline posts EOS (Ok) or an error, or the time runs out.
pub fn wait_eos_blocking(
    pipeline: &gst::Pipeline,
    limit: Duration,
    what: &'static str,
) -> Result<(), PipelineError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| PipelineError::setup("no bus"))?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(PipelineError::Timeout {
                what,
                secs: limit.as_secs(),
            });
        }
        let timeout = gst::ClockTime::from_mseconds(left.as_millis() as u64);
        let Some(msg) =
            bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error])
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(_) => return check(&msg),
            _ => {}
        }
    }
}

//! A session's limits and waits: how long drains and shutdowns may take, the start timeout,
//! the fault injections tests use to hold them, and the waits on the room and the bus.

use crate::codes::Code;
use crate::job::media::live::Job;
use crate::job::spec::RecordingSpec;
use crate::pipeline::composite::ErrorOrigin;
use crate::pipeline::{bus, Composite, PipelineError};
use crate::room::RoomEvent;
use crate::Error;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// How long a joined recording's muxer gets to finish once the session's pipeline drained
/// (the end of stream reached it through its tap already).
pub(super) const TAP_FINISH_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for the drained pipeline to shut down (the Null state change).
pub(super) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stalled segment's pipeline gets to drain before its file is finalized as it is.
pub(super) const STALLED_DRAIN: Duration = Duration::from_secs(1);

/// `ROOMCAST_FAULT_STALL_AFTER_SECS`: a test of the stall watchdog wedges a segment this long
/// after it starts, in the first `ROOMCAST_FAULT_STALL_SEGMENTS` (default 1) segments of the
/// process. Asked once per segment: when to wedge this one, if at all.
pub(super) fn stall_fault() -> Option<Duration> {
    static WEDGED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let setting = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let after = setting("ROOMCAST_FAULT_STALL_AFTER_SECS")?;
    let segments = setting("ROOMCAST_FAULT_STALL_SEGMENTS").unwrap_or(1.0) as u32;
    WEDGED
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| (n < segments).then_some(n + 1),
        )
        .ok()
        .map(|_| Duration::from_secs_f64(after.max(0.0)))
}

/// `ROOMCAST_FAULT_COMPOSITE_FAILS` (any value): a test of the live recording's fall-back
/// makes every composite fail as it is built (checked where it is built).
///
/// `ROOMCAST_FAULT_FINALIZE_FAILS` (any value): a test of 7033 (7035) makes every segment's
/// final rewrite (an individual segment's final manifest) fail, as a file system refusing it
/// would (checked where the rewrite happens).
///
/// `ROOMCAST_FAULT_SHUTDOWN_HANG_SECS`: a test of the shutdown limit holds every pipeline's
/// shutdown this long, as a wedged element would.
pub(super) fn shutdown_fault() -> Option<Duration> {
    std::env::var("ROOMCAST_FAULT_SHUTDOWN_HANG_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// The error a start that took too long ends with, if it did: nothing encoded within
/// `spec.start_timeout` (7013; 7001 for a stream), or a stream-only job with no destination
/// live by then (7001).
pub(super) fn start_timed_out(
    spec: &RecordingSpec,
    job: &Job,
    went_live: bool,
    elapsed: Duration,
) -> Option<Error> {
    let limit = spec.start_timeout.filter(|t| elapsed >= *t)?;
    let secs = limit.as_secs_f64();
    let (code, message) = if !job.composite.has_encoded() {
        let code = if spec.record {
            Code::RecordStartTimedOut2
        } else {
            Code::StreamStartTimedOut
        };
        (
            code,
            format!("no frame was encoded within {secs} s of the start"),
        )
    } else if !spec.record && !spec.rtmp.is_empty() && !went_live {
        (
            Code::StreamStartTimedOut,
            format!("no RTMP destination was live within {secs} s of the start"),
        )
    } else {
        return None;
    };
    warn!(code = %code, "{message}");
    Some(Error::Job { code, message })
}

/// Longest wait for the HLS writer to finish after the pipeline drained.
pub(super) const HLS_FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Every event already waiting, so a burst (a join and its tracks) is laid out once rather than
/// once per event; `None` when nothing is waiting.
pub(super) fn waiting(room: &mut mpsc::Receiver<RoomEvent>) -> Option<Vec<RoomEvent>> {
    let mut events = Vec::new();
    while let Ok(ev) = room.try_recv() {
        events.push(ev);
    }
    (!events.is_empty()).then_some(events)
}

/// Waits for EOS to reach the sink after [`Composite::end_of_stream`]. Errors from inputs
/// while they wind down do not matter any more; errors from the encoders and muxer do.
pub(super) async fn drain(
    composite: &Composite,
    bus: &mut gst::bus::BusStream,
    limit: Duration,
) -> Result<(), PipelineError> {
    bus::wait_eos(bus, limit, "drain after stop", |msg| {
        let origin = msg.src().map(|s| composite.classify_error(s));
        matches!(origin, Some(ErrorOrigin::Core) | None)
    })
    .await
}

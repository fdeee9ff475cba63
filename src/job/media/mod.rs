//! The running job's media: [`record`] runs one job's outputs in its room's [`session`] (one
//! room connection, one composite and encode shared by every job of the room), the media side
//! of a running composite ([`live`]: room events into tiles and audio, layout changes, RTMP
//! destinations) and the web page drawn over it ([`page`]).
//!
//! Third layer of `job/`: builds on `spec` (what it runs and is told) and `files` (where a
//! segment's file and chat journal go). It knows nothing of job records, hosts, delivery or
//! webhooks (the `run` layer above owns those).

pub mod live;
pub mod page;
pub mod session;

use super::files::naming::reserve_segment;
use super::spec::{JobCommand, JobEvent, Recording, RecordingSpec};
use crate::room::RoomHandle;
use crate::Error;
use tokio::sync::mpsc;
use tracing::{info_span, Instrument};

/// Records the room until stopped, the duration ends or the room goes away; returns the
/// finalized segment.
pub async fn record(
    spec: RecordingSpec,
    room: RoomHandle,
    commands: mpsc::Receiver<JobCommand>,
) -> Result<Recording, Error> {
    record_with_events(spec, room, commands, None).await
}

/// [`record`], reporting [`JobEvent`]s as they happen.
pub async fn record_with_events(
    spec: RecordingSpec,
    room: RoomHandle,
    commands: mpsc::Receiver<JobCommand>,
    events: Option<mpsc::UnboundedSender<JobEvent>>,
) -> Result<Recording, Error> {
    let path = if spec.record {
        Some(reserve_segment(
            &spec.out_dir,
            &spec.room_id,
            &spec.conf_num,
            spec.first_segment,
        )?)
    } else {
        None
    };
    let shown = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let span = info_span!("recording", room = %spec.room_id, conf = %spec.conf_num, file = %shown);
    let result = session::run(spec, path.clone(), room, commands, events)
        .instrument(span)
        .await;
    if let Some(path) = path {
        if result.is_err() && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            // Nothing was recorded: give the segment name back.
            let _ = std::fs::remove_file(&path);
        }
    }
    result
}

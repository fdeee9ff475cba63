//! A room's session: one room connection, one composite and one encode shared by every job of
//! the room that runs in this process with the same preset, watermark and page layer — its
//! live recording, its stream and their HLS outputs.
//!
//! Each job is a *member*: its own outputs (the MP4 segment, its RTMP destinations, its HLS),
//! its own stop, duration limit, start timeout and disk floor, and its own result. A member
//! that ends while others run takes only its outputs away (the file is ended and finalized,
//! its destinations and HLS stop); the last member's end, or the room's (destroyed,
//! disconnected, stalled, a pipeline error), ends the session as a single job always ended.
//!
//! What is drawn is shared: a layout or page change from any member changes what every output
//! shows. Room events and chat for the page are taken from the oldest member (every member's
//! job hears the same ones).
//!
//! The first member's file is written by the composite's own muxer; a recording that joins a
//! running session records through [`Mp4Tap`].
//!
//! Files: [`registry`] (the running sessions), [`member`] (one job's part), [`limits`]
//! (timeouts and waits), [`conclude`] (a member's result), [`room`] (a session and how members
//! leave it), [`drive`] (a session started and run); each uses only those before it.

mod conclude;
mod drive;
mod limits;
mod member;
mod registry;
mod room;

pub use registry::sharing;

use self::member::{Member, Mp4Out};
use self::registry::{sessions, unregister, Key, Msg, NEXT_MEMBER};
use self::room::Session;
use crate::job::spec::{JobCommand, JobEvent, Recording, RecordingSpec};
use crate::pipeline::PipelineError;
use crate::room::RoomHandle;
use crate::Error;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, info_span, Instrument};

/// Runs one job's outputs: in the room's running session when there is one it can share,
/// else in a new session. Returns when this job's outputs have ended.
pub(crate) async fn run(
    spec: RecordingSpec,
    path: Option<PathBuf>,
    room: RoomHandle,
    commands: mpsc::Receiver<JobCommand>,
    events: Option<mpsc::UnboundedSender<JobEvent>>,
) -> Result<Recording, Error> {
    if std::env::var_os("ROOMCAST_FAULT_COMPOSITE_FAILS").is_some() {
        (room.leave)();
        return Err(crate::pipeline::PipelineError::setup(
            "the composite could not be built (ROOMCAST_FAULT_COMPOSITE_FAILS)",
        )
        .into());
    }
    let key = Key::of(&spec);
    let id = NEXT_MEMBER.fetch_add(1, Ordering::Relaxed);
    let member = |done| {
        Box::new(Member {
            id,
            spec: spec.clone(),
            path: path.clone(),
            events: events.clone(),
            done,
            mp4: Mp4Out::None,
            destinations: Vec::new(),
            hls: None,
            journal: None,
            started: Instant::now(),
            deadline: None,
            went_live: false,
        })
    };
    // The room's session, or this job's own, registered at once so that a job of the room
    // starting meanwhile joins it (its join waits until the composite runs).
    let (tx, rx) = mpsc::unbounded_channel();
    let running = if sharing() {
        let mut s = sessions();
        match s.get(&key) {
            Some(other) if !other.is_closed() => Some(other.clone()),
            _ => {
                s.insert(key.clone(), tx.clone());
                None
            }
        }
    } else {
        None
    };
    if let Some(other) = running {
        let (done_tx, done_rx) = oneshot::channel();
        let (ack_tx, ack_rx) = oneshot::channel();
        if other.send(Msg::Join(member(done_tx), ack_tx)).is_ok() && ack_rx.await.is_ok() {
            info!("sharing the room's running composite");
            (room.leave)();
            forward(commands, other, id);
            return done_rx.await.unwrap_or_else(|_| Err(gone()));
        }
        debug!("the room's session ended before this job joined it: starting one");
        if sharing() {
            sessions().insert(key.clone(), tx.clone());
        }
    }
    let (done_tx, done_rx) = oneshot::channel();
    let span = info_span!("session", room = %spec.room_id, conf = %spec.conf_num);
    let started = Session::start(key.clone(), *member(done_tx), room, rx, tx.clone())
        .instrument(span.clone())
        .await;
    let session = match started {
        Ok(s) => s,
        Err(e) => {
            unregister(&key, &tx);
            return Err(e);
        }
    };
    forward(commands, tx, id);
    tokio::spawn(session.run().instrument(span));
    done_rx.await.unwrap_or_else(|_| Err(gone()))
}

fn gone() -> Error {
    PipelineError::setup("the room's session ended without a result").into()
}

/// Hands a member's commands to its session.
fn forward(mut commands: mpsc::Receiver<JobCommand>, tx: mpsc::UnboundedSender<Msg>, id: u64) {
    tokio::spawn(async move {
        while let Some(cmd) = commands.recv().await {
            if tx.send(Msg::Command(id, cmd)).is_err() {
                break;
            }
        }
    });
}

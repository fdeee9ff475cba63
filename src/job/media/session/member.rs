//! A job's part of a session ([`Member`]): its own outputs (the MP4 segment, its RTMP
//! destinations, its HLS), limits and result channel; where the session's news goes among its
//! members ([`route`]); its chat journal.

use crate::job::spec::{JobEvent, Recording, RecordingSpec};
use crate::pipeline::hls::HlsOutput;
use crate::pipeline::recorder::Mp4Tap;
use crate::Error;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

/// Where a member's MP4 goes.
pub(super) enum Mp4Out {
    None,
    /// The composite's own muxer (the session's first member).
    Main,
    /// A tap on the running composite.
    Tapped(Mp4Tap),
}

/// One job's part of a session.
pub(super) struct Member {
    pub(super) id: u64,
    pub(super) spec: RecordingSpec,
    pub(super) path: Option<PathBuf>,
    pub(super) events: Option<mpsc::UnboundedSender<JobEvent>>,
    pub(super) done: oneshot::Sender<Result<Recording, Error>>,
    pub(super) mp4: Mp4Out,
    pub(super) destinations: Vec<u32>,
    pub(super) hls: Option<HlsOutput>,
    pub(super) journal: Option<PathBuf>,
    pub(super) started: Instant,
    pub(super) deadline: Option<Instant>,
    pub(super) went_live: bool,
}

impl Member {
    pub(super) fn send(&self, ev: JobEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(ev);
        }
    }
}

/// A destination's news to the member that owns it; the page's to every member.
pub(super) fn route(members: &[Member], ev: JobEvent) {
    match &ev {
        JobEvent::Streaming(s) => {
            if let Some(m) = members.iter().find(|m| m.destinations.contains(&s.id)) {
                m.send(ev);
            }
        }
        _ => {
            for m in members {
                m.send(ev.clone());
            }
        }
    }
}

/// Appends a chat message to the segment's journal, when the job records one.
pub(super) fn journal_chat(journal: Option<&std::path::Path>, line: &crate::model::page::ChatLine) {
    let Some(journal) = journal else { return };
    if let Err(e) = tokio::task::block_in_place(|| crate::job::files::chat::append(journal, line)) {
        warn!(error = %e, "chat message not written to the segment's journal");
    }
}

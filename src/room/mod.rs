//! Rooms: where media comes from.
//!
//! A [`RoomConnector`] joins a room and reports what happens in it as [`RoomEvent`]s: people
//! joining and leaving, tracks published (each with a [`TrackSource`] the pipeline can build),
//! who is talking, the room ending. The job runner only knows this seam; the synthetic room
//! ([`synthetic`]) implements it for demos, tests and benches, [`janus`] for Janus VideoRoom.
//!
//! Rooms are signalling and events only: no GStreamer here. A published track carries a
//! [`TrackSource`] that the pipeline builds (generated media, or a WebRTC feed whose
//! pipeline lives in `pipeline::source::webrtc`).

pub mod janus;
pub mod synthetic;

pub use crate::pipeline::source::TrackSource;
use std::fmt;
use tokio::sync::mpsc;

/// Identifies a participant within a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub String);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Microphone audio.
    Audio,
    /// Camera video.
    Video,
    /// Screen share video.
    Screen,
}

impl From<TrackKind> for crate::model::manifest::FileKind {
    fn from(kind: TrackKind) -> Self {
        use crate::model::manifest::FileKind;
        match kind {
            TrackKind::Audio => FileKind::Audio,
            TrackKind::Video => FileKind::Video,
            TrackKind::Screen => FileKind::Screen,
        }
    }
}

impl From<crate::model::manifest::FileKind> for TrackKind {
    fn from(kind: crate::model::manifest::FileKind) -> Self {
        use crate::model::manifest::FileKind;
        match kind {
            FileKind::Audio => TrackKind::Audio,
            FileKind::Video => TrackKind::Video,
            FileKind::Screen => TrackKind::Screen,
        }
    }
}

/// Something that happened in the room.
#[derive(Debug)]
pub enum RoomEvent {
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        id: ParticipantId,
        /// Name to show on their tile.
        display_name: String,
    },
    /// Someone left; their tracks are gone too.
    ParticipantLeft {
        /// Who.
        id: ParticipantId,
    },
    /// A track became available.
    TrackPublished {
        /// Whose.
        id: ParticipantId,
        /// What kind.
        kind: TrackKind,
        /// How to build it.
        source: Box<dyn TrackSource>,
    },
    /// A track went away.
    TrackUnpublished {
        /// Whose.
        id: ParticipantId,
        /// What kind.
        kind: TrackKind,
    },
    /// Someone started or stopped talking.
    Talking {
        /// Who.
        id: ParticipantId,
        /// Talking now or not.
        talking: bool,
    },
    /// A moderator changed the spotlight list.
    Spotlight {
        /// Spotlighted participants.
        ids: Vec<ParticipantId>,
    },
    /// A moderator changed the pinned list.
    Pinned {
        /// Pinned participants.
        ids: Vec<ParticipantId>,
    },
    /// A moderator hard-muted or un-muted a participant's audio or video.
    HardMute {
        /// Who.
        id: ParticipantId,
        /// Audio or video (screen counts as video).
        kind: TrackKind,
        /// Muted now or not.
        muted: bool,
    },
    /// A participant moved to a break-out room (paused) or came back.
    Paused {
        /// Who.
        id: ParticipantId,
        /// Paused now or not.
        paused: bool,
    },
    /// The room was destroyed: the recording ends.
    RoomDestroyed,
    /// The connection to the room dropped.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// How tall each participant's video is drawn on the canvas now, in pixels, by participant
/// id (absent: not drawn); `None` until a layout has placed anyone, and for good where no
/// layout draws the room (an individual recording keeps every track as sent). The job sets it
/// after every layout change; a room whose senders offer their video in several sizes
/// (simulcast) receives, per participant, the size that fits. A room that cannot choose never
/// reads it.
#[derive(Debug, Clone)]
pub struct ShownSizes(tokio::sync::watch::Sender<Option<Heights>>);

/// Drawn heights by participant id.
pub type Heights = std::collections::HashMap<String, u32>;

impl Default for ShownSizes {
    /// Sizes nobody reads (a room that cannot choose).
    fn default() -> Self {
        Self::channel().0
    }
}

impl ShownSizes {
    /// A new set of sizes and the receiver a room reads them from.
    pub fn channel() -> (Self, tokio::sync::watch::Receiver<Option<Heights>>) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (Self(tx), rx)
    }

    /// Sets the sizes now; readers wake only when they changed.
    pub fn set(&self, heights: Heights) {
        self.0.send_if_modified(|now| {
            let changed = now.as_ref() != Some(&heights);
            if changed {
                *now = Some(heights);
            }
            changed
        });
    }
}

/// A joined room: its events arrive on `events`; dropping the handle leaves the room.
pub struct RoomHandle {
    /// Room events, in order.
    pub events: mpsc::Receiver<RoomEvent>,
    /// Health of the tracks received over the network (empty for generated rooms).
    pub feeds: crate::model::feed::FeedBoard,
    /// Where the job says how large each participant's video is drawn.
    pub shown: ShownSizes,
    /// Leaves the room when dropped or called.
    pub leave: Box<dyn FnOnce() + Send>,
}

impl fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomHandle").finish_non_exhaustive()
    }
}

/// Joins rooms.
pub trait RoomConnector: Send + Sync {
    /// Joins the room, hidden, and starts reporting events.
    fn connect(&self)
        -> impl std::future::Future<Output = Result<RoomHandle, crate::Error>> + Send;
}

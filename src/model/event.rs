//! Room events the platform reports (`POST /v1/rooms/{id}/events`), as stored and forwarded
//! to running jobs. Plain serde data; the API checks their text, the job translates them.

use super::room::RoomMode;
use serde::{Deserialize, Serialize};

/// A room event reported by the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlatformEvent {
    /// A participant joined.
    ParticipantJoined {
        /// User id.
        user_id: String,
        /// Display name.
        #[serde(default)]
        name: Option<String>,
    },
    /// A participant left.
    ParticipantLeft {
        /// User id.
        user_id: String,
    },
    /// Who is talking now (most active first).
    ActiveTalkers {
        /// User ids.
        user_ids: Vec<String>,
    },
    /// Spotlighted users.
    Spotlight {
        /// User ids.
        user_ids: Vec<String>,
    },
    /// Pinned users.
    Pinned {
        /// User ids.
        user_ids: Vec<String>,
    },
    /// A moderator hard-muted (or released) a user's audio or video.
    HardMute {
        /// User id.
        user_id: String,
        /// `audio` or `video`.
        media: MediaKind,
        /// Muted or not.
        muted: bool,
    },
    /// Users moved to break-out rooms (paused) or back.
    Paused {
        /// User ids.
        user_ids: Vec<String>,
        /// Paused or resumed.
        paused: bool,
    },
    /// The room switched between group and lecture mode.
    ModeSwitched {
        /// New mode.
        mode: RoomMode,
    },
    /// The room was destroyed.
    RoomDestroyed,
    /// A chat message was sent in the room.
    ChatMessage {
        /// Sender's user id.
        user_id: String,
        /// Sender's display name.
        #[serde(default)]
        name: Option<String>,
        /// The message.
        text: String,
        /// When it was sent, ms since the epoch (default: when roomcast got it).
        #[serde(default)]
        time: Option<u64>,
    },
}

impl PlatformEvent {
    /// Every user id the event names.
    pub fn user_ids(&self) -> Vec<&str> {
        match self {
            PlatformEvent::ParticipantJoined { user_id, .. }
            | PlatformEvent::ParticipantLeft { user_id }
            | PlatformEvent::HardMute { user_id, .. }
            | PlatformEvent::ChatMessage { user_id, .. } => vec![user_id.as_str()],
            PlatformEvent::ActiveTalkers { user_ids }
            | PlatformEvent::Spotlight { user_ids }
            | PlatformEvent::Pinned { user_ids }
            | PlatformEvent::Paused { user_ids, .. } => {
                user_ids.iter().map(String::as_str).collect()
            }
            PlatformEvent::ModeSwitched { .. } | PlatformEvent::RoomDestroyed => Vec::new(),
        }
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

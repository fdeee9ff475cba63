//! What the queue stores about a room: how a job reaches it ([`ConnectorSpec`]), its mode and
//! settings ([`RoomSettings`], [`RoomConfig`]).
//!
//! Plain serde data, held the same by the embedded store and Redis.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where a job gets its media from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConnectorSpec {
    /// Generated participants (demos, tests): `participants` present from the start, more
    /// joining as the platform reports joins.
    Synthetic {
        /// Participants present when the job starts (besides those the platform reported).
        #[serde(default)]
        participants: u32,
        /// What they do: `steady` (everyone present and still) or `demo` (a late joiner, a
        /// leaver, a screen share and talkers, spread over the job's `max_duration_secs`).
        #[serde(default, skip_serializing_if = "SyntheticScript::is_steady")]
        script: SyntheticScript,
    },
    /// A Janus VideoRoom, recorded without joining it (see `room::janus`).
    Janus {
        /// WebSocket URL (`ws://host:8188`).
        url: String,
        /// Room number.
        room: u64,
        /// Room PIN.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
        /// Text marking a screen share in a display name or stream description.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        screen_pattern: Option<String>,
        /// Local address for ICE.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice_address: Option<String>,
        /// Reconnect attempts in a row (with backoff) before the job ends with 7026
        /// (default 6).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_reconnects: Option<u32>,
        /// Which layer of a simulcast publisher's video to receive (default `fit`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        simulcast: Option<SimulcastChoice>,
    },
}

/// Which layer of a simulcast publisher's video a recording receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimulcastChoice {
    /// The smallest layer at least as tall as the tile it is drawn in, switched as the layout
    /// changes.
    #[default]
    Fit,
    /// Always the largest (what a subscriber gets when it does not choose).
    Top,
}

/// What a synthetic room's participants do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticScript {
    /// Everyone present from the start.
    #[default]
    Steady,
    /// The demo's scripted room.
    Demo,
}

impl SyntheticScript {
    fn is_steady(&self) -> bool {
        *self == SyntheticScript::Steady
    }
}

impl Default for ConnectorSpec {
    fn default() -> Self {
        ConnectorSpec::Synthetic {
            participants: 0,
            script: SyntheticScript::Steady,
        }
    }
}

/// Group or lecture mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Everyone is shown.
    #[default]
    Group,
    /// The talker is shown big.
    Lecture,
}

/// `settings.live_recording` of a room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveRecordingSettings {
    /// Start a recording when the first participant joins.
    #[serde(default)]
    pub auto_recording: bool,
    /// The custom view page recordings of the room show (from an allowed origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Room settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    /// Start an individual (legacy) recording when the first participant joins.
    #[serde(default)]
    pub auto_recording: bool,
    /// Live recording settings.
    #[serde(default)]
    pub live_recording: LiveRecordingSettings,
    /// Layout name or inline layout definition.
    #[serde(default)]
    pub layout: Option<serde_json::Value>,
    /// Watermark PNG on the worker (at most 140x140).
    #[serde(default)]
    pub watermark: Option<PathBuf>,
    /// Group or lecture.
    #[serde(default)]
    pub mode: RoomMode,
    /// Most talkers treated as active speakers at once.
    #[serde(default)]
    pub max_active_talkers: Option<u32>,
    /// Encoder preset.
    #[serde(default)]
    pub preset: Option<String>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            auto_recording: false,
            live_recording: LiveRecordingSettings::default(),
            layout: None,
            watermark: None,
            mode: RoomMode::Group,
            max_active_talkers: None,
            preset: None,
        }
    }
}

/// A registered room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomConfig {
    /// Room id.
    pub room_id: String,
    /// Application id reported in webhooks.
    pub app_id: String,
    /// Conference number used in file names.
    pub conf_num: String,
    /// How to join it.
    pub connector: ConnectorSpec,
    /// Settings.
    pub settings: RoomSettings,
    /// Participants present, as reported by the platform (id, display name).
    #[serde(default)]
    pub participants: Vec<(String, String)>,
    /// The room was destroyed and is disconnecting; requests are refused until it is
    /// registered again.
    #[serde(default)]
    pub disconnecting: bool,
}

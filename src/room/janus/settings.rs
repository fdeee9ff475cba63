//! What a Janus room is to connect to ([`JanusRoom`]) and the choices made from it: the
//! poll period, the simulcast layer for a tile's height, which feeds are screens, what a
//! refused join means.

use super::session::JanusError;
use crate::codes::Code;
use crate::model::room::SimulcastChoice;
use serde_json::{json, Value};
use std::time::Duration;

/// How often the participant list is read.
pub const POLL: Duration = Duration::from_millis(250);

/// Heights of a simulcast publisher's layers as browsers send a 720p camera (each half the
/// next); a tile up to a layer's height gets that layer.
pub const LAYER_HEIGHTS: [u32; 2] = [180, 360];

/// The top simulcast layer (`substream`).
pub const TOP_LAYER: u8 = LAYER_HEIGHTS.len() as u8;

/// The simulcast layer (`substream`) for a video drawn `height` pixels tall: with
/// [`SimulcastChoice::Fit`] the smallest whose pictures are at least that tall, so nothing is
/// enlarged that a larger layer would have sharpened, and the smallest for a video not drawn
/// at all (`None`); the top one with [`SimulcastChoice::Top`].
pub fn layer_for(choice: SimulcastChoice, height: Option<u32>) -> u8 {
    match (choice, height) {
        (SimulcastChoice::Top, _) => TOP_LAYER,
        (SimulcastChoice::Fit, None) => 0,
        (SimulcastChoice::Fit, Some(h)) => LAYER_HEIGHTS
            .iter()
            .position(|&top| h <= top)
            .map_or(TOP_LAYER, |layer| layer as u8),
    }
}

/// The simulcast layer for feed `id` given how tall each video is drawn (`None`: no layout
/// draws the room, so the top layer, as sent).
pub(super) fn wanted_layer(
    choice: SimulcastChoice,
    heights: Option<&crate::room::Heights>,
    id: u64,
) -> u8 {
    match heights {
        None => TOP_LAYER,
        Some(h) => layer_for(choice, h.get(&id.to_string()).copied()),
    }
}

/// A Janus VideoRoom to record.
#[derive(Debug, Clone)]
pub struct JanusRoom {
    /// WebSocket URL (`ws://host:8188`).
    pub url: String,
    /// Room number.
    pub room: u64,
    /// Room PIN.
    pub pin: Option<String>,
    /// Case-insensitive text that marks a screen share in a stream description or display name.
    pub screen_pattern: String,
    /// Local address for ICE (when other interfaces must not be used).
    pub local_ip: Option<String>,
    /// Reconnect attempts in a row before giving up.
    pub max_reconnects: u32,
    /// Which layer of a simulcast publisher's video to receive.
    pub simulcast: SimulcastChoice,
}

impl JanusRoom {
    /// A room with defaults for everything else.
    pub fn new(url: impl Into<String>, room: u64) -> Self {
        JanusRoom {
            url: url.into(),
            room,
            pin: None,
            screen_pattern: "screen".into(),
            local_ip: None,
            max_reconnects: 6,
            simulcast: SimulcastChoice::Fit,
        }
    }

    pub(super) fn is_screen(&self, display: &str, description: &str) -> bool {
        let p = self.screen_pattern.to_lowercase();
        !p.is_empty()
            && (display.to_lowercase().contains(&p) || description.to_lowercase().contains(&p))
    }
}

/// Maps a join failure to the platform's codes.
pub(super) fn join_error(e: JanusError) -> crate::Error {
    let (field, code) = match e.code {
        // No such room.
        426 => ("janus.room", Code::StateDisconnected),
        // Wrong PIN / unauthorized.
        433 | 403 => ("janus.pin", Code::StateWrong),
        // Not reachable at all.
        0 => ("janus.url", Code::StateBrokerNotFound),
        _ => ("janus", Code::StateRecordFailed),
    };
    // What answered (or did not) at the address stays in the log: an answer naming it would
    // let API callers probe the network.
    let message = if e.code == 0 {
        tracing::warn!(error = %e.message, "Janus server not reachable");
        "the Janus server could not be reached or did not speak the Janus protocol (details \
         in the worker log)"
            .to_string()
    } else {
        e.message
    };
    crate::Error::Invalid {
        field: field.into(),
        message,
        code,
    }
}

/// A subscriber `join` for publisher `feed` (simulcast `layer` of its video, where it sends
/// several), with the room's PIN when there is one.
pub(super) fn subscriber_join(cfg: &JanusRoom, feed: u64, layer: u8) -> Value {
    let mut join = json!({
        "request": "join",
        "ptype": "subscriber",
        "room": cfg.room,
        "streams": [{ "feed": feed, "substream": layer }],
    });
    if let Some(pin) = &cfg.pin {
        join["pin"] = json!(pin);
    }
    join
}

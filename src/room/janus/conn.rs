//! The plain plugin handle that finds out who publishes ([`Conn`]: `listparticipants`, the
//! PIN check), a publisher as it is listed, and a subscribed feed ([`Feed`]).

use super::session::{JanusError, JanusEvent, Session};
use super::settings::*;
use crate::pipeline::source::webrtc::{FeedPipeline, Slot};
use crate::room::ParticipantId;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::debug;

/// A publisher as `listparticipants` shows it.
#[derive(Debug, Clone)]
pub(super) struct Publisher {
    pub(super) id: u64,
    pub(super) display: String,
    pub(super) talking: bool,
}

/// Tracks of a feed, from the subscription's stream list.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tracks {
    pub(super) audio: bool,
    pub(super) video: bool,
    pub(super) screen: bool,
}

pub(super) fn publishers(list: &Value) -> Vec<Publisher> {
    let Some(items) = list.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|p| p["publisher"] == true)
        .filter_map(|p| {
            let id = p["id"].as_u64()?;
            let display = p["display"].as_str().unwrap_or("").to_string();
            Some(Publisher {
                id,
                display: if display.is_empty() {
                    format!("Feed {id}")
                } else {
                    display
                },
                talking: p["talking"] == true,
            })
        })
        .collect()
}

pub(super) struct Conn {
    pub(super) session: Session,
    pub(super) events: mpsc::UnboundedReceiver<JanusEvent>,
    pub(super) control: u64,
    pub(super) publishers: Vec<Publisher>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.session.close();
    }
}

impl Conn {
    pub(super) async fn open(cfg: &JanusRoom) -> Result<Conn, JanusError> {
        let (session, events) = Session::connect(&cfg.url).await?;
        let control = session.attach("janus.plugin.videoroom").await?;
        let mut conn = Conn {
            session,
            events,
            control,
            publishers: Vec::new(),
        };
        conn.publishers = conn.list(cfg).await?;
        conn.check_pin(cfg).await?;
        Ok(conn)
    }

    /// Janus checks a room's PIN first in a `join`: a subscriber join for a feed that cannot
    /// exist is refused either for the PIN (433, or a missing `pin`) or for the feed, which
    /// tells whether the PIN is right without joining or showing up anywhere.
    pub(super) async fn check_pin(&self, cfg: &JanusRoom) -> Result<(), JanusError> {
        let probe = self.session.attach("janus.plugin.videoroom").await?;
        let result = self
            .session
            .message(probe, subscriber_join(cfg, 0, 0), None)
            .await;
        self.session.detach(probe).await;
        match result {
            Err(e) if e.code == 433 || e.message.contains("pin") => {
                debug!(code = e.code, error = %e.message, "PIN check");
                Err(JanusError {
                    code: 433,
                    message: format!("room PIN refused ({})", e.message),
                })
            }
            Err(e) => {
                debug!(code = e.code, error = %e.message, "PIN accepted (probe refused for its feed)");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// The room's publishers now.
    pub(super) async fn list(&self, cfg: &JanusRoom) -> Result<Vec<Publisher>, JanusError> {
        let r = self
            .session
            .message(
                self.control,
                json!({ "request": "listparticipants", "room": cfg.room }),
                None,
            )
            .await?;
        Ok(publishers(&r["plugindata"]["data"]["participants"]))
    }
}

pub(super) struct Feed {
    pub(super) publisher: Publisher,
    pub(super) tracks: Tracks,
    pub(super) audio: Arc<Slot>,
    pub(super) video: Arc<Slot>,
    pub(super) announced_tracks: bool,
    pub(super) handle: Option<u64>,
    pub(super) pipeline: Option<FeedPipeline>,
    pub(super) health: super::health::Tracker,
    /// The subscription's video `mid`, once subscribed.
    pub(super) video_mid: Option<String>,
    /// The simulcast layer asked of Janus for this subscription.
    pub(super) layer: Option<u8>,
    /// The simulcast layer Janus reports it relays (none: not simulcast, or not yet said).
    pub(super) receiving: Option<u8>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(p) = self.pipeline.take() {
            p.stop();
        }
    }
}

pub(super) fn pid(id: u64) -> ParticipantId {
    ParticipantId(id.to_string())
}

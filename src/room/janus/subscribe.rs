//! Subscribing to one publisher's feed (join as subscriber, answer Janus's offer from the
//! feed pipeline, start), and reconnecting to Janus with backoff.

use super::conn::*;
use super::session::JanusError;
use super::settings::*;
use crate::pipeline::source::webrtc::FeedPipeline;
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

pub(super) fn other(e: impl std::fmt::Display) -> JanusError {
    JanusError {
        code: -1,
        message: e.to_string(),
    }
}

pub(super) async fn subscribe_feed(
    cfg: &JanusRoom,
    conn: &Conn,
    feed: &mut Feed,
    layer: u8,
) -> Result<(), JanusError> {
    let id = feed.publisher.id;
    let handle = conn.session.attach("janus.plugin.videoroom").await?;
    feed.handle = Some(handle);
    let r = conn
        .session
        .message(handle, subscriber_join(cfg, id, layer), None)
        .await?;
    feed.layer = Some(layer);
    feed.receiving = None;
    let data = &r["plugindata"]["data"];
    let offer = r["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| other(format!("no offer in {data}")))?
        .to_string();
    let streams = data["streams"].as_array().cloned().unwrap_or_default();
    let active = |t: &str| {
        streams
            .iter()
            .any(|s| s["type"] == t && s["active"] != false)
    };
    feed.video_mid = streams
        .iter()
        .find(|s| s["type"] == "video")
        .and_then(|s| s["mid"].as_str())
        .map(str::to_string);
    let description: String = streams
        .iter()
        .filter_map(|s| s["feed_description"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    feed.tracks = Tracks {
        audio: active("audio"),
        video: active("video"),
        screen: cfg.is_screen(&feed.publisher.display, &description),
    };
    // The tiles' slots stay the same across re-subscriptions.
    let pipeline = FeedPipeline::new(
        &id.to_string(),
        cfg.local_ip.as_deref(),
        feed.audio.clone(),
        feed.video.clone(),
    )
    .map_err(other)?;
    let answer = pipeline.answer(&offer).await.map_err(other)?;
    conn.session
        .message(
            handle,
            json!({ "request": "start", "room": cfg.room }),
            Some(json!({ "type": "answer", "sdp": answer })),
        )
        .await?;
    feed.pipeline = Some(pipeline);
    Ok(())
}
pub(super) async fn reconnect(cfg: &JanusRoom) -> Option<Conn> {
    for attempt in 0..cfg.max_reconnects {
        let wait =
            crate::util::backoff(attempt, Duration::from_millis(500), Duration::from_secs(8));
        tokio::time::sleep(wait).await;
        match Conn::open(cfg).await {
            Ok(c) => {
                info!(attempt = attempt + 1, "reconnected to Janus");
                return Some(c);
            }
            Err(e) => warn!(attempt = attempt + 1, error = %e, "reconnect failed"),
        }
    }
    None
}

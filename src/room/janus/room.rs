//! The room's task ([`run`]): polls the publishers, subscribes and re-subscribes feeds,
//! follows the job's tile sizes with simulcast layers, reads feed health, reconnects a lost
//! WebSocket, and reports all of it as [`RoomEvent`]s.

use super::conn::*;
use super::session::JanusError;
use super::settings::*;
use super::subscribe::{reconnect, subscribe_feed};
use crate::model::feed::FeedBoard;
use crate::pipeline::source::webrtc::{FeedTrack, Slot};
use crate::room::{RoomEvent, TrackKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How tall each participant's video is drawn, from the job.
pub(super) type Heights = tokio::sync::watch::Receiver<Option<crate::room::Heights>>;

pub(super) struct Room {
    pub(super) cfg: JanusRoom,
    pub(super) tx: mpsc::Sender<RoomEvent>,
    pub(super) feeds: HashMap<u64, Feed>,
    pub(super) board: FeedBoard,
    pub(super) heights: Heights,
}

impl Room {
    pub(super) async fn send(&self, ev: RoomEvent) -> bool {
        self.tx.send(ev).await.is_ok()
    }

    /// Reads every feed's health onto the board (all feeds' statistics asked at once, so a
    /// feed that does not answer holds the room up for its one-second limit, not per feed).
    pub(super) async fn read_health(&mut self) {
        let asked = self.feeds.iter().filter_map(|(id, feed)| {
            let pipeline = feed.pipeline.as_ref()?;
            Some(async move { (*id, pipeline.stats().await) })
        });
        let answers = futures::future::join_all(asked).await;
        let mut board = Vec::new();
        for (id, stats) in answers {
            let Some(feed) = self.feeds.get_mut(&id) else {
                continue;
            };
            let (audio, video) = (feed.audio.counts(), feed.video.counts());
            let mut tracks = feed.health.update(&id.to_string(), &stats, audio, video);
            for t in tracks.iter_mut().filter(|t| t.kind == "video") {
                t.layer = feed.receiving;
            }
            board.extend(tracks);
        }
        board.sort_by(|a, b| (&a.participant, &a.kind).cmp(&(&b.participant, &b.kind)));
        *self.board.lock().unwrap() = board;
    }

    /// Registers new publishers (joined, talking) and subscribes to all of `list` at once.
    pub(super) async fn add_publishers(&mut self, conn: &Conn, list: Vec<Publisher>) {
        let ids: Vec<u64> = list.iter().map(|p| p.id).collect();
        for p in list {
            self.register(p).await;
        }
        self.subscribe(conn, &ids).await;
    }

    pub(super) async fn register(&mut self, p: Publisher) {
        if !self.feeds.contains_key(&p.id) {
            info!(feed = p.id, display = %p.display, "publisher");
            self.send(RoomEvent::ParticipantJoined {
                id: pid(p.id),
                display_name: p.display.clone(),
            })
            .await;
            // Someone already talking when first seen is a talker now, not at their next change.
            if p.talking {
                self.send(RoomEvent::Talking {
                    id: pid(p.id),
                    talking: true,
                })
                .await;
            }
            self.feeds.insert(
                p.id,
                Feed {
                    publisher: p.clone(),
                    tracks: Tracks::default(),
                    audio: Arc::new(Slot::default()),
                    video: Arc::new(Slot::default()),
                    announced_tracks: false,
                    handle: None,
                    pipeline: None,
                    health: super::health::Tracker::default(),
                    video_mid: None,
                    layer: None,
                    receiving: None,
                },
            );
        }
    }

    /// (Re)subscribes to feeds, all at once (each is its own handle and PeerConnection, so
    /// ten publishers take about as long as one); their tiles keep their slots, so a new
    /// connection feeds the same tiles.
    pub(super) async fn subscribe(&mut self, conn: &Conn, ids: &[u64]) {
        for id in ids {
            let Some(feed) = self.feeds.get_mut(id) else {
                continue;
            };
            if let Some(p) = feed.pipeline.take() {
                p.stop();
            }
            if let Some(h) = feed.handle.take() {
                conn.session.detach(h).await;
            }
        }
        let cfg = &self.cfg;
        let heights = self.heights.borrow().clone();
        let results = futures::future::join_all(
            self.feeds
                .iter_mut()
                .filter(|(id, _)| ids.contains(id))
                .map(|(id, feed)| {
                    let layer = wanted_layer(cfg.simulcast, heights.as_ref(), *id);
                    async move { (*id, subscribe_feed(cfg, conn, feed, layer).await) }
                }),
        )
        .await;
        for (id, result) in results {
            self.subscribed(id, result).await;
        }
    }

    /// Reports a subscription's outcome: its tracks the first time it succeeds.
    pub(super) async fn subscribed(&mut self, id: u64, result: Result<(), JanusError>) {
        let Some(feed) = self.feeds.get_mut(&id) else {
            return;
        };
        match result {
            Ok(()) => {}
            Err(e) if e.code == 433 => {
                warn!(feed = id, error = %e, "room PIN refused");
                let _ = self
                    .tx
                    .send(RoomEvent::Disconnected {
                        reason: format!("room PIN refused: {}", e.message),
                    })
                    .await;
                return;
            }
            Err(e) => {
                warn!(feed = id, error = %e, "subscription failed; will retry");
                return;
            }
        }
        if !feed.announced_tracks {
            feed.announced_tracks = true;
            let p = feed.tracks;
            let (audio, video) = (feed.audio.clone(), feed.video.clone());
            if p.video {
                let kind = if p.screen {
                    TrackKind::Screen
                } else {
                    TrackKind::Video
                };
                self.send(RoomEvent::TrackPublished {
                    id: pid(id),
                    kind,
                    source: Box::new(FeedTrack {
                        name: format!("{id}_video"),
                        audio: false,
                        slot: video,
                    }),
                })
                .await;
            }
            if p.audio {
                self.send(RoomEvent::TrackPublished {
                    id: pid(id),
                    kind: TrackKind::Audio,
                    source: Box::new(FeedTrack {
                        name: format!("{id}_audio"),
                        audio: true,
                        slot: audio,
                    }),
                })
                .await;
            }
        }
    }

    /// Asks every feed whose tile changed size for the simulcast layer that fits it now (all
    /// requests at once).
    pub(super) async fn pick_layers(&mut self, conn: &Conn) {
        let heights = self.heights.borrow_and_update().clone();
        let asks = self.feeds.iter_mut().filter_map(|(id, feed)| {
            let (handle, mid) = (feed.handle?, feed.video_mid.clone()?);
            let want = wanted_layer(self.cfg.simulcast, heights.as_ref(), *id);
            if feed.layer == Some(want) {
                return None;
            }
            feed.layer = Some(want);
            debug!(feed = id, layer = want, "asking for simulcast layer");
            let request = json!({
                "request": "configure",
                "streams": [{ "mid": mid, "substream": want }],
            });
            Some(async move {
                if let Err(e) = conn.session.message(handle, request, None).await {
                    warn!(feed = id, error = %e, "simulcast layer request refused");
                }
            })
        });
        futures::future::join_all(asks).await;
    }

    pub(super) async fn remove(&mut self, conn: &Conn, id: u64, left: bool) {
        let Some(mut feed) = self.feeds.remove(&id) else {
            return;
        };
        if let Some(h) = feed.handle.take() {
            conn.session.detach(h).await;
        }
        if left {
            info!(feed = id, "publisher left");
            self.send(RoomEvent::ParticipantLeft { id: pid(id) }).await;
        } else {
            info!(feed = id, "publisher unpublished");
            for kind in [TrackKind::Video, TrackKind::Screen, TrackKind::Audio] {
                self.send(RoomEvent::TrackUnpublished { id: pid(id), kind })
                    .await;
            }
            self.send(RoomEvent::ParticipantLeft { id: pid(id) }).await;
        }
    }
}

pub(super) async fn run(
    cfg: JanusRoom,
    conn: Conn,
    tx: mpsc::Sender<RoomEvent>,
    board: FeedBoard,
    heights: Heights,
) {
    let mut sizes_open = true;
    let mut room = Room {
        cfg: cfg.clone(),
        tx,
        feeds: HashMap::new(),
        board,
        heights,
    };
    let mut conn = conn;
    room.add_publishers(&conn, conn.publishers.clone()).await;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {
                match conn.list(&cfg).await {
                    Ok(list) => {
                        if !on_list(&mut room, &conn, list).await {
                            return;
                        }
                    }
                    Err(e) if e.code == 426 => {
                        info!("room destroyed");
                        let _ = room.tx.send(RoomEvent::RoomDestroyed).await;
                        return;
                    }
                    Err(e) => warn!(error = %e, "participant list unavailable"),
                }
            }
            ev = conn.events.recv() => {
                let ev = ev.unwrap_or_else(|| json!({ "janus": "closed" }));
                if ev["janus"] == "closed" {
                    warn!("connection to Janus lost");
                    match reconnect(&cfg).await {
                        Some(c) => {
                            conn = c;
                            let present: Vec<u64> = conn.publishers.iter().map(|p| p.id).collect();
                            let gone: Vec<u64> = room.feeds.keys().filter(|id| !present.contains(id)).copied().collect();
                            for id in gone {
                                room.remove(&conn, id, true).await;
                            }
                            for f in room.feeds.values_mut() {
                                f.handle = None;
                            }
                            room.add_publishers(&conn, conn.publishers.clone()).await;
                        }
                        None => {
                            let _ = room.tx.send(RoomEvent::Disconnected {
                                reason: format!("Janus unreachable after {} attempts", cfg.max_reconnects),
                            }).await;
                            return;
                        }
                    }
                    continue;
                }
                if !on_event(&mut room, &conn, &ev).await {
                    return;
                }
            }
            changed = room.heights.changed(), if sizes_open => {
                match changed {
                    Ok(()) => room.pick_layers(&conn).await,
                    // The job is gone: the sizes stay as they are.
                    Err(_) => sizes_open = false,
                }
            }
            _ = check.tick() => {
                let failed: Vec<u64> = room
                    .feeds
                    .iter()
                    .filter(|(_, f)| f.pipeline.as_ref().is_none_or(|p| p.failed()))
                    .map(|(id, _)| *id)
                    .collect();
                if !failed.is_empty() {
                    info!(feeds = ?failed, "re-subscribing");
                    room.subscribe(&conn, &failed).await;
                }
                room.read_health().await;
            }
        }
    }
}

/// Applies a participant list: new publishers, departures, talking changes.
pub(super) async fn on_list(room: &mut Room, conn: &Conn, list: Vec<Publisher>) -> bool {
    let present: Vec<u64> = list.iter().map(|p| p.id).collect();
    let gone: Vec<u64> = room
        .feeds
        .keys()
        .filter(|id| !present.contains(id))
        .copied()
        .collect();
    for id in gone {
        room.remove(conn, id, true).await;
    }
    let mut new = Vec::new();
    for p in list {
        match room.feeds.get_mut(&p.id) {
            None => new.push(p),
            Some(f) if f.publisher.talking != p.talking => {
                f.publisher.talking = p.talking;
                if room
                    .tx
                    .send(RoomEvent::Talking {
                        id: pid(p.id),
                        talking: p.talking,
                    })
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            Some(_) => {}
        }
    }
    if !new.is_empty() {
        room.add_publishers(conn, new).await;
    }
    !room.tx.is_closed()
}

/// Handles one async event (subscriber handles); false when the room is gone.
pub(super) async fn on_event(room: &mut Room, _conn: &Conn, ev: &Value) -> bool {
    let sender = ev["sender"].as_u64();
    if ev["plugindata"]["data"]["videoroom"] == "destroyed" {
        info!("room destroyed");
        let _ = room.tx.send(RoomEvent::RoomDestroyed).await;
        return false;
    }
    let data = &ev["plugindata"]["data"];
    if let (Some(layer), Some(f)) = (
        data["substream"].as_u64(),
        room.feeds
            .values_mut()
            .find(|f| f.handle.is_some() && f.handle == sender),
    ) {
        let layer = layer.min(u8::MAX as u64) as u8;
        if f.receiving != Some(layer) {
            info!(feed = f.publisher.id, layer, asked = ?f.layer, "receiving simulcast layer");
            f.receiving = Some(layer);
        }
    }
    if ev["janus"] == "hangup" || ev["janus"] == "detached" {
        if let Some(f) = room
            .feeds
            .values_mut()
            .find(|f| f.handle.is_some() && f.handle == sender)
        {
            warn!(feed = f.publisher.id, reason = %ev["reason"], "feed hung up");
            if let Some(p) = f.pipeline.take() {
                p.stop();
            }
        }
    }
    true
}

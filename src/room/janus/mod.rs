//! A Janus VideoRoom as a room: joins hidden, subscribes to every publisher, reports what
//! happens as [`RoomEvent`]s.
//!
//! **Hidden.** roomcast never joins the room as a participant. It learns who publishes by
//! polling `listparticipants` ([`POLL`]) on a plain plugin handle, and receives media through
//! subscriber handles only. Subscribers are not participants in Janus: they appear in no
//! `listparticipants` answer, no publisher list, and no participant gets an event about them —
//! not when the recorder arrives and not when it goes. (A handle joined as a publisher that
//! never publishes is not announced when it joins, with `notify_joining = false`, but Janus does
//! send every participant `unpublished` and `leaving` for it when it goes, so that design was
//! dropped.) Polling costs one small request per [`POLL`] and adds up to that much to the time
//! a new publisher takes to appear.
//!
//! **One PeerConnection per publisher.** Each feed gets its own subscriber handle and its own
//! small pipeline ([`FeedPipeline`]): a feed that fails ICE or is torn down is re-subscribed
//! alone, and joins/leaves never renegotiate a shared connection that carries everyone else.
//! The cost is one ICE/DTLS setup per publisher; new publishers are subscribed concurrently.
//!
//! **PIN.** Checked when connecting, before anything is recorded: a subscriber `join` for a
//! feed that cannot exist is refused by Janus for the PIN first (433 or a missing `pin`), else
//! for the feed — nothing is joined either way.
//!
//! **Screen shares** are feeds whose stream `description` or display name contains
//! [`JanusRoom::screen_pattern`] (case-insensitive, default `screen`); their video is a
//! screen track, which the presentation layout shows large.
//!
//! **Talking** needs `audiolevel_event = true` on the room: Janus then reports a `talking` flag
//! per publisher in `listparticipants`, which drives the speaker layout.
//!
//! **Failures.** A lost WebSocket (Janus restarted) is reconnected with backoff and every feed is
//! subscribed again into the same tiles; after [`JanusRoom::max_reconnects`] failed attempts in a
//! row the room reports `Disconnected`. A feed whose connection fails is re-subscribed.
//!
//! **Health.** Once a second every feed's receive statistics and frame counts become the
//! room's [`FeedBoard`] (see [`health`]).
//!
//! **Simulcast.** A publisher may send its video in three sizes (Janus relays one of them to
//! each subscriber, `substream` 0 the smallest). Each feed asks for the layer that fits how
//! tall its tile is drawn now ([`layer_for`], from the job's [`ShownSizes`]): subscribed with
//! it, and switched by `configure` as the layout changes — a speaker's large tile gets the top
//! layer, a filmstrip tile the smallest, a grid of nine the middle one. Janus switches at the
//! layer's next keyframe (it asks the publisher for one) and reports the layer it sends, which
//! is logged and shown in the feed's health. A feed that is not simulcast ignores the request.

mod health;
pub mod session;
mod subscribe;

use subscribe::{reconnect, subscribe_feed, subscriber_join};

use crate::codes::Code;
use crate::model::feed::FeedBoard;
use crate::model::room::SimulcastChoice;
use crate::pipeline::source::webrtc::{FeedPipeline, FeedTrack, Slot};
use crate::room::{ParticipantId, RoomConnector, RoomEvent, RoomHandle, ShownSizes, TrackKind};
use serde_json::{json, Value};
use session::{JanusError, JanusEvent, Session};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

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
fn wanted_layer(choice: SimulcastChoice, heights: Option<&crate::room::Heights>, id: u64) -> u8 {
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

    fn is_screen(&self, display: &str, description: &str) -> bool {
        let p = self.screen_pattern.to_lowercase();
        !p.is_empty()
            && (display.to_lowercase().contains(&p) || description.to_lowercase().contains(&p))
    }
}

/// Maps a join failure to the platform's codes.
fn join_error(e: JanusError) -> crate::Error {
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

/// A publisher as `listparticipants` shows it.
#[derive(Debug, Clone)]
struct Publisher {
    id: u64,
    display: String,
    talking: bool,
}

/// Tracks of a feed, from the subscription's stream list.
#[derive(Debug, Clone, Copy, Default)]
struct Tracks {
    audio: bool,
    video: bool,
    screen: bool,
}

fn publishers(list: &Value) -> Vec<Publisher> {
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

struct Conn {
    session: Session,
    events: mpsc::UnboundedReceiver<JanusEvent>,
    control: u64,
    publishers: Vec<Publisher>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.session.close();
    }
}

impl Conn {
    async fn open(cfg: &JanusRoom) -> Result<Conn, JanusError> {
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
    async fn check_pin(&self, cfg: &JanusRoom) -> Result<(), JanusError> {
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
    async fn list(&self, cfg: &JanusRoom) -> Result<Vec<Publisher>, JanusError> {
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

struct Feed {
    publisher: Publisher,
    tracks: Tracks,
    audio: Arc<Slot>,
    video: Arc<Slot>,
    announced_tracks: bool,
    handle: Option<u64>,
    pipeline: Option<FeedPipeline>,
    health: health::Tracker,
    /// The subscription's video `mid`, once subscribed.
    video_mid: Option<String>,
    /// The simulcast layer asked of Janus for this subscription.
    layer: Option<u8>,
    /// The simulcast layer Janus reports it relays (none: not simulcast, or not yet said).
    receiving: Option<u8>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(p) = self.pipeline.take() {
            p.stop();
        }
    }
}

fn pid(id: u64) -> ParticipantId {
    ParticipantId(id.to_string())
}

impl RoomConnector for JanusRoom {
    async fn connect(&self) -> Result<RoomHandle, crate::Error> {
        let conn = Conn::open(self).await.map_err(join_error)?;
        info!(url = %self.url, room = self.room, publishers = conn.publishers.len(),
            "connected to the Janus room (subscriber only, hidden)");
        let (tx, rx) = mpsc::channel(256);
        let cfg = self.clone();
        let span = info_span!("janus", room = self.room);
        let board = FeedBoard::default();
        let (shown, heights) = ShownSizes::channel();
        let task = tokio::spawn(run(cfg, conn, tx, board.clone(), heights).instrument(span));
        Ok(RoomHandle {
            events: rx,
            feeds: board,
            shown,
            leave: Box::new(move || task.abort()),
        })
    }
}

/// How tall each participant's video is drawn, from the job.
type Heights = tokio::sync::watch::Receiver<Option<crate::room::Heights>>;

struct Room {
    cfg: JanusRoom,
    tx: mpsc::Sender<RoomEvent>,
    feeds: HashMap<u64, Feed>,
    board: FeedBoard,
    heights: Heights,
}

impl Room {
    async fn send(&self, ev: RoomEvent) -> bool {
        self.tx.send(ev).await.is_ok()
    }

    /// Reads every feed's health onto the board (all feeds' statistics asked at once, so a
    /// feed that does not answer holds the room up for its one-second limit, not per feed).
    async fn read_health(&mut self) {
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
    async fn add_publishers(&mut self, conn: &Conn, list: Vec<Publisher>) {
        let ids: Vec<u64> = list.iter().map(|p| p.id).collect();
        for p in list {
            self.register(p).await;
        }
        self.subscribe(conn, &ids).await;
    }

    async fn register(&mut self, p: Publisher) {
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
                    health: health::Tracker::default(),
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
    async fn subscribe(&mut self, conn: &Conn, ids: &[u64]) {
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
    async fn subscribed(&mut self, id: u64, result: Result<(), JanusError>) {
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
    async fn pick_layers(&mut self, conn: &Conn) {
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

    async fn remove(&mut self, conn: &Conn, id: u64, left: bool) {
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

async fn run(
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
async fn on_list(room: &mut Room, conn: &Conn, list: Vec<Publisher>) -> bool {
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
async fn on_event(room: &mut Room, _conn: &Conn, ev: &Value) -> bool {
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

#[cfg(test)]
mod tests;

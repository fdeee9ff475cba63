//! Keeps a job's web page shown ([`PageLayer`]): checks it loads, renders it, runs the script
//! that connects it to roomcast, follows the tiles it marks, and falls back to the room's own
//! layout when the page fails — it never stops or blanks the recording — trying it again
//! later.
//!
//! A page is shown once its script says hello from the page's own address; it fails when its
//! address does not answer 2xx within [`CHECK_TIMEOUT`], when it has not said hello within
//! [`LOAD_TIMEOUT`] of rendering, when it is silent for [`SILENCE_TIMEOUT`], when its renderer
//! reports an error or uses more than its memory cap.

use crate::layout::{Layout, Tile};
use crate::model::page::{PagePhase, PageStatus};
use crate::page::channel::{Channel, Layer, PageMessage};
use crate::page::{bootstrap_script, regions_layout, PageSpec};
use crate::pipeline::page::{PageOverlay, PageView, PageViewEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Longest wait for the page's address to answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a rendered page's script to say hello.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A shown page silent this long has failed (hung or crashed).
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(3);
/// First wait before a failed page is tried again (doubling up to [`MAX_RETRY`]).
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Largest resident memory of a page's renderer.
pub const MAX_RSS: u64 = 1024 << 20;
/// How often timeouts are checked and the script re-run while the page is not heard.
const TICK: Duration = Duration::from_millis(500);

enum Internal {
    Checked(Result<(), String>),
    /// From the view of this generation (a replaced view's end arrives late and is ignored).
    View(u64, PageViewEvent),
}

enum Phase {
    Checking,
    /// Rendering; `hello` once its script runs in it (shown once a frame has arrived too).
    Loading {
        since: Instant,
        injected: Instant,
        hello: bool,
    },
    Shown {
        heard: Instant,
    },
    Fallback {
        retry_at: Instant,
    },
}

/// What the job must do after the page moved on.
#[derive(Debug, Default)]
pub(crate) struct PageUpdate {
    /// The tiles' layout changed (the page marked other boxes, or the page fell back).
    pub relayout: bool,
    /// The page's status changed: record and announce it.
    pub status: Option<PageStatus>,
}

/// A job's page, from check to fallback.
pub(crate) struct PageLayer {
    spec: PageSpec,
    canvas: (u32, u32),
    overlay: Arc<PageOverlay>,
    /// This page's generation in the overlay.
    generation: u64,
    channel: Channel,
    view: Option<PageView>,
    tx: mpsc::UnboundedSender<Internal>,
    rx: mpsc::UnboundedReceiver<Internal>,
    phase: Phase,
    layout: Option<Layout>,
    /// The page asked to be drawn under the tiles.
    below: bool,
    failures: u32,
    status: PageStatus,
    max_rss: u64,
    /// Kept across calls of [`PageLayer::next`]: the runner drops that future whenever
    /// something else happens first, and a timer made anew each call would never fire in a
    /// busy room.
    tick: tokio::time::Interval,
}

impl PageLayer {
    /// Starts showing `spec` on a `canvas`-sized composite whose page overlay is `overlay`.
    pub(crate) async fn start(
        spec: PageSpec,
        canvas: (u32, u32),
        overlay: Arc<PageOverlay>,
        max_rss: u64,
    ) -> std::io::Result<PageLayer> {
        let channel = Channel::open().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let status = PageStatus {
            url: spec.shown_url(),
            phase: PagePhase::Loading,
            error: None,
            failures: 0,
        };
        let generation = overlay.generation();
        let mut layer = PageLayer {
            spec,
            canvas,
            overlay,
            generation,
            channel,
            view: None,
            tx,
            rx,
            phase: Phase::Checking,
            layout: None,
            below: false,
            failures: 0,
            status,
            max_rss,
            tick: {
                let mut t = tokio::time::interval(TICK);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            },
        };
        layer.check();
        Ok(layer)
    }

    /// The page's status.
    pub(crate) fn status(&self) -> &PageStatus {
        &self.status
    }

    /// Whether the page is on screen.
    pub(crate) fn is_shown(&self) -> bool {
        matches!(self.phase, Phase::Shown { .. })
    }

    /// The layout the page's marked tiles make, while it is shown and marks any.
    pub(crate) fn layout(&self) -> Option<&Layout> {
        match self.phase {
            Phase::Shown { .. } => self.layout.as_ref(),
            _ => None,
        }
    }

    /// Sends the room as it stands to the page.
    pub(crate) fn send_room(
        &self,
        tiles: &[Tile],
        layout: &str,
        started_ms: u64,
        chat: &std::collections::VecDeque<crate::model::page::ChatLine>,
    ) {
        let sharing: std::collections::HashSet<&str> = tiles
            .iter()
            .filter(|t| t.id.screen)
            .map(|t| t.id.participant.as_str())
            .collect();
        let participants: Vec<_> = tiles
            .iter()
            .filter(|t| !t.id.screen)
            .map(|t| {
                serde_json::json!({
                    "id": t.id.participant,
                    "name": t.display_name,
                    "talking": t.talker_rank.is_some(),
                    "video": t.shows_video(),
                    "video_muted": t.video_muted,
                    "paused": t.paused,
                    "spotlight": t.spotlighted,
                    "pinned": t.pinned,
                    "screen": sharing.contains(t.id.participant.as_str()),
                })
            })
            .collect();
        self.channel.send_state(&serde_json::json!({
            "participants": participants,
            "layout": layout,
            "recording_started_ms": started_ms,
            "chat": chat,
        }));
    }

    fn check(&mut self) {
        self.phase = Phase::Checking;
        let url = self.spec.url.clone();
        let tx = self.tx.clone();
        if self.spec.is_builtin() {
            let _ = tx.send(Internal::Checked(Ok(())));
            return;
        }
        tokio::spawn(async move {
            let _ = tx.send(Internal::Checked(answers(&url).await));
        });
    }

    /// Waits for the page to move on (a message, a failure, a timeout, a retry).
    pub(crate) async fn next(&mut self) -> PageUpdate {
        loop {
            let update = tokio::select! {
                msg = self.channel.recv() => match msg {
                    Some(m) => self.on_message(m),
                    None => PageUpdate::default(),
                },
                Some(ev) = self.rx.recv() => self.on_internal(ev),
                _ = self.tick.tick() => self.on_tick(),
            };
            if update.relayout || update.status.is_some() {
                return update;
            }
        }
    }

    fn on_internal(&mut self, ev: Internal) -> PageUpdate {
        match ev {
            Internal::Checked(Ok(())) if matches!(self.phase, Phase::Checking) => self.render(),
            Internal::Checked(Err(e)) if matches!(self.phase, Phase::Checking) => self.fail(e),
            Internal::View(g, PageViewEvent::Failed(e))
                if g == self.generation && self.view.is_some() =>
            {
                self.fail(format!("the page's renderer failed: {e}"))
            }
            _ => PageUpdate::default(),
        }
    }

    fn render(&mut self) -> PageUpdate {
        debug!(url = %self.status.url, "the custom view answers: rendering it");
        let tx = self.tx.clone();
        let generation = self.generation;
        let started = tokio::task::block_in_place(|| {
            PageView::start(
                &self.spec.url,
                self.canvas,
                &[self.channel.address().to_string()],
                (self.overlay.clone(), self.generation),
                move |ev| {
                    let _ = tx.send(Internal::View(generation, ev));
                },
            )
        });
        match started {
            Ok(mut view) => {
                view.run_javascript(&bootstrap_script(
                    self.channel.address(),
                    self.spec.chat_overlay,
                ));
                self.view = Some(view);
                let now = Instant::now();
                self.phase = Phase::Loading {
                    since: now,
                    injected: now,
                    hello: false,
                };
                PageUpdate::default()
            }
            Err(e) => self.fail(format!("the page could not be rendered: {e}")),
        }
    }

    fn on_message(&mut self, msg: PageMessage) -> PageUpdate {
        if !matches!(msg, PageMessage::Alive) {
            debug!(?msg, "custom view says");
        }
        let now = Instant::now();
        match msg {
            PageMessage::Hello { href, layer } => {
                if href.is_empty() || href == "about:blank" || self.view.is_none() {
                    return PageUpdate::default();
                }
                self.set_layer(layer);
                match &mut self.phase {
                    Phase::Loading { hello, .. } => {
                        *hello = true;
                        self.shown_once_drawn()
                    }
                    Phase::Shown { heard } => {
                        *heard = now;
                        PageUpdate::default()
                    }
                    _ => PageUpdate::default(),
                }
            }
            PageMessage::Alive => {
                if let Phase::Shown { heard } = &mut self.phase {
                    *heard = now;
                }
                PageUpdate::default()
            }
            PageMessage::Regions {
                viewport,
                regions,
                layer,
            } => {
                let shown = matches!(self.phase, Phase::Shown { .. });
                if !shown && !matches!(self.phase, Phase::Loading { .. }) {
                    return PageUpdate::default();
                }
                self.set_layer(layer);
                let layout = match regions_layout(viewport, &regions) {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "the page's marked tiles are not a layout; ignored");
                        None
                    }
                };
                if layout != self.layout {
                    self.layout = layout;
                    return PageUpdate {
                        relayout: shown,
                        status: None,
                    };
                }
                PageUpdate::default()
            }
        }
    }

    fn on_tick(&mut self) -> PageUpdate {
        let now = Instant::now();
        match &mut self.phase {
            Phase::Checking => PageUpdate::default(),
            Phase::Loading { hello: true, .. } if self.overlay.frames(self.generation) > 0 => {
                self.shown_once_drawn()
            }
            Phase::Loading {
                since, injected, ..
            } => {
                if now.duration_since(*since) >= LOAD_TIMEOUT {
                    let secs = LOAD_TIMEOUT.as_secs();
                    return self.fail(format!("the page did not load within {secs} s"));
                }
                if now.duration_since(*injected) >= Duration::from_secs(1) {
                    *injected = now;
                    self.inject();
                }
                PageUpdate::default()
            }
            Phase::Shown { heard } => {
                let silent = now.duration_since(*heard);
                if silent >= SILENCE_TIMEOUT {
                    let secs = SILENCE_TIMEOUT.as_secs();
                    return self.fail(format!("the page stopped answering for {secs} s"));
                }
                if silent >= Duration::from_secs(1) {
                    // The page navigated (its script is gone) or is busy: run it again.
                    self.inject();
                }
                let rss = self.view.as_ref().and_then(|v| renderer_rss(v.pid()));
                if let Some(rss) = rss.filter(|r| *r > self.max_rss) {
                    return self.fail(format!(
                        "the page used {} MiB, more than its {} MiB",
                        rss >> 20,
                        self.max_rss >> 20
                    ));
                }
                PageUpdate::default()
            }
            Phase::Fallback { retry_at } => {
                if now >= *retry_at {
                    info!(url = %self.status.url, "trying the custom view again");
                    self.check();
                }
                PageUpdate::default()
            }
        }
    }

    /// Draws the page under the tiles or over them, as it asks.
    fn set_layer(&mut self, layer: Layer) {
        let below = layer == Layer::Background;
        if below != self.below {
            info!(url = %self.status.url, ?layer, "custom view layer");
            self.below = below;
        }
        self.overlay.set_below(self.generation, below);
    }

    /// Shown: its script said hello and its first frame arrived.
    fn shown_once_drawn(&mut self) -> PageUpdate {
        if self.overlay.frames(self.generation) == 0 {
            return PageUpdate::default();
        }
        self.overlay.activate(self.generation);
        self.phase = Phase::Shown {
            heard: Instant::now(),
        };
        info!(url = %self.status.url, "custom view shown");
        self.failures = 0;
        let mut update = self.set_status(PagePhase::Shown, None);
        // Regions reported before this were held back.
        update.relayout = self.layout.is_some();
        update
    }

    fn inject(&mut self) {
        if let Some(view) = &mut self.view {
            debug!("running the custom view's script");
            view.run_javascript(&bootstrap_script(
                self.channel.address(),
                self.spec.chat_overlay,
            ));
        }
    }

    fn fail(&mut self, reason: String) -> PageUpdate {
        warn!(url = %self.status.url, reason = %reason,
            "custom view failed: the room's own layout is shown");
        if let Some(view) = self.view.take() {
            tokio::task::block_in_place(|| drop(view));
        }
        self.overlay.clear(self.generation);
        self.generation = self.overlay.generation();
        self.layout = None;
        let wait = crate::util::backoff(self.failures, FIRST_RETRY, MAX_RETRY);
        self.failures += 1;
        self.phase = Phase::Fallback {
            retry_at: Instant::now() + wait,
        };
        let mut update = self.set_status(PagePhase::Fallback, Some(reason));
        update.relayout = true;
        update
    }

    fn set_status(&mut self, phase: PagePhase, error: Option<String>) -> PageUpdate {
        self.status.phase = phase;
        self.status.error = error;
        self.status.failures = self.failures;
        PageUpdate {
            relayout: false,
            status: Some(self.status.clone()),
        }
    }
}

impl Drop for PageLayer {
    fn drop(&mut self) {
        if let Some(view) = self.view.take() {
            // Ending the renderer waits for its pipeline; never on an async worker thread's
            // time budget unannounced.
            match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::block_in_place(|| drop(view)),
                Err(_) => drop(view),
            }
        }
        self.overlay.clear(self.generation);
    }
}

/// Whether `url` answers with a 2xx status within [`CHECK_TIMEOUT`] (its body read whole, so a
/// page that never finishes sending fails too).
async fn answers(url: &str) -> Result<(), String> {
    // Redirects are followed only to origins the page may reach (the renderer's guard holds
    // it to the same list): a page cannot send the check to a local service.
    let allowed = crate::page::guard::Allowed::new(url, &crate::page::guard::configured_origins());
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let u = attempt.url();
        let port = u.port_or_known_default().unwrap_or(0);
        let host = u.host_str().unwrap_or_default().trim_matches(['[', ']']);
        if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else if allowed.allows(u.scheme(), host, port) {
            attempt.follow()
        } else {
            let to = format!("{}://{host}:{port}", u.scheme());
            attempt.error(format!(
                "redirected to {to}, which is not an allowed origin"
            ))
        }
    });
    let client = reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .redirect(policy)
        .build()
        .map_err(|e| e.to_string())?;
    let shown = PageSpec::new(url).shown_url();
    let secs = CHECK_TIMEOUT.as_secs();
    // The request's own text names the URL with its query string: left out.
    let why = |e: reqwest::Error, late: &str, failed: &str| {
        if e.is_timeout() {
            format!("{shown} {late} within {secs} s")
        } else {
            // The cause chain says why (a refused redirect names its origin).
            let e = e.without_url();
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            format!("{shown} {failed}: {text}")
        }
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| why(e, "did not answer", "could not be fetched"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{shown} answered HTTP {}", status.as_u16()));
    }
    resp.bytes()
        .await
        .map_err(|e| why(e, "did not finish loading", "could not be read"))?;
    Ok(())
}

/// Resident memory of a page's renderer process and its children (WebKit's web and network
/// processes).
fn renderer_rss(pid: u32) -> Option<u64> {
    let rss = |p: &std::path::Path| -> Option<u64> {
        let status = std::fs::read_to_string(p.join("status")).ok()?;
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        Some(kb.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
    };
    let root = std::path::Path::new("/proc").join(pid.to_string());
    let mut total = rss(&root)?;
    let parent = pid.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = entry.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1));
        if ppid == Some(parent.as_str()) {
            total += rss(&path).unwrap_or(0);
        }
    }
    Some(total)
}

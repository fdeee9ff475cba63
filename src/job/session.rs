//! A room's session: one room connection, one composite and one encode shared by every job of
//! the room that runs in this process with the same preset, watermark and page layer — its
//! live recording, its stream and their HLS outputs.
//!
//! Each job is a *member*: its own outputs (the MP4 segment, its RTMP destinations, its HLS),
//! its own stop, duration limit, start timeout and disk floor, and its own result. A member
//! that ends while others run takes only its outputs away (the file is ended and finalized,
//! its destinations and HLS stop); the last member's end, or the room's (destroyed,
//! disconnected, stalled, a pipeline error), ends the session as a single job always ended.
//!
//! What is drawn is shared: a layout or page change from any member changes what every output
//! shows. Room events and chat for the page are taken from the oldest member (every member's
//! job hears the same ones).
//!
//! The first member's file is written by the composite's own muxer; a recording that joins a
//! running session records through [`Mp4Tap`].

use super::live::Job;
use super::runner::{
    EndReason, JobCommand, JobEvent, Recording, RecordingSpec, EOS_TIMEOUT, PROGRESS_INTERVAL,
    STALL_TIMEOUT,
};
use super::RoomState;
use crate::codes::Code;
use crate::layout::parse_color;
use crate::pipeline::composite::{ErrorOrigin, Output};
use crate::pipeline::hls::HlsOutput;
use crate::pipeline::mp4::finalize_with_audio_delay;
use crate::pipeline::recorder::Mp4Tap;
use crate::pipeline::rtmp::{DestinationState, DestinationStatus};
use crate::pipeline::source::Timing;
use crate::pipeline::{bus, Composite, CompositeOptions, PipelineError};
use crate::room::{RoomEvent, RoomHandle};
use crate::Error;
use futures::StreamExt;
use gst::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

/// How long a joined recording's muxer gets to finish once the session's pipeline drained
/// (the end of stream reached it through its tap already).
const TAP_FINISH_TIMEOUT: Duration = Duration::from_secs(3);

/// What sets a composite apart: jobs that agree on these share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    room: String,
    conf: String,
    preset: String,
    watermark: Option<PathBuf>,
    page_layer: bool,
}

impl Key {
    fn of(spec: &RecordingSpec) -> Key {
        Key {
            room: spec.room_id.clone(),
            conf: spec.conf_num.clone(),
            preset: spec.preset.name.clone(),
            watermark: spec.watermark.clone(),
            page_layer: spec.page_layer || spec.page.is_some(),
        }
    }
}

enum Msg {
    /// A job joining; told on `ack` once its outputs run (dropped: start a session of its own).
    Join(Box<Member>, oneshot::Sender<()>),
    Command(u64, JobCommand),
}

/// The running sessions of this process.
static SESSIONS: LazyLock<Mutex<HashMap<Key, mpsc::UnboundedSender<Msg>>>> =
    LazyLock::new(Default::default);
static NEXT_MEMBER: AtomicU64 = AtomicU64::new(1);

fn sessions() -> std::sync::MutexGuard<'static, HashMap<Key, mpsc::UnboundedSender<Msg>>> {
    SESSIONS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a member's MP4 goes.
enum Mp4Out {
    None,
    /// The composite's own muxer (the session's first member).
    Main,
    /// A tap on the running composite.
    Tapped(Mp4Tap),
}

/// One job's part of a session.
struct Member {
    id: u64,
    spec: RecordingSpec,
    path: Option<PathBuf>,
    events: Option<mpsc::UnboundedSender<JobEvent>>,
    done: oneshot::Sender<Result<Recording, Error>>,
    mp4: Mp4Out,
    destinations: Vec<u32>,
    hls: Option<HlsOutput>,
    journal: Option<PathBuf>,
    started: Instant,
    deadline: Option<Instant>,
    went_live: bool,
}

impl Member {
    fn send(&self, ev: JobEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(ev);
        }
    }
}

/// Runs one job's outputs: in the room's running session when there is one it can share,
/// else in a new session. Returns when this job's outputs have ended.
pub(super) async fn run(
    spec: RecordingSpec,
    path: Option<PathBuf>,
    room: RoomHandle,
    commands: mpsc::Receiver<JobCommand>,
    events: Option<mpsc::UnboundedSender<JobEvent>>,
) -> Result<Recording, Error> {
    if std::env::var_os("ROOMCAST_FAULT_COMPOSITE_FAILS").is_some() {
        (room.leave)();
        return Err(crate::pipeline::PipelineError::setup(
            "the composite could not be built (ROOMCAST_FAULT_COMPOSITE_FAILS)",
        )
        .into());
    }
    let key = Key::of(&spec);
    let id = NEXT_MEMBER.fetch_add(1, Ordering::Relaxed);
    let member = |done| {
        Box::new(Member {
            id,
            spec: spec.clone(),
            path: path.clone(),
            events: events.clone(),
            done,
            mp4: Mp4Out::None,
            destinations: Vec::new(),
            hls: None,
            journal: None,
            started: Instant::now(),
            deadline: None,
            went_live: false,
        })
    };
    // The room's session, or this job's own, registered at once so that a job of the room
    // starting meanwhile joins it (its join waits until the composite runs).
    let (tx, rx) = mpsc::unbounded_channel();
    let running = if sharing() {
        let mut s = sessions();
        match s.get(&key) {
            Some(other) if !other.is_closed() => Some(other.clone()),
            _ => {
                s.insert(key.clone(), tx.clone());
                None
            }
        }
    } else {
        None
    };
    if let Some(other) = running {
        let (done_tx, done_rx) = oneshot::channel();
        let (ack_tx, ack_rx) = oneshot::channel();
        if other.send(Msg::Join(member(done_tx), ack_tx)).is_ok() && ack_rx.await.is_ok() {
            info!("sharing the room's running composite");
            (room.leave)();
            forward(commands, other, id);
            return done_rx.await.unwrap_or_else(|_| Err(gone()));
        }
        debug!("the room's session ended before this job joined it: starting one");
        if sharing() {
            sessions().insert(key.clone(), tx.clone());
        }
    }
    let (done_tx, done_rx) = oneshot::channel();
    let span = info_span!("session", room = %spec.room_id, conf = %spec.conf_num);
    let started = Session::start(key.clone(), *member(done_tx), room, rx, tx.clone())
        .instrument(span.clone())
        .await;
    let session = match started {
        Ok(s) => s,
        Err(e) => {
            unregister(&key, &tx);
            return Err(e);
        }
    };
    forward(commands, tx, id);
    tokio::spawn(session.run().instrument(span));
    done_rx.await.unwrap_or_else(|_| Err(gone()))
}

/// Removes `key`'s session from the registry if it is still `tx`'s.
fn unregister(key: &Key, tx: &mpsc::UnboundedSender<Msg>) {
    let mut s = sessions();
    if s.get(key).is_some_and(|t| t.same_channel(tx)) {
        s.remove(key);
    }
}

/// Whether jobs of one room share a composite: yes unless `ROOMCAST_SHARED_COMPOSITE` is
/// `0`, `false` or `off` (then every job builds its own, as separate processes would).
pub fn sharing() -> bool {
    static ON: LazyLock<bool> = LazyLock::new(|| {
        !matches!(
            std::env::var("ROOMCAST_SHARED_COMPOSITE").as_deref(),
            Ok("0" | "false" | "off")
        )
    });
    *ON
}

fn gone() -> Error {
    PipelineError::setup("the room's session ended without a result").into()
}

/// Hands a member's commands to its session.
fn forward(mut commands: mpsc::Receiver<JobCommand>, tx: mpsc::UnboundedSender<Msg>, id: u64) {
    tokio::spawn(async move {
        while let Some(cmd) = commands.recv().await {
            if tx.send(Msg::Command(id, cmd)).is_err() {
                break;
            }
        }
    });
}

/// A copy of `e` for another member ending for the same cause.
fn share(e: &Error) -> Error {
    Error::Job {
        code: e.code(),
        message: e.to_string(),
    }
}

struct Session {
    key: Key,
    me: mpsc::UnboundedSender<Msg>,
    job: Job,
    pipeline: gst::Pipeline,
    bus: gst::bus::BusStream,
    room_events: mpsc::Receiver<crate::room::RoomEvent>,
    feeds: crate::model::feed::FeedBoard,
    leave: Option<Box<dyn FnOnce() + Send>>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// What the media side reports (destination states, the page): routed to members.
    internal: mpsc::UnboundedReceiver<JobEvent>,
    members: Vec<Member>,
    started: Instant,
    wedge_at: Option<Duration>,
    ended_early: Option<EndReason>,
}

impl Session {
    /// Builds the composite for `first`, joins it to the room and starts its outputs.
    async fn start(
        key: Key,
        mut first: Member,
        mut room: RoomHandle,
        rx: mpsc::UnboundedReceiver<Msg>,
        me: mpsc::UnboundedSender<Msg>,
    ) -> Result<Session, Error> {
        let spec = first.spec.clone();
        let def = spec.layout.def().clone();
        let opts = CompositeOptions {
            preset: spec.preset.clone(),
            timing: Timing::Live,
            output: match &first.path {
                Some(p) => Output::Mp4(p.clone()),
                None => Output::Discard,
            },
            background: def.background.as_deref().and_then(parse_color).unwrap_or(0),
            background_image: def.background_image.clone(),
            label: def.label.clone(),
            watermark: spec.watermark.clone(),
            page_layer: key.page_layer,
        };
        let composite = tokio::task::block_in_place(|| Composite::new(&opts))?;
        let pipeline = composite.pipeline().clone();
        let bus = pipeline
            .bus()
            .ok_or_else(|| PipelineError::setup("no bus"))?
            .stream();
        let (itx, internal) = mpsc::unbounded_channel();
        let mut job = Job {
            composite,
            destinations: Vec::new(),
            next_destination: 0,
            events: Some(itx),
            state: RoomState::new(),
            layout: spec.layout.clone(),
            page: None,
            next_page: None,
            chat: std::collections::VecDeque::new(),
            started_ms: crate::clock::now_ms(),
            shown: room.shown.clone(),
        };
        if let Some(page) = spec.page.clone() {
            job.set_page(Some(page)).await;
        }
        // Whoever is already in the room is built before the clock starts, so the recording
        // opens on them (sound and picture from its first frame) rather than on an empty
        // canvas.
        let ended_early = match waiting(&mut room.events) {
            Some(present) => job.on_room(present)?,
            None => {
                job.relayout()?;
                None
            }
        };
        let mut wedge_at = stall_fault();
        if wedge_at.is_some_and(|at| at.is_zero()) {
            wedge_at = None;
            warn!("fault injection: the video encoder's input is wedged from the start");
            job.composite.wedge();
        }
        tokio::task::block_in_place(|| pipeline.set_state(gst::State::Playing))
            .map_err(PipelineError::setup)?;
        info!(preset = %spec.preset.name, layout = %def.name, "recording started");
        if first.path.is_some() {
            first.mp4 = Mp4Out::Main;
        }
        let RoomHandle {
            events: room_events,
            feeds,
            leave,
            ..
        } = room;
        let mut session = Session {
            key,
            me,
            job,
            pipeline,
            bus,
            room_events,
            feeds,
            leave: Some(leave),
            rx,
            internal,
            members: Vec::new(),
            started: Instant::now(),
            wedge_at,
            ended_early,
        };
        session.attach(&mut first)?;
        session.members.push(first);
        Ok(session)
    }

    /// Starts `m`'s outputs on the running composite.
    fn attach(&mut self, m: &mut Member) -> Result<(), Error> {
        let joining = !self.members.is_empty();
        if joining {
            if let Some(path) = &m.path {
                let p = self.pipeline.clone();
                let tap = tokio::task::block_in_place(|| Mp4Tap::attach(&p, path))?;
                m.mp4 = Mp4Out::Tapped(tap);
            }
        }
        m.started = Instant::now();
        m.deadline = m.spec.max_duration.map(|d| m.started + d);
        m.send(JobEvent::Started {
            file: m.path.clone(),
        });
        for url in m.spec.rtmp.clone() {
            self.job.add_destination(url)?;
            m.destinations.push(self.job.next_destination);
        }
        if let Some(h) = &m.spec.hls {
            m.hls = Some(start_hls(
                &m.spec,
                h,
                m.path.as_deref(),
                &self.pipeline,
                &m.events,
            )?);
        }
        m.journal = m.path.as_deref().map(super::chat::journal_path);
        if joining {
            info!(
                members = self.members.len() + 1,
                "a job joined the room's composite"
            );
            // The newest request's layout is the one shown (as a later layout change would).
            if self.job.layout.def() != m.spec.layout.def() {
                self.job.layout = m.spec.layout.clone();
                self.job.relayout()?;
            }
        }
        Ok(())
    }

    async fn run(mut self) {
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome: Result<EndReason, Error> = loop {
            if let Some(reason) = self.ended_early.take() {
                break Ok(reason);
            }
            let deadline = self.members.iter().filter_map(|m| m.deadline).min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let mut ends: Vec<(u64, Result<EndReason, Error>)> = Vec::new();
            tokio::select! {
                ev = self.room_events.recv() => match ev {
                    Some(first) => {
                        let mut events = vec![first];
                        events.extend(waiting(&mut self.room_events).unwrap_or_default());
                        match self.job.on_room(events) {
                            Ok(Some(reason)) => break Ok(reason),
                            Ok(None) => {}
                            Err(e) => break Err(e),
                        }
                    }
                    None => break Ok(EndReason::Disconnected),
                },
                msg = self.rx.recv() => match msg {
                    Some(Msg::Join(mut m, ack)) => {
                        match self.attach(&mut m) {
                            Ok(()) => {
                                let _ = ack.send(());
                                self.members.push(*m);
                            }
                            Err(e) => {
                                // What it had started (its file, destinations) ends with it.
                                warn!(error = %e, "a job could not join the room's composite");
                                let _ = ack.send(());
                                self.members.push(*m);
                                self.detach(self.members.len() - 1, Err(e));
                            }
                        }
                    }
                    Some(Msg::Command(id, cmd)) => match self.command(id, cmd).await {
                        Ok(Some(end)) => ends.push((id, end)),
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    },
                    None => {}
                },
                ev = self.internal.recv() => if let Some(ev) = ev {
                    self.route(ev);
                },
                update = self.job.page_update() => {
                    if let Err(e) = self.job.on_page(update) {
                        break Err(e.into());
                    }
                }
                _ = progress.tick() => {
                    if self.wedge_at.is_some_and(|at| self.started.elapsed() >= at) {
                        self.wedge_at = None;
                        warn!("fault injection: wedging the video encoder's input");
                        self.job.composite.wedge();
                    }
                    if self.job.composite.has_encoded()
                        && self.job.composite.output_idle().is_some_and(|idle| idle >= STALL_TIMEOUT)
                    {
                        warn!(secs = STALL_TIMEOUT.as_secs(), "the mixers produced nothing: ending the segment");
                        break Ok(EndReason::Stalled);
                    }
                    ends = self.check_members();
                },
                msg = self.bus.next() => {
                    let Some(msg) = msg else { continue };
                    if let Err(e) = bus::check(&msg) {
                        let origin = msg.src().map(|s| self.job.composite.classify_error(s));
                        match origin {
                            Some(ErrorOrigin::Detached) => debug!(error = %e, "error from a removed input"),
                            Some(ErrorOrigin::Input(input)) => {
                                warn!(error = %e, ?input, "input failed, dropping it");
                                let r = tokio::task::block_in_place(|| self.job.composite.drop_input(&input));
                                if let Err(e) = r.and_then(|_| self.job.relayout()) {
                                    break Err(e.into());
                                }
                            }
                            _ => break Err(e.into()),
                        }
                    }
                }
                _ = sleep => {
                    let now = Instant::now();
                    ends = self
                        .members
                        .iter()
                        .filter(|m| m.deadline.is_some_and(|d| d <= now))
                        .map(|m| (m.id, Ok(EndReason::DurationReached)))
                        .collect();
                }
            }
            let mut last = None;
            for (id, end) in ends {
                let Some(i) = self.members.iter().position(|m| m.id == id) else {
                    continue;
                };
                if self.members.len() == 1 {
                    last = Some(end);
                    break;
                }
                self.detach(i, end);
            }
            if let Some(end) = last {
                break end;
            }
        };
        self.teardown(outcome).await;
    }

    /// Applies member `id`'s command; `Some` when it ends that member.
    async fn command(
        &mut self,
        id: u64,
        cmd: JobCommand,
    ) -> Result<Option<Result<EndReason, Error>>, Error> {
        let Some(i) = self.members.iter().position(|m| m.id == id) else {
            return Ok(None);
        };
        let lead = i == 0;
        match cmd {
            JobCommand::Stop => return Ok(Some(Ok(EndReason::Stopped))),
            JobCommand::SetLayout(layout) => {
                info!(layout = %layout.def().name, "layout changed");
                self.job.layout = *layout;
                self.job.relayout()?;
            }
            JobCommand::AddRtmp(url) => match self.job.add_destination(url) {
                Ok(()) => self.members[i].destinations.push(self.job.next_destination),
                Err(e) => warn!(error = %e, code = %e.code(), "RTMP destination not added"),
            },
            JobCommand::RemoveRtmp(d) => {
                if self.members[i].destinations.contains(&d) {
                    self.members[i].destinations.retain(|x| *x != d);
                    self.job.remove_destination(d).await;
                }
            }
            JobCommand::SetRtmp(urls) => {
                for d in std::mem::take(&mut self.members[i].destinations) {
                    self.job.remove_destination(d).await;
                }
                for url in urls {
                    match self.job.add_destination(url) {
                        Ok(()) => self.members[i].destinations.push(self.job.next_destination),
                        Err(e) => warn!(error = %e, code = %e.code(), "RTMP destination not added"),
                    }
                }
            }
            JobCommand::SetPage(page) => {
                self.job.set_page(page).await;
                self.job.relayout()?;
            }
            JobCommand::Chat(line) => {
                journal_chat(self.members[i].journal.as_deref(), &line);
                if lead {
                    self.job.on_chat(line);
                }
            }
            JobCommand::Room(events) if lead => {
                if let Some(reason) = self.job.on_room(events)? {
                    // The room is gone for everyone.
                    self.ended_early = Some(reason);
                }
            }
            JobCommand::Room(_) => {}
        }
        Ok(None)
    }

    /// A destination's or the page's news, to whom it concerns.
    fn route(&self, ev: JobEvent) {
        route(&self.members, ev);
    }

    /// Each member's own limits (start timeout, disk floor, its file's writer), and its
    /// progress report; the members that must end.
    fn check_members(&mut self) -> Vec<(u64, Result<EndReason, Error>)> {
        let mut ends = Vec::new();
        let pos = self.pipeline.query_position::<gst::ClockTime>();
        let feeds = self.feeds.lock().map(|f| f.clone()).unwrap_or_default();
        for (i, m) in self.members.iter_mut().enumerate() {
            m.went_live |= self.job.destinations.iter().any(|d| {
                m.destinations.contains(&d.id) && d.status().state == DestinationState::Live
            });
            if let Some(e) = start_timed_out(&m.spec, &self.job, m.went_live, m.started.elapsed()) {
                ends.push((m.id, Err(e)));
                continue;
            }
            if m.spec.record && m.spec.min_free_bytes > 0 {
                let free = crate::util::free_bytes(&m.spec.out_dir);
                if free.is_some_and(|f| f < m.spec.min_free_bytes) {
                    warn!(
                        free_bytes = free.unwrap_or(0),
                        floor = m.spec.min_free_bytes,
                        "free disk space below the floor: ending the segment"
                    );
                    ends.push((m.id, Ok(EndReason::DiskLow)));
                    continue;
                }
            }
            if let Mp4Out::Tapped(t) = &m.mp4 {
                if let Some(e) = t.failed() {
                    warn!(error = %e, "the segment's file could not be written");
                    ends.push((
                        m.id,
                        Err(Error::Job {
                            code: Code::RecordError,
                            message: format!("the segment could not be written: {e}"),
                        }),
                    ));
                    continue;
                }
            }
            if let Some(pos) = pos {
                m.send(JobEvent::Progress {
                    media: Duration::from_nanos(pos.nseconds()),
                    wall: self.started.elapsed(),
                    participants: self.job.state.len(),
                    feeds: feeds.clone(),
                    shared: i > 0,
                });
            }
        }
        ends
    }

    /// Ends member `i`'s outputs while the others go on; its result is sent once its file
    /// is finalized.
    fn detach(&mut self, i: usize, end: Result<EndReason, Error>) {
        let mut m = self.members.remove(i);
        info!(members = self.members.len(), reason = ?end.as_ref().ok(),
            "a job left the room's composite");
        let mut destinations = Vec::new();
        let mut k = 0;
        while k < self.job.destinations.len() {
            if m.destinations.contains(&self.job.destinations[k].id) {
                destinations.push(self.job.destinations.remove(k));
            } else {
                k += 1;
            }
        }
        let main_done = match m.mp4 {
            Mp4Out::Main => tokio::task::block_in_place(|| self.job.composite.end_recording()),
            _ => None,
        };
        let mp4 = std::mem::replace(&mut m.mp4, Mp4Out::None);
        let audio_delay = match &mp4 {
            Mp4Out::Tapped(t) => t.audio_delay().as_nanos() as i64,
            Mp4Out::Main => self.job.composite.mp4_audio_delay(),
            Mp4Out::None => 0,
        };
        let hls = m.hls.take();
        let pipeline = self.pipeline.clone();
        tokio::spawn(
            async move {
                let drain_error = |secs: u64| Error::Job {
                    code: Code::RecordStopTimedOut,
                    message: format!(
                        "the segment's file did not drain within {secs} s of the stop"
                    ),
                };
                let drained: Result<(), Error> = match mp4 {
                    Mp4Out::Main => match main_done {
                        Some(rx) => match tokio::time::timeout(EOS_TIMEOUT, rx).await {
                            Ok(_) => Ok(()),
                            Err(_) => Err(drain_error(EOS_TIMEOUT.as_secs())),
                        },
                        None => Ok(()),
                    },
                    Mp4Out::Tapped(tap) => match tap.finish(&pipeline, EOS_TIMEOUT).await {
                        Ok(()) => Ok(()),
                        Err(PipelineError::Timeout { secs, .. }) => Err(drain_error(secs)),
                        Err(e) => Err(Error::Job {
                            code: Code::RecordError,
                            message: format!("the segment could not be written: {e}"),
                        }),
                    },
                    Mp4Out::None => Ok(()),
                };
                if let Some(h) = hls {
                    h.end(&pipeline, HLS_FINISH_TIMEOUT).await;
                }
                let mut statuses = Vec::new();
                for d in destinations {
                    let status = d.finish(&pipeline).await;
                    // The session no longer routes this member's news: its last state.
                    m.send(JobEvent::Streaming(status.clone()));
                    statuses.push(status);
                }
                let ended = end.and_then(|r| drained.map(|_| r));
                let result = conclude(&m.spec, m.path.clone(), ended, statuses, audio_delay).await;
                let _ = m.done.send(result);
            }
            .in_current_span(),
        );
    }

    /// Ends the session: the pipeline drains and stops, every member's file is finalized and
    /// every member gets `outcome` (with its own codes for a drain or shutdown that failed).
    async fn teardown(mut self, outcome: Result<EndReason, Error>) {
        unregister(&self.key, &self.me);
        // Joins that arrived too late start sessions of their own; chat for the members'
        // segments is still journaled.
        journal_late_chat(&mut self.rx, &self.members);
        if let Some(leave) = self.leave.take() {
            leave();
        }
        self.job.composite.end_of_stream();
        // A stalled pipeline, or one that never encoded anything, will not drain: it gets a
        // moment, not the full wait, and what reached the file is what there is.
        let hopeless = match &outcome {
            Ok(EndReason::Stalled) => true,
            Err(Error::Job { code, .. }) => {
                matches!(code, Code::RecordStartTimedOut2 | Code::StreamStartTimedOut)
            }
            _ => false,
        };
        // Err(None): the drain timed out (each member's code says so); Err(Some): an error.
        let drained: Result<(), PipelineError> = if hopeless {
            if let Err(e) = drain(&self.job.composite, &mut self.bus, STALLED_DRAIN).await {
                warn!(error = %e, "the stalled pipeline did not drain");
            }
            Ok(())
        } else {
            drain(&self.job.composite, &mut self.bus, EOS_TIMEOUT).await
        };
        let drained: Result<(), Option<Error>> = drained.map_err(|e| match e {
            PipelineError::Timeout { .. } => None,
            e => Some(e.into()),
        });
        // The HLS writers cut their last segments and write the VOD playlists on the end of
        // stream; the taps' files end with it.
        let mut members = std::mem::take(&mut self.members);
        for m in &mut members {
            if let Some(hls) = m.hls.take() {
                hls.finish(&self.pipeline, HLS_FINISH_TIMEOUT).await;
            }
        }
        let mut taps: Vec<(Result<(), PipelineError>, i64)> = Vec::new();
        for m in &mut members {
            taps.push(match std::mem::replace(&mut m.mp4, Mp4Out::None) {
                Mp4Out::Tapped(t) => {
                    let delay = t.audio_delay().as_nanos() as i64;
                    (t.finish(&self.pipeline, TAP_FINISH_TIMEOUT).await, delay)
                }
                Mp4Out::Main => (Ok(()), self.job.composite.mp4_audio_delay()),
                Mp4Out::None => (Ok(()), 0),
            });
        }
        let mut statuses: HashMap<u32, DestinationStatus> = HashMap::new();
        for d in std::mem::take(&mut self.job.destinations) {
            let s = d.finish(&self.pipeline).await;
            statuses.insert(s.id, s);
        }
        // What the destinations reported up to their end (their last state: stopped).
        while let Ok(ev) = self.internal.try_recv() {
            route(&members, ev);
        }
        // Said while the segments drained: still theirs.
        journal_late_chat(&mut self.rx, &members);
        // A wedged element can keep the Null transition from returning: the files are
        // finalized regardless, and the stuck thread is left behind rather than the jobs.
        let p = self.pipeline.clone();
        let hang = shutdown_fault();
        let job = self.job;
        let shutdown = tokio::task::spawn_blocking(move || {
            if let Some(hang) = hang {
                warn!(
                    secs = hang.as_secs_f64(),
                    "fault injection: the pipeline's shutdown hangs"
                );
                std::thread::sleep(hang);
            }
            let _ = p.set_state(gst::State::Null);
            drop(job);
            drop(p);
            // However long the teardown took, what it freed goes back to the system.
            crate::util::release_free_memory();
        });
        let stuck = tokio::time::timeout(SHUTDOWN_TIMEOUT, shutdown)
            .await
            .is_err();
        if stuck {
            warn!(
                secs = SHUTDOWN_TIMEOUT.as_secs(),
                "the pipeline did not shut down in time; finalizing the files anyway"
            );
        }
        let shared = |o: &Result<EndReason, Error>| match o {
            Ok(r) => Ok(*r),
            Err(e) => Err(share(e)),
        };
        for (m, (tap, audio_delay)) in members.into_iter().zip(taps) {
            let record = m.spec.record;
            // A stop that cannot drain in time: 7031 (7041 streaming); the file is still
            // finalized from what was written.
            let drained = match &drained {
                Ok(()) => Ok(()),
                Err(None) => Err(Error::Job {
                    code: if record {
                        Code::RecordStopTimedOut
                    } else {
                        Code::StreamStopTimedOut
                    },
                    message: format!(
                        "the pipeline did not drain within {} s of the stop",
                        EOS_TIMEOUT.as_secs()
                    ),
                }),
                Err(Some(e)) => Err(share(e)),
            };
            let tapped = tap.map_err(|e| Error::Job {
                code: Code::RecordError,
                message: format!("the segment could not be written: {e}"),
            });
            // A pipeline that does not stop in time: 7032 (7042 streaming), once the file is
            // kept.
            let stuck = stuck.then(|| Error::Job {
                code: if record {
                    Code::RecordStopTimedOut2
                } else {
                    Code::StreamStopTimedOut2
                },
                message: format!(
                    "the pipeline did not shut down within {} s of the stop",
                    SHUTDOWN_TIMEOUT.as_secs()
                ),
            });
            let ended = shared(&outcome)
                .and_then(|r| drained.map(|_| r))
                .and_then(|r| tapped.map(|_| r))
                .and_then(|r| stuck.map_or(Ok(r), Err));
            let destinations = m
                .destinations
                .iter()
                .filter_map(|d| statuses.remove(d))
                .collect();
            let result = conclude(&m.spec, m.path.clone(), ended, destinations, audio_delay).await;
            let _ = m.done.send(result);
        }
    }
}

/// A destination's news to the member that owns it; the page's to every member.
fn route(members: &[Member], ev: JobEvent) {
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

/// A member's result once its outputs have ended: its file finalized (whatever went wrong,
/// what reached it is kept), then the error or the recording.
async fn conclude(
    spec: &RecordingSpec,
    path: Option<PathBuf>,
    ended: Result<EndReason, Error>,
    destinations: Vec<DestinationStatus>,
    audio_delay: i64,
) -> Result<Recording, Error> {
    let finalized = match path.clone() {
        // Stopped within its first fragment: only the header reached the file, there is
        // nothing to finalize (the caller records the segment as empty).
        Some(p) if !crate::pipeline::mp4::holds_media(&p) => {
            info!(file = %p.display(), "the segment holds no media fragment");
            Ok(None)
        }
        Some(_) if std::env::var_os("ROOMCAST_FAULT_FINALIZE_FAILS").is_some() => {
            warn!("fault injection: the segment's rewrite fails");
            Err(PipelineError::setup("rewrite failed (fault injection)"))
        }
        Some(p) => tokio::task::spawn_blocking(move || {
            finalize_with_audio_delay(&p, audio_delay).map(Some)
        })
        .await
        .map_err(|e| PipelineError::setup(format!("finalize task: {e}")))?,
        None => Ok(None),
    };
    let reason = match ended {
        Ok(reason) => reason,
        Err(e) => {
            match &finalized {
                Ok(Some(f)) => warn!(file = %f.path.display(), error = %e,
                    "recording failed; what was recorded is kept"),
                Ok(None) => warn!(error = %e, "the job failed; no media file to keep"),
                Err(fe) => warn!(file = %shown(&path), error = %e, finalize = %fe,
                    "recording failed; the fragmented file is kept as it is"),
            }
            return Err(e);
        }
    };
    // A segment that could not be rewritten stays fragmented (playable): 7033, or 7204 when
    // the disk has no room for the rewrite (a full disk fails the recording, as it does while
    // recording).
    let file = finalized.map_err(|e| {
        let bytes = path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let free = crate::util::free_bytes(&spec.out_dir).unwrap_or(u64::MAX);
        let code = if free <= bytes {
            Code::RecordError
        } else {
            Code::RecordStopTimedOut3
        };
        Error::Job {
            code,
            message: format!("the segment could not be finalized: {e}"),
        }
    })?;
    if let Some(file) = &file {
        info!(
            duration_s = file.duration.mseconds() as f64 / 1000.0,
            bytes = file.bytes,
            ?reason,
            "recording finalized"
        );
    }
    Ok(Recording {
        file,
        reason,
        destinations,
    })
}

fn shown(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Longest wait for the drained pipeline to shut down (the Null state change).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stalled segment's pipeline gets to drain before its file is finalized as it is.
const STALLED_DRAIN: Duration = Duration::from_secs(1);

/// `ROOMCAST_FAULT_STALL_AFTER_SECS`: a test of the stall watchdog wedges a segment this long
/// after it starts, in the first `ROOMCAST_FAULT_STALL_SEGMENTS` (default 1) segments of the
/// process. Asked once per segment: when to wedge this one, if at all.
fn stall_fault() -> Option<Duration> {
    static WEDGED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let setting = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let after = setting("ROOMCAST_FAULT_STALL_AFTER_SECS")?;
    let segments = setting("ROOMCAST_FAULT_STALL_SEGMENTS").unwrap_or(1.0) as u32;
    WEDGED
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| (n < segments).then_some(n + 1),
        )
        .ok()
        .map(|_| Duration::from_secs_f64(after.max(0.0)))
}

/// `ROOMCAST_FAULT_COMPOSITE_FAILS` (any value): a test of the live recording's fall-back
/// makes every composite fail as it is built (checked where it is built).
///
/// `ROOMCAST_FAULT_FINALIZE_FAILS` (any value): a test of 7033 (7035) makes every segment's
/// final rewrite (an individual segment's final manifest) fail, as a file system refusing it
/// would (checked where the rewrite happens).
///
/// `ROOMCAST_FAULT_SHUTDOWN_HANG_SECS`: a test of the shutdown limit holds every pipeline's
/// shutdown this long, as a wedged element would.
fn shutdown_fault() -> Option<Duration> {
    std::env::var("ROOMCAST_FAULT_SHUTDOWN_HANG_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// The error a start that took too long ends with, if it did: nothing encoded within
/// `spec.start_timeout` (7013; 7001 for a stream), or a stream-only job with no destination
/// live by then (7001).
fn start_timed_out(
    spec: &RecordingSpec,
    job: &Job,
    went_live: bool,
    elapsed: Duration,
) -> Option<Error> {
    let limit = spec.start_timeout.filter(|t| elapsed >= *t)?;
    let secs = limit.as_secs_f64();
    let (code, message) = if !job.composite.has_encoded() {
        let code = if spec.record {
            Code::RecordStartTimedOut2
        } else {
            Code::StreamStartTimedOut
        };
        (
            code,
            format!("no frame was encoded within {secs} s of the start"),
        )
    } else if !spec.record && !spec.rtmp.is_empty() && !went_live {
        (
            Code::StreamStartTimedOut,
            format!("no RTMP destination was live within {secs} s of the start"),
        )
    } else {
        return None;
    };
    warn!(code = %code, "{message}");
    Some(Error::Job { code, message })
}

/// Longest wait for the HLS writer to finish after the pipeline drained.
const HLS_FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the job's HLS output: files named after the segment (`<room>_<conf>_<n>.m3u8`, …)
/// in a folder beside it, or after the room and the start time for a stream-only job.
fn start_hls(
    spec: &RecordingSpec,
    hls: &crate::model::hls::HlsSpec,
    segment: Option<&std::path::Path>,
    pipeline: &gst::Pipeline,
    events: &Option<mpsc::UnboundedSender<JobEvent>>,
) -> Result<crate::pipeline::hls::HlsOutput, Error> {
    let stem = match segment.and_then(|p| p.file_stem()) {
        Some(s) => s.to_string_lossy().to_string(),
        None => format!(
            "{}_{}_live{}",
            super::segments::file_safe(&spec.room_id),
            super::segments::file_safe(&spec.conf_num),
            crate::clock::now_ms()
        ),
    };
    let dir = crate::pipeline::hls::folder(&spec.out_dir, &stem);
    let tx = events.clone();
    let out = tokio::task::block_in_place(|| {
        crate::pipeline::hls::HlsOutput::start(pipeline, &dir, &stem, hls, move |f| {
            if let Some(tx) = &tx {
                let _ = tx.send(JobEvent::Hls(f));
            }
        })
    })?;
    Ok(out)
}

/// Appends a chat message to the segment's journal, when the job records one.
/// Journals the chat messages waiting for the session's members (the rest of what waits is
/// for a session that is ending: joins start sessions of their own).
fn journal_late_chat(rx: &mut mpsc::UnboundedReceiver<Msg>, members: &[Member]) {
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Command(id, JobCommand::Chat(line)) = msg {
            if let Some(m) = members.iter().find(|m| m.id == id) {
                journal_chat(m.journal.as_deref(), &line);
            }
        }
    }
}

fn journal_chat(journal: Option<&std::path::Path>, line: &crate::model::page::ChatLine) {
    let Some(journal) = journal else { return };
    if let Err(e) = tokio::task::block_in_place(|| super::chat::append(journal, line)) {
        warn!(error = %e, "chat message not written to the segment's journal");
    }
}

/// Every event already waiting, so a burst (a join and its tracks) is laid out once rather than
/// once per event; `None` when nothing is waiting.
fn waiting(room: &mut mpsc::Receiver<RoomEvent>) -> Option<Vec<RoomEvent>> {
    let mut events = Vec::new();
    while let Ok(ev) = room.try_recv() {
        events.push(ev);
    }
    (!events.is_empty()).then_some(events)
}

/// Waits for EOS to reach the sink after [`Composite::end_of_stream`]. Errors from inputs
/// while they wind down do not matter any more; errors from the encoders and muxer do.
async fn drain(
    composite: &Composite,
    bus: &mut gst::bus::BusStream,
    limit: Duration,
) -> Result<(), PipelineError> {
    bus::wait_eos(bus, limit, "drain after stop", |msg| {
        let origin = msg.src().map(|s| composite.classify_error(s));
        matches!(origin, Some(ErrorOrigin::Core) | None)
    })
    .await
}

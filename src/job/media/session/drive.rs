//! A session started and driven: the composite built for its first member, later members'
//! outputs attached to it, and the loop that follows the room, the members' commands, the bus
//! and the clock until the session ends.

use super::limits::{stall_fault, waiting};
use super::member::{journal_chat, Member, Mp4Out};
use super::registry::{Key, Msg};
use super::room::Session;
use crate::job::media::live::Job;
use crate::job::spec::state::RoomState;
use crate::job::spec::{
    EndReason, JobCommand, JobEvent, RecordingSpec, PROGRESS_INTERVAL, STALL_TIMEOUT,
};
use crate::layout::parse_color;
use crate::pipeline::composite::{ErrorOrigin, Output};
use crate::pipeline::recorder::Mp4Tap;
use crate::pipeline::source::Timing;
use crate::pipeline::{bus, Composite, CompositeOptions, PipelineError};
use crate::room::RoomHandle;
use crate::Error;
use futures::StreamExt;
use gst::prelude::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

impl Session {
    /// Builds the composite for `first`, joins it to the room and starts its outputs.
    pub(super) async fn start(
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
    pub(super) fn attach(&mut self, m: &mut Member) -> Result<(), Error> {
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
        m.journal = m.path.as_deref().map(crate::job::files::chat::journal_path);
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

    pub(super) async fn run(mut self) {
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
    pub(super) async fn command(
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
            JobCommand::HandOver => {}
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
                    // The job record shows it stopped.
                    if let Some(status) = self.job.remove_destination(d).await {
                        self.members[i].send(JobEvent::Streaming(status));
                    }
                }
            }
            JobCommand::SetRtmp(urls) => {
                for d in std::mem::take(&mut self.members[i].destinations) {
                    if let Some(status) = self.job.remove_destination(d).await {
                        self.members[i].send(JobEvent::Streaming(status));
                    }
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
}

/// Starts the job's HLS output: files named after the segment (`<room>_<conf>_<n>.m3u8`, …)
/// in a folder beside it, or after the room and the start time for a stream-only job.
pub(super) fn start_hls(
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
            crate::job::files::naming::file_safe(&spec.room_id),
            crate::job::files::naming::file_safe(&spec.conf_num),
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

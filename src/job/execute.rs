//! The one path every job takes, from a job record to delivered segments: plan (validate the
//! spec), join the room, run the recording, follow commands, finalize, hand off, report.
//!
//! `roomcast serve`/`worker` run it for each claimed job over the queue store;
//! `roomcast demo`/`record` run it once over a [`MemoryHost`](super::host::MemoryHost). Both
//! therefore produce the same records, archive entries and status webhooks.

use super::host::{JobHost, Poll};
use super::notify::{Subject, Transition};
use super::outbox::{HandOff, Outbox};
use super::plan::{connect, Plan};
use super::platform::{apply_actions, Translator};
use super::runner::EndReason;
use super::segments::{discard_if_nothing_written, segment_number, written};
use super::{record_with_events, JobCommand, JobEvent, RecordingSpec};
use crate::codes::Code;
use crate::layout::Layout;
use crate::model::Preset;
use crate::model::{DestinationState, DestinationStatus, RtmpUrl};
use crate::pipeline::mp4::SegmentFile;
use crate::queue::{now_ms, Command, Job, JobKind, JobState, PlatformEvent, SegmentRecord};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

/// How often a running job checks it is still its host's and looks for commands.
pub(super) const COMMAND_POLL: Duration = Duration::from_millis(200);
/// Starts (first run plus takeovers) after which a job fails instead of starting again.
pub const MAX_ATTEMPTS: u32 = 5;
/// A job whose runs ended with their worker's process this many times in a row is failed
/// instead of being started again (it is most likely what brings the worker down).
pub const MAX_WORKER_DEATHS: u32 = 2;
/// A run that records this long proves the job does not bring its worker down.
const STABLE_RUN: Duration = Duration::from_secs(600);
/// Segments in a row that may end with a stalled output before the job fails.
const MAX_STALL_RESTARTS: u32 = 2;

/// What the host's process provides to every job.
pub struct JobEnv {
    /// Where segments are written.
    pub recordings_dir: PathBuf,
    /// Spool, storage and webhooks.
    pub outbox: Arc<Outbox>,
    /// Free space to keep on the recordings' file system (0: no floor).
    pub min_free_bytes: u64,
    /// How long joining the room, and then the first encoded frame (or a stream's first live
    /// destination), may take before the start is failed as timed out.
    pub start_timeout: Duration,
    /// Whether recordings can show custom view pages: their composite then draws a page layer
    /// (set on workers where pages are allowed; a job that names a page always gets one).
    pub custom_views: bool,
}

/// How a run ended, beyond what the job record says.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Why the recording ended (none if it never started).
    pub reason: Option<EndReason>,
    /// The last segment written in this run and how it was handed off.
    pub segment: Option<(SegmentFile, HandOff)>,
    /// What became of each RTMP destination.
    pub destinations: Vec<DestinationStatus>,
    /// The job went back to the queue for another run.
    pub handed_back: bool,
}

/// A job being run: its record, host and surroundings.
pub(super) struct Run<'a, H: JobHost> {
    pub(super) host: &'a H,
    pub(super) env: &'a JobEnv,
    pub(super) job: Job,
    pub(super) outcome: Outcome,
    /// What the status webhooks last said of each RTMP destination of the running segment: a
    /// destination that keeps failing is reported once until it is live again.
    pub(super) told: std::collections::HashMap<u32, Transition>,
}

/// Runs `job` to its end (or until it is handed back). `plan` overrides the spec's own
/// (the command line resolves layout and preset files itself); `local` carries commands from
/// the host's process (a stop on SIGTERM); `hand_back` set means a stop is a hand-back.
pub async fn execute<H: JobHost>(
    host: &H,
    env: &JobEnv,
    job: Job,
    plan: Option<Plan>,
    local: mpsc::Receiver<JobCommand>,
    hand_back: Arc<AtomicBool>,
) -> (Job, Outcome) {
    let span = info_span!("job", job = %job.id, room = %job.spec.room_id, kind = ?job.spec.kind);
    let mut run = Run {
        host,
        env,
        job,
        outcome: Outcome::default(),
        told: Default::default(),
    };
    run.run(plan, local, hand_back).instrument(span).await;
    (run.job, run.outcome)
}

fn failure_code(kind: JobKind) -> Code {
    match kind {
        JobKind::Streaming => Code::StreamFailedToStart,
        _ => Code::RecordCannotStart,
    }
}

/// The code of a job that fails after it started: 7204 "live recording has encountered an
/// error", 7022 for streaming.
fn failure_code_after_start(kind: JobKind) -> Code {
    match kind {
        JobKind::Streaming => Code::StateStreamFailed,
        _ => Code::RecordError,
    }
}

impl<H: JobHost> Run<'_, H> {
    pub(super) async fn save(&mut self) {
        self.host.save(&mut self.job).await;
    }

    pub(super) fn status(&self, subject: Subject, t: Transition, code: Option<Code>) {
        self.env.outbox.notifier.status(&self.job, subject, t, code);
    }

    /// Puts the job back in the queue for another worker (this one is stopping).
    pub(super) async fn hand_back(&mut self) {
        info!("handing the job back");
        self.job.state = JobState::Queued;
        self.job.msg = "handed back by a stopping worker".into();
        self.job.worker = None;
        self.job.updated_ms = now_ms();
        self.host.hand_back(&self.job).await;
        self.outcome.handed_back = true;
    }

    pub(super) async fn fail(&mut self, code: Code, msg: String) {
        warn!(code = %code, error = %msg, "job failed");
        self.job.end(JobState::Failed, code.as_u16(), msg);
        self.save().await;
        self.status(Subject::Job, Transition::Failed, Some(code));
        self.host.release(&self.job).await;
    }

    /// Joins the job's room within the start timeout (a synthetic room is returned as well);
    /// the code and message of a failure.
    pub(super) async fn join_room(
        &self,
    ) -> Result<
        (
            crate::room::RoomHandle,
            Option<crate::room::synthetic::SyntheticRoom>,
        ),
        (Code, String),
    > {
        let spec = &self.job.spec;
        let length = spec
            .max_duration_secs
            .and_then(|s| Duration::try_from_secs_f64(s.max(0.1)).ok());
        match tokio::time::timeout(self.env.start_timeout, connect(&spec.connector, length)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err((e.code(), e.to_string())),
            Err(_) => {
                let code = match spec.kind {
                    JobKind::Streaming => Code::StreamStartTimedOut,
                    _ => Code::RecordStartTimedOut,
                };
                let msg = format!(
                    "the room was not joined within {} s",
                    self.env.start_timeout.as_secs_f64()
                );
                Err((code, msg))
            }
        }
    }

    /// The number after the job's own last segment.
    pub(super) fn own_next_segment(&self) -> u64 {
        self.job
            .segments
            .iter()
            .filter_map(|s| segment_number(&s.file_name))
            .max()
            .map_or(1, |n| n + 1)
    }

    /// What is left of the job's duration limit. The limit counts from the job's first
    /// start: a job resumed after a takeover gets what is left of it, not a new full term.
    pub(super) fn remaining_duration(&self) -> Option<Duration> {
        self.job
            .spec
            .max_duration_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|max| {
                let spent = self
                    .job
                    .started_ms
                    .map_or(0, |t| now_ms().saturating_sub(t));
                Duration::from_secs_f64(max).saturating_sub(Duration::from_millis(spent))
            })
    }

    async fn run(
        &mut self,
        plan: Option<Plan>,
        mut local: mpsc::Receiver<JobCommand>,
        hand_back: Arc<AtomicBool>,
    ) {
        let resumed = !self.job.segments.is_empty() || self.job.state != JobState::Queued;
        // A job found starting or running was not stopped or handed back: its worker's
        // process ended under it.
        let died = matches!(self.job.state, JobState::Starting | JobState::Active);
        self.recover_segments().await;
        if died {
            self.job.worker_deaths += 1;
            warn!(deaths = self.job.worker_deaths, previous = ?self.job.worker,
                "the job's previous worker ended while running it");
            if self.job.worker_deaths >= MAX_WORKER_DEATHS {
                let code = failure_code_after_start(self.job.spec.kind);
                let msg = format!(
                    "the worker's process ended while running this job {} times in a row; not \
                     started again",
                    self.job.worker_deaths
                );
                return self.fail(code, msg).await;
            }
        }
        if matches!(self.job.state, JobState::Stopping | JobState::Delivering) {
            // Stopped before its previous run went away: what was recorded is delivered.
            let result = self.job.result;
            self.job.end(JobState::Completed, result, "completed");
            self.save().await;
            self.status(Subject::Job, Transition::Off, None);
            self.host.release(&self.job).await;
            return;
        }
        self.job.attempts += 1;
        if self.job.attempts > MAX_ATTEMPTS {
            let code = match self.job.spec.kind {
                JobKind::Streaming => Code::StreamFailedToStart,
                _ => Code::RecordError,
            };
            return self
                .fail(code, format!("gave up after {MAX_ATTEMPTS} starts"))
                .await;
        }
        self.job.state = JobState::Starting;
        self.job.msg = if resumed { "resuming" } else { "starting" }.into();
        self.save().await;
        match self.job.spec.kind {
            JobKind::Individual => return self.run_individual(local, hand_back).await,
            JobKind::Transcode => return self.run_transcode().await,
            JobKind::Recording | JobKind::Streaming => {}
        }

        let plan = match plan.map_or_else(|| Plan::from_spec(&self.job.spec), Ok) {
            Ok(p) => p,
            Err((code, msg)) => return self.fail(code, msg).await,
        };
        let present = match self.host.present(&self.job.spec.room_id).await {
            Ok(p) => p,
            Err(e) => return self.fail(Code::RecordInternalRetry, e.to_string()).await,
        };
        let watermark = match &self.job.spec.watermark {
            None => None,
            Some(w) => match crate::model::watermark::materialize(
                w,
                &self.env.recordings_dir.join(".assets"),
            ) {
                Ok(p) => Some(p),
                Err(e) => return self.fail(failure_code(self.job.spec.kind), e).await,
            },
        };
        let (handle, synthetic) = match self.join_room().await {
            Ok(c) => c,
            Err((code, msg)) => return self.fail(code, msg).await,
        };
        let own_next = self.own_next_segment();
        let first_segment = if self.job.spec.kind == JobKind::Recording {
            let spec = &self.job.spec;
            match self
                .host
                .next_segment(&spec.room_id, &spec.conf_num, own_next)
                .await
            {
                Ok(n) => n,
                Err(err) => return self.fail(Code::Generic, err.to_string()).await,
            }
        } else {
            own_next
        };
        let max_duration = self.remaining_duration();
        if max_duration.is_some_and(|d| d < Duration::from_secs(1)) {
            (handle.leave)();
            self.job
                .end(JobState::Completed, 0, "maximum duration reached");
            self.save().await;
            self.status(Subject::Job, Transition::Off, None);
            self.host.release(&self.job).await;
            return;
        }
        let cost_model = plan.preset.clone();
        let spec = RecordingSpec {
            room_id: self.job.spec.room_id.clone(),
            conf_num: self.job.spec.conf_num.clone(),
            out_dir: self.env.recordings_dir.clone(),
            preset: plan.preset,
            layout: plan.layout,
            watermark,
            max_duration,
            rtmp: plan.rtmp,
            record: self.job.spec.kind == JobKind::Recording,
            first_segment,
            min_free_bytes: self.env.min_free_bytes,
            start_timeout: Some(self.env.start_timeout),
            page: self.job.spec.page.clone(),
            page_layer: self.env.custom_views,
            hls: self.job.spec.hls.clone(),
        };
        let mut translator = Translator::new(
            synthetic,
            self.job.spec.max_active_talkers,
            self.job.spec.layout.clone(),
        );
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (etx, mut erx) = mpsc::unbounded_channel();
        let mut runner = tokio::spawn(record_with_events(spec, handle, cmd_rx, Some(etx)));
        for (id, name) in present {
            let join = PlatformEvent::ParticipantJoined {
                user_id: id,
                name: Some(name),
            };
            apply_actions(&cmd_tx, translator.translate(&join)).await;
        }
        let mut poll = tokio::time::interval(COMMAND_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut local_open = true;
        let mut superseded = false;
        let result = loop {
            tokio::select! {
                r = &mut runner => break r,
                cmd = local.recv(), if local_open => match cmd {
                    Some(cmd) => { let _ = cmd_tx.send(cmd).await; }
                    None => local_open = false,
                },
                _ = poll.tick(), if !superseded => match self.host.poll(&self.job).await {
                    Poll::Superseded => {
                        warn!("another worker took the job over (this one was cut off from \
                               the queue); finishing this segment here");
                        superseded = true;
                        let _ = cmd_tx.send(JobCommand::Stop).await;
                    }
                    Poll::Commands(cmds) => {
                        // Room events that arrived together reach the runner as one batch
                        // (one layout pass for a burst of joins, not one per join).
                        let mut room = Vec::new();
                        for cmd in cmds {
                            if let Command::Room { event } = &cmd {
                                let actions = translator.translate(event);
                                room.extend(self.journal_chat_while_stopping(actions));
                                continue;
                            }
                            apply_actions(&cmd_tx, std::mem::take(&mut room)).await;
                            self.on_command(&cmd_tx, &mut translator, cmd).await;
                        }
                        apply_actions(&cmd_tx, room).await;
                    }
                },
                Some(ev) = erx.recv() => self.on_event(&cost_model, ev).await,
            }
        };
        while let Ok(ev) = erx.try_recv() {
            self.on_event(&cost_model, ev).await;
        }
        if !superseded && self.job.state == JobState::Stopping {
            self.journal_late_chat(&mut translator).await;
        }
        let result = match result {
            Ok(r) => r,
            Err(e) => Err(crate::pipeline::PipelineError::setup(format!("job task: {e}")).into()),
        };
        if let Ok(rec) = &result {
            self.outcome.reason = Some(rec.reason);
            self.outcome.destinations = rec.destinations.clone();
        }
        if superseded {
            // The new holder owns the record, the status and the queue entry; this run only
            // delivers what it recorded (listed in the archive), so nothing is lost.
            let file = match &result {
                Ok(rec) => rec.file.clone(),
                Err(_) => self.job.segments.last().and_then(written),
            };
            if let (Some(file), Some(mut seg)) = (file, self.job.segments.pop()) {
                self.deliver_segment(&mut seg, &file).await;
            }
            info!("segment delivered; the job goes on on its new worker");
            return;
        }
        let handing_back = hand_back.load(Ordering::SeqCst) && self.job.state != JobState::Stopping;
        match result {
            Ok(rec) => {
                if rec.file.is_none() {
                    // A segment stopped before its first fragment holds nothing to deliver.
                    if let Some(seg) = self.job.segments.last_mut() {
                        if discard_if_nothing_written(seg) {
                            self.save().await;
                        }
                    }
                }
                if let Some(file) = &rec.file {
                    self.job.state = JobState::Delivering;
                    self.job.msg = "delivering".into();
                    self.save().await;
                    if let Some(mut seg) = self.job.segments.pop() {
                        self.deliver_segment(&mut seg, file).await;
                        self.job.segments.push(seg);
                    }
                }
                if rec.reason == EndReason::Stalled {
                    return self.restart_after_stall(local, hand_back).await;
                }
                if handing_back && rec.reason == EndReason::Stopped {
                    return self.hand_back().await;
                }
                if rec.reason == EndReason::DiskLow {
                    return self
                        .fail(
                            failure_code_after_start(self.job.spec.kind),
                            "free disk space fell below the floor (ROOMCAST_MIN_FREE_MB): the \
                             segment was ended and finalized before the disk filled"
                                .into(),
                        )
                        .await;
                }
                if rec.reason == EndReason::Disconnected {
                    // The room could not be reached again: what was recorded is delivered,
                    // the job fails with the call-state code.
                    return self
                        .fail(
                            Code::StateDisconnected,
                            "lost the room connection and could not reconnect".into(),
                        )
                        .await;
                }
                let (result, msg) = match rec.reason {
                    EndReason::RoomDestroyed
                    | EndReason::Disconnected
                    | EndReason::DiskLow
                    | EndReason::Stalled => (
                        Code::StateDisconnected.as_u16(),
                        "room destroyed; recording finalized",
                    ),
                    EndReason::DurationReached => (0, "maximum duration reached"),
                    EndReason::Stopped => (0, "completed"),
                };
                self.job.end(JobState::Completed, result, msg);
                self.save().await;
                self.status(Subject::Job, Transition::Off, None);
                info!(segments = self.job.segments.len(), "job completed");
                self.host.release(&self.job).await;
            }
            Err(e) => {
                // The runner finalized what reached the file; deliver it before reporting.
                if let Some(mut seg) = self.job.segments.pop() {
                    if !discard_if_nothing_written(&mut seg) {
                        if let Some(file) = written(&seg) {
                            self.deliver_segment(&mut seg, &file).await;
                        }
                    }
                    self.job.segments.push(seg);
                }
                // A recording that never started "cannot start" (7018); one that was
                // recording "has encountered an error" (7204).
                let started = self.job.started_ms.is_some();
                let code = match (e.code(), self.job.spec.kind) {
                    (Code::RecordError | Code::Generic, JobKind::Recording) if started => {
                        Code::RecordError
                    }
                    (Code::RecordError | Code::Generic, kind) => failure_code(kind),
                    (c, _) => c,
                };
                if self.job.spec.kind == JobKind::Recording
                    && matches!(code, Code::RecordCannotStart | Code::RecordError)
                {
                    return self.fall_back(code, e.to_string()).await;
                }
                self.fail(code, e.to_string()).await;
            }
        }
    }

    /// After a segment ended because the output stalled (and was delivered): runs the job
    /// again in a new segment, or fails it with 7204 (7022) when that already happened
    /// [`MAX_STALL_RESTARTS`] times in a row.
    async fn restart_after_stall(
        &mut self,
        local: mpsc::Receiver<JobCommand>,
        hand_back: Arc<AtomicBool>,
    ) {
        self.job.stall_restarts += 1;
        if self.job.stall_restarts > MAX_STALL_RESTARTS {
            let msg = format!(
                "the output stalled {} times in a row; not started again",
                self.job.stall_restarts
            );
            return self
                .fail(failure_code_after_start(self.job.spec.kind), msg)
                .await;
        }
        warn!(
            restarts = self.job.stall_restarts,
            "output stalled: starting a new segment"
        );
        self.job.state = JobState::Queued;
        self.job.msg = "output stalled; starting a new segment".into();
        self.save().await;
        Box::pin(self.run(None, local, hand_back)).await
    }

    async fn stop_requested(&mut self, by: String, tx: &mpsc::Sender<JobCommand>) {
        info!(by = %by, "stop requested");
        self.job.stopped_by = Some(by);
        self.job.state = JobState::Stopping;
        self.job.msg = "stopping".into();
        self.save().await;
        let _ = tx.send(JobCommand::Stop).await;
    }

    async fn on_command(
        &mut self,
        tx: &mpsc::Sender<JobCommand>,
        translator: &mut Translator,
        cmd: Command,
    ) {
        match cmd {
            Command::Stop { by } => self.stop_requested(by, tx).await,
            Command::SetLayout { layout } => match Layout::from_request(&layout) {
                Ok(l) => {
                    let _ = tx.send(JobCommand::SetLayout(Box::new(l))).await;
                    self.job.spec.layout = layout;
                    self.save().await;
                    self.status(Subject::Job, Transition::Updated, None);
                }
                Err(e) => warn!(error = %e, "layout change refused"),
            },
            Command::SetPage { page } => {
                let _ = tx.send(JobCommand::SetPage(page.clone())).await;
                self.job.spec.page = page;
                if self.job.spec.page.is_none() {
                    self.job.page = None;
                }
                self.save().await;
                self.status(Subject::Job, Transition::Updated, None);
            }
            Command::SetRtmp { urls } => match RtmpUrl::parse_all(&urls) {
                Ok(parsed) => {
                    let _ = tx.send(JobCommand::SetRtmp(parsed)).await;
                    self.job.spec.rtmp_urls = urls;
                    self.save().await;
                    self.status(Subject::Job, Transition::Updated, None);
                }
                Err(e) => warn!(error = %e, "destination change refused"),
            },
            Command::Room { event } => apply_actions(tx, translator.translate(&event)).await,
        }
    }

    /// A file of the HLS output: into the job record, and into the spool when storage is
    /// configured (otherwise it stays where it was written, and so does the playlist).
    pub(super) async fn on_hls(&mut self, file: crate::pipeline::hls::HlsFile) {
        use crate::model::hls::{HlsPart, HlsState, HlsStatus};
        let now = now_ms();
        let spec = &self.job.spec;
        let meta = crate::delivery::spool::SegmentMeta {
            job_id: self.job.id.clone(),
            app_id: spec.app_id.clone(),
            room_id: spec.room_id.clone(),
            conf_num: spec.conf_num.clone(),
            segment: u64::from(file.segments),
            file_name: file.name.clone(),
            started_at_unix_ms: self.job.started_ms.unwrap_or(now),
            // The spool delivers oldest first: the init segment before the first media
            // segment, every segment before the playlist that lists it.
            ended_at_unix_ms: match file.part {
                HlsPart::Init => now.saturating_sub(1),
                HlsPart::Segment => now,
                HlsPart::Live | HlsPart::Ended => now + 1,
            },
            size: 0,
            sha256: String::new(),
            hls: Some(file.part),
            bundle: None,
        };
        let target = spec.storage.clone();
        let storage = self
            .env
            .outbox
            .deliverer
            .as_ref()
            .and_then(|d| d.storage_for(target.as_deref()).ok());
        let playlist = file.part == HlsPart::Live || file.part == HlsPart::Ended;
        let url = match &storage {
            Some(s) => s.url_for(&meta),
            None if playlist => {
                // Kept where written: the writer's own playlist is the one to read, the
                // copy made for delivery is not needed.
                let _ = std::fs::remove_file(&file.path);
                crate::util::file_url(&file.path.with_file_name(&file.name))
            }
            None => crate::util::file_url(&file.path),
        };
        let status = self.job.hls.get_or_insert_with(|| HlsStatus {
            state: HlsState::Starting,
            playlist: String::new(),
            playlist_url: None,
            latest_segment: None,
            latest_segment_url: None,
            segments: 0,
            duration_s: 0.0,
            latency_ms: 0,
            max_latency_ms: 0,
        });
        status.segments = file.segments;
        status.duration_s = file.duration_s;
        match file.part {
            HlsPart::Init => {}
            HlsPart::Segment => {
                status.latest_segment = Some(file.name.clone());
                status.latest_segment_url = Some(url);
            }
            HlsPart::Live | HlsPart::Ended => {
                status.state = if file.part == HlsPart::Ended {
                    HlsState::Ended
                } else {
                    HlsState::Live
                };
                status.playlist = file.name.clone();
                status.playlist_url = Some(url);
                if file.part == HlsPart::Live {
                    status.latency_ms = file.latency_ms;
                    status.max_latency_ms = status.max_latency_ms.max(file.latency_ms);
                }
            }
        }
        if storage.is_some() {
            if let HandOff::Kept = self.env.outbox.hand_off(meta, &file.path, target).await {
                warn!(file = %file.name, "HLS file not spooled; it stays in the output folder");
            }
        }
        if playlist {
            info!(segments = file.segments, duration_s = file.duration_s,
                latency_ms = file.latency_ms, part = ?file.part, "HLS playlist written");
            self.save().await;
        }
    }

    /// Applies a job event; `cost_model` is the job's preset, for re-estimating its cost.
    async fn on_event(&mut self, cost_model: &Preset, ev: JobEvent) {
        match ev {
            JobEvent::Started { file } => {
                // A new segment numbers its destinations afresh.
                self.told.clear();
                if let Some(path) = file {
                    self.job.segments.push(SegmentRecord::recording(path));
                }
                if self.job.state == JobState::Starting {
                    self.job.state = JobState::Active;
                    self.job.msg = "active".into();
                }
                self.job.started_ms.get_or_insert(now_ms());
                self.save().await;
                info!("job active");
                if self.job.spec.kind == JobKind::Recording {
                    self.status(Subject::Job, Transition::On, None);
                }
            }
            JobEvent::Streaming(d) => {
                self.job.update_destination(&d);
                self.save().await;
                // A streaming job's own end is its `-off`; a recording job's streams report
                // each destination's end.
                let subject = match self.job.spec.kind {
                    JobKind::Streaming => Subject::Job,
                    _ => Subject::Streaming,
                };
                let told = match d.state {
                    DestinationState::Live => Some((Transition::On, None)),
                    DestinationState::Retrying => {
                        Some((Transition::Failed, Some(Code::StreamFailedToStart)))
                    }
                    DestinationState::Stopped if subject == Subject::Streaming => {
                        Some((Transition::Off, None))
                    }
                    DestinationState::Connecting | DestinationState::Stopped => None,
                };
                if let Some((t, code)) = told {
                    // Once per change: a destination retrying every few seconds while its
                    // server is down is one failure, not one per attempt.
                    if self.told.insert(d.id, t) != Some(t) {
                        self.status(subject, t, code);
                    }
                }
            }
            JobEvent::Hls(file) => self.on_hls(file).await,
            JobEvent::Page(status) => {
                self.env.outbox.notifier.page(&self.job, &status);
                self.job.page = Some(status);
                self.save().await;
            }
            JobEvent::Progress {
                media,
                wall,
                participants,
                feeds,
                shared,
            } => {
                self.job.feeds = feeds;
                let rtmp = self.job.spec.rtmp_urls.len();
                // A job fed from another job's composite pays only for its own outputs.
                let cost = if shared {
                    cost_model.output_cost(rtmp)
                } else {
                    cost_model.estimated_cost(rtmp, Some(participants))
                };
                self.host.set_cost(&self.job.id, cost);
                if wall >= STABLE_RUN {
                    self.job.worker_deaths = 0;
                    self.job.stall_restarts = 0;
                }
                if wall.as_secs_f64() > 0.5 {
                    self.job.realtime_factor = Some(media.as_secs_f64() / wall.as_secs_f64());
                    self.save().await;
                }
            }
        }
    }
}

//! One job on a worker, from claim to delivered segments; and the worker's delivery loop.

use super::events::{Action, Translator};
use super::{Worker, MAX_ATTEMPTS};
use crate::codes::Code;
use crate::delivery::spool::{sha256_file, SegmentMeta};
use crate::delivery::{live_recording_event, local_recording_id};
use crate::job::runner::{segment_number, EndReason};
use crate::job::{record_with_events, JobCommand, JobEvent, RecordingSpec};
use crate::layout::Layout;
use crate::pipeline::mp4::{finalize, SegmentFile};
use crate::pipeline::rtmp::{DestinationState, DestinationStatus, RtmpUrl};
use crate::pipeline::Preset;
use crate::queue::{
    now_ms, ArchiveEntry, Command, ConnectorSpec, Job, JobKind, JobState, SegmentRecord,
};
use crate::room::janus::JanusRoom;
use crate::room::synthetic::SyntheticRoom;
use crate::room::RoomConnector;
use crate::webhook::{status_event, EventContext};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

/// How often a running job checks it is still its worker's and looks for commands.
const COMMAND_POLL: Duration = Duration::from_millis(200);
/// How often the delivery loop drains the spool and webhook queue.
const DELIVERY_POLL: Duration = Duration::from_secs(1);

impl Worker {
    /// Writes the job record — unless another worker has taken the job over since (a
    /// worker that was cut off from the queue longer than its lease): the record then carries
    /// a later attempt, and this worker must not overwrite it.
    async fn save(&self, job: &mut Job) {
        if self.superseded(job).await {
            warn!(job = %job.id, "job record not saved: another worker holds the job now");
            return;
        }
        job.updated_ms = now_ms();
        if let Err(e) = self.store.put_job(job).await {
            warn!(error = %e, "job record not saved");
        }
    }

    /// Whether another worker has started the job since this one did (the attempt number is
    /// the fencing token: every start or takeover raises it). Unknown (store unreachable)
    /// counts as not superseded.
    async fn superseded(&self, job: &Job) -> bool {
        match self.store.get_job(&job.id).await {
            Ok(Some(stored)) => stored.attempts > job.attempts,
            _ => false,
        }
    }

    /// Queues a status webhook (`room-live-recording-on`, …) for a transition of `job`.
    fn status(&self, job: &Job, suffix: &str, code: Option<Code>) {
        let Some(q) = &self.hooks else { return };
        let kind = format!("{}-{suffix}", job.spec.kind.status_prefix());
        let by = match suffix {
            "off" => job
                .stopped_by
                .clone()
                .unwrap_or_else(|| "system".to_string()),
            _ => job.spec.started_by.clone(),
        };
        let ctx = EventContext {
            app_id: job.spec.app_id.clone(),
            room_id: job.spec.room_id.clone(),
            conf_num: job.spec.conf_num.clone(),
            by,
        };
        let id = format!("{kind}-{}-{}-{}", job.id, job.attempts, now_ms());
        if let Err(e) = q.enqueue(&id, &status_event(&kind, &ctx, code)) {
            warn!(error = %e, "status webhook not queued");
        }
    }

    async fn fail(&self, job: &mut Job, code: Code, msg: String) {
        warn!(code = %code, error = %msg, "job failed");
        job.end(JobState::Failed, code.as_u16(), msg);
        self.save(job).await;
        self.status(job, "failed", Some(code));
        if let Err(e) = self.store.release(job).await {
            warn!(error = %e, "release failed");
        }
    }

    /// Hands a finished segment to delivery and records where it went.
    async fn deliver_segment(&self, job: &Job, seg: &mut SegmentRecord, file: &SegmentFile) {
        seg.size = file.bytes;
        seg.duration_s = file.duration.mseconds() as f64 / 1000.0;
        seg.ended_ms = Some(now_ms());
        let segment = segment_number(&seg.file_name).unwrap_or(1);
        let meta = SegmentMeta {
            job_id: job.id.clone(),
            app_id: job.spec.app_id.clone(),
            room_id: job.spec.room_id.clone(),
            conf_num: job.spec.conf_num.clone(),
            segment,
            file_name: seg.file_name.clone(),
            started_at_unix_ms: seg.started_ms,
            ended_at_unix_ms: seg.ended_ms.unwrap_or_else(now_ms),
            size: file.bytes,
            sha256: String::new(),
        };
        match &self.deliverer {
            Some(d) => {
                let put = {
                    let path = file.path.clone();
                    let spool = d.spool.clone();
                    tokio::task::spawn_blocking(move || spool.put(&path, meta)).await
                };
                match put {
                    Ok(Ok(_)) => {
                        seg.status = "spooled".into();
                        info!(file = %seg.file_name, "segment spooled for delivery");
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, file = %seg.file_name, "spooling failed; file kept");
                        seg.status = "local".into();
                    }
                    Err(e) => warn!(error = %e, "spool task failed"),
                }
            }
            None => {
                let path = file.path.clone();
                let sha = tokio::task::spawn_blocking(move || sha256_file(&path)).await;
                let url = std::fs::canonicalize(&file.path)
                    .map(|p| format!("file://{}", p.display()))
                    .unwrap_or_else(|_| format!("file://{}", file.path.display()));
                seg.status = "local".into();
                seg.url = Some(url.clone());
                if let (Some(q), Ok(Ok(sha))) = (&self.hooks, sha) {
                    let mut meta = meta;
                    meta.sha256 = sha;
                    let id = local_recording_id(&meta);
                    if let Err(e) = q.enqueue(&id, &live_recording_event(&meta, &url)) {
                        warn!(error = %e, "recording webhook not queued");
                    }
                }
            }
        }
        let entry = ArchiveEntry {
            room_id: job.spec.room_id.clone(),
            conf_num: job.spec.conf_num.clone(),
            job_id: job.id.clone(),
            file_name: seg.file_name.clone(),
            size: seg.size,
            duration_s: seg.duration_s,
            started_ms: seg.started_ms,
            ended_ms: seg.ended_ms.unwrap_or_else(now_ms),
            url: seg.url.clone(),
            status: seg.status.clone(),
        };
        if let Err(e) = self.store.put_archive(&entry).await {
            warn!(error = %e, "archive entry not saved");
        }
        if seg.status == "spooled" {
            self.drain_once().await;
        }
    }

    /// One pass over the spool and the webhook queue; delivered files update the archive.
    pub(super) async fn drain_once(&self) -> usize {
        let _guard = self.drain_lock.lock().await;
        let mut pending = 0;
        if let Some(d) = &self.deliverer {
            let report = d.drain_once().await;
            pending += report.pending;
            if !report.files.is_empty() {
                let archive = self.store.archive().await.unwrap_or_default();
                for (meta, url) in report.files {
                    let mut entry = archive
                        .iter()
                        .find(|e| e.job_id == meta.job_id && e.file_name == meta.file_name)
                        .cloned()
                        .unwrap_or(ArchiveEntry {
                            room_id: meta.room_id.clone(),
                            conf_num: meta.conf_num.clone(),
                            job_id: meta.job_id.clone(),
                            file_name: meta.file_name.clone(),
                            size: meta.size,
                            duration_s: 0.0,
                            started_ms: meta.started_at_unix_ms,
                            ended_ms: meta.ended_at_unix_ms,
                            url: None,
                            status: String::new(),
                        });
                    entry.url = Some(url);
                    entry.status = "delivered".into();
                    if let Err(e) = self.store.put_archive(&entry).await {
                        warn!(error = %e, "archive entry not updated");
                    }
                }
            }
        }
        let hooks = self
            .deliverer
            .as_ref()
            .and_then(|d| d.webhooks.as_ref())
            .or(self.hooks.as_ref());
        if let Some(q) = hooks {
            pending += q.drain_once().await.pending;
        }
        pending
    }
}

/// Drains the spool and webhooks every second while the worker runs.
pub(super) async fn delivery_loop(w: Arc<Worker>) {
    loop {
        w.drain_once().await;
        tokio::time::sleep(DELIVERY_POLL).await;
    }
}

/// Drains until nothing is pending or `limit` passes.
pub(super) async fn deliver_pending(w: &Worker, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while w.drain_once().await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs one job to its end (or until it is handed back).
pub(super) async fn run_job(
    w: &Arc<Worker>,
    job: Job,
    local: mpsc::Receiver<JobCommand>,
    hand_back: Arc<AtomicBool>,
) {
    let span = info_span!("job", job = %job.id, room = %job.spec.room_id, kind = ?job.spec.kind);
    run_job_inner(w, job, local, hand_back)
        .instrument(span)
        .await
}

async fn recover_segments(w: &Worker, job: &mut Job) {
    let mut segments = std::mem::take(&mut job.segments);
    for seg in segments.iter_mut().filter(|s| s.status == "recording") {
        if !seg.path.is_file() {
            warn!(file = %seg.path.display(), "segment of an earlier run is not on this machine");
            seg.status = "missing".into();
            continue;
        }
        let path = seg.path.clone();
        match tokio::task::spawn_blocking(move || finalize(&path)).await {
            Ok(Ok(file)) => {
                info!(file = %seg.file_name, duration_s = file.duration.mseconds() as f64 / 1000.0,
                    "finalized the segment of an earlier run");
                w.deliver_segment(job, seg, &file).await;
            }
            Ok(Err(e)) => {
                warn!(error = %e, file = %seg.path.display(), "segment of an earlier run is unreadable");
                seg.status = "unreadable".into();
            }
            Err(e) => warn!(error = %e, "finalize task failed"),
        }
    }
    job.segments = segments;
}

fn failure_code(kind: JobKind) -> Code {
    match kind {
        JobKind::Recording => Code::RecordCannotStart,
        JobKind::Streaming => Code::StreamFailedToStart,
    }
}

async fn run_job_inner(
    w: &Arc<Worker>,
    mut job: Job,
    mut local: mpsc::Receiver<JobCommand>,
    hand_back: Arc<AtomicBool>,
) {
    let resumed = !job.segments.is_empty() || job.state != JobState::Queued;
    recover_segments(w, &mut job).await;
    if matches!(job.state, JobState::Stopping | JobState::Delivering) {
        // Stopped before its worker went away: what was recorded is delivered; done.
        job.end(JobState::Completed, job.result, "completed");
        w.save(&mut job).await;
        w.status(&job, "off", None);
        let _ = w.store.release(&job).await;
        return;
    }
    job.attempts += 1;
    job.worker = Some(w.cfg.id.clone());
    if job.attempts > MAX_ATTEMPTS {
        let code = match job.spec.kind {
            JobKind::Recording => Code::RecordError,
            JobKind::Streaming => Code::StreamFailedToStart,
        };
        w.fail(
            &mut job,
            code,
            format!("gave up after {MAX_ATTEMPTS} starts"),
        )
        .await;
        return;
    }
    job.state = JobState::Starting;
    job.msg = if resumed { "resuming" } else { "starting" }.into();
    w.save(&mut job).await;

    let layout = match Layout::from_request(&job.spec.layout) {
        Ok(l) => l,
        Err(e) => return w.fail(&mut job, e.code, e.to_string()).await,
    };
    let preset = match Preset::resolve(&job.spec.preset) {
        Ok(p) => p,
        Err(e) => return w.fail(&mut job, e.code(), e.to_string()).await,
    };
    let cost_model = preset.clone();
    let rtmp = match RtmpUrl::parse_all(&job.spec.rtmp_urls) {
        Ok(r) => r,
        Err(e) => return w.fail(&mut job, e.code(), e.to_string()).await,
    };
    let present = match w.store.get_room(&job.spec.room_id).await {
        Ok(Some(room)) => room.participants,
        Ok(None) => Vec::new(),
        Err(e) => {
            return w
                .fail(&mut job, Code::RecordInternalRetry, e.to_string())
                .await
        }
    };
    let connected = match &job.spec.connector {
        ConnectorSpec::Synthetic { participants } => {
            let room = SyntheticRoom::steady(*participants as usize);
            room.connect().await.map(|h| (h, Some(room)))
        }
        ConnectorSpec::Janus {
            url,
            room,
            pin,
            screen_pattern,
            ice_address,
        } => {
            let mut r = JanusRoom::new(url.clone(), *room);
            r.pin = pin.clone();
            if let Some(p) = screen_pattern {
                r.screen_pattern = p.clone();
            }
            r.local_ip = ice_address.clone();
            r.connect().await.map(|h| (h, None))
        }
    };
    let (handle, synthetic) = match connected {
        Ok(c) => c,
        Err(e) => return w.fail(&mut job, e.code(), e.to_string()).await,
    };
    let own_next = job
        .segments
        .iter()
        .filter_map(|s| segment_number(&s.file_name))
        .max()
        .map_or(1, |n| n + 1);
    let first_segment = if job.spec.kind == JobKind::Recording {
        match w
            .store
            .next_segment(&job.spec.room_id, &job.spec.conf_num, own_next)
            .await
        {
            Ok(n) => n,
            Err(err) => {
                return w
                    .fail(&mut job, Code::Generic, format!("queue store: {err}"))
                    .await
            }
        }
    } else {
        own_next
    };
    let spec = RecordingSpec {
        room_id: job.spec.room_id.clone(),
        conf_num: job.spec.conf_num.clone(),
        out_dir: w.cfg.recordings_dir.clone(),
        preset,
        layout,
        watermark: job.spec.watermark.clone(),
        max_duration: job
            .spec
            .max_duration_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64),
        rtmp,
        record: job.spec.kind == JobKind::Recording,
        first_segment,
    };
    let mut translator = Translator::new(
        synthetic,
        job.spec.max_active_talkers,
        job.spec.layout.clone(),
    );
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (etx, mut erx) = mpsc::unbounded_channel();
    let mut runner = tokio::spawn(record_with_events(spec, handle, cmd_rx, Some(etx)));
    for (id, name) in present {
        let join = crate::queue::PlatformEvent::ParticipantJoined {
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
            _ = poll.tick(), if !superseded => {
                // Ownership first: a worker that lost the job must not take the commands
                // meant for its new holder.
                if w.superseded(&job).await {
                    warn!("another worker took the job over (this one was cut off from the queue); \
                           finishing this segment here");
                    superseded = true;
                    let _ = cmd_tx.send(JobCommand::Stop).await;
                    continue;
                }
                let cmds = match w.store.take_commands(&job.id).await {
                    Ok(c) => c,
                    Err(e) => { warn!(error = %e, "reading commands failed"); continue; }
                };
                for cmd in cmds {
                    on_command(w, &mut job, &cmd_tx, &mut translator, cmd).await;
                }
            }
            Some(ev) = erx.recv() => on_event(w, &mut job, &cost_model, ev).await,
        }
    };
    while let Ok(ev) = erx.try_recv() {
        on_event(w, &mut job, &cost_model, ev).await;
    }
    let result = match result {
        Ok(r) => r,
        Err(e) => Err(crate::pipeline::PipelineError::setup(format!("job task: {e}")).into()),
    };
    if superseded {
        // The new holder owns the record, the status and the queue entry; this worker only
        // delivers what it recorded (listed in the archive), so nothing is lost.
        let file = match &result {
            Ok(rec) => rec.file.clone(),
            Err(_) => job.segments.last().and_then(written),
        };
        if let (Some(file), Some(mut seg)) = (file, job.segments.pop()) {
            w.deliver_segment(&job, &mut seg, &file).await;
        }
        info!("segment delivered; the job goes on on its new worker");
        return;
    }
    let handing_back = hand_back.load(Ordering::SeqCst) && job.state != JobState::Stopping;
    match result {
        Ok(rec) => {
            if let Some(file) = &rec.file {
                job.state = JobState::Delivering;
                job.msg = "delivering".into();
                w.save(&mut job).await;
                if let Some(mut seg) = job.segments.pop() {
                    w.deliver_segment(&job, &mut seg, file).await;
                    job.segments.push(seg);
                }
            }
            if handing_back && rec.reason == EndReason::Stopped {
                info!("handing the job back");
                job.state = JobState::Queued;
                job.msg = "handed back by a stopping worker".into();
                job.worker = None;
                job.updated_ms = now_ms();
                if let Err(e) = w.store.hand_back(&w.cfg.id, &job).await {
                    warn!(error = %e, "hand-back failed");
                }
                return;
            }
            if rec.reason == EndReason::Disconnected {
                // The room could not be reached again: what was recorded is delivered, the
                // job fails with the call-state code.
                w.fail(
                    &mut job,
                    Code::StateDisconnected,
                    "lost the room connection and could not reconnect".into(),
                )
                .await;
                return;
            }
            let (result, msg) = match rec.reason {
                EndReason::RoomDestroyed | EndReason::Disconnected => (
                    Code::StateDisconnected.as_u16(),
                    "room destroyed; recording finalized".to_string(),
                ),
                EndReason::DurationReached => (0, "maximum duration reached".to_string()),
                EndReason::Stopped => (0, "completed".to_string()),
            };
            job.end(JobState::Completed, result, msg);
            w.save(&mut job).await;
            w.status(&job, "off", None);
            info!(segments = job.segments.len(), "job completed");
            if let Err(e) = w.store.release(&job).await {
                warn!(error = %e, "release failed");
            }
        }
        Err(e) => {
            // The runner finalized what reached the file; deliver it before reporting.
            if let Some(mut seg) = job.segments.pop() {
                if let Some(file) = written(&seg) {
                    w.deliver_segment(&job, &mut seg, &file).await;
                }
                job.segments.push(seg);
            }
            let code = match e.code() {
                Code::RecordError | Code::Generic => failure_code(job.spec.kind),
                c => c,
            };
            w.fail(&mut job, code, e.to_string()).await;
        }
    }
}

async fn apply_actions(tx: &mpsc::Sender<JobCommand>, actions: Vec<Action>) {
    for a in actions {
        let cmd = match a {
            Action::Events(ev) if ev.is_empty() => continue,
            Action::Events(ev) => JobCommand::Room(ev),
            Action::Layout(v) => match Layout::from_request(&v) {
                Ok(l) => JobCommand::SetLayout(Box::new(l)),
                Err(e) => {
                    warn!(error = %e, "layout of the room mode not applied");
                    continue;
                }
            },
        };
        let _ = tx.send(cmd).await;
    }
}

async fn on_command(
    w: &Worker,
    job: &mut Job,
    tx: &mpsc::Sender<JobCommand>,
    translator: &mut Translator,
    cmd: Command,
) {
    match cmd {
        Command::Stop { by } => {
            info!(by = %by, "stop requested");
            job.stopped_by = Some(by);
            job.state = JobState::Stopping;
            job.msg = "stopping".into();
            w.save(job).await;
            let _ = tx.send(JobCommand::Stop).await;
        }
        Command::SetLayout { layout } => match Layout::from_request(&layout) {
            Ok(l) => {
                let _ = tx.send(JobCommand::SetLayout(Box::new(l))).await;
                job.spec.layout = layout;
                w.save(job).await;
                w.status(job, "updated", None);
            }
            Err(e) => warn!(error = %e, "layout change refused"),
        },
        Command::SetRtmp { urls } => match RtmpUrl::parse_all(&urls) {
            Ok(parsed) => {
                let _ = tx.send(JobCommand::SetRtmp(parsed)).await;
                job.spec.rtmp_urls = urls;
                w.save(job).await;
                w.status(job, "updated", None);
            }
            Err(e) => warn!(error = %e, "destination change refused"),
        },
        Command::Room { event } => apply_actions(tx, translator.translate(&event)).await,
    }
}

/// Applies a job event; `cost_model` is the job's preset, for re-estimating its cost.
async fn on_event(w: &Worker, job: &mut Job, cost_model: &Preset, ev: JobEvent) {
    match ev {
        JobEvent::Started { file } => {
            if let Some(path) = file {
                job.segments.push(SegmentRecord {
                    file_name: file_name(&path),
                    path,
                    status: "recording".into(),
                    url: None,
                    size: 0,
                    duration_s: 0.0,
                    started_ms: now_ms(),
                    ended_ms: None,
                });
            }
            if job.state == JobState::Starting {
                job.state = JobState::Active;
                job.msg = "active".into();
            }
            job.started_ms.get_or_insert(now_ms());
            w.save(job).await;
            info!("job active");
            if job.spec.kind == JobKind::Recording {
                w.status(job, "on", None);
            }
        }
        JobEvent::Streaming(d) => {
            update_destination(job, &d);
            w.save(job).await;
            match d.state {
                DestinationState::Live => w.status(job, "on", None),
                DestinationState::Retrying => {
                    w.status(job, "failed", Some(Code::StreamFailedToStart))
                }
                DestinationState::Connecting | DestinationState::Stopped => {}
            }
        }
        JobEvent::Progress {
            media,
            wall,
            participants,
        } => {
            w.set_cost(
                &job.id,
                cost_model.estimated_cost(job.spec.rtmp_urls.len(), Some(participants)),
            );
            if wall.as_secs_f64() > 0.5 {
                job.realtime_factor = Some(media.as_secs_f64() / wall.as_secs_f64());
                w.save(job).await;
            }
        }
    }
}

fn update_destination(job: &mut Job, d: &DestinationStatus) {
    let value = serde_json::to_value(d).unwrap_or_default();
    let id = value.get("id").cloned();
    match job
        .destinations
        .iter_mut()
        .find(|v| v.get("id").cloned() == id)
    {
        Some(slot) => *slot = value,
        None => job.destinations.push(value),
    }
}

/// What a segment that ended in an error left on disk, if anything (the runner finalized
/// what reached the file; its duration is not known here).
fn written(seg: &SegmentRecord) -> Option<SegmentFile> {
    let bytes = std::fs::metadata(&seg.path)
        .ok()
        .filter(|m| m.is_file())?
        .len();
    (bytes > 0).then(|| SegmentFile {
        bytes,
        duration: gst::ClockTime::ZERO,
        path: seg.path.clone(),
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

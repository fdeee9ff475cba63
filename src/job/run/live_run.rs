//! A live recording's or stream's run ([`Run::run_live`]): the room joined, the media run
//! started in the room's session, the job's commands and the room's events followed while it
//! records, the segment handed off when it ends, and what comes after ([`After`]).

use super::context::{failure_code, failure_code_after_start, Run, CHUNK_TICK, COMMAND_POLL};
use crate::codes::Code;
use crate::job::files::notify::{Subject, Transition};
use crate::job::files::records::{discard_if_nothing_written, written};
use crate::job::media::record_with_events;
use crate::job::spec::host::{JobHost, Poll, TakenUp};
use crate::job::spec::plan::Plan;
use crate::job::spec::platform::{apply_actions, Translator};
use crate::job::spec::{EndReason, JobCommand, RecordingSpec};
use crate::layout::Layout;
use crate::model::RtmpUrl;
use crate::queue::{Command, JobKind, JobState, PlatformEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Longest a run that handed its job over goes on recording while no other run records it.
const HANDOVER_WAIT: Duration = Duration::from_secs(20);

/// How long a run that handed its job over goes on recording once the next run's record says
/// that run records everyone this one records. The record says so up to two report intervals
/// (the feeds' and the job's, a second each) after it is true: the segments overlap by that
/// wait and this margin, so no moment of the room falls between them.
const HANDOVER_OVERLAP: Duration = Duration::from_millis(250);

/// What the job does once a live run ended.
pub enum After {
    /// The job's record says how it ended: nothing more to do here.
    Done,
    /// The live recording could not go on: the job falls back to individual recording with
    /// this code and message.
    FallBack(Code, String),
    /// The output stalled (the segment was delivered): the job starts again in a new segment,
    /// taking its local commands along.
    Stalled(mpsc::Receiver<JobCommand>),
}

impl<H: JobHost> Run<'_, H> {
    /// Runs the job's live recording or stream until it ends (the job record is `Starting`).
    pub(crate) async fn run_live(
        &mut self,
        plan: Option<Plan>,
        mut local: mpsc::Receiver<JobCommand>,
        hand_back: Arc<AtomicBool>,
    ) -> After {
        let plan = match plan.map_or_else(|| Plan::from_spec(&self.job.spec), Ok) {
            Ok(p) => p,
            Err((code, msg)) => return self.failed(code, msg).await,
        };
        let present = match self.host.present(&self.job.spec.room_id).await {
            Ok(p) => p,
            Err(e) => return self.failed(Code::RecordInternalRetry, e.to_string()).await,
        };
        let watermark = match &self.job.spec.watermark {
            None => None,
            Some(w) => match crate::model::watermark::materialize(
                w,
                &self.env.recordings_dir.join(".assets"),
            ) {
                Ok(p) => Some(p),
                Err(e) => return self.failed(failure_code(self.job.spec.kind), e).await,
            },
        };
        let (handle, synthetic) = match self.join_room().await {
            Ok(c) => c,
            Err((code, msg)) => return self.failed(code, msg).await,
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
                Err(err) => return self.failed(Code::Generic, err.to_string()).await,
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
            return After::Done;
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
        let mut chunk_tick = tokio::time::interval(CHUNK_TICK);
        chunk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut local_open = true;
        let mut superseded = false;
        let result = loop {
            tokio::select! {
                r = &mut runner => break r,
                cmd = local.recv(), if local_open => match cmd {
                    Some(JobCommand::HandOver) if self.may_hand_over() => self.hand_over().await,
                    // Ends here and goes back to the queue (the drain marked the stop a
                    // hand-back).
                    Some(JobCommand::HandOver) => { let _ = cmd_tx.send(JobCommand::Stop).await; }
                    Some(cmd) => { let _ = cmd_tx.send(cmd).await; }
                    None => local_open = false,
                },
                _ = poll.tick(), if !superseded => match self.poll_or_wait().await {
                    None => {}
                    Some(Poll::Superseded) => {
                        if self.handed_over.is_none() {
                            warn!("another worker took the job over (this one was cut off \
                                   from the queue); finishing this segment here");
                        }
                        superseded = true;
                        let _ = cmd_tx.send(JobCommand::Stop).await;
                    }
                    Some(Poll::Commands(cmds)) => {
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
                _ = chunk_tick.tick() => self.cut_chunk().await,
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
        if superseded || self.handed_over.is_some() {
            // The new holder owns the record, the status and the queue entry (a run that
            // handed its job over, whatever ended its segment); this run only delivers what it
            // recorded (listed in the archive), so nothing is lost.
            let file = match &result {
                Ok(rec) => rec.file.clone(),
                Err(_) => self.job.segments.last().and_then(written),
            };
            if let (Some(file), Some(mut seg)) = (file, self.job.segments.pop()) {
                self.deliver_segment(&mut seg, &file).await;
            }
            info!("segment delivered; the job goes on on its new worker");
            return After::Done;
        }
        // A stop asked for while the segment was ending (a stall's teardown can take seconds)
        // still ends the job: the ending segment is its last.
        let stop_asked = self.job.state == JobState::Stopping;
        let handing_back = hand_back.load(Ordering::SeqCst) && !stop_asked;
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
                if rec.reason == EndReason::Stalled && !stop_asked {
                    return After::Stalled(local);
                }
                if handing_back && rec.reason == EndReason::Stopped {
                    {
                        self.hand_back().await;
                        return After::Done;
                    }
                }
                if rec.reason == EndReason::DiskLow {
                    return self
                        .failed(
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
                        .failed(
                            Code::StateDisconnected,
                            "lost the room connection and could not reconnect".into(),
                        )
                        .await;
                }
                let (result, msg) = match rec.reason {
                    EndReason::Stalled => (0, "completed (the output had stalled as it stopped)"),
                    EndReason::RoomDestroyed | EndReason::Disconnected | EndReason::DiskLow => (
                        Code::StateDisconnected.as_u16(),
                        "room destroyed; recording finalized",
                    ),
                    EndReason::DurationReached => (0, "maximum duration reached"),
                    EndReason::Stopped => (0, "completed"),
                };
                self.retry_lost_segments().await;
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
                    return After::FallBack(code, e.to_string());
                }
                self.fail(code, e.to_string()).await;
            }
        }
        After::Done
    }

    /// Whether this run can go on recording while its job's next run starts: a recording
    /// without RTMP destinations (two pushes to one destination collide) or HLS output (one
    /// playlist), not already stopping.
    fn may_hand_over(&self) -> bool {
        self.job.spec.kind == JobKind::Recording
            && self.job.spec.rtmp_urls.is_empty()
            && self.job.spec.hls.is_none()
            && self.job.state == JobState::Active
    }

    /// The job's commands; after a hand-over, instead, `Superseded` once this run should end
    /// its segment (None until then: the commands are the next run's).
    async fn poll_or_wait(&mut self) -> Option<Poll> {
        if self.handed_over.is_none() {
            return Some(self.host.poll(&self.job).await);
        }
        self.successor_records().await.then_some(Poll::Superseded)
    }

    /// After a hand-over: true once this run should end its segment — the next run has
    /// recorded for [`HANDOVER_OVERLAP`] (or the job ended), or nobody took the job up within [`HANDOVER_WAIT`].
    async fn successor_records(&mut self) -> bool {
        let since = self.handed_over.map_or(Duration::ZERO, |t| t.elapsed());
        match self.host.taken_up(&self.job).await {
            TakenUp::Recording => {
                let seen = *self.taken_up_at.get_or_insert_with(std::time::Instant::now);
                if seen.elapsed() < HANDOVER_OVERLAP {
                    return false;
                }
                info!(
                    after_s = since.as_secs_f64(),
                    "the job's next worker records: ending this segment"
                );
                true
            }
            TakenUp::Ended => {
                info!("the job ended while handed over: ending this segment");
                true
            }
            TakenUp::Waiting if since >= HANDOVER_WAIT => {
                warn!(
                    waited_s = since.as_secs_f64(),
                    "no worker took the handed-over job up: \
                      ending this segment; the job waits in the queue"
                );
                true
            }
            TakenUp::Waiting => false,
        }
    }

    /// [`Run::fail`], for a run that ends there.
    async fn failed(&mut self, code: Code, msg: String) -> After {
        self.fail(code, msg).await;
        After::Done
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
            Command::AddRtmp { url } => match RtmpUrl::parse(&url) {
                Ok(parsed) => {
                    let _ = tx.send(JobCommand::AddRtmp(parsed)).await;
                    self.job.spec.rtmp_urls.push(url);
                    self.save().await;
                    self.status(Subject::Job, Transition::Updated, None);
                }
                Err(e) => warn!(error = %e, "destination not added"),
            },
            Command::RemoveRtmp { id } => {
                let _ = tx.send(JobCommand::RemoveRtmp(id)).await;
                // The list keeps what a next run reconnects: without this destination.
                if let Some(d) = self.job.destinations.iter().find(|d| d.id == id) {
                    let gone = d.url.clone();
                    if let Some(k) = self
                        .job
                        .spec
                        .rtmp_urls
                        .iter()
                        .position(|u| RtmpUrl::parse(u).is_ok_and(|p| p.redacted() == gone))
                    {
                        self.job.spec.rtmp_urls.remove(k);
                    }
                }
                self.save().await;
                self.status(Subject::Job, Transition::Updated, None);
            }
            Command::Room { event } => apply_actions(tx, translator.translate(&event)).await,
        }
    }
}

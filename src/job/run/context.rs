//! A job being run ([`Run`]): its record, its host and what the host's process provides
//! ([`JobEnv`]), how the run ended beyond the record ([`Outcome`]), and the steps every kind
//! of job shares: save, report a status, fail, hand back, join the room.

use crate::codes::Code;
use crate::job::files::naming::segment_number;
use crate::job::files::notify::{Subject, Transition};
use crate::job::files::outbox::{HandOff, Outbox};
use crate::job::spec::host::JobHost;
use crate::job::spec::plan::connect;
use crate::job::spec::EndReason;
use crate::model::DestinationStatus;
use crate::pipeline::mp4::SegmentFile;
use crate::queue::{now_ms, Job, JobKind, JobState};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often a running job checks it is still its host's and looks for commands.
pub(crate) const COMMAND_POLL: Duration = Duration::from_millis(200);
/// How often a running recording checks whether its next chunk is due.
pub(crate) const CHUNK_TICK: Duration = Duration::from_secs(1);
/// Starts (first run plus takeovers) after which a job fails instead of starting again.
pub const MAX_ATTEMPTS: u32 = 5;
/// A job whose runs ended with their worker's process this many times in a row is failed
/// instead of being started again (it is most likely what brings the worker down).
pub const MAX_WORKER_DEATHS: u32 = 2;
/// A run that records this long proves the job does not bring its worker down.
pub(crate) const STABLE_RUN: Duration = Duration::from_secs(600);
/// Segments in a row that may end with a stalled output before the job fails.
pub(crate) const MAX_STALL_RESTARTS: u32 = 2;

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
pub(crate) struct Run<'a, H: JobHost> {
    pub(crate) host: &'a H,
    pub(crate) env: &'a JobEnv,
    pub(crate) job: Job,
    pub(crate) outcome: Outcome,
    /// What the status webhooks last said of each RTMP destination of the running segment: a
    /// destination that keeps failing is reported once until it is live again.
    pub(crate) told: std::collections::HashMap<u32, Transition>,
    /// Where the recording segment's chunks stand.
    pub(crate) chunks: crate::delivery::chunks::ChunkCursor,
    /// When the job was handed over while this run went on recording: from then on the
    /// record is the next run's, and this run no longer writes it.
    pub(crate) handed_over: Option<std::time::Instant>,
    /// When this run, after a hand-over, first saw the job's next run recording.
    pub(crate) taken_up_at: Option<std::time::Instant>,
}

pub(crate) fn failure_code(kind: JobKind) -> Code {
    match kind {
        JobKind::Streaming => Code::StreamFailedToStart,
        _ => Code::RecordCannotStart,
    }
}

/// The code of a job that fails after it started: 7204 "live recording has encountered an
/// error", 7022 for streaming.
pub(crate) fn failure_code_after_start(kind: JobKind) -> Code {
    match kind {
        JobKind::Streaming => Code::StateStreamFailed,
        _ => Code::RecordError,
    }
}

impl<H: JobHost> Run<'_, H> {
    pub(crate) async fn save(&mut self) {
        if self.handed_over.is_none() {
            self.host.save(&mut self.job).await;
        }
    }

    pub(crate) fn status(&self, subject: Subject, t: Transition, code: Option<Code>) {
        self.env.outbox.notifier.status(&self.job, subject, t, code);
    }

    /// Puts the job back in the queue for another worker (this one is stopping).
    pub(crate) async fn hand_back(&mut self) {
        info!("handing the job back");
        self.requeue("handed back by a stopping worker").await;
    }

    /// Puts the job back in the queue for another worker while this run goes on recording
    /// its segment, listed `handed_over` (this worker is stopping; it ends the segment once
    /// the next run records, see [`super::live_run`]).
    pub(crate) async fn hand_over(&mut self) {
        info!("handing the job over; recording until its next worker records");
        if let Some(seg) = self
            .job
            .segments
            .last_mut()
            .filter(|s| s.status == crate::queue::SegmentStatus::Recording)
        {
            seg.status = crate::queue::SegmentStatus::HandedOver;
            seg.handed_over_by = self.job.worker.clone();
        }
        self.requeue("handed over by a stopping worker").await;
        self.handed_over = Some(std::time::Instant::now());
    }

    /// Writes the job back to the queue, waiting and held by no worker, saying `msg`.
    async fn requeue(&mut self, msg: &str) {
        self.job.state = JobState::Queued;
        self.job.msg = msg.into();
        self.job.worker = None;
        self.job.updated_ms = now_ms();
        self.host.hand_back(&self.job).await;
        self.outcome.handed_back = true;
    }

    pub(crate) async fn fail(&mut self, code: Code, msg: String) {
        warn!(code = %code, error = %msg, "job failed");
        self.job.end(JobState::Failed, code.as_u16(), msg);
        self.save().await;
        self.status(Subject::Job, Transition::Failed, Some(code));
        self.host.release(&self.job).await;
    }

    /// Joins the job's room within the start timeout (a synthetic room is returned as well);
    /// the code and message of a failure.
    pub(crate) async fn join_room(
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
    pub(crate) fn own_next_segment(&self) -> u64 {
        self.job
            .segments
            .iter()
            .filter_map(|s| segment_number(&s.file_name))
            .max()
            .map_or(1, |n| n + 1)
    }

    /// What is left of the job's duration limit. The limit counts from the job's first
    /// start: a job resumed after a takeover gets what is left of it, not a new full term.
    pub(crate) fn remaining_duration(&self) -> Option<Duration> {
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
}

//! The one path every job takes, from a job record to delivered segments ([`execute`]): the
//! segments an earlier run left recovered, the attempt counted, then the job's kind run — a
//! live recording or stream ([`Run::run_live`]), an individual recording or a transcode
//! ([`super::legacy`]) — and what its end calls for: a fall-back to individual recording, or
//! a new segment after a stalled output.
//!
//! `roomcast serve`/`worker` run it for each claimed job over the queue store;
//! `roomcast demo`/`record` run it once over a [`MemoryHost`](crate::job::MemoryHost). Both
//! therefore produce the same records, archive entries and status webhooks.

use crate::codes::Code;
use crate::job::files::notify::{Subject, Transition};
use crate::job::run::context::*;
use crate::job::run::live_run::After;
use crate::job::spec::host::JobHost;
use crate::job::spec::plan::Plan;
use crate::job::spec::JobCommand;
use crate::queue::{Job, JobKind, JobState};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{info_span, warn, Instrument};

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
        chunks: Default::default(),
        handed_over: None,
        taken_up_at: None,
    };
    run.run(plan, local, hand_back).instrument(span).await;
    (run.job, run.outcome)
}

impl<H: JobHost> Run<'_, H> {
    async fn run(
        &mut self,
        plan: Option<Plan>,
        local: mpsc::Receiver<JobCommand>,
        hand_back: Arc<AtomicBool>,
    ) {
        let resumed = !self.job.segments.is_empty() || self.job.state != JobState::Queued;
        // A job found starting or running was not stopped or handed back: its worker's
        // process ended under it.
        let died = matches!(self.job.state, JobState::Starting | JobState::Active);
        self.recover_folders().await;
        self.recover_segments().await;
        if self.settle_handed_over().await {
            self.recover_segments().await;
        }
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
        // The tracks an earlier run received are not this run's.
        self.job.feeds.clear();
        self.job.people.clear();
        self.save().await;
        match self.job.spec.kind {
            JobKind::Individual => return self.run_individual(local, hand_back).await,
            JobKind::Transcode => return self.run_transcode().await,
            JobKind::Recording | JobKind::Streaming => {}
        }
        match self.run_live(plan, local, hand_back.clone()).await {
            After::Done => {}
            After::FallBack(code, msg) => self.fall_back(code, msg).await,
            After::Stalled(local) => {
                if self.count_stall_restart().await {
                    Box::pin(self.run(None, local, hand_back)).await
                }
            }
        }
    }

    /// After a segment ended because the output stalled (and was delivered): true when the
    /// job runs again in a new segment, false when it failed with 7204 (7022) because that
    /// already happened [`MAX_STALL_RESTARTS`] times in a row.
    async fn count_stall_restart(&mut self) -> bool {
        self.job.stall_restarts += 1;
        if self.job.stall_restarts > MAX_STALL_RESTARTS {
            let msg = format!(
                "the output stalled {} times in a row; not started again",
                self.job.stall_restarts
            );
            self.fail(failure_code_after_start(self.job.spec.kind), msg)
                .await;
            return false;
        }
        warn!(
            restarts = self.job.stall_restarts,
            "output stalled: starting a new segment"
        );
        self.job.state = JobState::Queued;
        self.job.msg = "output stalled; starting a new segment".into();
        self.save().await;
        true
    }
}

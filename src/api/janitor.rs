//! The queue's janitor: requests that waited too long for capacity are failed (7080/7081) or,
//! for a live recording, fall back; old records are pruned; webhooks are drained.

use super::state::ApiState;
use crate::codes::Code;
use crate::queue::{now_ms, Job, JobState};
use crate::webhook::{status_event, EventContext};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often (at most) ended jobs older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Fails requests that waited longer than the configured wait (7080 recording, 7081
/// streaming). Runs in every API process; the waiting set decides who wins a race.
pub async fn queue_janitor(st: Arc<ApiState>, drain_hooks: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_prune: Option<tokio::time::Instant> = None;
    let prune_every = (st.cfg.job_retention / 2).clamp(Duration::from_secs(1), PRUNE_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = expire_waiting(&st).await {
            warn!(error = %e, "queue janitor");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            last_prune = Some(tokio::time::Instant::now());
            let cutoff = now_ms().saturating_sub(st.cfg.job_retention.as_millis() as u64);
            match st.store.prune_jobs(cutoff).await {
                Ok(0) => {}
                Ok(n) => info!(
                    jobs = n,
                    retention_s = st.cfg.job_retention.as_secs(),
                    "old job records deleted"
                ),
                Err(e) => warn!(error = %e, "deleting old job records"),
            }
        }
        if drain_hooks {
            if let Some(q) = &st.hooks {
                q.drain_once().await;
            }
        }
    }
}

async fn expire_waiting(st: &ApiState) -> Result<(), crate::queue::StoreError> {
    let limit = st.cfg.queue_wait.as_millis() as u64;
    for id in st.store.waiting().await? {
        let Some(mut job) = st.store.get_job(&id).await? else {
            continue;
        };
        if now_ms().saturating_sub(job.created_ms) < limit || job.attempts > 0 {
            continue;
        }
        if job.spec.kind == crate::queue::JobKind::Transcode {
            // Post-session work waits for its worker however long that takes.
            continue;
        }
        let code = match job.spec.kind {
            crate::queue::JobKind::Streaming => Code::StreamQueueFailed,
            _ => Code::RecordQueueFailed,
        };
        let waited = st.cfg.queue_wait.as_secs();
        let msg = format!("no worker could start it within {waited} s");
        if job.spec.kind == crate::queue::JobKind::Recording {
            fall_back_waiting(st, &mut job, msg).await?;
            continue;
        }
        if end_waiting(st, &mut job, JobState::Failed, code, msg).await? {
            info!(job = %id, waited_s = waited, "request waited too long");
        }
    }
    Ok(())
}

/// A live recording that waited too long for a worker: the room is recorded individually
/// instead (a worker has room for that long before it has room for a composite) and the
/// request ends with 7014; with 7205 when the room already records individually.
async fn fall_back_waiting(
    st: &ApiState,
    job: &mut Job,
    msg: String,
) -> Result<(), crate::queue::StoreError> {
    use crate::queue::{Enqueued, JobKind};
    let jobs = st.store.jobs().await?;
    if let Some(other) = super::state::live_job(&jobs, &job.spec.room_id, JobKind::Individual) {
        let msg = format!(
            "{msg}; the room already records individually ({})",
            other.id
        );
        end_waiting(st, job, JobState::Failed, Code::RecordLegacyRunning, msg).await?;
        return Ok(());
    }
    let fallback = crate::job::kinds::legacy::fallback_job(job);
    let msg = format!(
        "{msg}; recording the room individually instead (job {}): the recording will be made \
         available post-session",
        fallback.id
    );
    if !end_waiting(st, job, JobState::Failed, Code::RecordDelayed, msg).await? {
        return Ok(());
    }
    match st.store.enqueue(&fallback).await? {
        Enqueued::Waiting(_) => info!(job = %job.id, fallback = %fallback.id,
            "live recording waited too long: recording individually instead"),
        Enqueued::Busy(other) => info!(job = %job.id, other = %other.id,
            "live recording waited too long; the room records individually already"),
    }
    Ok(())
}

/// Ends a request that is still waiting — unless a worker claimed it first (the waiting set
/// decides): records the outcome and sends the `…-failed` status webhook. Every way a waiting
/// request ends without running (cancel, stop, room destroyed, waited too long) goes here.
pub(super) async fn end_waiting(
    st: &ApiState,
    job: &mut Job,
    state: JobState,
    code: Code,
    msg: impl Into<String>,
) -> Result<bool, crate::queue::StoreError> {
    if !st.store.remove_waiting(&job.id).await? {
        return Ok(false);
    }
    job.end(state, code.as_u16(), msg);
    st.store.put_job(job).await?;
    status_hook(st, job, "failed", Some(code));
    Ok(true)
}

pub(super) fn status_hook(st: &ApiState, job: &Job, suffix: &str, code: Option<Code>) {
    let Some(q) = &st.hooks else { return };
    let kind = format!("{}-{suffix}", job.spec.kind.status_prefix());
    let ctx = EventContext {
        app_id: job.spec.app_id.clone(),
        room_id: job.spec.room_id.clone(),
        conf_num: job.spec.conf_num.clone(),
        by: job.spec.started_by.clone(),
    };
    let id = format!("{kind}-{}-api", job.id);
    if let Err(e) = q.enqueue(&id, &status_event(&kind, &ctx, code)) {
        warn!(error = %e, "status webhook not queued");
    }
}

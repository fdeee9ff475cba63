//! The worker as a [`JobHost`]: job records, archive, segment numbers and commands live in the
//! queue store, fenced by the job's attempt number; and the worker's delivery loop.

use super::Worker;
use crate::job::files::records::{archive_entry, chat_archive_entry, chat_meta, segment_meta};
use crate::job::spec::host::TakenUp;
use crate::job::{execute, HandOff, JobCommand, JobEnv, JobHost, Poll};
use crate::queue::{ArchiveEntry, Job, JobState, SegmentStatus, StoreResult};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How often the delivery loop drains the spool and webhook queue.
const DELIVERY_POLL: Duration = Duration::from_secs(1);

impl JobHost for Worker {
    /// Writes the job record — unless another worker has taken the job over since (a worker
    /// that was cut off from the queue longer than its lease): the record then carries a later
    /// attempt, and this worker must not overwrite it.
    async fn save(&self, job: &mut Job) {
        job.updated_ms = crate::clock::now_ms();
        match self.store.put_job_fenced(job).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(job = %job.id, "job record not saved: another worker holds the job now")
            }
            // The store is away: the next save (every progress report) catches up.
            Err(e) => debug!(error = %e, "job record not saved"),
        }
    }

    async fn thumbnail(&self, job_id: &str, jpeg: &[u8]) {
        if let Err(e) = self.store.put_thumbnail(job_id, jpeg).await {
            debug!(error = %e, "thumbnail not saved");
        }
    }

    async fn archive(&self, entry: &ArchiveEntry) {
        if let Err(e) = self.store.put_archive(entry).await {
            warn!(error = %e, "archive entry not saved");
        }
    }

    async fn archived(&self) -> Vec<ArchiveEntry> {
        match self.store.archive().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "archive not read");
                Vec::new()
            }
        }
    }

    async fn next_segment(&self, room: &str, conf: &str, own_next: u64) -> StoreResult<u64> {
        self.store.next_segment(room, conf, own_next).await
    }

    async fn present(&self, room_id: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(self
            .store
            .get_room(room_id)
            .await?
            .map(|room| room.participants)
            .unwrap_or_default())
    }

    async fn poll(&self, job: &Job) -> Poll {
        // Ownership first: a worker that lost the job must not take the commands meant for
        // its new holder.
        match self.store.take_commands_fenced(&job.id, job.attempts).await {
            Ok(Some(c)) => Poll::Commands(c),
            Ok(None) => Poll::Superseded,
            // The store is away (logged once by the worker): commands wait there.
            Err(e) => {
                debug!(error = %e, "reading commands failed");
                Poll::Commands(Vec::new())
            }
        }
    }

    async fn release(&self, job: &Job) {
        if let Err(e) = self.store.release(job).await {
            warn!(error = %e, "release failed");
        }
    }

    async fn hand_back(&self, job: &Job) {
        if let Err(e) = self.store.hand_back(&self.cfg.id, job).await {
            warn!(error = %e, "hand-back failed");
        }
    }

    async fn taken_up(&self, job: &Job) -> TakenUp {
        match self.store.get_job(&job.id).await {
            Ok(None) => TakenUp::Ended,
            Ok(Some(j)) if j.state.is_terminal() => TakenUp::Ended,
            // Its next run records, and the tracks this run records reach that run's file too.
            Ok(Some(j))
                if j.attempts > job.attempts
                    && j.state == JobState::Active
                    && crate::model::feed::covers(&j.feeds, &job.feeds) =>
            {
                TakenUp::Recording
            }
            // Not yet, or the store is away for a moment: asked again at the next poll.
            Ok(Some(_)) | Err(_) => TakenUp::Waiting,
        }
    }

    async fn worker_alive(&self, id: &str) -> bool {
        match self.store.workers().await {
            Ok(ws) => ws.iter().any(|w| w.id == id),
            Err(_) => true,
        }
    }

    fn set_cost(&self, job_id: &str, cost: f64) {
        Worker::set_cost(self, job_id, cost)
    }

    /// Files only: webhooks go out on the delivery loop's own task, so a receiver that is
    /// slow or never answers cannot hold a job's end.
    async fn spooled(&self) {
        self.outbox.drain_files_once(self).await;
        self.outbox.hooks_queued();
    }

    async fn enqueue(&self, job: &Job) -> StoreResult<bool> {
        Ok(matches!(
            self.store.enqueue(job).await?,
            crate::queue::Enqueued::Waiting(_)
        ))
    }
}

/// Drains the spool and the webhooks every second while the worker runs, each on its own
/// (a slow webhook receiver does not hold up files), and every [`KEPT_RETRY`] hands segments
/// the spool could not take (a full disk) to it again.
pub(super) async fn delivery_loop(w: Arc<Worker>) {
    let hooks = {
        let w = w.clone();
        tokio::spawn(async move {
            loop {
                w.outbox.drain_hooks_once().await;
                tokio::select! {
                    _ = tokio::time::sleep(DELIVERY_POLL) => {}
                    _ = w.outbox.hooks_wanted() => {}
                }
            }
        })
    };
    let _stop_hooks = AbortOnDrop(hooks);
    let mut last_kept = tokio::time::Instant::now();
    loop {
        let report = w.outbox.drain_files_once(w.as_ref()).await;
        if !report.files.is_empty() || !report.failures.is_empty() {
            // Delivered files are announced (and failures told) by webhooks just queued.
            w.outbox.hooks_queued();
        }
        if last_kept.elapsed() >= KEPT_RETRY {
            last_kept = tokio::time::Instant::now();
            w.retry_kept().await;
        }
        tokio::time::sleep(DELIVERY_POLL).await;
    }
}

/// How often segments that could not be spooled are tried again.
const KEPT_RETRY: Duration = Duration::from_secs(10);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// Segments of ended jobs that stayed where they were recorded because the spool could
    /// not take them (disk full): handed to the spool again, record and archive updated.
    async fn retry_kept(&self) {
        if self.outbox.deliverer.is_none() {
            return;
        }
        let Ok(jobs) = self.store.jobs().await else {
            return;
        };
        for mut job in jobs {
            if !job.state.is_terminal() {
                continue;
            }
            let mut changed = false;
            for i in 0..job.segments.len() {
                let seg = &job.segments[i];
                let target = job.spec.storage.clone();
                if seg.status == SegmentStatus::Kept && seg.path.is_dir() {
                    // An individual segment's folder.
                    if crate::job::kinds::legacy::retry_kept_folder(&self.outbox, &mut job, i).await
                    {
                        info!(job = %job.id, file = %job.segments[i].file_name,
                            "kept segment folder handed to the spool");
                        let entry = archive_entry(&job, &job.segments[i]);
                        self.archive(&entry).await;
                        changed = true;
                    }
                    continue;
                }
                if seg.status == SegmentStatus::Kept && seg.path.is_file() {
                    let (meta, path) = (segment_meta(&job, seg), seg.path.clone());
                    if let HandOff::Spooled { .. } =
                        self.outbox.hand_off(meta, &path, target.clone()).await
                    {
                        info!(job = %job.id, file = %job.segments[i].file_name,
                            "kept segment handed to the spool");
                        job.segments[i].status = SegmentStatus::Spooled;
                        let entry = archive_entry(&job, &job.segments[i]);
                        self.archive(&entry).await;
                        changed = true;
                    }
                }
                let seg = &job.segments[i];
                let transcript = crate::job::files::chat::transcript_path(&seg.path);
                let Some(mut chat) = seg
                    .chat
                    .clone()
                    .filter(|c| c.status == SegmentStatus::Kept && transcript.is_file())
                else {
                    continue;
                };
                let meta = chat_meta(&job, seg, &chat);
                if let HandOff::Spooled { .. } =
                    self.outbox.hand_off(meta, &transcript, target).await
                {
                    info!(job = %job.id, file = %chat.file_name, "kept chat transcript handed to the spool");
                    chat.status = SegmentStatus::Spooled;
                    let entry = chat_archive_entry(&job, &job.segments[i], &chat);
                    job.segments[i].chat = Some(chat);
                    self.archive(&entry).await;
                    changed = true;
                }
            }
            if changed {
                if let Err(e) = self.store.put_job(&job).await {
                    warn!(error = %e, "job record not saved");
                }
            }
        }
    }
}

/// Longest a stopping worker gives its queued webhooks: they are on disk, and whatever is not
/// sent by then goes out from the next process that opens the same data folder.
const HOOKS_AT_EXIT: Duration = Duration::from_secs(2);

/// Delivers files until none is pending or `limit` passes, then gives the webhooks one pass
/// of at most [`HOOKS_AT_EXIT`]: a receiver that does not answer never holds a shutdown.
pub(super) async fn deliver_pending(w: &Worker, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while w.outbox.drain_files_once(w).await.pending > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if tokio::time::timeout(HOOKS_AT_EXIT, w.outbox.drain_hooks_once())
        .await
        .is_err()
    {
        info!("webhooks left queued on disk for the next start");
    }
}

/// Runs one job to its end (or until it is handed back).
pub(super) async fn run_job(
    w: &Arc<Worker>,
    mut job: Job,
    local: mpsc::Receiver<JobCommand>,
    hand_back: Arc<AtomicBool>,
) {
    job.worker = Some(w.cfg.id.clone());
    let env = JobEnv {
        recordings_dir: w.cfg.recordings_dir.clone(),
        outbox: w.outbox.clone(),
        min_free_bytes: w.cfg.min_free_bytes,
        start_timeout: w.cfg.start_timeout,
        custom_views: w.cfg.custom_views,
    };
    execute(w.as_ref(), &env, job, None, local, hand_back).await;
    crate::util::release_free_memory();
}

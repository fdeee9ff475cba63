//! What a running job needs from whoever runs it: somewhere to keep its record and archive,
//! segment numbers, commands from outside, and a way to hand it back.
//!
//! The worker implements [`JobHost`] over the queue store (fenced by the job's attempt number);
//! `roomcast demo` / `record` use [`MemoryHost`], which keeps everything in memory and takes
//! commands only from the process itself. Nothing here touches media or storage.

use crate::queue::{ArchiveEntry, Command, Job, StoreResult};
use std::future::Future;
use std::sync::Mutex;

/// What a poll for commands found.
#[derive(Debug)]
pub enum Poll {
    /// Commands for the job (possibly none).
    Commands(Vec<Command>),
    /// Another worker holds the job now: this run must finish its segment and let go.
    Superseded,
}

/// Where a job handed over to another worker stands, as its previous run sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakenUp {
    /// No other run records it yet.
    Waiting,
    /// Its next run records everyone this run records: this one may end its segment.
    Recording,
    /// The job ended (or its record is gone).
    Ended,
}

/// The job's surroundings.
pub trait JobHost: Send + Sync {
    /// Writes the job record (a host that lost the job to another holder keeps the record as
    /// the holder wrote it).
    fn save(&self, job: &mut Job) -> impl Future<Output = ()> + Send;
    /// Records a file in the archive (by job id and file name).
    fn archive(&self, entry: &ArchiveEntry) -> impl Future<Output = ()> + Send;
    /// Every archive entry.
    fn archived(&self) -> impl Future<Output = Vec<ArchiveEntry>> + Send;
    /// The next segment number of a conference, at least `own_next`.
    fn next_segment(
        &self,
        room_id: &str,
        conf_num: &str,
        own_next: u64,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Participants the platform reported present in the room (id, name).
    fn present(
        &self,
        room_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<(String, String)>>> + Send;
    /// Commands for the running job, or word that it was taken over.
    fn poll(&self, job: &Job) -> impl Future<Output = Poll> + Send;
    /// The job ended: release its queue entry.
    fn release(&self, job: &Job) -> impl Future<Output = ()> + Send;
    /// The host is stopping: put the job back in the queue for another run.
    fn hand_back(&self, job: &Job) -> impl Future<Output = ()> + Send;
    /// After `job` (as this run last had it) was handed back while still recording: whether
    /// its next run has started recording.
    fn taken_up(&self, job: &Job) -> impl Future<Output = TakenUp> + Send;
    /// Whether worker `id` heart-beats (when the store cannot tell: yes).
    fn worker_alive(&self, id: &str) -> impl Future<Output = bool> + Send;
    /// The job's estimated cost changed (cores).
    fn set_cost(&self, job_id: &str, cost: f64);
    /// A segment was spooled: a good moment to try delivering.
    fn spooled(&self) -> impl Future<Output = ()> + Send;
    /// Queues a job that follows from this one (a segment's transcode, a fall-back
    /// recording). `Ok(false)`: the room already has a live job of its kind.
    fn enqueue(&self, job: &Job) -> impl Future<Output = StoreResult<bool>> + Send;
    /// A small JPEG of what the job records now, for whoever looks at the running job
    /// (nothing keeps it by default).
    fn thumbnail(&self, _job_id: &str, _jpeg: &[u8]) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A host for one job run by the command line: the record and archive live in memory.
#[derive(Debug, Default)]
pub struct MemoryHost {
    job: Mutex<Option<Job>>,
    archive: Mutex<Vec<ArchiveEntry>>,
}

impl MemoryHost {
    /// An empty host.
    pub fn new() -> MemoryHost {
        MemoryHost::default()
    }

    /// The job record as last saved.
    pub fn job(&self) -> Option<Job> {
        self.job.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every archive entry.
    pub fn entries(&self) -> Vec<ArchiveEntry> {
        self.archive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl JobHost for MemoryHost {
    async fn save(&self, job: &mut Job) {
        job.updated_ms = crate::clock::now_ms();
        *self.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.clone());
    }

    async fn archive(&self, entry: &ArchiveEntry) {
        let mut a = self.archive.lock().unwrap_or_else(|e| e.into_inner());
        match a
            .iter_mut()
            .find(|e| e.job_id == entry.job_id && e.file_name == entry.file_name)
        {
            Some(e) => *e = entry.clone(),
            None => a.push(entry.clone()),
        }
    }

    async fn archived(&self) -> Vec<ArchiveEntry> {
        self.entries()
    }

    async fn next_segment(&self, _room: &str, _conf: &str, own_next: u64) -> StoreResult<u64> {
        // The output folder decides (an existing file is never overwritten).
        Ok(own_next)
    }

    async fn present(&self, _room_id: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    async fn poll(&self, _job: &Job) -> Poll {
        Poll::Commands(Vec::new())
    }

    async fn release(&self, _job: &Job) {}

    async fn hand_back(&self, _job: &Job) {}

    async fn taken_up(&self, _job: &Job) -> TakenUp {
        TakenUp::Ended
    }

    async fn worker_alive(&self, _id: &str) -> bool {
        false
    }

    fn set_cost(&self, _job_id: &str, _cost: f64) {}

    async fn spooled(&self) {}

    async fn enqueue(&self, job: &Job) -> StoreResult<bool> {
        // One job per process: what would follow it is not run.
        Err(crate::queue::StoreError::Unexpected(format!(
            "no queue to run {} job {} (the command line runs one job)",
            job.spec.kind.as_str(),
            job.id
        )))
    }
}

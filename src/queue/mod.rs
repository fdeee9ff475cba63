//! The job queue and the state every process shares: rooms, jobs, commands, workers, archive
//! (the types are in `model::{room, job, command}`). Storage only: no media, no delivery, no webhooks.
//!
//! Two stores hold the same JSON:
//! - [`embedded`]: a redb file in the data folder, for one machine with no external service
//!   (`roomcast serve`); jobs survive a restart.
//! - [`redis`]: Redis Streams for a fleet (`roomcast api` + `roomcast worker`): a consumer group
//!   hands each job to one worker, the worker's heartbeat keeps its claim fresh, and a job whose
//!   worker stops heart-beating is taken over with `XAUTOCLAIM`.
//!
//! Ordering and cancellation are decided in one place for both: the *waiting set* (job ids in
//! submission order). A worker starts a job only after removing it from the waiting set, and a
//! cancel succeeds only by removing it first, so the two can never both win.

pub mod embedded;

pub mod redis;

pub use crate::model::command::*;
pub use crate::model::event::{MediaKind, PlatformEvent};
pub use crate::model::job::*;
pub use crate::model::room::*;

use std::time::Duration;

/// How long a claim lasts without a heartbeat before another worker may take the job over.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often workers refresh their claims and advertise their capacity.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);

/// A store failure (the store is down or returned something unreadable), with its cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused, dropped the connection or answered an error.
    #[error("queue store: {context}: {source}")]
    Redis {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: ::redis::RedisError,
    },
    /// The embedded database failed.
    #[error("queue store: {0}")]
    Embedded(#[source] Box<redb::Error>),
    /// A stored record could not be read or written as JSON.
    #[error("queue store: unreadable record: {0}")]
    Data(#[from] serde_json::Error),
    /// The store answered something it should not have.
    #[error("queue store: {0}")]
    Unexpected(String),
}

/// What [`Store::enqueue`] did.
#[derive(Debug, Clone)]
pub enum Enqueued {
    /// Stored and waiting; this many jobs wait ahead of it.
    Waiting(usize),
    /// Not stored: the room already has this job of the same kind, not yet ended.
    Busy(Box<Job>),
}

/// The key of a room's live job of one kind.
pub(crate) fn live_key(job: &Job) -> String {
    match (&job.spec.kind, &job.spec.manifest) {
        // Every segment's transcode is a job of its own.
        (JobKind::Transcode, Some(m)) => {
            format!("{}|transcode|{}", job.spec.room_id, m.display())
        }
        (kind, _) => format!("{}|{}", job.spec.room_id, kind.as_str()),
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The shared store: embedded or Redis.
#[derive(Clone)]
pub enum Store {
    /// redb file, one process.
    Embedded(std::sync::Arc<embedded::Embedded>),
    /// Redis Streams, many processes.
    Redis(redis::RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Embedded($s) => {
                let $s = $s.as_ref();
                tokio::task::block_in_place(|| $e)
            }
            Store::Redis($s) => $e.await,
        }
    };
}

impl Store {
    /// Opens the embedded store in `dir`.
    pub fn embedded(dir: &std::path::Path) -> StoreResult<Store> {
        Ok(Store::Embedded(std::sync::Arc::new(
            embedded::Embedded::open(dir)?,
        )))
    }

    /// Connects to Redis.
    pub async fn redis(url: &str) -> StoreResult<Store> {
        Ok(Store::Redis(redis::RedisStore::connect(url).await?))
    }

    /// `embedded` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
        }
    }

    /// Registers or replaces a room.
    pub async fn put_room(&self, room: &RoomConfig) -> StoreResult<()> {
        dispatch!(self, s => s.put_room(room))
    }

    /// Forgets a room; true if it was registered.
    pub async fn delete_room(&self, id: &str) -> StoreResult<bool> {
        dispatch!(self, s => s.delete_room(id))
    }

    /// A registered room.
    pub async fn get_room(&self, id: &str) -> StoreResult<Option<RoomConfig>> {
        dispatch!(self, s => s.get_room(id))
    }

    /// Writes a job record.
    pub async fn put_job(&self, job: &Job) -> StoreResult<()> {
        dispatch!(self, s => s.put_job(job))
    }

    /// Writes a job record unless another worker has started the job since (the stored
    /// record has a later attempt): the check and the write are one atomic step. True if
    /// written.
    pub async fn put_job_fenced(&self, job: &Job) -> StoreResult<bool> {
        dispatch!(self, s => s.put_job_fenced(job))
    }

    /// A job record.
    pub async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        dispatch!(self, s => s.get_job(id))
    }

    /// Every job record.
    pub async fn jobs(&self) -> StoreResult<Vec<Job>> {
        dispatch!(self, s => s.jobs())
    }

    /// Deletes the records (and any leftover commands) of jobs that ended before
    /// `ended_before_ms`; returns how many. Jobs that have not ended are never touched.
    pub async fn prune_jobs(&self, ended_before_ms: u64) -> StoreResult<usize> {
        let old: Vec<String> = self
            .jobs()
            .await?
            .into_iter()
            .filter(|j| j.state.is_terminal() && j.ended_ms.is_some_and(|t| t < ended_before_ms))
            .map(|j| j.id)
            .collect();
        if !old.is_empty() {
            dispatch!(self, s => s.delete_jobs(&old))?;
        }
        Ok(old.len())
    }

    /// Takes the next recording segment number of a room's conference, unique across the
    /// fleet and above `at_least - 1`: two jobs of one conference on two workers never write
    /// (and deliver) the same `<room>_<conf>_<n>.mp4`.
    pub async fn next_segment(&self, room: &str, conf: &str, at_least: u64) -> StoreResult<u64> {
        let key = format!("segment:{}", to_json(&(room, conf))?);
        dispatch!(self, s => s.next_segment(&key, at_least))
    }

    /// Stores a new job and puts it at the end of the waiting set, unless its room already
    /// has a job of its kind that has not ended: a room has at most one live job per kind, and
    /// the check and the write are one atomic step in both stores.
    pub async fn enqueue(&self, job: &Job) -> StoreResult<Enqueued> {
        dispatch!(self, s => s.enqueue(job))
    }

    /// Ids in the waiting set, first first.
    pub async fn waiting(&self) -> StoreResult<Vec<String>> {
        dispatch!(self, s => s.waiting())
    }

    /// Removes a job from the waiting set; true if it was waiting (and now will never start).
    pub async fn remove_waiting(&self, id: &str) -> StoreResult<bool> {
        dispatch!(self, s => s.remove_waiting(id))
    }

    /// Takes the next waiting job for `worker`, if any.
    pub async fn claim(&self, worker: &str) -> StoreResult<Option<Job>> {
        dispatch!(self, s => s.claim(worker))
    }

    /// Refreshes `info.jobs`' claims and advertises the worker.
    pub async fn heartbeat(&self, info: &WorkerInfo) -> StoreResult<()> {
        dispatch!(self, s => s.heartbeat(info))
    }

    /// Takes over jobs whose worker stopped heart-beating for longer than [`LEASE`].
    pub async fn reclaim(&self, worker: &str) -> StoreResult<Vec<Job>> {
        dispatch!(self, s => s.reclaim(worker))
    }

    /// Gives up `worker`'s claim on a job that is not finished, so another worker (or this
    /// store's next process) continues it.
    pub async fn hand_back(&self, worker: &str, job: &Job) -> StoreResult<()> {
        dispatch!(self, s => s.hand_back(worker, job))
    }

    /// Drops the claim on a finished job.
    pub async fn release(&self, job: &Job) -> StoreResult<()> {
        dispatch!(self, s => s.release(job))
    }

    /// Workers that heart-beat within the last three heartbeats.
    pub async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let all: Vec<WorkerInfo> = dispatch!(self, s => s.workers())?;
        let horizon = now_ms().saturating_sub(3 * HEARTBEAT.as_millis() as u64);
        Ok(all
            .into_iter()
            .filter(|w| w.heartbeat_ms >= horizon)
            .collect())
    }

    /// Queues a command for the worker holding `job`.
    pub async fn push_command(&self, job: &str, cmd: &Command) -> StoreResult<()> {
        dispatch!(self, s => s.push_command(job, cmd))
    }

    /// Takes the commands queued for `job`, oldest first, unless another worker has started
    /// the job since attempt `attempts` (None): checked and taken in one atomic step.
    pub async fn take_commands_fenced(
        &self,
        job: &str,
        attempts: u32,
    ) -> StoreResult<Option<Vec<Command>>> {
        dispatch!(self, s => s.take_commands_fenced(job, attempts))
    }

    /// Adds or replaces an archive entry.
    pub async fn put_archive(&self, entry: &ArchiveEntry) -> StoreResult<()> {
        dispatch!(self, s => s.put_archive(entry))
    }

    /// Every archive entry.
    pub async fn archive(&self) -> StoreResult<Vec<ArchiveEntry>> {
        dispatch!(self, s => s.archive())
    }

    /// Keeps the latest picture of a running job for [`THUMBNAIL_TTL`] (not durable: a
    /// picture of the past is of no use).
    pub async fn put_thumbnail(&self, job: &str, jpeg: &[u8]) -> StoreResult<()> {
        match self {
            Store::Embedded(s) => {
                s.put_thumbnail(job, jpeg);
                Ok(())
            }
            Store::Redis(s) => s.put_thumbnail(job, jpeg).await,
        }
    }

    /// The latest picture of a running job, if one is younger than [`THUMBNAIL_TTL`].
    pub async fn thumbnail(&self, job: &str) -> StoreResult<Option<Vec<u8>>> {
        match self {
            Store::Embedded(s) => Ok(s.thumbnail(job)),
            Store::Redis(s) => s.thumbnail(job).await,
        }
    }
}

/// How long a job's thumbnail is kept after it was taken (a job writes one every 2 s).
pub const THUMBNAIL_TTL: std::time::Duration = std::time::Duration::from_secs(10);

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    Ok(serde_json::to_string(v)?)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    Ok(serde_json::from_str(s)?)
}

fn archive_key(e: &ArchiveEntry) -> String {
    format!("{}/{}", e.job_id, e.file_name)
}

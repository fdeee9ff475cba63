//! The embedded store: one redb file (`queue.redb` in the data folder), written with durable
//! commits, used by a single `roomcast serve` process.
//!
//! Claims live in memory: a job that a previous process held (it crashed or was stopped) has no
//! claim in this process and is taken over by the first [`Embedded::reclaim`].

use super::{
    archive_key, from_json, live_key, to_json, ArchiveEntry, Command, Enqueued, Job, RoomConfig,
    StoreError, StoreResult, WorkerInfo, LEASE, THUMBNAIL_TTL,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

const ROOMS: TableDefinition<&str, &str> = TableDefinition::new("rooms");
const JOBS: TableDefinition<&str, &str> = TableDefinition::new("jobs");
/// Waiting set: sequence number → job id. Hand-backs get numbers below every other.
const WAITING: TableDefinition<i64, &str> = TableDefinition::new("waiting");
const COMMANDS: TableDefinition<&str, &str> = TableDefinition::new("commands");
const ARCHIVE: TableDefinition<&str, &str> = TableDefinition::new("archive");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// `{room}|{kind}` → the id of the room's latest job of that kind (one live job per room
/// and kind: see [`Embedded::enqueue`]).
const LIVE: TableDefinition<&str, &str> = TableDefinition::new("live");

/// The embedded store.
pub struct Embedded {
    db: Database,
    claims: Mutex<HashMap<String, (String, Instant)>>,
    workers: Mutex<HashMap<String, WorkerInfo>>,
    /// Running jobs' latest pictures (kept in memory: see [`super::Store::put_thumbnail`]).
    thumbnails: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

fn e(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Embedded(Box::new(err.into()))
}

impl Embedded {
    /// Opens (or creates) `dir/queue.redb`.
    pub fn open(dir: &Path) -> StoreResult<Embedded> {
        std::fs::create_dir_all(dir).map_err(|err| e(redb::StorageError::Io(err)))?;
        let path = dir.join("queue.redb");
        let db = Database::create(&path).map_err(e)?;
        let tx = db.begin_write().map_err(e)?;
        {
            tx.open_table(ROOMS).map_err(e)?;
            tx.open_table(JOBS).map_err(e)?;
            tx.open_table(WAITING).map_err(e)?;
            tx.open_table(COMMANDS).map_err(e)?;
            tx.open_table(ARCHIVE).map_err(e)?;
            tx.open_table(META).map_err(e)?;
        }
        tx.commit().map_err(e)?;
        Ok(Embedded {
            db,
            claims: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
            thumbnails: Mutex::new(HashMap::new()),
        })
    }

    fn put(&self, table: TableDefinition<&str, &str>, key: &str, value: &str) -> StoreResult<()> {
        let tx = self.db.begin_write().map_err(e)?;
        tx.open_table(table)
            .map_err(e)?
            .insert(key, value)
            .map_err(e)?;
        tx.commit().map_err(e)
    }

    fn get(&self, table: TableDefinition<&str, &str>, key: &str) -> StoreResult<Option<String>> {
        let tx = self.db.begin_read().map_err(e)?;
        let t = tx.open_table(table).map_err(e)?;
        Ok(t.get(key).map_err(e)?.map(|v| v.value().to_string()))
    }

    fn values(&self, table: TableDefinition<&str, &str>) -> StoreResult<Vec<String>> {
        let tx = self.db.begin_read().map_err(e)?;
        let t = tx.open_table(table).map_err(e)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(e)? {
            let (_, v) = item.map_err(e)?;
            out.push(v.value().to_string());
        }
        Ok(out)
    }

    pub(super) fn put_room(&self, room: &RoomConfig) -> StoreResult<()> {
        self.put(ROOMS, &room.room_id, &to_json(room)?)
    }

    pub(super) fn delete_room(&self, id: &str) -> StoreResult<bool> {
        let tx = self.db.begin_write().map_err(e)?;
        let found = tx
            .open_table(ROOMS)
            .map_err(e)?
            .remove(id)
            .map_err(e)?
            .is_some();
        tx.commit().map_err(e)?;
        Ok(found)
    }

    pub(super) fn get_room(&self, id: &str) -> StoreResult<Option<RoomConfig>> {
        self.get(ROOMS, id)?.map(|s| from_json(&s)).transpose()
    }

    pub(super) fn put_job(&self, job: &Job) -> StoreResult<()> {
        self.put(JOBS, &job.id, &to_json(job)?)
    }

    /// Writes the record unless the stored one has a later attempt, in one write
    /// transaction (redb serializes write transactions, so nothing comes between the check
    /// and the write). True if written.
    pub(super) fn put_job_fenced(&self, job: &Job) -> StoreResult<bool> {
        let tx = self.db.begin_write().map_err(e)?;
        {
            let mut t = tx.open_table(JOBS).map_err(e)?;
            if stored_attempts(&t, &job.id)? > job.attempts {
                return Ok(false);
            }
            t.insert(job.id.as_str(), to_json(job)?.as_str())
                .map_err(e)?;
        }
        tx.commit().map_err(e)?;
        Ok(true)
    }

    pub(super) fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        self.get(JOBS, id)?.map(|s| from_json(&s)).transpose()
    }

    pub(super) fn jobs(&self) -> StoreResult<Vec<Job>> {
        self.values(JOBS)?.iter().map(|s| from_json(s)).collect()
    }

    /// Deletes job records and their command lists.
    pub(super) fn delete_jobs(&self, ids: &[String]) -> StoreResult<()> {
        let tx = self.db.begin_write().map_err(e)?;
        {
            let mut jobs = tx.open_table(JOBS).map_err(e)?;
            let mut commands = tx.open_table(COMMANDS).map_err(e)?;
            for id in ids {
                jobs.remove(id.as_str()).map_err(e)?;
                commands.remove(id.as_str()).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    pub(super) fn next_segment(&self, key: &str, at_least: u64) -> StoreResult<u64> {
        let tx = self.db.begin_write().map_err(e)?;
        let n = {
            let mut meta = tx.open_table(META).map_err(e)?;
            let next = Self::next_seq(&mut meta, key, 1)?;
            let floor = i64::try_from(at_least).unwrap_or(i64::MAX);
            if next < floor {
                meta.insert(key, floor).map_err(e)?;
            }
            next.max(floor)
        };
        tx.commit().map_err(e)?;
        Ok(n as u64)
    }

    fn next_seq(meta: &mut redb::Table<&str, i64>, key: &str, step: i64) -> StoreResult<i64> {
        let cur = meta.get(key).map_err(e)?.map(|v| v.value()).unwrap_or(0);
        let next = cur + step;
        meta.insert(key, next).map_err(e)?;
        Ok(next)
    }

    pub(super) fn enqueue(&self, job: &Job) -> StoreResult<Enqueued> {
        let tx = self.db.begin_write().map_err(e)?;
        let ahead;
        {
            // The room's live job of this kind and the new one are decided in this one write
            // transaction: of two racing starts, the second sees the first.
            let live_key = live_key(job);
            let mut live = tx.open_table(LIVE).map_err(e)?;
            let current = live
                .get(live_key.as_str())
                .map_err(e)?
                .map(|v| v.value().to_string());
            if let Some(current) = current {
                let jobs = tx.open_table(JOBS).map_err(e)?;
                if let Some(other) = stored_job(&jobs, &current)?.filter(|o| !o.state.is_terminal())
                {
                    return Ok(Enqueued::Busy(Box::new(other)));
                }
            }
            live.insert(live_key.as_str(), job.id.as_str()).map_err(e)?;
            let mut meta = tx.open_table(META).map_err(e)?;
            let seq = Self::next_seq(&mut meta, "seq", 1)?;
            let mut waiting = tx.open_table(WAITING).map_err(e)?;
            ahead = waiting.len().map_err(e)? as usize;
            waiting.insert(seq, job.id.as_str()).map_err(e)?;
            tx.open_table(JOBS)
                .map_err(e)?
                .insert(job.id.as_str(), to_json(job)?.as_str())
                .map_err(e)?;
        }
        tx.commit().map_err(e)?;
        Ok(Enqueued::Waiting(ahead))
    }

    pub(super) fn waiting(&self) -> StoreResult<Vec<String>> {
        let tx = self.db.begin_read().map_err(e)?;
        let t = tx.open_table(WAITING).map_err(e)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(e)? {
            out.push(item.map_err(e)?.1.value().to_string());
        }
        Ok(out)
    }

    pub(super) fn remove_waiting(&self, id: &str) -> StoreResult<bool> {
        let tx = self.db.begin_write().map_err(e)?;
        let found;
        {
            let mut t = tx.open_table(WAITING).map_err(e)?;
            let mut key = None;
            for item in t.iter().map_err(e)? {
                let (k, v) = item.map_err(e)?;
                if v.value() == id {
                    key = Some(k.value());
                    break;
                }
            }
            found = key.is_some();
            if let Some(k) = key {
                t.remove(k).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(found)
    }

    pub(super) fn claim(&self, worker: &str) -> StoreResult<Option<Job>> {
        let tx = self.db.begin_write().map_err(e)?;
        let job = {
            let mut waiting = tx.open_table(WAITING).map_err(e)?;
            let first = waiting.pop_first().map_err(e)?;
            match first {
                None => None,
                Some((_, id)) => {
                    let id = id.value().to_string();
                    let jobs = tx.open_table(JOBS).map_err(e)?;
                    let job = jobs
                        .get(id.as_str())
                        .map_err(e)?
                        .map(|v| v.value().to_string());
                    job.map(|s| from_json::<Job>(&s)).transpose()?
                }
            }
        };
        tx.commit().map_err(e)?;
        if let Some(j) = &job {
            self.claims
                .lock()
                .unwrap()
                .insert(j.id.clone(), (worker.to_string(), Instant::now()));
        }
        Ok(job)
    }

    pub(super) fn heartbeat(&self, info: &WorkerInfo) -> StoreResult<()> {
        let now = Instant::now();
        let mut claims = self.claims.lock().unwrap();
        for id in &info.jobs {
            claims.insert(id.clone(), (info.id.clone(), now));
        }
        drop(claims);
        self.workers
            .lock()
            .unwrap()
            .insert(info.id.clone(), info.clone());
        Ok(())
    }

    pub(super) fn reclaim(&self, worker: &str) -> StoreResult<Vec<Job>> {
        let waiting: std::collections::HashSet<String> = self.waiting()?.into_iter().collect();
        let mut out = Vec::new();
        let mut claims = self.claims.lock().unwrap();
        for job in self.jobs()? {
            if job.state.is_terminal() || waiting.contains(&job.id) {
                continue;
            }
            let expired = match claims.get(&job.id) {
                None => true,
                Some((_, at)) => at.elapsed() > LEASE,
            };
            if expired {
                claims.insert(job.id.clone(), (worker.to_string(), Instant::now()));
                out.push(job);
            }
        }
        Ok(out)
    }

    pub(super) fn hand_back(&self, worker: &str, job: &Job) -> StoreResult<()> {
        let tx = self.db.begin_write().map_err(e)?;
        {
            let mut meta = tx.open_table(META).map_err(e)?;
            // Hand-backs go before everything waiting: they were started first.
            let seq = -Self::next_seq(&mut meta, "front", 1)? - (1 << 40);
            tx.open_table(WAITING)
                .map_err(e)?
                .insert(seq, job.id.as_str())
                .map_err(e)?;
            tx.open_table(JOBS)
                .map_err(e)?
                .insert(job.id.as_str(), to_json(job)?.as_str())
                .map_err(e)?;
        }
        tx.commit().map_err(e)?;
        let mut claims = self.claims.lock().unwrap();
        if claims.get(&job.id).is_some_and(|(w, _)| w == worker) {
            claims.remove(&job.id);
        }
        Ok(())
    }

    pub(super) fn release(&self, job: &Job) -> StoreResult<()> {
        self.claims.lock().unwrap().remove(&job.id);
        let tx = self.db.begin_write().map_err(e)?;
        tx.open_table(COMMANDS)
            .map_err(e)?
            .remove(job.id.as_str())
            .map_err(e)?;
        tx.commit().map_err(e)
    }

    pub(super) fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        Ok(self.workers.lock().unwrap().values().cloned().collect())
    }

    pub(super) fn push_command(&self, job: &str, cmd: &Command) -> StoreResult<()> {
        let tx = self.db.begin_write().map_err(e)?;
        {
            let mut t = tx.open_table(COMMANDS).map_err(e)?;
            let mut list: Vec<Command> = match t.get(job).map_err(e)? {
                Some(v) => from_json(v.value())?,
                None => Vec::new(),
            };
            list.push(cmd.clone());
            t.insert(job, to_json(&list)?.as_str()).map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// Takes the commands queued for a job unless its record has a later attempt (None), in
    /// one write transaction.
    pub(super) fn take_commands_fenced(
        &self,
        job: &str,
        attempts: u32,
    ) -> StoreResult<Option<Vec<Command>>> {
        // Cheap reads first: most polls find nothing (and a superseded run learns it from the
        // record on its next poll that finds commands or from its next save).
        if self.get(COMMANDS, job)?.is_none() {
            let superseded = self.get_job(job)?.is_some_and(|s| s.attempts > attempts);
            return Ok((!superseded).then(Vec::new));
        }
        let tx = self.db.begin_write().map_err(e)?;
        let list = {
            let jobs = tx.open_table(JOBS).map_err(e)?;
            if stored_attempts(&jobs, job)? > attempts {
                return Ok(None);
            }
            let mut t = tx.open_table(COMMANDS).map_err(e)?;
            let removed = t.remove(job).map_err(e)?;
            match removed {
                Some(v) => from_json(v.value())?,
                None => Vec::new(),
            }
        };
        tx.commit().map_err(e)?;
        Ok(Some(list))
    }

    pub(super) fn put_archive(&self, entry: &ArchiveEntry) -> StoreResult<()> {
        self.put(ARCHIVE, &archive_key(entry), &to_json(entry)?)
    }

    pub(super) fn archive(&self) -> StoreResult<Vec<ArchiveEntry>> {
        self.values(ARCHIVE)?.iter().map(|s| from_json(s)).collect()
    }

    pub(super) fn put_thumbnail(&self, job: &str, jpeg: &[u8]) {
        let mut all = self.thumbnails.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, (at, _)| at.elapsed() < THUMBNAIL_TTL);
        all.insert(job.to_string(), (Instant::now(), jpeg.to_vec()));
    }

    pub(super) fn thumbnail(&self, job: &str) -> Option<Vec<u8>> {
        let all = self.thumbnails.lock().unwrap_or_else(|e| e.into_inner());
        all.get(job)
            .filter(|(at, _)| at.elapsed() < THUMBNAIL_TTL)
            .map(|(_, jpeg)| jpeg.clone())
    }
}

/// A job record read inside a transaction.
fn stored_job(
    table: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
) -> StoreResult<Option<Job>> {
    table
        .get(id)
        .map_err(e)?
        .map(|v| from_json(v.value()))
        .transpose()
}

/// The attempt number of a stored job record (0 when there is none), read inside a
/// transaction: the fencing token the fenced writes and reads compare with.
fn stored_attempts(
    table: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
) -> StoreResult<u32> {
    Ok(stored_job(table, id)?.map_or(0, |j| j.attempts))
}

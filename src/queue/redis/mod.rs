//! The Redis store: job hand-out through a stream and a consumer group.
//!
//! Keys (all under `roomcast:`):
//! - `queue` — stream; one entry per job start, field `job`. Consumer group `workers`.
//!   A worker reads with `XREADGROUP`, keeps its claim fresh with `XCLAIM … JUSTID` on every
//!   heartbeat (resets the entry's idle time), and `XACK`s when the job ends. A worker that
//!   dies stops refreshing; after [`LEASE`] another worker takes the entry with `XAUTOCLAIM`
//!   and resumes the job.
//! - `queue:w:{worker}` — a stream of jobs only that worker may run (a transcode needs the
//!   files of the worker that recorded them), read by that worker before `queue`, same group.
//!   Its entries are refreshed by that worker's heartbeats like any claim, and a restarted
//!   worker of the same id takes its own idle entries back; no other worker reads them.
//! - `waiting` — sorted set of job ids by submission order (queue position, cancel arbiter).
//! - `job:{id}`, `jobs` (set of ids), `room:{id}`, `cmd:{job}` (list of commands),
//!   `workers` (hash: worker id → advertisement), `archive` (hash), `seq` (counter),
//!   `thumb:{job}` (a running job's latest picture, expiring).

//!
//! Files: [`keys`] (keys, scripts, replies), [`lease`] (hand-out and leases); this file
//! holds the connection and the records (rooms, jobs, commands, archive).

mod keys;
mod lease;

use super::{
    archive_key, from_json, to_json, ArchiveEntry, Command, Job, RoomConfig, StoreError,
    StoreResult,
};
use keys::*;
use redis::aio::ConnectionManager;
use redis::Value;

/// The Redis store. Its connection reconnects by itself: a command that finds the connection
/// broken goes out once more on a new one where that is safe (see `RedisStore::q`), else
/// fails (the caller sees a store error and retries on its next tick), so a restarted Redis is
/// used again within a second or two.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    /// Streams whose consumer group this process has made sure of.
    groups: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl RedisStore {
    /// Connects and creates the stream and consumer group if missing.
    pub async fn connect(url: &str) -> StoreResult<RedisStore> {
        let client = redis::Client::open(url).map_err(|source| StoreError::Redis {
            context: "parsing the redis URL",
            source,
        })?;
        let con = ConnectionManager::new_with_config(client, connection_config())
            .await
            .map_err(|source| StoreError::Redis {
                context: "connecting to redis",
                source,
            })?;
        let store = RedisStore {
            con,
            groups: Default::default(),
        };
        store.ensure_group(&key("queue")).await?;
        Ok(store)
    }

    /// Creates `stream` and its consumer group (from its first entry) if missing.
    async fn ensure_group(&self, stream: &str) -> StoreResult<()> {
        if self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(stream)
        {
            return Ok(());
        }
        let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.con.clone())
            .await;
        if let Err(err) = r {
            if !err.to_string().contains("BUSYGROUP") {
                return Err(StoreError::Redis {
                    context: "creating the redis consumer group",
                    source: err,
                });
            }
        }
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream.to_string());
        Ok(())
    }

    /// Sends `cmd`; one that meets a connection Redis has dropped goes out once more, on the
    /// connection the manager makes next, instead of failing the request that needed it (an
    /// API read answered 503 for a connection lost between two polls). What is sent through
    /// here is safe to send twice: reads, `SET`/`HSET` of whole values, and the stream reads
    /// and claims, whose entries handed out in an answer that was lost stay pending and are
    /// claimed again after their lease, as they would be without the second try. Scripts
    /// (guarded writes) are not sent through here.
    async fn q<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> StoreResult<T> {
        let mut con = self.con.clone();
        match cmd.query_async(&mut con).await {
            Err(err) if err.is_connection_dropped() || err.is_io_error() => {
                tracing::debug!(error = %err, "redis connection lost; sending the command again");
                let mut con = self.con.clone();
                cmd.query_async(&mut con).await.map_err(e)
            }
            r => r.map_err(e),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, k: &str) -> StoreResult<Option<T>> {
        let v: Option<String> = self.q(redis::cmd("GET").arg(key(k))).await?;
        v.map(|s| from_json(&s)).transpose()
    }

    pub(in crate::queue) async fn delete_room(&self, id: &str) -> StoreResult<bool> {
        let n: i64 = self
            .q(redis::cmd("DEL").arg(key(&format!("room:{id}"))))
            .await?;
        Ok(n > 0)
    }

    pub(in crate::queue) async fn put_room(&self, room: &RoomConfig) -> StoreResult<()> {
        self.q(redis::cmd("SET")
            .arg(key(&format!("room:{}", room.room_id)))
            .arg(to_json(room)?))
            .await
    }

    pub(in crate::queue) async fn get_room(&self, id: &str) -> StoreResult<Option<RoomConfig>> {
        self.get_json(&format!("room:{id}")).await
    }

    /// An atomic pipeline that writes `job`'s record (more commands may be added).
    fn job_write(job: &Job) -> StoreResult<redis::Pipeline> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(key(&format!("job:{}", job.id)))
            .arg(to_json(job)?)
            .ignore()
            .cmd("SADD")
            .arg(key("jobs"))
            .arg(&job.id)
            .ignore();
        Ok(pipe)
    }

    pub(in crate::queue) async fn put_job(&self, job: &Job) -> StoreResult<()> {
        let pipe = Self::job_write(job)?;
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con).await.map_err(e)
    }

    /// Writes the record unless the stored one has a later attempt, checked and written by
    /// one Lua script (atomic in Redis). True if written.
    pub(in crate::queue) async fn put_job_fenced(&self, job: &Job) -> StoreResult<bool> {
        let written: i64 = FENCED_SET
            .key(key(&format!("job:{}", job.id)))
            .key(key("jobs"))
            .arg(to_json(job)?)
            .arg(job.attempts)
            .arg(&job.id)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(e)?;
        Ok(written == 1)
    }

    pub(in crate::queue) async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        self.get_json(&format!("job:{id}")).await
    }

    pub(in crate::queue) async fn jobs(&self) -> StoreResult<Vec<Job>> {
        let ids: Vec<String> = self.q(redis::cmd("SMEMBERS").arg(key("jobs"))).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|i| key(&format!("job:{i}"))).collect();
        let vals: Vec<Option<String>> = self.q(redis::cmd("MGET").arg(keys)).await?;
        vals.into_iter().flatten().map(|s| from_json(&s)).collect()
    }

    /// Deletes job records, their ids in the `jobs` set and their command lists.
    pub(in crate::queue) async fn delete_jobs(&self, ids: &[String]) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            pipe.cmd("DEL")
                .arg(key(&format!("job:{id}")))
                .arg(key(&format!("cmd:{id}")))
                .ignore()
                .cmd("SREM")
                .arg(key("jobs"))
                .arg(id)
                .ignore();
        }
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con).await.map_err(e)
    }

    pub(in crate::queue) async fn push_command(&self, job: &str, cmd: &Command) -> StoreResult<()> {
        let _: i64 = self
            .q(redis::cmd("RPUSH")
                .arg(key(&format!("cmd:{job}")))
                .arg(to_json(cmd)?))
            .await?;
        Ok(())
    }

    /// Takes the commands queued for a job unless the job's record has a later attempt than
    /// `attempts` (another worker holds it; None): one Lua script.
    pub(in crate::queue) async fn take_commands_fenced(
        &self,
        job: &str,
        attempts: u32,
    ) -> StoreResult<Option<Vec<Command>>> {
        let reply: Vec<Value> = TAKE
            .key(key(&format!("job:{job}")))
            .key(key(&format!("cmd:{job}")))
            .arg(attempts)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(e)?;
        if !matches!(reply.first(), Some(Value::Int(1))) {
            return Ok(None);
        }
        reply[1..]
            .iter()
            .map(|v| from_json(&text(v).unwrap_or_default()))
            .collect::<StoreResult<Vec<Command>>>()
            .map(Some)
    }

    pub(in crate::queue) async fn put_archive(&self, entry: &ArchiveEntry) -> StoreResult<()> {
        self.q(redis::cmd("HSET")
            .arg(key("archive"))
            .arg(archive_key(entry))
            .arg(to_json(entry)?))
            .await
    }

    pub(in crate::queue) async fn archive(&self) -> StoreResult<Vec<ArchiveEntry>> {
        let vals: Vec<String> = self.q(redis::cmd("HVALS").arg(key("archive"))).await?;
        vals.iter().map(|s| from_json(s)).collect()
    }

    pub(in crate::queue) async fn put_thumbnail(&self, job: &str, jpeg: &[u8]) -> StoreResult<()> {
        self.q(redis::cmd("SET")
            .arg(key(&format!("thumb:{job}")))
            .arg(jpeg)
            .arg("PX")
            .arg(super::THUMBNAIL_TTL.as_millis() as u64))
            .await
    }

    pub(in crate::queue) async fn thumbnail(&self, job: &str) -> StoreResult<Option<Vec<u8>>> {
        self.q(redis::cmd("GET").arg(key(&format!("thumb:{job}"))))
            .await
    }
}

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
//!   `workers` (hash: worker id → advertisement), `archive` (hash), `seq` (counter).

use super::{
    archive_key, from_json, live_key, to_json, ArchiveEntry, Command, Enqueued, Job, RoomConfig,
    StoreError, StoreResult, WorkerInfo, LEASE,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;
use std::sync::LazyLock;
use std::time::Duration;

const PREFIX: &str = "roomcast:";
const GROUP: &str = "workers";

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

/// Lua: ends the script, answering `$answer`, when the job record at `KEYS[1]` carries a
/// later attempt than `$attempts` (another worker has started the job since: the fencing
/// check every guarded write and read makes in the same step as its effect).
macro_rules! unless_superseded {
    ($attempts:literal, $answer:literal) => {
        concat!(
            "local cur = redis.call('GET', KEYS[1])\n",
            "if cur then\n",
            "  local ok, stored = pcall(cjson.decode, cur)\n",
            "  if ok and type(stored) == 'table'\n",
            "     and tonumber(stored['attempts'] or 0) > tonumber(",
            $attempts,
            ") then\n",
            "    return ",
            $answer,
            "\n",
            "  end\n",
            "end\n"
        )
    };
}

/// Writes a job record (KEYS[1]) and lists its id (KEYS[2]) unless superseded (answers 0).
static FENCED_SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        unless_superseded!("ARGV[2]", "0"),
        "redis.call('SET', KEYS[1], ARGV[1])\n",
        "redis.call('SADD', KEYS[2], ARGV[3])\n",
        "return 1\n"
    ))
});

/// Takes a job's command list (KEYS[2]) unless superseded (answers `{0}`); else `{1, …}`.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        unless_superseded!("ARGV[1]", "{0}"),
        "local items = redis.call('LRANGE', KEYS[2], 0, -1)\n",
        "redis.call('DEL', KEYS[2])\n",
        "table.insert(items, 1, 1)\n",
        "return items\n"
    ))
});

/// Refreshes the claim (XCLAIM on the stream KEYS[1], group ARGV[2]; a job that names the
/// worker it runs on: on that worker's stream, ARGV[3] followed by its id) of each job record
/// in KEYS[2..] that still names worker ARGV[1]: the check and the claim are one step, so a
/// takeover between them cannot be undone.
static REFRESH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
        local n = 0
        for i, k in ipairs(KEYS) do
            if i > 1 then
                local cur = redis.call('GET', k)
                if cur then
                    local ok, job = pcall(cjson.decode, cur)
                    if ok and type(job) == 'table' and job['worker'] == ARGV[1]
                        and type(job['queue_entry']) == 'string' then
                        local stream = KEYS[1]
                        if type(job['spec']) == 'table' and type(job['spec']['runs_on']) == 'string' then
                            stream = ARGV[3] .. job['spec']['runs_on']
                        end
                        redis.call('XCLAIM', stream, ARGV[2], ARGV[1], 0, job['queue_entry'], 'JUSTID')
                        n = n + 1
                    end
                end
            end
        end
        return n
        "#,
    )
});

/// Enqueues a job unless its room's live job of its kind (KEYS[1] names it) has not ended
/// (answers `{0, that job}`): writes the record (KEYS[2] .. id), numbers it (KEYS[3]), lists
/// it as waiting (KEYS[4]) and in the job set (KEYS[5]), adds it to the stream (KEYS[6]);
/// answers `{1, jobs waiting ahead}`.
static ENQUEUE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
        local current = redis.call('GET', KEYS[1])
        if current then
            local other = redis.call('GET', KEYS[2] .. current)
            if other then
                local ok, job = pcall(cjson.decode, other)
                if ok and type(job) == 'table' and job['state'] ~= 'completed'
                    and job['state'] ~= 'failed' and job['state'] ~= 'cancelled' then
                    return {0, other}
                end
            end
        end
        redis.call('SET', KEYS[1], ARGV[1])
        local seq = redis.call('INCR', KEYS[3])
        local ahead = redis.call('ZCARD', KEYS[4])
        redis.call('SET', KEYS[2] .. ARGV[1], ARGV[2])
        redis.call('SADD', KEYS[5], ARGV[1])
        redis.call('ZADD', KEYS[4], seq, ARGV[1])
        redis.call('XADD', KEYS[6], '*', 'job', ARGV[1])
        return {1, ahead}
        "#,
    )
});

/// How the connection to Redis behaves when Redis goes away.
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(500))
}

fn e(source: redis::RedisError) -> StoreError {
    StoreError::Redis {
        context: "redis command",
        source,
    }
}

fn key(k: &str) -> String {
    format!("{PREFIX}{k}")
}

/// The prefix of the streams of jobs one worker must run.
fn worker_stream_prefix() -> String {
    key("queue:w:")
}

/// The stream of jobs only `worker` runs.
fn worker_stream(worker: &str) -> String {
    format!("{}{worker}", worker_stream_prefix())
}

/// The stream `job` is handed out through.
fn stream_of(job: &Job) -> String {
    match &job.spec.runs_on {
        Some(w) => worker_stream(w),
        None => key("queue"),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).to_string()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Stream entries `[[id, [field, value, …]], …]` → (entry id, job id).
fn entries(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Value::Array(items) = v {
        for item in items {
            let Value::Array(pair) = item else { continue };
            let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(text), pair.get(1))
            else {
                continue;
            };
            let mut job = None;
            for kv in fields.chunks(2) {
                if kv.len() == 2 && text(&kv[0]).as_deref() == Some("job") {
                    job = text(&kv[1]);
                }
            }
            if let Some(job) = job {
                out.push((id, job));
            }
        }
    }
    out
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

    pub(super) async fn delete_room(&self, id: &str) -> StoreResult<bool> {
        let n: i64 = self
            .q(redis::cmd("DEL").arg(key(&format!("room:{id}"))))
            .await?;
        Ok(n > 0)
    }

    pub(super) async fn put_room(&self, room: &RoomConfig) -> StoreResult<()> {
        self.q(redis::cmd("SET")
            .arg(key(&format!("room:{}", room.room_id)))
            .arg(to_json(room)?))
            .await
    }

    pub(super) async fn get_room(&self, id: &str) -> StoreResult<Option<RoomConfig>> {
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

    pub(super) async fn put_job(&self, job: &Job) -> StoreResult<()> {
        let pipe = Self::job_write(job)?;
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con).await.map_err(e)
    }

    /// Writes the record unless the stored one has a later attempt, checked and written by
    /// one Lua script (atomic in Redis). True if written.
    pub(super) async fn put_job_fenced(&self, job: &Job) -> StoreResult<bool> {
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

    pub(super) async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        self.get_json(&format!("job:{id}")).await
    }

    pub(super) async fn jobs(&self) -> StoreResult<Vec<Job>> {
        let ids: Vec<String> = self.q(redis::cmd("SMEMBERS").arg(key("jobs"))).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|i| key(&format!("job:{i}"))).collect();
        let vals: Vec<Option<String>> = self.q(redis::cmd("MGET").arg(keys)).await?;
        vals.into_iter().flatten().map(|s| from_json(&s)).collect()
    }

    /// Deletes job records, their ids in the `jobs` set and their command lists.
    pub(super) async fn delete_jobs(&self, ids: &[String]) -> StoreResult<()> {
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

    pub(super) async fn next_segment(&self, name: &str, at_least: u64) -> StoreResult<u64> {
        // INCR, then lift to `at_least` if the counter is behind (a job's own segments
        // continue from where they were).
        let script = redis::Script::new(
            "local n = redis.call('INCR', KEYS[1]) \
             local min = tonumber(ARGV[1]) \
             if n < min then redis.call('SET', KEYS[1], min) n = min end \
             return n",
        );
        let mut con = self.con.clone();
        script
            .key(key(name))
            .arg(at_least)
            .invoke_async(&mut con)
            .await
            .map_err(e)
    }

    pub(super) async fn enqueue(&self, job: &Job) -> StoreResult<Enqueued> {
        // One script: the room's live job of this kind is checked and the new job written,
        // numbered, listed as waiting and added to the stream, with nothing in between (of
        // two racing starts, the second sees the first).
        let stream = stream_of(job);
        self.ensure_group(&stream).await?;
        let reply: Vec<Value> = ENQUEUE
            .key(key(&format!("live:{}", live_key(job))))
            .key(key("job:"))
            .key(key("seq"))
            .key(key("waiting"))
            .key(key("jobs"))
            .key(stream)
            .arg(&job.id)
            .arg(to_json(job)?)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(e)?;
        match (reply.first(), reply.get(1)) {
            (Some(Value::Int(1)), Some(Value::Int(ahead))) => {
                Ok(Enqueued::Waiting((*ahead).max(0) as usize))
            }
            (_, Some(other)) => Ok(Enqueued::Busy(Box::new(from_json(
                &text(other).unwrap_or_default(),
            )?))),
            _ => Err(StoreError::Unexpected(format!(
                "enqueue answered {reply:?}"
            ))),
        }
    }

    pub(super) async fn waiting(&self) -> StoreResult<Vec<String>> {
        self.q(redis::cmd("ZRANGE").arg(key("waiting")).arg(0).arg(-1))
            .await
    }

    pub(super) async fn remove_waiting(&self, id: &str) -> StoreResult<bool> {
        let n: i64 = self
            .q(redis::cmd("ZREM").arg(key("waiting")).arg(id))
            .await?;
        Ok(n > 0)
    }

    async fn ack(&self, stream: &str, entry: &str) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(stream)
            .arg(GROUP)
            .arg(entry)
            .ignore()
            .cmd("XDEL")
            .arg(stream)
            .arg(entry)
            .ignore();
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con).await.map_err(e)
    }

    pub(super) async fn claim(&self, worker: &str) -> StoreResult<Option<Job>> {
        // Entries whose job was cancelled (or failed while waiting) are skipped and acknowledged.
        // The worker's own stream is read first.
        let own = worker_stream(worker);
        self.ensure_group(&own).await?;
        for _ in 0..16 {
            // One stream per read: a read of both could hand this worker an entry of each.
            let mut next = None;
            for stream in [own.clone(), key("queue")] {
                let v: Value = self
                    .q(redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(worker)
                        .arg("COUNT")
                        .arg(1)
                        .arg("STREAMS")
                        .arg(&stream)
                        .arg(">"))
                    .await?;
                if let Some(found) = first_stream_entry(&v) {
                    next = Some(found);
                    break;
                }
            }
            let Some((stream, entry, id)) = next else {
                return Ok(None);
            };
            if !self.remove_waiting(&id).await? {
                self.ack(&stream, &entry).await?;
                continue;
            }
            let Some(mut job) = self.get_job(&id).await? else {
                self.ack(&stream, &entry).await?;
                continue;
            };
            job.queue_entry = Some(entry);
            job.worker = Some(worker.to_string());
            self.put_job(&job).await?;
            return Ok(Some(job));
        }
        Ok(None)
    }

    pub(super) async fn heartbeat(&self, info: &WorkerInfo) -> StoreResult<()> {
        // Refreshes the claim of each job whose record still names this worker; the check
        // and the XCLAIM are one script, so a takeover between them cannot be undone. (A job
        // another worker took over while this one was cut off is not claimed back.)
        if !info.jobs.is_empty() {
            let mut call = REFRESH.key(key("queue"));
            for id in &info.jobs {
                call.key(key(&format!("job:{id}")));
            }
            let _: i64 = call
                .arg(&info.id)
                .arg(GROUP)
                .arg(worker_stream_prefix())
                .invoke_async(&mut self.con.clone())
                .await
                .map_err(e)?;
        }
        self.q(redis::cmd("HSET")
            .arg(key("workers"))
            .arg(&info.id)
            .arg(to_json(info)?))
            .await
    }

    pub(super) async fn reclaim(&self, worker: &str) -> StoreResult<Vec<Job>> {
        // Any worker's lapsed jobs of the shared stream, and this worker's own lapsed ones
        // (it ran them before it restarted).
        let own = worker_stream(worker);
        self.ensure_group(&own).await?;
        let mut out = Vec::new();
        for stream in [key("queue"), own] {
            let v: Value = self
                .q(redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(worker)
                    .arg(LEASE.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(16))
                .await?;
            let claimed = match &v {
                Value::Array(parts) => parts.get(1).map(entries).unwrap_or_default(),
                _ => Vec::new(),
            };
            for (entry, id) in claimed {
                match self.get_job(&id).await? {
                    Some(mut job) if !job.state.is_terminal() => {
                        job.queue_entry = Some(entry);
                        job.worker = Some(worker.to_string());
                        self.put_job(&job).await?;
                        out.push(job);
                    }
                    _ => self.ack(&stream, &entry).await?,
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn hand_back(&self, _worker: &str, job: &Job) -> StoreResult<()> {
        // The entry stays pending and unrefreshed: after the lease another worker's XAUTOCLAIM
        // takes it.
        self.put_job(job).await
    }

    pub(super) async fn release(&self, job: &Job) -> StoreResult<()> {
        if let Some(entry) = &job.queue_entry {
            self.ack(&stream_of(job), entry).await?;
        }
        let _: i64 = self
            .q(redis::cmd("DEL").arg(key(&format!("cmd:{}", job.id))))
            .await?;
        Ok(())
    }

    pub(super) async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let vals: Vec<String> = self.q(redis::cmd("HVALS").arg(key("workers"))).await?;
        vals.iter().map(|s| from_json(s)).collect()
    }

    pub(super) async fn push_command(&self, job: &str, cmd: &Command) -> StoreResult<()> {
        let _: i64 = self
            .q(redis::cmd("RPUSH")
                .arg(key(&format!("cmd:{job}")))
                .arg(to_json(cmd)?))
            .await?;
        Ok(())
    }

    /// Takes the commands queued for a job unless the job's record has a later attempt than
    /// `attempts` (another worker holds it; None): one Lua script.
    pub(super) async fn take_commands_fenced(
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

    pub(super) async fn put_archive(&self, entry: &ArchiveEntry) -> StoreResult<()> {
        self.q(redis::cmd("HSET")
            .arg(key("archive"))
            .arg(archive_key(entry))
            .arg(to_json(entry)?))
            .await
    }

    pub(super) async fn archive(&self) -> StoreResult<Vec<ArchiveEntry>> {
        let vals: Vec<String> = self.q(redis::cmd("HVALS").arg(key("archive"))).await?;
        vals.iter().map(|s| from_json(s)).collect()
    }
}

/// The first entry of an `XREADGROUP` reply `[[stream, [[id, fields]…]], …]`: (stream, entry
/// id, job id).
fn first_stream_entry(v: &Value) -> Option<(String, String, String)> {
    let Value::Array(streams) = v else {
        return None;
    };
    streams.iter().find_map(|s| {
        let Value::Array(stream) = s else {
            return None;
        };
        let name = stream.first().and_then(text)?;
        let (entry, job) = entries(stream.get(1)?).into_iter().next()?;
        Some((name, entry, job))
    })
}

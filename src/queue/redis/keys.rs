//! The store's keys and streams, the Lua scripts that change several keys at once, and
//! reading Redis replies.

use crate::queue::{Job, StoreError};
use redis::aio::ConnectionManagerConfig;
use redis::Value;
use std::sync::LazyLock;
use std::time::Duration;

pub(super) const PREFIX: &str = "roomcast:";
pub(super) const GROUP: &str = "workers";

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
pub(super) static FENCED_SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        unless_superseded!("ARGV[2]", "0"),
        "redis.call('SET', KEYS[1], ARGV[1])\n",
        "redis.call('SADD', KEYS[2], ARGV[3])\n",
        "return 1\n"
    ))
});

/// Hands a job back to the shared stream at once, unless superseded (answers 0): writes its
/// record (KEYS[1], ARGV[1]; attempt ARGV[2]) and lists its id (KEYS[2], ARGV[3]), acknowledges
/// and deletes the stream entry its run held (KEYS[5], group ARGV[5], entry ARGV[4] if not
/// empty), lists it as waiting (KEYS[3], numbered from KEYS[4] like every request) and adds a
/// new entry for it: the next worker with room claims it now, not after the old entry's lease
/// (requests already waiting in the stream are taken before it, as their numbers say).
pub(super) static HAND_BACK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        unless_superseded!("ARGV[2]", "0"),
        "redis.call('SET', KEYS[1], ARGV[1])\n",
        "redis.call('SADD', KEYS[2], ARGV[3])\n",
        "if ARGV[4] ~= '' then\n",
        "  redis.call('XACK', KEYS[5], ARGV[5], ARGV[4])\n",
        "  redis.call('XDEL', KEYS[5], ARGV[4])\n",
        "end\n",
        "redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[3])\n",
        "redis.call('XADD', KEYS[5], '*', 'job', ARGV[3])\n",
        "return 1\n"
    ))
});

/// Takes a job's command list (KEYS[2]) unless superseded (answers `{0}`); else `{1, …}`.
pub(super) static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
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
pub(super) static REFRESH: LazyLock<redis::Script> = LazyLock::new(|| {
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
pub(super) static ENQUEUE: LazyLock<redis::Script> = LazyLock::new(|| {
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
pub(super) fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(500))
}

pub(super) fn e(source: redis::RedisError) -> StoreError {
    StoreError::Redis {
        context: "redis command",
        source,
    }
}

pub(super) fn key(k: &str) -> String {
    format!("{PREFIX}{k}")
}

/// The prefix of the streams of jobs one worker must run.
pub(super) fn worker_stream_prefix() -> String {
    key("queue:w:")
}

/// The stream of jobs only `worker` runs.
pub(super) fn worker_stream(worker: &str) -> String {
    format!("{}{worker}", worker_stream_prefix())
}

/// The stream `job` is handed out through.
pub(super) fn stream_of(job: &Job) -> String {
    match &job.spec.runs_on {
        Some(w) => worker_stream(w),
        None => key("queue"),
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).to_string()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Stream entries `[[id, [field, value, …]], …]` → (entry id, job id).
pub(super) fn entries(v: &Value) -> Vec<(String, String)> {
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

/// The first entry of an `XREADGROUP` reply `[[stream, [[id, fields]…]], …]`: (stream, entry
/// id, job id).
pub(super) fn first_stream_entry(v: &Value) -> Option<(String, String, String)> {
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

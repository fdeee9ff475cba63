//! Jobs handed out through the streams: segment numbers, enqueueing and the waiting list,
//! claims, heartbeats that keep them, reclaiming a dead worker's jobs, hand-back and release.

use super::keys::*;
use super::RedisStore;
use crate::queue::{
    from_json, live_key, to_json, Enqueued, Job, StoreError, StoreResult, WorkerInfo, LEASE,
};
use redis::Value;

impl RedisStore {
    pub(in crate::queue) async fn next_segment(
        &self,
        name: &str,
        at_least: u64,
    ) -> StoreResult<u64> {
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

    pub(in crate::queue) async fn enqueue(&self, job: &Job) -> StoreResult<Enqueued> {
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

    pub(in crate::queue) async fn waiting(&self) -> StoreResult<Vec<String>> {
        self.q(redis::cmd("ZRANGE").arg(key("waiting")).arg(0).arg(-1))
            .await
    }

    pub(in crate::queue) async fn remove_waiting(&self, id: &str) -> StoreResult<bool> {
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

    pub(in crate::queue) async fn claim(&self, worker: &str) -> StoreResult<Option<Job>> {
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

    pub(in crate::queue) async fn heartbeat(&self, info: &WorkerInfo) -> StoreResult<()> {
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

    pub(in crate::queue) async fn reclaim(&self, worker: &str) -> StoreResult<Vec<Job>> {
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

    pub(in crate::queue) async fn hand_back(&self, _worker: &str, job: &Job) -> StoreResult<()> {
        let stream = stream_of(job);
        if stream != key("queue") {
            // A job bound to this worker (its files are here): the entry stays pending and
            // unrefreshed, for this worker's next run to take back.
            return self.put_job(job).await;
        }
        let _: i64 = HAND_BACK
            .key(key(&format!("job:{}", job.id)))
            .key(key("jobs"))
            .key(key("waiting"))
            .key(key("seq"))
            .key(stream)
            .arg(to_json(job)?)
            .arg(job.attempts)
            .arg(&job.id)
            .arg(job.queue_entry.as_deref().unwrap_or(""))
            .arg(GROUP)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(e)?;
        Ok(())
    }

    pub(in crate::queue) async fn release(&self, job: &Job) -> StoreResult<()> {
        if let Some(entry) = &job.queue_entry {
            self.ack(&stream_of(job), entry).await?;
        }
        let _: i64 = self
            .q(redis::cmd("DEL").arg(key(&format!("cmd:{}", job.id))))
            .await?;
        Ok(())
    }

    pub(in crate::queue) async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let vals: Vec<String> = self.q(redis::cmd("HVALS").arg(key("workers"))).await?;
        vals.iter().map(|s| from_json(s)).collect()
    }
}

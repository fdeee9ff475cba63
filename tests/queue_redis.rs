//! The Redis Streams queue with separate API and worker processes against a real
//! redis-server: a killed worker's job is taken over, and the waiting queue keeps its codes
//! and order.

mod support;
use std::time::Duration;
use support::*;

fn worker(dir: &std::path::Path, redis: &Redis, id: &str, budget: &str) -> Service {
    let env = serve_env(
        &dir.join(format!("data-{id}")),
        &[
            ("ROOMCAST_REDIS_URL", &redis.url()),
            ("ROOMCAST_WORKER_ID", id),
            ("ROOMCAST_CPU_BUDGET", budget),
        ],
    );
    Service::start(&["worker"], &env, &dir.join(format!("{id}.log")), false)
}

fn api(dir: &std::path::Path, redis: &Redis) -> Service {
    let env = serve_env(
        &dir.join("data-api"),
        &[("ROOMCAST_REDIS_URL", &redis.url())],
    );
    Service::start(&["api"], &env, &dir.join("api.log"), true)
}

fn wait_workers(api: &Service, n: u64) {
    let ok = wait_for(15.0, || {
        let (_, h) = api.call("GET", "/v1/health", None);
        (h["workers"] == n).then_some(())
    });
    assert!(ok.is_some(), "{n} workers did not show up");
}

#[test]
fn a_killed_workers_job_is_taken_over() {
    let dir = TempDir::new("redis-takeover");
    let redis = Redis::start(&dir.path().join("redis"));
    let api = api(dir.path(), &redis);
    let mut a = worker(dir.path(), &redis, "wa", "0.6");
    let mut b = worker(dir.path(), &redis, "wb", "0.6");
    wait_workers(&api, 2);
    let (_, h) = api.call("GET", "/v1/health", None);
    assert_eq!(h["store"], "redis");
    register_room(&api, "fleet", 2, "{}");
    let (s, v) = start_recording(&api, "fleet");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let j = wait_state(&api, &id, "active", 20.0);
    let holder = j["worker"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(4));
    let killed_at = std::time::Instant::now();
    let survivor = if holder == "wa" {
        a.kill9();
        "wb"
    } else {
        b.kill9();
        "wa"
    };
    let j = wait_for(15.0, || {
        let j = job(&api, &id);
        (j["worker"] == survivor && j["state"] == "active" && j["attempts"] == 2).then_some(j)
    })
    .unwrap_or_else(|| panic!("not taken over: {}", job(&api, &id)));
    let took = killed_at.elapsed().as_secs_f64();
    assert!(took <= 10.0, "takeover took {took:.1} s");
    eprintln!("takeover after {took:.1} s");
    // The killed worker's segment still exists, finalized by the survivor.
    let first = &j["segments"][0];
    assert_eq!(first["status"], "local", "{j}");
    let p = probe(std::path::Path::new(first["path"].as_str().unwrap()));
    assert!(p.duration >= 3.0, "first segment {} s", p.duration);
    std::thread::sleep(Duration::from_secs(2));
    // The stop reaches the worker that holds the job now.
    assert_eq!(stop_recording(&api, "fleet").1["result"], 0);
    let j = wait_state(&api, &id, "completed", 30.0);
    assert_eq!(j["stopped_by"], "mod-1");
    assert_eq!(j["segments"].as_array().unwrap().len(), 2, "{j}");
    let second = probe(std::path::Path::new(
        j["segments"][1]["path"].as_str().unwrap(),
    ));
    assert!(
        second.duration >= 1.5,
        "second segment {} s",
        second.duration
    );
    let (_, arch) = api.call("GET", "/v1/recordings?room_id=fleet", None);
    assert_eq!(arch["count"], 2, "{arch}");
}

#[test]
fn waiting_queue_order_and_cancel_on_redis() {
    let dir = TempDir::new("redis-queue");
    let redis = Redis::start(&dir.path().join("redis"));
    let api = api(dir.path(), &redis);
    let _w = worker(dir.path(), &redis, "solo", "0.3");
    wait_workers(&api, 1);
    queue_order_scenario(&api, "red");
}

#[test]
fn api_and_worker_refuse_to_run_without_redis() {
    let dir = TempDir::new("redis-none");
    let env = serve_env(dir.path(), &[]);
    let (ok, _, err) = run_env(&env, &["worker"]);
    assert!(!ok && err.contains("ROOMCAST_REDIS_URL"), "{err}");
    let env = serve_env(
        dir.path(),
        &[("ROOMCAST_REDIS_URL", "redis://127.0.0.1:1/")],
    );
    let (ok, _, err) = run_env(&env, &["api"]);
    assert!(!ok && err.contains("redis"), "{err}");
}

#[test]
fn ended_job_records_are_deleted_after_the_retention_on_redis() {
    let dir = TempDir::new("redis-retention");
    let redis = Redis::start(&dir.path().join("redis"));
    let env = serve_env(
        &dir.path().join("data-api"),
        &[
            ("ROOMCAST_REDIS_URL", &redis.url()),
            ("ROOMCAST_JOB_RETENTION_SECS", "2"),
        ],
    );
    let api = Service::start(&["api"], &env, &dir.path().join("api.log"), true);
    retention_scenario(&api);
}

#[test]
fn two_jobs_of_one_conference_on_two_workers_get_distinct_segments() {
    let dir = TempDir::new("redis-segments");
    let redis = Redis::start(&dir.path().join("redis"));
    let api = api(dir.path(), &redis);
    register_room(&api, "conf", 1, "{}");
    let mut names = Vec::new();
    // One job on worker "first", then one on worker "second" (its own, empty data folder).
    for id in ["first", "second"] {
        let mut w = worker(dir.path(), &redis, id, "0.6");
        wait_workers(&api, 1);
        let (s, v) = start_recording(&api, "conf");
        assert_eq!(s, 201, "{v}");
        let job_id = v["job_id"].as_str().unwrap().to_string();
        let j = wait_state(&api, &job_id, "active", 20.0);
        assert_eq!(j["worker"], id);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(stop_recording(&api, "conf").1["result"], 0);
        let j = wait_state(&api, &job_id, "completed", 30.0);
        names.push(j["segments"][0]["file_name"].as_str().unwrap().to_string());
        assert!(w.terminate(20), "worker {id} did not stop");
        wait_workers(&api, 0);
    }
    assert_eq!(names, ["conf_1_1.mp4", "conf_1_2.mp4"]);
    let (_, arch) = api.call("GET", "/v1/recordings?room_id=conf", None);
    assert_eq!(arch["count"], 2, "{arch}");
}

#[test]
fn a_worker_cut_off_past_its_lease_yields_to_the_new_holder() {
    let dir = TempDir::new("redis-fence");
    let redis = Redis::start(&dir.path().join("redis"));
    let api = api(dir.path(), &redis);
    let a = worker(dir.path(), &redis, "wa", "0.6");
    let b = worker(dir.path(), &redis, "wb", "0.6");
    wait_workers(&api, 2);
    register_room(&api, "split", 2, "{}");
    let (s, v) = start_recording(&api, "split");
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let j = wait_state(&api, &id, "active", 20.0);
    let (stalled, other) = if j["worker"] == "wa" {
        (&a, "wb")
    } else {
        (&b, "wa")
    };
    std::thread::sleep(Duration::from_secs(3));
    // The holder stalls past its lease: the other worker takes the job over…
    stalled.freeze(true);
    let took = wait_for(15.0, || {
        let j = job(&api, &id);
        (j["worker"] == other && j["attempts"] == 2 && j["state"] == "active").then_some(())
    });
    stalled.freeze(false);
    assert!(took.is_some(), "not taken over: {}", job(&api, &id));
    // …and when the stalled one comes back it yields: it never takes the job back or
    // overwrites the new holder's record, and it delivers what it had recorded.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(6) {
        let j = job(&api, &id);
        assert_eq!(j["worker"], other, "{j}");
        assert_eq!(j["attempts"], 2, "{j}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let yielded = wait_for(10.0, || {
        stalled
            .log_text()
            .contains("segment delivered; the job goes on on its new worker")
            .then_some(())
    });
    assert!(yielded.is_some(), "{}", stalled.log_text());
    let (_, h) = api.call("GET", "/v1/health", None);
    assert_eq!(h["workers"], 2, "the stalled worker keeps serving: {h}");
    assert_eq!(stop_recording(&api, "split").1["result"], 0);
    let j = wait_state(&api, &id, "completed", 30.0);
    assert_eq!(j["worker"], other, "{j}");
    let (_, arch) = api.call("GET", "/v1/recordings?room_id=split", None);
    let names: Vec<&str> = arch["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["file_name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{arch}");
    assert_ne!(names[0], names[1], "{arch}");
}

#[test]
fn a_restarted_redis_is_used_again_and_the_running_job_goes_on() {
    let dir = TempDir::new("redis-restart");
    let mut redis = Redis::start_persistent(&dir.path().join("redis"));
    let env = serve_env(
        &dir.path().join("data"),
        &[("ROOMCAST_REDIS_URL", &redis.url())],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "outage", 2, "{}");
    let (s, v) = start_recording(&api, "outage");
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let before = wait_state(&api, &id, "active", 20.0);
    let active_at = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    // Redis goes away for longer than a lease.
    redis.kill();
    std::thread::sleep(Duration::from_secs(1));
    let (s, v) = api.call("GET", &format!("/v1/jobs/{id}"), None);
    assert_eq!((s, v["result"].as_u64()), (503, Some(7000)), "{v}");
    std::thread::sleep(Duration::from_secs(6));
    redis.restart();
    let back = std::time::Instant::now();

    // The API answers again by itself: README "0.0 s after Redis returned" (the first call
    // reconnects). Bounded at 2 s: a figure of zero has no double, and the restarted server
    // may take a moment to load its append-only file.
    let answered = wait_for(2.0, || {
        let (s, v) = api.call("GET", &format!("/v1/jobs/{id}"), None);
        (s == 200).then_some(v)
    });
    let recovered = back.elapsed();
    let v = answered.unwrap_or_else(|| panic!("API still failing: {}", api.log_text()));
    eprintln!(
        "API answered {:.2} s after Redis returned",
        recovered.as_secs_f64()
    );
    // The same run goes on: not restarted, not taken over.
    let j = &v["job"];
    assert_eq!(j["state"], "active", "{j}");
    assert_eq!(j["attempts"], before["attempts"], "{j}");
    assert_eq!(j["worker"], before["worker"], "{j}");
    std::thread::sleep(Duration::from_secs(6));
    let j = job(&api, &id);
    assert_eq!(
        j["attempts"], before["attempts"],
        "no takeover after the lease: {j}"
    );
    assert_eq!(j["segments"].as_array().unwrap().len(), 1, "{j}");

    // A stop goes through the restarted Redis to the job; one segment covers the outage.
    assert_eq!(stop_recording(&api, "outage").1["result"], 0);
    let recorded = active_at.elapsed().as_secs_f64();
    let j = wait_state(&api, &id, "completed", 30.0);
    let seg = &j["segments"][0];
    let duration = seg["duration_s"].as_f64().unwrap();
    assert!(
        duration >= recorded - 2.0,
        "{duration} s recorded over {recorded:.1} s: {j}"
    );
    let path = std::path::PathBuf::from(seg["path"].as_str().unwrap());
    assert!(decoded_video_frames(&path) as f64 >= (recorded - 2.0) * 30.0);
    // The outage is logged once, not on every call.
    let log = api.log_text();
    assert_eq!(
        log.matches("queue store unreachable").count(),
        1,
        "the outage logged once:\n{log}"
    );
    assert_eq!(
        log.matches("queue store reachable again").count(),
        1,
        "{log}"
    );
}

/// Stale writers racing a takeover, in both stores: whatever the interleaving, the record
/// keeps the later attempt, and a stale run reads no command meant for the new holder.
#[test]
fn fenced_writes_and_command_reads_never_beat_a_later_attempt() {
    use roomcast::queue::{Command, Job, JobSpec, Store};
    let dir = TempDir::new("fenced");
    let redis = Redis::start(&dir.path().join("redis"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stores = [
            Store::redis(&redis.url()).await.unwrap(),
            Store::embedded(&dir.path().join("embedded")).unwrap(),
        ];
        for store in stores {
            let spec: JobSpec = serde_json::from_value(serde_json::json!({
                "kind": "recording", "room_id": "f", "app_id": "a", "conf_num": "1",
                "connector": {"type": "synthetic", "participants": 1}, "layout": "grid",
                "preset": "h264-720p30", "started_by": "m", "cost": 0.3
            }))
            .unwrap();
            let mut stale = Job::new("rec_fenced".into(), spec);
            stale.attempts = 1;
            stale.worker = Some("old".into());
            assert!(store.put_job_fenced(&stale).await.unwrap());
            let mut newer = stale.clone();
            newer.attempts = 2;
            newer.worker = Some("new".into());
            let mut tasks = Vec::new();
            for i in 0..40 {
                let (s, j) = (
                    store.clone(),
                    if i == 20 {
                        newer.clone()
                    } else {
                        stale.clone()
                    },
                );
                tasks.push(tokio::spawn(
                    async move { s.put_job_fenced(&j).await.unwrap() },
                ));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let stored = store.get_job("rec_fenced").await.unwrap().unwrap();
            assert_eq!(
                (stored.attempts, stored.worker.as_deref()),
                (2, Some("new"))
            );
            assert!(
                !store.put_job_fenced(&stale).await.unwrap(),
                "stale write refused"
            );
            store
                .push_command("rec_fenced", &Command::Stop { by: "m".into() })
                .await
                .unwrap();
            assert_eq!(
                store.take_commands_fenced("rec_fenced", 1).await.unwrap(),
                None
            );
            let taken = store.take_commands_fenced("rec_fenced", 2).await.unwrap();
            assert_eq!(
                taken.map(|c| c.len()),
                Some(1),
                "the new holder gets the stop"
            );
        }
    });
}

/// The platform's (legacy) recording on the Redis queue: of twenty identical starts at once
/// one records; its segment's transcode is queued, claimed and run like any job.
#[test]
fn twenty_racing_individual_recording_starts_make_one_recording_and_its_transcode_runs() {
    let dir = TempDir::new("redis-individual");
    let redis = Redis::start(&dir.path().join("redis"));
    let api = api(dir.path(), &redis);
    let _w = worker(dir.path(), &redis, "wi", "2");
    wait_workers(&api, 1);
    register_room(&api, "legacy", 2, r#"{"layout":"grid"}"#);
    let body = format!(r#"{{"requested_by":{MODERATOR}}}"#);
    let answers: Vec<serde_json::Value> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    api.call("POST", "/v1/rooms/legacy/recording", Some(&body))
                        .1
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let started: Vec<&serde_json::Value> = answers.iter().filter(|a| a["result"] == 0).collect();
    assert_eq!(started.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|a| a["result"] != 0)
            .all(|a| matches!(a["result"].as_u64(), Some(7012 | 7019))),
        "{answers:?}"
    );
    let id = started[0]["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 30.0);
    std::thread::sleep(Duration::from_secs(5));
    let (s, v) = api.call("DELETE", "/v1/rooms/legacy/recording", Some(&body));
    assert_eq!(s, 200, "{v}");
    let done = wait_state(&api, &id, "completed", 40.0);
    assert_eq!(done["segments"][0]["status"], "local", "{done}");
    let (_, jobs) = api.call("GET", "/v1/rooms/legacy/jobs", None);
    let all = jobs["jobs"].as_array().unwrap();
    assert_eq!(
        all.iter()
            .filter(|j| j["spec"]["kind"] == "individual")
            .count(),
        1,
        "{jobs}"
    );
    let tid = all
        .iter()
        .find(|j| j["spec"]["kind"] == "transcode")
        .unwrap_or_else(|| panic!("no transcode job: {jobs}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = wait_state(&api, &tid, "completed", 90.0);
    let mp4 = std::path::PathBuf::from(t["segments"][0]["path"].as_str().unwrap());
    let p = probe(&mp4);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert!(p.duration >= 4.0, "transcoded {} s", p.duration);
}

/// With workers on separate disks, a segment's transcode runs on the worker that recorded it
/// (it alone has the files), even while another worker is idle.
#[test]
fn a_transcode_runs_on_the_worker_that_recorded_its_segment() {
    let dir = TempDir::new("redis-pinned");
    let redis = Redis::start(&dir.path().join("redis"));
    let api = api(dir.path(), &redis);
    let _a = worker(dir.path(), &redis, "wa", "2");
    let _b = worker(dir.path(), &redis, "wb", "2");
    wait_workers(&api, 2);
    let body = format!(r#"{{"requested_by":{MODERATOR}}}"#);
    let mut holders = Vec::new();
    // Two rooms one after the other: each transcode follows its own recording's worker.
    for room in ["left", "right"] {
        register_room(&api, room, 2, r#"{"layout":"grid"}"#);
        let path = format!("/v1/rooms/{room}/recording");
        let (s, v) = api.call("POST", &path, Some(&body));
        assert_eq!(s, 201, "{v}");
        let id = v["job_id"].as_str().unwrap().to_string();
        let j = wait_state(&api, &id, "active", 30.0);
        let holder = j["worker"].as_str().unwrap().to_string();
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(api.call("DELETE", &path, Some(&body)).0, 200);
        wait_state(&api, &id, "completed", 40.0);
        let (_, jobs) = api.call("GET", &format!("/v1/rooms/{room}/jobs"), None);
        let t = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["spec"]["kind"] == "transcode")
            .cloned()
            .unwrap_or_else(|| panic!("no transcode: {jobs}"));
        assert_eq!(t["spec"]["runs_on"], holder.as_str(), "{t}");
        let t = wait_state(&api, t["id"].as_str().unwrap(), "completed", 90.0);
        assert_eq!(t["worker"], holder.as_str(), "{t}");
        let mp4 = std::path::PathBuf::from(t["segments"][0]["path"].as_str().unwrap());
        assert!(
            mp4.starts_with(dir.path().join(format!("data-{holder}"))),
            "{mp4:?} on {holder}'s disk"
        );
        assert!(probe(&mp4).duration >= 3.0);
        holders.push(holder);
    }
    eprintln!("recorded and transcoded on {holders:?}");
}

/// Redis drops the API's connection (here by `CLIENT KILL`; in the wild a proxy's idle
/// timeout, a failover, a restart between two requests): the next request is answered from a
/// new connection, not with a store error.
#[test]
fn a_dropped_redis_connection_fails_no_request() {
    let dir = TempDir::new("redis-dropped");
    let redis = Redis::start(&dir.path().join("redis"));
    let api = api(dir.path(), &redis);
    let _w = worker(dir.path(), &redis, "solo", "0.3");
    wait_workers(&api, 1);
    for round in 0..3 {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &redis.port.to_string(),
                "CLIENT",
                "KILL",
                "TYPE",
                "normal",
            ])
            .output()
            .expect("redis-cli (apt package redis-tools)");
        let killed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            killed.parse::<u32>().is_ok_and(|n| n >= 1),
            "round {round}: CLIENT KILL answered {killed:?}"
        );
        let (status, h) = api.call("GET", "/v1/health", None);
        assert_eq!(status, 200, "round {round}: {h}");
        assert_eq!(
            (h["store"].as_str(), h["workers"].as_u64()),
            (Some("redis"), Some(1))
        );
    }
}

/// A worker alone answers its probes and metrics on `ROOMCAST_METRICS_LISTEN`, without the
/// token and with nothing else there, and keeps answering them while it drains after SIGTERM
/// (an orchestrator that saw them fail would kill it mid-drain).
#[test]
fn a_workers_probes_answer_until_its_drain_is_over() {
    let dir = TempDir::new("worker-probes");
    let redis = Redis::start(&dir.path().join("redis"));
    let api = api(dir.path(), &redis);
    let probes = format!("127.0.0.1:{}", free_port());
    let env = serve_env(
        &dir.path().join("data-wp"),
        &[
            ("ROOMCAST_REDIS_URL", &redis.url()),
            ("ROOMCAST_WORKER_ID", "wp"),
            ("ROOMCAST_METRICS_LISTEN", &probes),
        ],
    );
    let mut w = Service::start(&["worker"], &env, &dir.path().join("wp.log"), false);
    let answers = |path: &str| {
        std::net::TcpStream::connect(&probes)
            .ok()
            .map(|_| http(&probes, "GET", path, None, None))
    };
    let ready = wait_for(15.0, || answers("/readyz").filter(|(s, _)| *s == 200));
    assert!(ready.is_some(), "not ready: {}", w.log_text());
    assert_eq!(answers("/healthz").unwrap().0, 200);
    let (s, metrics) = answers("/metrics").unwrap();
    assert_eq!(s, 200);
    assert!(metrics.contains("roomcast_workers 1"), "{metrics}");
    let (s, v) = answers("/v1/jobs").unwrap();
    assert_eq!(s, 404, "{v}");

    register_room(&api, "probed", 2, "{}");
    let (s, v) = start_recording(&api, "probed");
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    std::thread::sleep(Duration::from_secs(3));
    let (clean, during) = std::thread::scope(|scope| {
        let stopping = scope.spawn(|| w.terminate(60));
        let mut during = 0;
        while !stopping.is_finished() {
            if answers("/healthz").is_some_and(|(s, _)| s == 200) {
                during += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (stopping.join().unwrap(), during)
    });
    assert!(clean, "the worker did not end cleanly");
    assert!(during > 0, "no probe answered while the worker drained");
    assert!(answers("/healthz").is_none(), "probes outlive the worker");
    // The drained job went back to the queue with its segment delivered.
    let j = job(&api, &id);
    assert_eq!(j["segments"][0]["status"], "local", "{j}");
}

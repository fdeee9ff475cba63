//! A worker stopped the way a rolling update or a scale-in stops it (SIGTERM) while it
//! records: its segment is finalized and delivered, the job goes straight back to the stream,
//! and another worker records the next segment; how long the room went unrecorded between the
//! two is printed and bounded.

mod support;
use std::time::Duration;
use support::*;

fn worker(dir: &std::path::Path, redis: &Redis, id: &str) -> Service {
    let env = serve_env(
        &dir.join(format!("data-{id}")),
        &[
            ("ROOMCAST_REDIS_URL", &redis.url()),
            ("ROOMCAST_WORKER_ID", id),
            ("ROOMCAST_CPU_BUDGET", "0.6"),
        ],
    );
    Service::start(&["worker"], &env, &dir.join(format!("{id}.log")), false)
}

#[test]
fn a_stopped_workers_recording_goes_on_at_once_on_another() {
    let dir = TempDir::new("rolling");
    let redis = Redis::start(&dir.path().join("redis"));
    let env = serve_env(
        &dir.path().join("data-api"),
        &[("ROOMCAST_REDIS_URL", &redis.url())],
    );
    let api = Service::start(&["api"], &env, &dir.path().join("api.log"), true);
    let mut workers = [
        Some(worker(dir.path(), &redis, "wa")),
        Some(worker(dir.path(), &redis, "wb")),
    ];
    let up = wait_for(15.0, || {
        (api.call("GET", "/v1/health", None).1["workers"] == 2).then_some(())
    });
    assert!(up.is_some(), "two workers did not show up");
    register_room(&api, "rolling", 2, "{}");
    let (s, v) = start_recording(&api, "rolling");
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let j = wait_state(&api, &id, "active", 20.0);
    let holder = j["worker"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(6));
    let (stopped, other) = if holder == "wa" { (0, "wb") } else { (1, "wa") };
    let mut w = workers[stopped].take().unwrap();
    assert!(w.terminate(60), "the stopped worker: {}", w.log_text());

    let j = wait_for(20.0, || {
        let j = job(&api, &id);
        (j["worker"] == other
            && j["state"] == "active"
            && j["segments"].as_array().is_some_and(|s| s.len() == 2))
        .then_some(j)
    })
    .unwrap_or_else(|| panic!("not taken over: {}", job(&api, &id)));
    assert_eq!(j["segments"][0]["status"], "local", "{j}");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(stop_recording(&api, "rolling").1["result"], 0);
    let j = wait_state(&api, &id, "completed", 30.0);
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{j}");
    let first = probe(std::path::Path::new(segs[0]["path"].as_str().unwrap()));
    let second = probe(std::path::Path::new(segs[1]["path"].as_str().unwrap()));
    assert!(first.duration >= 5.0, "first segment {} s", first.duration);
    assert!(
        second.duration >= 3.0,
        "second segment {} s",
        second.duration
    );
    // Each segment's record starts when its run starts it; both wait the same for their
    // first frame, so the room went unrecorded for about the second's start less the first's
    // end.
    let start = |s: &serde_json::Value| s["started_ms"].as_u64().unwrap() as f64 / 1000.0;
    let gap = start(&segs[1]) - start(&segs[0]) - first.duration;
    eprintln!(
        "rolling restart: first segment {:.1} s, second {:.1} s, gap {gap:.2} s",
        first.duration, second.duration
    );
    assert!(gap < 4.0, "the room went unrecorded for {gap:.2} s");
}

//! The embedded queue (`roomcast serve` alone): waiting codes and order, queue timeouts, and
//! jobs surviving a killed and a stopped server.

mod support;
use std::time::Duration;
use support::*;

#[test]
fn waiting_queue_order_and_cancel() {
    let dir = TempDir::new("q-embedded");
    let env = serve_env(&dir.path().join("data"), &[("ROOMCAST_CPU_BUDGET", "0.3")]);
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    queue_order_scenario(&api, "emb");
    let (_, m) = api.call("GET", "/metrics", None);
    let m = m.as_str().unwrap_or_default().to_string();
    assert!(m.contains("roomcast_jobs{state=\"completed\"} 3"), "{m}");
    assert!(m.contains("roomcast_jobs{state=\"cancelled\"} 1"), "{m}");
    assert!(
        m.contains("roomcast_capacity_cores{kind=\"budget\"} 0.3"),
        "{m}"
    );
}

#[test]
fn capacity_follows_the_participant_count() {
    let dir = TempDir::new("q-cost");
    let env = serve_env(&dir.path().join("data"), &[("ROOMCAST_CPU_BUDGET", "0.6")]);
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    // 720p30: 0.2 + 0.045 per participant. Two one-person rooms fit in 0.6 together…
    register_room(&api, "one", 1, "{}");
    register_room(&api, "two", 1, "{}");
    register_room(&api, "nine", 9, "{}");
    let mut ids = Vec::new();
    for r in ["one", "two"] {
        let (s, v) = start_recording(&api, r);
        assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{r}: {v}");
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_state(&api, id, "active", 20.0);
    }
    // …a nine-person room (0.605) does not fit beside them.
    let (s, v) = start_recording(&api, "nine");
    assert_eq!((s, v["result"].as_u64()), (202, Some(7207)), "{v}");
    let nine = v["job_id"].as_str().unwrap().to_string();
    let used = wait_for(10.0, || {
        let u = used_cores(&api);
        ((u - 0.49).abs() < 0.01).then_some(u)
    });
    assert!(used.is_some(), "used {}", used_cores(&api));
    // A room that grows takes more budget while it records.
    for i in 0..4 {
        let (s, v) = api.call(
            "POST",
            "/v1/rooms/one/events",
            Some(&format!(
                r#"{{"type":"participant_joined","user_id":"u{i}","name":"Guest {i}"}}"#
            )),
        );
        assert_eq!(s, 200, "{v}");
    }
    let grown = wait_for(10.0, || {
        let u = used_cores(&api);
        ((u - (0.49 + 4.0 * 0.045)).abs() < 0.01).then_some(u)
    });
    assert!(grown.is_some(), "used {}", used_cores(&api));
    // Both small ones end: the big one starts.
    for r in ["one", "two"] {
        assert_eq!(stop_recording(&api, r).1["result"], 0);
    }
    wait_state(&api, &nine, "active", 30.0);
    assert_eq!(stop_recording(&api, "nine").1["result"], 0);
    wait_state(&api, &nine, "completed", 30.0);
}

/// A recording stopped the moment it is active can end before its muxer wrote a fragment (on
/// a loaded machine: the header only, or not a byte). Its segment is recorded as empty and no
/// file is left; a stop that drained completes the job (not 7033).
#[test]
fn a_recording_stopped_at_once_leaves_an_empty_segment() {
    let dir = TempDir::new("q-instant");
    let data = dir.path().join("data");
    // The first segment's encoder input is wedged from the start, as on a machine too loaded
    // to encode a frame before the stop.
    let env = serve_env(&data, &[("ROOMCAST_FAULT_STALL_AFTER_SECS", "0")]);
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    // A failed recording holds its room back from new starts (7015): the wedged one has its own.
    register_room(&api, "wedged", 2, "{}");
    register_room(&api, "brief", 2, "{}");
    for round in 0..3 {
        let room = if round == 0 { "wedged" } else { "brief" };
        let (s, v) = start_recording(&api, room);
        assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{round}: {v}");
        let id = v["job_id"].as_str().unwrap().to_string();
        let t0 = std::time::Instant::now();
        while job(&api, &id)["state"] != "active" {
            assert!(t0.elapsed().as_secs() < 20, "{round}: not active");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stop_recording(&api, room).1["result"], 0);
        let done = if round == 0 {
            // Nothing reaches the muxer, so nothing drains either: 7031, but no segment left
            // "recording" and no empty file.
            wait_failed(&api, &id, 7031, "did not drain", 40.0)
        } else {
            let done = wait_state(&api, &id, "completed", 30.0);
            assert_eq!(done["result"], 0, "{done}");
            done
        };
        let seg = &done["segments"][0];
        let path = data
            .join("recordings")
            .join(seg["file_name"].as_str().unwrap());
        match seg["status"].as_str() {
            Some("empty") => {
                assert_eq!(seg["size"], 0, "{seg}");
                assert!(!path.exists(), "{} left behind", path.display());
            }
            // A stop slower than the first fragment: a short real recording.
            _ => {
                assert!(round > 0, "the wedged segment is not empty: {seg}");
                assert!(seg["duration_s"].as_f64().unwrap_or(0.0) > 0.0, "{seg}");
                assert!(path.is_file(), "{seg}");
            }
        }
    }
}

#[test]
fn ended_job_records_are_deleted_after_the_retention() {
    let dir = TempDir::new("q-retention");
    let env = serve_env(
        &dir.path().join("data"),
        &[
            ("ROOMCAST_CPU_BUDGET", "0"),
            ("ROOMCAST_JOB_RETENTION_SECS", "2"),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    retention_scenario(&api);
}

#[test]
fn requests_that_wait_too_long_fall_back_or_fail_with_7080_and_7081() {
    let dir = TempDir::new("q-timeout");
    let hooks = Receiver::start(0);
    let hook_url = format!("http://127.0.0.1:{}/h", hooks.port);
    let env = serve_env(
        &dir.path().join("data"),
        &[
            ("ROOMCAST_CPU_BUDGET", "0"),
            ("ROOMCAST_QUEUE_WAIT_SECS", "2"),
            ("ROOMCAST_WEBHOOK_URL", &hook_url),
            ("ROOMCAST_WEBHOOK_SECRET", "queue-test"),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "slow", 1, "{}");
    let (s, rec) = start_recording(&api, "slow");
    assert_eq!((s, rec["result"].as_u64()), (202, Some(7207)), "{rec}");
    let (s, st) = api.call(
        "POST",
        "/v1/rooms/slow/streaming",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"rtmp_urls":["rtmp://127.0.0.1:1/live/secretkey"]}}"#
        )),
    );
    assert_eq!((s, st["result"].as_u64()), (202, Some(7105)), "{st}");
    // A live recording that no worker took in time is recorded individually instead (7014);
    // the individual recording that replaced it also waits, and fails with 7080.
    let rec = wait_failed(
        &api,
        rec["job_id"].as_str().unwrap(),
        7014,
        "individually",
        10.0,
    );
    let (_, jobs) = api.call("GET", "/v1/rooms/slow/jobs", None);
    let fallback = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["spec"]["fallback_for"] == rec["id"])
        .cloned()
        .unwrap_or_else(|| panic!("no fall-back job: {jobs}"));
    assert_eq!(fallback["spec"]["kind"], "individual");
    let fallback = wait_state(&api, fallback["id"].as_str().unwrap(), "failed", 10.0);
    assert_eq!(fallback["result"], 7080, "{fallback}");
    let st = wait_state(&api, st["job_id"].as_str().unwrap(), "failed", 10.0);
    assert_eq!(st["result"], 7081, "{st}");
    let shown = st["spec"]["rtmp_urls"][0].as_str().unwrap();
    assert!(
        shown.starts_with("rtmp://127.0.0.1:1/live/") && !shown.contains("secretkey"),
        "stream key shown: {shown}"
    );
    // A queue timeout is not the room's fault: new requests are accepted (and wait).
    let stream =
        format!(r#"{{"requested_by":{MODERATOR},"rtmp_urls":["rtmp://127.0.0.1:1/live/k"]}}"#);
    let (s, st) = api.call("POST", "/v1/rooms/slow/streaming", Some(&stream));
    assert_eq!((s, st["result"].as_u64()), (202, Some(7104)), "{st}");
    let (_, again) = start_recording(&api, "slow");
    assert_eq!(again["result"], 7208, "{again}");
    // Stopping a request that still waits removes it from the queue.
    let (s, v) = api.call(
        "DELETE",
        "/v1/rooms/slow/streaming",
        Some(&format!(r#"{{"requested_by":{MODERATOR}}}"#)),
    );
    assert_eq!((s, v["result"].as_u64()), (200, Some(7046)), "{v}");
    assert_eq!(
        job(&api, st["job_id"].as_str().unwrap())["state"],
        "cancelled"
    );
    let (_, v) = stop_recording(&api, "slow");
    assert_eq!(v["result"], 7039, "{v}");

    // Each request that ended without running sent its signed `…-failed` status webhook
    // with the code it ended with.
    let codes = |kind: &str, n: usize| -> Vec<u64> {
        let t0 = std::time::Instant::now();
        loop {
            let got = hooks.of_type(kind);
            if got.len() >= n || t0.elapsed() > Duration::from_secs(10) {
                return got
                    .iter()
                    .map(|h| {
                        let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
                        v["data"]["status"]["resultCode"].as_u64().unwrap_or(0)
                    })
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut rec = codes("room-live-recording-failed", 2);
    rec.sort();
    assert_eq!(rec, [7014, 7039]);
    assert_eq!(codes("room-record-failed", 1), [7080]);
    let mut st = codes("room-streaming-failed", 2);
    st.sort();
    assert_eq!(st, [7046, 7081]);
    assert!(hooks
        .received()
        .iter()
        .all(|h| h.headers.contains_key("webhook-signature")));
}

#[test]
fn jobs_survive_a_killed_and_a_stopped_server() {
    let dir = TempDir::new("q-restart");
    let data = dir.path().join("data");
    let env = serve_env(&data, &[]);
    let mut s1 = Service::start(&["serve"], &env, &dir.path().join("s1.log"), true);
    register_room(&s1, "keep", 2, "{}");
    let (_, v) = start_recording(&s1, "keep");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&s1, &id, "active", 20.0);
    std::thread::sleep(Duration::from_secs(2));
    post_chat_as(&s1, "keep", ("u1", "Ann"), "before the crash");
    std::thread::sleep(Duration::from_secs(2));
    s1.kill9();

    // A new server on the same data folder takes the job over: the killed run's segment is
    // finalized and kept, a new segment starts.
    let mut s2 = Service::start(&["serve"], &env, &dir.path().join("s2.log"), true);
    let j = wait_for(20.0, || {
        let j = job(&s2, &id);
        (j["state"] == "active" && j["attempts"] == 2).then_some(j)
    })
    .unwrap_or_else(|| panic!("not resumed: {}", job(&s2, &id)));
    let first = &j["segments"][0];
    assert_eq!(first["status"], "local", "{j}");
    let first_path = std::path::PathBuf::from(first["path"].as_str().unwrap());
    let d = probe(&first_path).duration;
    assert!(d >= 3.0, "the killed run's segment holds {d} s");
    assert_eq!(j["segments"].as_array().unwrap().len(), 2, "{j}");
    // The chat of the killed run's segment was journaled: its transcript is made on recovery.
    assert_eq!(transcript(first), ["before the crash"], "{j}");
    post_chat_as(&s2, "keep", ("u1", "Ann"), "after the takeover");
    std::thread::sleep(Duration::from_secs(3));

    // SIGTERM: the server finalizes the segment and hands the job back, then exits.
    assert!(
        s2.terminate(30),
        "serve did not exit cleanly: {}",
        s2.log_text()
    );
    let s3 = Service::start(&["serve"], &env, &dir.path().join("s3.log"), true);
    let j = wait_for(20.0, || {
        let j = job(&s3, &id);
        (j["state"] == "active" && j["attempts"] == 3).then_some(j)
    })
    .unwrap_or_else(|| panic!("not resumed after SIGTERM: {}", job(&s3, &id)));
    assert_eq!(j["segments"][1]["status"], "local", "{j}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stop_recording(&s3, "keep").1["result"], 0);
    let j = wait_state(&s3, &id, "completed", 30.0);
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 3, "{j}");
    for (i, s) in segs.iter().enumerate() {
        let p = std::path::PathBuf::from(s["path"].as_str().unwrap());
        let pr = probe(&p);
        assert!(pr.duration >= 1.5, "segment {i}: {} s", pr.duration);
        assert_eq!(s["status"], "local");
    }
    assert_eq!(transcript(&segs[1]), ["after the takeover"], "{j}");
    assert!(segs[2].get("chat").is_none(), "{j}");
    let (_, arch) = s3.call("GET", "/v1/recordings?room_id=keep", None);
    assert_eq!(arch["count"], 3, "{arch}");
    let (_, arch) = s3.call("GET", "/v1/recordings?room_id=keep&kind=chat", None);
    assert_eq!(arch["count"], 2, "{arch}");
}

/// The texts in a segment record's chat transcript (kept locally: no storage configured).
fn transcript(seg: &serde_json::Value) -> Vec<String> {
    assert_eq!(seg["chat"]["status"], "local", "{seg}");
    let url = seg["chat"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{seg}"));
    let text = std::fs::read(url.strip_prefix("file://").unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["recording"], seg["file_name"], "{v}");
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn max_duration_counts_from_the_first_start_across_a_takeover() {
    let dir = TempDir::new("q-maxdur");
    let env = serve_env(&dir.path().join("data"), &[]);
    let mut s1 = Service::start(&["serve"], &env, &dir.path().join("s1.log"), true);
    register_room(&s1, "cap", 2, "{}");
    let (_, v) = s1.call(
        "POST",
        "/v1/rooms/cap/live-recording",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"config":{{"max_duration_secs":10}}}}"#
        )),
    );
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&s1, &id, "active", 20.0);
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    s1.kill9();
    let s2 = Service::start(&["serve"], &env, &dir.path().join("s2.log"), true);
    let j = wait_state(&s2, &id, "completed", 30.0);
    let total = t0.elapsed().as_secs_f64();
    assert_eq!(j["msg"], "maximum duration reached", "{j}");
    let recorded: f64 = j["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["duration_s"].as_f64().unwrap_or(0.0))
        .sum();
    // 10 s in all (not 5 s + a fresh 10 s), give or take the restart.
    assert!(total < 13.0, "completed {total:.1} s after the start: {j}");
    assert!(
        (7.0..=11.0).contains(&recorded),
        "{recorded} s recorded: {j}"
    );
}

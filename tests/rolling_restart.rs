//! A worker stopped the way a rolling update or a scale-in stops it (SIGTERM) while it
//! records: the job goes straight back to the stream while the stopping worker goes on
//! recording, another worker records the next segment, and only then does the first end its
//! own (make before break); the two segments' overlap is printed and bounded, and the first
//! is delivered by the worker that recorded it.

mod support;
use std::time::Duration;
use support::*;

/// A worker with a CPU budget of `cores`.
fn worker_with(dir: &std::path::Path, redis: &Redis, id: &str, cores: &str) -> Service {
    let env = serve_env(
        &dir.join(format!("data-{id}")),
        &[
            ("ROOMCAST_REDIS_URL", &redis.url()),
            ("ROOMCAST_WORKER_ID", id),
            ("ROOMCAST_CPU_BUDGET", cores),
        ],
    );
    Service::start(&["worker"], &env, &dir.join(format!("{id}.log")), false)
}

/// Redis, the control API and two workers `wa` and `wb` of `cores` each, both heart-beating.
fn fleet(dir: &std::path::Path, cores: &str) -> (Redis, Service, [Option<Service>; 2]) {
    let redis = Redis::start(&dir.join("redis"));
    let env = serve_env(
        &dir.join("data-api"),
        &[("ROOMCAST_REDIS_URL", &redis.url())],
    );
    let api = Service::start(&["api"], &env, &dir.join("api.log"), true);
    let workers = [
        Some(worker_with(dir, &redis, "wa", cores)),
        Some(worker_with(dir, &redis, "wb", cores)),
    ];
    let up = wait_for(15.0, || {
        (api.call("GET", "/v1/health", None).1["workers"] == 2).then_some(())
    });
    assert!(up.is_some(), "two workers did not show up");
    (redis, api, workers)
}

/// Starts recording `room`, lets it record 6 s and stops (SIGTERM, waiting for the drain) the
/// worker recording it; returns the job id and the other worker.
fn record_then_stop_its_worker(
    api: &Service,
    room: &str,
    workers: &mut [Option<Service>; 2],
) -> (String, &'static str) {
    let (s, v) = start_recording(api, room);
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let j = wait_state(api, &id, "active", 20.0);
    std::thread::sleep(Duration::from_secs(6));
    let (stopped, other) = if j["worker"] == "wa" {
        (0, "wb")
    } else {
        (1, "wa")
    };
    let mut w = workers[stopped].take().unwrap();
    assert!(w.terminate(60), "the stopped worker: {}", w.log_text());
    (id, other)
}

#[test]
fn a_stopped_workers_recording_goes_on_at_once_on_another() {
    let dir = TempDir::new("rolling");
    let (_redis, api, mut workers) = fleet(dir.path(), "0.6");
    register_room(&api, "rolling", 2, "{}");
    let (id, other) = record_then_stop_its_worker(&api, "rolling", &mut workers);
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
    // first frame, so the second began its end-to-start distance after the first ended
    // (negative: they overlap). Before hand-overs the room went unrecorded for 0.17 s
    // (5.7 s while a stopped job's lease had to lapse first).
    let start = |s: &serde_json::Value| s["started_ms"].as_u64().unwrap() as f64 / 1000.0;
    let gap = start(&segs[1]) - start(&segs[0]) - first.duration;
    eprintln!(
        "rolling restart: first segment {:.1} s, second {:.1} s, overlap {:.2} s",
        first.duration, second.duration, -gap
    );
    assert!(gap < 0.0, "the room went unrecorded for {gap:.2} s");
    assert!(gap > -2.0, "the segments overlap by {:.2} s", -gap);
    assert_eq!(segs[0]["status"], "local", "{j}");
}

/// Where in `pcm` (48 kHz mono) a tone of `hz` is heard: the first and last 100 ms block at
/// half its `level` or more (seconds from the file's start).
fn heard(pcm: &[f32], hz: f64, level: f64) -> Option<(f64, f64)> {
    let blocks: Vec<f64> = pcm
        .chunks_exact(4_800)
        .map(|b| tone_amplitude(b, hz, 48_000))
        .collect();
    let on = |a: &&f64| **a >= level / 2.0;
    let first = blocks.iter().position(|a| on(&a))?;
    let last = blocks.iter().rposition(|a| on(&a))?;
    Some((first as f64 * 0.1, (last + 1) as f64 * 0.1))
}

/// The same in a real Janus room: the next worker joins the room as a hidden participant and
/// subscribes before the stopping worker ends its segment, so the publisher's voice and picture
/// run on from one segment into the next with no moment missing.
#[test]
fn a_janus_recording_is_handed_over_with_no_moment_missing() {
    use support::janus::*;
    if !in_network_namespace("a_janus_recording_is_handed_over_with_no_moment_missing") {
        return;
    }
    const RED: u32 = 0xd02020;
    gst::init().unwrap();
    let dir = TempDir::new("handover-janus");
    let (janus, rt, _admin) = janus_room(dir.path(), 1);
    let publisher = rt.block_on(Publisher::publish(
        &janus.url(),
        1,
        "Ann",
        RED,
        440.0,
        Codec::Vp8,
    ));
    rt.block_on(publisher.wait_connected());
    let (_redis, api, mut workers) = fleet(dir.path(), "1.0");
    let room = format!(
        r#"{{"conf_num":"1","connector":{{"type":"janus","url":"{}","room":1,"ice_address":"{ICE_ADDRESS}"}}}}"#,
        janus.url()
    );
    let (status, v) = api.call("PUT", "/v1/rooms/r1", Some(&room));
    assert!(status == 200 || status == 201, "{status} {v}");
    let (id, other) = record_then_stop_its_worker(&api, "r1", &mut workers);
    let taken = wait_for(20.0, || {
        let j = job(&api, &id);
        (j["worker"] == other && j["state"] == "active").then_some(())
    });
    assert!(taken.is_some(), "not taken over: {}", job(&api, &id));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(stop_recording(&api, "r1").1["result"], 0);
    let j = wait_state(&api, &id, "completed", 30.0);
    drop(publisher);
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{j}");
    assert_eq!(segs[0]["status"], "local", "{j}");
    // Ann's voice on the wall clock: from each segment's start (its record) plus where in the
    // file it is heard; the second segment's must begin before the first's ends.
    let mut spans = Vec::new();
    for seg in segs {
        let path = std::path::PathBuf::from(seg["path"].as_str().unwrap());
        let pcm = audio_mono(&path, 48_000);
        let (from, to) = heard(&pcm, 440.0, 0.42)
            .unwrap_or_else(|| panic!("Ann not heard in {}", path.display()));
        let t0 = seg["started_ms"].as_u64().unwrap() as f64 / 1000.0;
        let p = probe(&path);
        let f = frame_at(&path, (to - 0.5).max(from), 1280, 720);
        assert!(
            frame_has_color(&f, RED),
            "Ann seen with her voice in {}",
            path.display()
        );
        spans.push((t0 + from, t0 + to, p.duration, to));
    }
    let overlap = spans[0].1 - spans[1].0;
    eprintln!(
        "janus hand-over: first segment {:.1} s, second {:.1} s, Ann in both for {overlap:.2} s",
        spans[0].2, spans[1].2
    );
    assert!(
        overlap > 0.0,
        "Ann was missing for {:.2} s between the segments",
        -overlap
    );
    assert!(overlap < 3.0, "the segments overlap by {overlap:.2} s");
    // Her voice runs on to the first segment's end: it was not cut before it.
    assert!(
        spans[0].2 - spans[0].3 < 1.0,
        "Ann heard until {:.1} s of the first segment's {:.1} s",
        spans[0].3,
        spans[0].2
    );
}

/// A worker lost while it hands its recording over — stopped once two chunks of its segment
/// are in storage, then its process killed and its data folder deleted before the next worker
/// (frozen meanwhile) took the job up: the segment it went on recording is rebuilt from the
/// chunks that reached storage, delivered once with one webhook, and the job records on in
/// the next segment.
#[test]
fn a_worker_lost_while_handing_over_loses_no_recording() {
    const CHUNK_SECS: f64 = 4.0;
    let dir = TempDir::new("handover-lost");
    let redis = Redis::start(&dir.path().join("redis"));
    let hooks = Receiver::start(0);
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let api_env = serve_env(
        &dir.path().join("data-api"),
        &[("ROOMCAST_REDIS_URL", &redis.url())],
    );
    let api = Service::start(&["api"], &api_env, &dir.path().join("api.log"), true);
    let hook_url = format!("http://127.0.0.1:{}/hook", hooks.port);
    let storage = format!("file://{}", store.display());
    let start = |id: &str| {
        let env = serve_env(
            &dir.path().join(format!("data-{id}")),
            &[
                ("ROOMCAST_REDIS_URL", &redis.url()),
                ("ROOMCAST_WORKER_ID", id),
                ("ROOMCAST_CPU_BUDGET", "0.6"),
                ("ROOMCAST_STORAGE", &storage),
                ("ROOMCAST_CHUNK_SECS", &CHUNK_SECS.to_string()),
                ("ROOMCAST_WEBHOOK_URL", &hook_url),
                ("ROOMCAST_WEBHOOK_SECRET", "handover-webhook-secret"),
            ],
        );
        Service::start(
            &["worker"],
            &env,
            &dir.path().join(format!("{id}.log")),
            false,
        )
    };
    let mut workers = [Some(start("wa")), Some(start("wb"))];
    let up = wait_for(15.0, || {
        (api.call("GET", "/v1/health", None).1["workers"] == 2).then_some(())
    });
    assert!(up.is_some(), "two workers did not show up");
    register_room(&api, "lost", 2, "{}");
    let (s, v) = start_recording(&api, "lost");
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let j = wait_state(&api, &id, "active", 20.0);
    let recorded = std::time::Instant::now();
    let holder = j["worker"].as_str().unwrap().to_string();
    let (h, other) = if holder == "wa" { (0, "wb") } else { (1, "wa") };
    // Two chunks of the segment in storage first.
    let chunks = || {
        files_under(&store)
            .iter()
            .filter(|f| f.to_string_lossy().contains(".mp4.chunk"))
            .count()
    };
    let two = wait_for(30.0, || (chunks() >= 2).then_some(()));
    assert!(two.is_some(), "{} chunks stored", chunks());
    let mut lost = workers[h].take().unwrap();
    let next = workers[1 - h].as_ref().unwrap();
    next.freeze(true);
    let pid = lost.child.as_ref().unwrap().id().to_string();
    tool_output(std::process::Command::new("kill").args(["-TERM", &pid]));
    let handing = wait_for(5.0, || {
        lost.log_text()
            .contains("handing the job over")
            .then_some(())
    });
    assert!(handing.is_some(), "not handed over: {}", lost.log_text());
    let lived = recorded.elapsed().as_secs_f64();
    lost.kill9();
    std::fs::remove_dir_all(dir.path().join(format!("data-{holder}"))).unwrap();
    next.freeze(false);
    let taken = wait_for(20.0, || {
        let j = job(&api, &id);
        (j["worker"] == other && j["state"] == "active").then_some(())
    });
    assert!(taken.is_some(), "not taken up: {}", job(&api, &id));
    // Long enough for the lost worker's heartbeat to lapse.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(stop_recording(&api, "lost").1["result"], 0);
    let done = wait_state(&api, &id, "completed", 60.0);
    let segs = done["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{done}");
    let names: Vec<String> = segs
        .iter()
        .map(|s| s["file_name"].as_str().unwrap().to_string())
        .collect();
    let hooked = wait_for(60.0, || {
        let h = hooks.of_type("live_recording");
        (h.len() >= 2).then_some(h)
    })
    .unwrap_or_else(|| panic!("webhooks: {done}"));
    std::thread::sleep(Duration::from_secs(2));
    let announced = hooks.announced_files("live_recording");
    assert_eq!(
        announced,
        names,
        "one webhook per segment ({} first)",
        hooked.len()
    );
    let mut stored: Vec<String> = files_under(&store)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    stored.sort();
    assert_eq!(
        stored, names,
        "storage holds the two recordings and no chunk"
    );
    let first = files_under(&store)
        .into_iter()
        .find(|f| f.file_name().unwrap().to_string_lossy() == names[0])
        .unwrap();
    let p = probe(&first);
    eprintln!(
        "recorded {lived:.1} s before the loss mid-hand-over; the rebuilt segment holds {:.1} s",
        p.duration
    );
    // Everything the two chunks held (each cut at its last whole fragment), at most what
    // was recorded.
    assert!(
        p.duration >= 2.0 * CHUNK_SECS - 1.5 && p.duration <= lived + 1.0,
        "the rebuilt segment holds {:.1} s of {lived:.1} s",
        p.duration
    );
}

/// A stop that arrives while a stopping worker hands its recording over (the next worker,
/// frozen, has not taken it up): answered 0, the job completed, not cancelled as a waiting
/// request; the stopping worker ends and delivers its segment at once.
#[test]
fn a_stop_during_a_hand_over_stops_the_recording() {
    let dir = TempDir::new("handover-stop");
    let (_redis, api, mut workers) = fleet(dir.path(), "0.6");
    register_room(&api, "stopped", 2, "{}");
    let (s, v) = start_recording(&api, "stopped");
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let j = wait_state(&api, &id, "active", 20.0);
    let h = if j["worker"] == "wa" { 0 } else { 1 };
    std::thread::sleep(Duration::from_secs(4));
    let mut holder = workers[h].take().unwrap();
    let next = workers[1 - h].as_ref().unwrap();
    next.freeze(true);
    let pid = holder.child.as_ref().unwrap().id().to_string();
    tool_output(std::process::Command::new("kill").args(["-TERM", &pid]));
    let handing = wait_for(5.0, || {
        holder
            .log_text()
            .contains("handing the job over")
            .then_some(())
    });
    assert!(handing.is_some(), "not handed over: {}", holder.log_text());
    let (status, v) = stop_recording(&api, "stopped");
    assert_eq!((status, v["result"].as_u64()), (200, Some(0)), "{v}");
    assert!(holder.terminate(30), "{}", holder.log_text());
    next.freeze(false);
    let j = wait_state(&api, &id, "completed", 10.0);
    assert_eq!(j["result"], 0, "{j}");
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 1, "{j}");
    assert_eq!(segs[0]["status"], "local", "{j}");
    let p = probe(std::path::Path::new(segs[0]["path"].as_str().unwrap()));
    assert!(p.duration >= 4.0, "{} s", p.duration);
    // The other worker, thawed, does not start the stopped job.
    std::thread::sleep(Duration::from_secs(2));
    let j = job(&api, &id);
    assert_eq!(j["state"], "completed", "{j}");
    assert_eq!(j["segments"].as_array().unwrap().len(), 1, "{j}");
}

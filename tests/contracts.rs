//! What clients and hostile input expect of the service, each through a real `serve`: a
//! sub-second individual recording's transcode ends, a stop right after a start never stores
//! an unplayable file, a receiver that never answers holds neither a room nor a shutdown.

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

fn storage_service(tag: &str, receiver: &Receiver) -> (TempDir, Service, PathBuf) {
    let dir = TempDir::new(tag);
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let hook = format!("http://127.0.0.1:{}/hook", receiver.port);
    let target = format!("file://{}", storage.display());
    let env = serve_env(
        &dir.path().join("data"),
        &[
            ("ROOMCAST_WEBHOOK_URL", hook.as_str()),
            ("ROOMCAST_WEBHOOK_SECRET", "contract-secret"),
            ("ROOMCAST_STORAGE", target.as_str()),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    (dir, api, storage)
}

fn moderator_body() -> String {
    format!(r#"{{"requested_by":{MODERATOR}}}"#)
}

fn jobs_of_room(api: &Service, room: &str) -> Vec<Value> {
    let (_, v) = api.call("GET", &format!("/v1/rooms/{room}/jobs"), None);
    v["jobs"].as_array().cloned().unwrap_or_default()
}

fn capacity_free(api: &Service) -> f64 {
    let (_, v) = api.call("GET", "/v1/health", None);
    v["capacity_free"].as_f64().unwrap_or(0.0)
}

#[test]
fn a_sub_second_individual_recording_is_transcoded_or_refused_and_frees_its_budget() {
    let receiver = Receiver::start(0);
    let (_dir, api, _storage) = storage_service("short-individual", &receiver);
    let idle = capacity_free(&api);
    register_room(&api, "brief", 2, r#"{"layout":"grid"}"#);
    let path = "/v1/rooms/brief/recording";
    let (s, v) = api.call("POST", path, Some(&moderator_body()));
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 30.0);
    let (s, v) = api.call("DELETE", path, Some(&moderator_body()));
    assert_eq!(s, 200, "{v}");
    wait_state(&api, &id, "completed", 30.0);
    // Its transcode ends, one way or the other, and hands back what it held.
    let transcode = wait_for(20.0, || {
        jobs_of_room(&api, "brief")
            .into_iter()
            .find(|j| j["spec"]["kind"] == "transcode")
    });
    if let Some(t) = transcode {
        let tid = t["id"].as_str().unwrap().to_string();
        let ended = wait_for(30.0, || {
            let j = job(&api, &tid);
            matches!(j["state"].as_str(), Some("completed" | "failed")).then_some(j)
        })
        .unwrap_or_else(|| panic!("transcode {tid} still running: {}", job(&api, &tid)));
        if ended["state"] == "failed" {
            let code = ended["result"].as_u64().unwrap_or(0);
            assert!((7000..8000).contains(&code), "{ended}");
            assert!(
                ended["msg"].as_str().unwrap_or_default().len() > 10,
                "a failure says why: {ended}"
            );
        }
    }
    let free = wait_for(10.0, || {
        let f = capacity_free(&api);
        ((f - idle).abs() < 0.01).then_some(f)
    });
    assert!(
        free.is_some(),
        "budget handed back: {} of {idle}",
        capacity_free(&api)
    );
    // The next start of the room records.
    let (s, v) = api.call("POST", path, Some(&moderator_body()));
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 30.0);
}

#[test]
fn a_stop_right_after_a_start_stores_only_playable_files() {
    let receiver = Receiver::start(0);
    let (_dir, api, storage) = storage_service("instant-stop", &receiver);
    let mut ids = Vec::new();
    for (i, delay_ms) in [0u64, 50, 100, 0, 50, 100].into_iter().enumerate() {
        let room = format!("instant{i}");
        register_room(&api, &room, 2, r#"{"layout":"grid"}"#);
        let (s, v) = start_recording(&api, &room);
        assert_eq!(s, 201, "{v}");
        let id = v["job_id"].as_str().unwrap().to_string();
        // Half of them stop as soon as they start, the others once they record.
        let state = if i < 3 { "starting" } else { "active" };
        wait_for(30.0, || {
            let j = job(&api, &id);
            matches!(
                j["state"].as_str(),
                Some(s) if s == state || s == "active"
            )
            .then_some(())
        })
        .unwrap_or_else(|| panic!("{id} never {state}"));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let (s, v) = stop_recording(&api, &room);
        assert_eq!(s, 200, "{v}");
        ids.push(id);
    }
    for id in &ids {
        let j = wait_for(60.0, || {
            let j = job(&api, id);
            matches!(
                j["state"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(j)
        })
        .unwrap_or_else(|| panic!("{id} did not end"));
        assert_ne!(j["state"], "failed", "a prompt stop is no failure: {j}");
        for seg in j["segments"].as_array().cloned().unwrap_or_default() {
            let state = seg["status"].as_str().unwrap_or_default();
            assert!(
                matches!(state, "delivered" | "empty"),
                "segment ends delivered or empty: {seg}"
            );
            if state == "delivered" {
                let url = seg["url"].as_str().unwrap_or_default();
                let p = probe(&PathBuf::from(url.trim_start_matches("file://")));
                assert!(p.duration > 0.0, "{url} plays: {seg}");
                assert_eq!(p.video_codec.as_deref(), Some("h264"), "{seg}");
            }
        }
    }
    // What reached storage plays.
    std::thread::sleep(Duration::from_secs(2));
    for f in files_under(&storage) {
        if f.extension().is_some_and(|e| e == "mp4") {
            let p = probe(&f);
            assert!(p.duration > 0.0, "{f:?} plays");
            assert!(p.video_codec.is_some(), "{f:?} has video");
        }
    }
    // Each `live_recording` webhook names files that play.
    for hook in receiver.of_type("live_recording") {
        let v: Value = serde_json::from_slice(&hook.body).unwrap();
        for item in v["live_recording"].as_array().cloned().unwrap_or_default() {
            let url = item["url"].as_str().unwrap_or_default();
            let path = PathBuf::from(url.trim_start_matches("file://"));
            assert!(path.is_file(), "{url} in storage");
            assert!(probe(&path).duration > 0.0, "{url} plays");
        }
    }
}

#[test]
fn a_receiver_that_never_answers_holds_no_room_and_no_shutdown() {
    // Answers each webhook only after a minute.
    let receiver = Receiver::start_with_delay(0, Duration::from_secs(60));
    let (dir, mut api, storage) = storage_service("hung-hook", &receiver);
    register_room(&api, "hung", 2, r#"{"layout":"grid"}"#);
    let (s, v) = start_recording(&api, "hung");
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 30.0);
    std::thread::sleep(Duration::from_secs(3));
    let (s, v) = stop_recording(&api, "hung");
    assert_eq!(s, 200, "{v}");
    let stopped = Instant::now();
    let j = wait_state(&api, &id, "completed", 15.0);
    let took = stopped.elapsed().as_secs_f64();
    assert!(
        took < 10.0,
        "completed {took:.1} s after the stop with a hung receiver"
    );
    eprintln!("hung receiver: completed {took:.2} s after the stop");
    assert_eq!(j["segments"][0]["status"], "delivered", "{j}");
    assert!(
        files_under(&storage)
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "mp4")),
        "the file is in storage"
    );
    // The room takes the next start at once.
    let (s, v) = start_recording(&api, "hung");
    assert_eq!(s, 201, "{v}");
    let next = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &next, "active", 30.0);
    let (s, _) = stop_recording(&api, "hung");
    assert_eq!(s, 200);
    wait_state(&api, &next, "completed", 15.0);
    // A stopping process leaves its webhooks queued on disk and exits promptly; the next
    // process opens the same store.
    let t = Instant::now();
    assert!(api.terminate(30), "serve exits cleanly");
    let exit_s = t.elapsed().as_secs_f64();
    assert!(exit_s < 15.0, "SIGTERM took {exit_s:.1} s");
    eprintln!("hung receiver: SIGTERM to exit {exit_s:.2} s");
    let hook = format!("http://127.0.0.1:{}/hook", receiver.port);
    let env = serve_env(
        &dir.path().join("data"),
        &[
            ("ROOMCAST_WEBHOOK_URL", hook.as_str()),
            ("ROOMCAST_WEBHOOK_SECRET", "contract-secret"),
        ],
    );
    let again = Service::start(&["serve"], &env, &dir.path().join("serve2.log"), true);
    let (s, v) = again.call("GET", &format!("/v1/jobs/{next}"), None);
    assert_eq!(s, 200, "{v}");
}

#[test]
fn a_file_whose_video_never_began_is_no_recording() {
    // Written by a recording stopped as its encoders started: the index names a video track
    // without a sample description, beside one fragment of sound. Neither ffprobe nor a
    // remux reads it.
    let stub = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stopped-before-first-frame.mp4");
    let probed = std::process::Command::new("ffprobe")
        .args(["-v", "error"])
        .arg(&stub)
        .output()
        .expect("ffprobe");
    assert!(!probed.status.success(), "ffprobe refuses the stub");
    assert!(!roomcast::pipeline::mp4::holds_media(&stub));
}

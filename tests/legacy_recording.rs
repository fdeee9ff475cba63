//! The platform's (legacy) recording through the control API: a moderator starts and stops an
//! individual recording, its files are delivered and announced by one `recording` webhook, a
//! `transcode` job lays the segment out into one MP4 (`transcoded`), and a live recording
//! whose composite fails falls back to it (7014, 7205).

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const RED: u32 = 0xd02020;
const GREEN: u32 = 0x20a040;
const PARTICIPANT: &str = r#"{"client_id":"pat-9","role":"participant"}"#;

fn body(who: &str) -> String {
    format!(r#"{{"requested_by":{who}}}"#)
}

fn json(r: &Received) -> Value {
    serde_json::from_slice(&r.body).expect("webhook body")
}

fn file_path(url: &str) -> PathBuf {
    PathBuf::from(
        url.strip_prefix("file://")
            .unwrap_or_else(|| panic!("not a file URL: {url}")),
    )
}

/// The room's job of `kind` (the newest).
fn job_of_kind(api: &Service, room: &str, kind: &str) -> Option<Value> {
    let (_, v) = api.call("GET", &format!("/v1/rooms/{room}/jobs"), None);
    v["jobs"]
        .as_array()?
        .iter()
        .filter(|j| j["spec"]["kind"] == kind)
        .max_by_key(|j| j["created_ms"].as_u64())
        .cloned()
}

fn codec_of(path: &Path) -> String {
    let p = probe(path);
    p.video_codec.or(p.audio_codec).unwrap_or_default()
}

/// Checks a delivered `recording` webhook against the segment it announces: every track file
/// and the manifest, each in storage, decodable, the codecs received.
fn check_recording_hook(hook: &Value, room: &str, participants: usize) -> Value {
    assert_eq!(hook["type"], "recording");
    assert_eq!(hook["room_id"], room);
    assert_eq!(hook["app_id"], "app");
    assert_eq!(hook["conf_num"], "1");
    let list = hook["recording"].as_array().expect("recording list");
    // A camera and a microphone per participant, and the manifest.
    assert_eq!(list.len(), participants * 2 + 1, "{hook}");
    let mut manifest = None;
    let mut codecs = Vec::new();
    for item in list {
        let url = item["url"].as_str().expect("url");
        let path = file_path(url);
        assert!(path.is_file(), "{url} is in storage");
        if url.ends_with("manifest.json") {
            manifest =
                Some(serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap()).unwrap());
        } else {
            assert!(url.ends_with(".mkv"), "{url}");
            codecs.push(codec_of(&path));
        }
    }
    codecs.sort();
    let mut want: Vec<String> = (0..participants)
        .flat_map(|_| ["opus".to_string(), "vp8".to_string()])
        .collect();
    want.sort();
    assert_eq!(codecs, want, "each track as generated");
    let manifest = manifest.expect("the manifest is delivered with its files");
    assert_eq!(
        manifest["files"].as_array().unwrap().len(),
        participants * 2
    );
    manifest
}

/// Checks the `transcoded` webhook's MP4: length of the segment, both people in the picture
/// and in the sound.
fn check_transcoded(hook: &Value, room: &str, seconds: f64) -> PathBuf {
    assert_eq!(hook["type"], "transcoded");
    assert_eq!(hook["room_id"], room);
    let list = hook["transcoded"].as_array().expect("transcoded list");
    assert_eq!(list.len(), 1, "{hook}");
    let path = file_path(list[0]["url"].as_str().unwrap());
    assert!(
        path.to_string_lossy().ends_with("_transcoded.mp4"),
        "{path:?}"
    );
    let p = probe(&path);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!(
        (p.duration - seconds).abs() < 1.5,
        "transcode lasts {} s, the segment {seconds} s",
        p.duration
    );
    // Half a second past a full second: the first participant (the sync reference) is not
    // flashing.
    let mid = frame_at(&path, (p.duration / 2.0).floor() + 0.5, 1280, 720);
    assert_region(&mid, (80, 180, 480, 360), RED, "first participant left");
    assert_region(
        &mid,
        (720, 180, 480, 360),
        GREEN,
        "second participant right",
    );
    // The sync reference beeps (2 kHz, 100 ms a second), the second participant hums 440 Hz.
    let pcm = audio_mono(&path, 48_000);
    let w = window(&pcm, 48_000, 1.0, p.duration - 1.0);
    let beep = tone_amplitude(w, 2000.0, 48_000);
    assert!(beep > 0.004, "first participant's beeps: {beep}");
    let hum = tone_amplitude(w, 440.0, 48_000);
    assert!(hum > 0.02, "second participant's voice: {hum}");
    path
}

fn wait_hooks(receiver: &Receiver, kind: &str, n: usize, secs: f64) -> Vec<Value> {
    wait_for(secs, || {
        let got = receiver.of_type(kind);
        (got.len() >= n).then(|| got.iter().map(json).collect::<Vec<_>>())
    })
    .unwrap_or_else(|| {
        panic!(
            "{n} `{kind}` webhooks within {secs} s: {:?}",
            receiver.of_type(kind).len()
        )
    })
}

fn service(tag: &str, extra: &[(&str, &str)]) -> (TempDir, Service, Receiver, PathBuf) {
    let (dir, env, receiver, storage) = service_env(tag, extra);
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    (dir, api, receiver, storage)
}

type Env = Vec<(&'static str, String)>;

fn service_env(tag: &str, extra: &[(&str, &str)]) -> (TempDir, Env, Receiver, PathBuf) {
    let dir = TempDir::new(tag);
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let receiver = Receiver::start(0);
    let hook = format!("http://127.0.0.1:{}/hook", receiver.port);
    let target = format!("file://{}", storage.display());
    let mut settings = vec![
        ("ROOMCAST_WEBHOOK_URL", hook.as_str()),
        ("ROOMCAST_WEBHOOK_SECRET", "legacy-secret"),
        ("ROOMCAST_STORAGE", target.as_str()),
    ];
    settings.extend_from_slice(extra);
    let env = serve_env(&dir.path().join("data"), &settings);
    (dir, env, receiver, storage)
}

#[test]
fn a_moderator_records_individually_and_the_segment_is_delivered_and_transcoded() {
    let (dir, api, receiver, _storage) = service("legacy-api", &[]);
    register_room(&api, "legacy", 2, r#"{"layout":"grid"}"#);
    let path = "/v1/rooms/legacy/recording";

    // Only a moderator, only a known room, nothing to stop yet.
    let (s, v) = api.call("POST", path, Some(&body(PARTICIPANT)));
    assert_eq!((s, v["result"].as_u64()), (403, Some(7201)), "{v}");
    let (s, v) = api.call(
        "POST",
        "/v1/rooms/nowhere/recording",
        Some(&body(MODERATOR)),
    );
    assert_eq!((s, v["result"].as_u64()), (404, Some(7000)), "{v}");
    let (_, v) = api.call("POST", path, Some("{not json"));
    assert_eq!(v["result"], 7016, "{v}");
    let (_, v) = api.call("DELETE", path, Some(&body(MODERATOR)));
    assert_eq!(v["result"], 7021, "{v}");

    let (s, v) = api.call("POST", path, Some(&body(MODERATOR)));
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let j = wait_state(&api, &id, "active", 30.0);
    assert_eq!(j["spec"]["kind"], "individual");
    // One at a time per room.
    let (_, v) = api.call("POST", path, Some(&body(MODERATOR)));
    assert!(matches!(v["result"].as_u64(), Some(7012 | 7019)), "{v}");
    std::thread::sleep(Duration::from_secs(8));
    let (_, v) = api.call("DELETE", path, Some(&body(PARTICIPANT)));
    assert_eq!(v["result"], 7036, "{v}");
    let (s, v) = api.call("DELETE", path, Some(&body(MODERATOR)));
    assert_eq!(s, 200, "{v}");
    let j = wait_state(&api, &id, "completed", 40.0);
    assert_eq!(j["result"], 0, "{j}");
    assert_eq!(j["stopped_by"], "mod-1");
    let seg = &j["segments"][0];
    let folder = PathBuf::from(seg["path"].as_str().unwrap());
    assert!(
        seg["file_name"].as_str().unwrap().ends_with("_tracks"),
        "{seg}"
    );
    let seconds = seg["duration_s"].as_f64().unwrap();
    assert!((7.0..12.0).contains(&seconds), "segment of {seconds} s");

    // Status events name the moderator.
    let on = wait_hooks(&receiver, "room-record-on", 1, 10.0);
    assert_eq!(on[0]["data"]["moderatorId"], "mod-1", "{}", on[0]);
    let off = wait_hooks(&receiver, "room-record-off", 1, 10.0);
    assert_eq!(off[0]["data"]["moderatorId"], "mod-1", "{}", off[0]);
    assert_eq!(off[0]["data"]["status"]["resultCode"], 0);

    // One `recording` webhook once every file is in storage.
    let rec = wait_hooks(&receiver, "recording", 1, 30.0);
    assert_eq!(rec.len(), 1, "announced once");
    let manifest = check_recording_hook(&rec[0], "legacy", 2);
    assert_eq!(manifest["segment"], rec[0]["segment"]);
    assert_eq!(manifest["complete"], true, "{manifest}");

    // The transcode job follows and delivers the composite.
    let tj = wait_for(20.0, || job_of_kind(&api, "legacy", "transcode"))
        .expect("a transcode job is queued");
    let tj = wait_state(&api, tj["id"].as_str().unwrap(), "completed", 90.0);
    assert!(
        tj["realtime_factor"].as_f64().unwrap() > 1.0,
        "faster than real time: {tj}"
    );
    let tc = wait_hooks(&receiver, "transcoded", 1, 30.0);
    check_transcoded(&tc[0], "legacy", seconds);
    // Seconds after the first announcement, and after its transcode: still one.
    assert_eq!(
        receiver.of_type("recording").len(),
        1,
        "the segment announced more than once"
    );
    // Every file is in storage: the recording folder is cleared.
    assert!(
        wait_for(10.0, || (!folder.exists()).then_some(())).is_some(),
        "{folder:?} removed after its transcode"
    );
    // Archive: the segment, each delivered file, the transcode.
    let (_, arch) = api.call("GET", "/v1/recordings?room_id=legacy", None);
    let names: Vec<String> = arch["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("_transcoded.mp4")),
        "{names:?}"
    );
    assert!(
        names.iter().filter(|n| n.ends_with(".mkv")).count() >= 4,
        "{names:?}"
    );
    drop(dir);
}

#[test]
fn the_legacy_auto_recording_key_records_from_the_first_join() {
    let (_dir, api, receiver, _storage) = service("legacy-auto", &[]);
    register_room(&api, "auto", 2, r#"{"auto_recording":true}"#);
    let (_, v) = api.call(
        "POST",
        "/v1/rooms/auto/events",
        Some(r#"{"type":"participant_joined","user_id":"ann","name":"Ann"}"#),
    );
    let id = v["auto_recording"][0]["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording started: {v}"))
        .to_string();
    let j = wait_state(&api, &id, "active", 30.0);
    assert_eq!(j["spec"]["kind"], "individual");
    assert_eq!(j["spec"]["started_by"], "auto");
    assert!(
        job_of_kind(&api, "auto", "recording").is_none(),
        "no live recording"
    );
    std::thread::sleep(Duration::from_secs(5));
    let (_, v) = api.call(
        "POST",
        "/v1/rooms/auto/events",
        Some(r#"{"type":"room_destroyed"}"#),
    );
    assert_eq!(v["result"], 0, "{v}");
    let j = wait_state(&api, &id, "completed", 30.0);
    assert_eq!(j["result"], 7026, "{j}");
    let rec = wait_hooks(&receiver, "recording", 1, 30.0);
    check_recording_hook(&rec[0], "auto", 2);
    let off = wait_hooks(&receiver, "room-record-off", 1, 10.0);
    assert_eq!(off[0]["data"]["moderatorId"], "system", "{}", off[0]);
}

#[test]
fn a_live_recording_whose_composite_fails_falls_back_to_individual_recording() {
    let (_dir, api, receiver, _storage) = service(
        "legacy-fallback",
        &[("ROOMCAST_FAULT_COMPOSITE_FAILS", "1")],
    );
    register_room(&api, "fb", 2, r#"{"layout":"grid"}"#);
    let (s, v) = start_recording(&api, "fb");
    assert_eq!(s, 201, "{v}");
    let live = v["job_id"].as_str().unwrap().to_string();
    let failed = wait_failed(&api, &live, 7014, "individually", 30.0);
    let fallback = job_of_kind(&api, "fb", "individual").expect("a fall-back recording");
    assert_eq!(
        fallback["spec"]["fallback_for"],
        live.as_str(),
        "{fallback}"
    );
    assert!(
        failed["msg"]
            .as_str()
            .unwrap()
            .contains(fallback["id"].as_str().unwrap()),
        "{failed}"
    );
    let fid = fallback["id"].as_str().unwrap().to_string();
    wait_state(&api, &fid, "active", 30.0);
    // The live recording's failure says the recording comes later (7014).
    let lf = wait_hooks(&receiver, "room-live-recording-failed", 1, 10.0);
    assert_eq!(lf[0]["data"]["status"]["resultCode"], 7014, "{}", lf[0]);
    let on = wait_hooks(&receiver, "room-record-on", 1, 10.0);
    assert_eq!(on[0]["data"]["status"]["resultCode"], 7014, "{}", on[0]);
    // While it runs, a live recording cannot start: 7205.
    let (_, v) = start_recording(&api, "fb");
    assert_eq!(v["result"], 7205, "{v}");
    std::thread::sleep(Duration::from_secs(6));
    // Stopping the live recording stops the recording that replaced it.
    let (s, v) = stop_recording(&api, "fb");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["job_id"], fid.as_str(), "{v}");
    let done = wait_state(&api, &fid, "completed", 40.0);
    assert_eq!(done["result"], 7014, "{done}");
    let rec = wait_hooks(&receiver, "recording", 1, 30.0);
    check_recording_hook(&rec[0], "fb", 2);
    let seconds = done["segments"][0]["duration_s"].as_f64().unwrap();
    // The composite comes post-session from the transcode.
    let tc = wait_hooks(&receiver, "transcoded", 1, 120.0);
    check_transcoded(&tc[0], "fb", seconds);
}

#[test]
fn a_killed_worker_s_segment_is_delivered_and_transcoded_and_the_recording_goes_on() {
    let (dir, env, receiver, _storage) = service_env("legacy-kill", &[]);
    let log = |n: u32| dir.path().join(format!("serve{n}.log"));
    let mut api = Service::start(&["serve"], &env, &log(1), true);
    register_room(&api, "k9", 2, r#"{"layout":"grid"}"#);
    let (s, v) = api.call("POST", "/v1/rooms/k9/recording", Some(&body(MODERATOR)));
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 30.0);
    std::thread::sleep(Duration::from_secs(5));
    api.kill9();

    // The next process takes the job over: the killed segment is delivered as it was left
    // and the room is recorded on in a new segment.
    let api = Service::start(&["serve"], &env, &log(2), true);
    let resumed = wait_for(30.0, || {
        let j = job(&api, &id);
        (j["segments"].as_array().map_or(0, |a| a.len()) == 2 && j["state"] == "active")
            .then_some(j)
    })
    .expect("the recording resumed in a second segment");
    assert_eq!(resumed["segments"][0]["status"], "spooled", "{resumed}");
    let first = wait_hooks(&receiver, "recording", 1, 30.0);
    let manifest = check_recording_hook(&first[0], "k9", 2);
    assert_eq!(manifest["complete"], false, "killed: {manifest}");
    let killed_s = resumed["segments"][0]["duration_s"].as_f64().unwrap();
    assert!(killed_s >= 3.5, "the killed segment kept {killed_s} s");
    std::thread::sleep(Duration::from_secs(4));
    let (s, v) = api.call("DELETE", "/v1/rooms/k9/recording", Some(&body(MODERATOR)));
    assert_eq!(s, 200, "{v}");
    let done = wait_state(&api, &id, "completed", 40.0);
    assert_eq!(done["segments"].as_array().unwrap().len(), 2, "{done}");
    let recs = wait_hooks(&receiver, "recording", 2, 30.0);
    let segments: Vec<u64> = recs
        .iter()
        .map(|r| r["segment"].as_u64().unwrap())
        .collect();
    assert_eq!(
        segments.len(),
        2,
        "each segment announced once: {segments:?}"
    );
    assert_ne!(segments[0], segments[1]);
    // Both segments are transcoded, the killed one up to where it was left.
    let tcs = wait_hooks(&receiver, "transcoded", 2, 120.0);
    assert_eq!(
        receiver.of_type("recording").len(),
        2,
        "a segment announced more than once, after both transcodes"
    );
    let mut lengths: Vec<f64> = tcs
        .iter()
        .map(|t| {
            let path = file_path(t["transcoded"][0]["url"].as_str().unwrap());
            probe(&path).duration
        })
        .collect();
    lengths.sort_by(f64::total_cmp);
    assert!(lengths.iter().all(|d| *d >= 3.0), "{lengths:?}");
    let first_tc = tcs
        .iter()
        .find(|t| t["segment"] == recs[0]["segment"] || t["segment"] == first[0]["segment"])
        .expect("the killed segment's transcode");
    check_transcoded(first_tc, "k9", killed_s);
}

#[test]
fn below_the_free_space_floor_an_individual_recording_ends_and_its_files_are_delivered() {
    let dir = TempDir::new("legacy-floor");
    let disk = SmallDisk::mount(&dir.path().join("small"), "64m");
    let storage = dir.path().join("storage");
    let receiver = Receiver::start(0);
    let hook = format!("http://127.0.0.1:{}/hook", receiver.port);
    let target = format!("file://{}", storage.display());
    let env = serve_env(
        &disk.0.join("data"),
        &[
            ("ROOMCAST_WEBHOOK_URL", hook.as_str()),
            ("ROOMCAST_WEBHOOK_SECRET", "legacy-secret"),
            ("ROOMCAST_STORAGE", target.as_str()),
            ("ROOMCAST_MIN_FREE_MB", "24"),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "floor", 2, "{}");
    let (s, v) = api.call("POST", "/v1/rooms/floor/recording", Some(&body(MODERATOR)));
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 30.0);
    std::thread::sleep(Duration::from_secs(4));
    // Something else takes the space: less than the floor is left.
    let _filler = fill(&disk.0, Some(available_bytes(&disk.0) - 16 * 1024 * 1024));
    let j = wait_failed(&api, &id, 7204, "floor", 15.0);
    let failed = wait_hooks(&receiver, "room-record-failed", 1, 10.0);
    assert_eq!(failed[0]["data"]["status"]["resultCode"], 7204);
    // What was recorded is complete and delivered.
    let rec = wait_hooks(&receiver, "recording", 1, 30.0);
    let manifest = check_recording_hook(&rec[0], "floor", 2);
    assert_eq!(manifest["complete"], true, "{manifest}");
    assert!(
        j["segments"][0]["duration_s"].as_f64().unwrap() >= 3.5,
        "{j}"
    );
    drop(api);
}

#[test]
fn a_fall_back_recording_whose_stop_fails_reports_7035_and_keeps_what_it_wrote() {
    let (_dir, api, receiver, _storage) = service(
        "legacy-7035",
        &[
            ("ROOMCAST_FAULT_COMPOSITE_FAILS", "1"),
            ("ROOMCAST_FAULT_FINALIZE_FAILS", "1"),
        ],
    );
    register_room(&api, "bad", 2, "{}");
    let (_, v) = start_recording(&api, "bad");
    let live = v["job_id"].as_str().unwrap().to_string();
    wait_failed(&api, &live, 7014, "individually", 30.0);
    let fid = job_of_kind(&api, "bad", "individual").expect("fall-back")["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_state(&api, &fid, "active", 30.0);
    std::thread::sleep(Duration::from_secs(4));
    let (s, v) = stop_recording(&api, "bad");
    assert_eq!(s, 200, "{v}");
    // The final manifest cannot be written: the stop failed (7035)…
    wait_failed(&api, &fid, 7035, "manifest", 30.0);
    let failed = wait_hooks(&receiver, "room-record-failed", 1, 10.0);
    assert_eq!(failed[0]["data"]["status"]["resultCode"], 7035);
    // …and what it wrote is delivered with the manifest as last written.
    let rec = wait_hooks(&receiver, "recording", 1, 30.0);
    let manifest = check_recording_hook(&rec[0], "bad", 2);
    assert_eq!(manifest["complete"], false, "{manifest}");
}

//! Auto recording from room settings: the first join starts it, platform events reach the
//! running job, and a destroyed room stops and finalizes it.

mod support;
use std::time::Duration;
use support::*;

const RED: u32 = 0xd02020;
const GREEN: u32 = 0x20a040;

#[test]
fn first_join_starts_and_room_destroyed_finalizes() {
    let dir = TempDir::new("auto-rec");
    let hooks_port = free_port();
    let receiver = Receiver::start(hooks_port);
    let env = serve_env(
        &dir.path().join("data"),
        &[
            (
                "ROOMCAST_WEBHOOK_URL",
                &format!("http://127.0.0.1:{hooks_port}/hook"),
            ),
            ("ROOMCAST_WEBHOOK_SECRET", "auto-secret"),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(
        &api,
        "class",
        0,
        r#"{"live_recording":{"auto_recording":true},"layout":"grid"}"#,
    );
    // Nobody there: nothing runs.
    let (_, jobs) = api.call("GET", "/v1/rooms/class/jobs", None);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0);

    let (s, v) = api.call(
        "POST",
        "/v1/rooms/class/events",
        Some(r#"{"type":"participant_joined","user_id":"ann","name":"Ann"}"#),
    );
    assert_eq!(s, 200, "{v}");
    let id = v["auto_recording"][0]["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no auto recording: {v}"))
        .to_string();
    let j = wait_state(&api, &id, "active", 20.0);
    assert_eq!(j["spec"]["started_by"], "auto");
    std::thread::sleep(Duration::from_secs(4));
    // A second join: no second recording, the running one gets a tile for her.
    let (_, v) = api.call(
        "POST",
        "/v1/rooms/class/events",
        Some(r#"{"events":[{"type":"participant_joined","user_id":"bea","name":"Bea"},{"type":"active_talkers","user_ids":["bea"]}]}"#),
    );
    assert_eq!(v["auto_recording"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["forwarded"], 2, "{v}");
    std::thread::sleep(Duration::from_secs(4));
    let (_, v) = api.call(
        "POST",
        "/v1/rooms/class/events",
        Some(r#"{"type":"room_destroyed"}"#),
    );
    assert_eq!(v["result"], 0, "{v}");
    let j = wait_state(&api, &id, "completed", 30.0);
    assert_eq!(j["result"], 7026, "ended by the room going away: {j}");
    let seg = &j["segments"][0];
    let path = std::path::PathBuf::from(seg["path"].as_str().unwrap());

    // The file: about 8 s; Ann alone first (full canvas red), then Ann and Bea side by side.
    let p = probe(&path);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!((7.0..12.0).contains(&p.duration), "duration {}", p.duration);
    let early = frame_at(&path, 2.0, 1280, 720);
    assert_region(&early, (320, 180, 640, 360), RED, "2 s: Ann alone");
    assert!(!frame_has_color(&early, GREEN), "2 s: Bea not there yet");
    let late = frame_at(&path, p.duration - 1.5, 1280, 720);
    assert!(
        frame_has_color(&late, RED) && frame_has_color(&late, GREEN),
        "both at the end"
    );
    // Bea talks, so she comes first: left tile green, right tile red.
    assert_region(&late, (80, 270, 480, 180), GREEN, "end: Bea (talking) left");
    assert_region(&late, (720, 270, 480, 180), RED, "end: Ann right");
    // Audio: Ann's tone from the start, Bea's only after she joined.
    let pcm = audio_mono(&path, 48_000);
    let ann_hz = 330.0;
    let bea_hz = 440.0;
    let first = window(&pcm, 48_000, 0.5, 2.5);
    let last = window(&pcm, 48_000, p.duration - 2.5, p.duration - 0.5);
    assert!(
        tone_amplitude(first, ann_hz, 48_000) > 0.02,
        "Ann audible early"
    );
    assert!(
        tone_amplitude(first, bea_hz, 48_000) < 0.005,
        "Bea silent early"
    );
    assert!(
        tone_amplitude(last, bea_hz, 48_000) > 0.02,
        "Bea audible late"
    );

    // Archive and status webhooks.
    let (_, arch) = api.call("GET", "/v1/recordings?room_id=class", None);
    assert_eq!(arch["count"], 1, "{arch}");
    assert_eq!(
        arch["files"][0]["size"].as_u64(),
        std::fs::metadata(&path).ok().map(|m| m.len())
    );
    let got = wait_for(15.0, || {
        let on = receiver.of_type("room-live-recording-on");
        let off = receiver.of_type("room-live-recording-off");
        let file = receiver.of_type("live_recording");
        (!on.is_empty() && !off.is_empty() && !file.is_empty()).then_some((on, off, file))
    });
    let (on, off, file) = got.expect("status and recording webhooks");
    let json = |r: &Received| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap();
    assert_eq!(json(&on[0])["data"]["startedBy"], "auto");
    assert_eq!(json(&off[0])["room_id"], "class");
    assert!(json(&file[0])["url"].as_str().unwrap().ends_with(".mp4"));
    assert!(on[0].headers.contains_key("webhook-signature"), "signed");
    // Destroyed: a new request is refused until the room registers again.
    let (_, v) = start_recording(&api, "class");
    assert_eq!(v["result"], 7203);
}

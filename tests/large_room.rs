//! A room that grows to a hundred participants in bursts of fifty and shrinks again during one
//! recording: the process stays up, the file plays, and the tiles show who they should.

mod support;
use std::time::Duration;
use support::*;

const PALETTE: [u32; 9] = [
    0xd02020, 0x20a040, 0x2040d0, 0xd0b020, 0xa020c0, 0x20b0b0, 0xe07020, 0xe060a0, 0x80c040,
];
const PLACEHOLDER: u32 = 0x2a2e35;

/// The inner part of grid cell `i` (3 × 3 on 1280 × 720), away from labels and markers.
fn cell(i: usize) -> (usize, usize, usize, usize) {
    let (col, row) = (i % 3, i / 3);
    (col * 427 + 60, row * 240 + 70, 300, 100)
}

#[test]
fn a_room_grows_to_a_hundred_in_bursts_and_shrinks_while_recording() {
    let dir = TempDir::new("large-room");
    let env = serve_env(&dir.path().join("data"), &[("ROOMCAST_CPU_BUDGET", "16")]);
    let mut api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "big", 2, r#"{"layout":"grid"}"#);
    let (s, v) = start_recording(&api, "big");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    std::thread::sleep(Duration::from_secs(2));

    // Two bursts of fifty joins: 102 in the room.
    for burst in 0..2 {
        let body = events("join", (0..50).map(|i| format!("g{}", burst * 50 + i)));
        let (s, v) = api.call("POST", "/v1/rooms/big/events", Some(&body));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["forwarded"], 50, "{v}");
        std::thread::sleep(Duration::from_secs(3));
    }
    let pid = api.child.as_ref().unwrap().id();
    let peak_grown = proc_mib(pid, "VmHWM");
    // Everyone who joined leaves at once.
    let body = events("leave", (0..100).map(|i| format!("g{i}")));
    let left_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (s, v) = api.call("POST", "/v1/rooms/big/events", Some(&body));
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        api.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "serve died: {}",
        api.log_text()
    );

    assert_eq!(stop_recording(&api, "big").1["result"], 0);
    let j = wait_state(&api, &id, "completed", 60.0);
    assert_eq!(j["result"], 0, "{j}");
    let segments = j["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "one segment: {j}");
    let path = std::path::PathBuf::from(segments[0]["path"].as_str().unwrap());
    let p = probe(&path);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!(
        (11.0..20.0).contains(&p.duration),
        "duration {}",
        p.duration
    );
    let frames = decoded_video_frames(&path);
    let expected = p.duration * 30.0;
    // README: 380 frames in 12.7 s (every frame); 2 % for the first and last moments.
    assert!(
        frames as f64 >= expected * 0.98,
        "{frames} frames for {:.1} s",
        p.duration
    );
    // README: the 100 leaves applied in 0.4 s. Where the request falls in the file, from the
    // segment's start on the wall clock; the first frame after it that shows only the two who
    // stayed. Bounded at 1 s: twice the figure, and the file's clock against the wall clock.
    let started_ms = segments[0]["started_ms"].as_u64().unwrap();
    let at = (left_ms - started_ms) as f64 / 1000.0;
    let applied = all_frames(&path, 320, 180)
        .into_iter()
        .find(|(t, f)| {
            *t >= at
                && dist(f.region_color(20, 68, 120, 45), PALETTE[0]) < 60.0
                && dist(f.region_color(180, 68, 120, 45), PALETTE[1]) < 60.0
        })
        .map(|(t, _)| t - at)
        .expect("the two who stayed, side by side");
    assert!(
        applied <= 1.0,
        "100 leaves applied {applied:.2} s after the request"
    );

    // 102 people in a nine-cell grid: the first eight by join order, then "+94" (a
    // placeholder-coloured overflow cell).
    // (Frames at half seconds: the first participant flashes white on every whole second.)
    let full = frame_at(&path, 7.5, 1280, 720);
    for (i, rgb) in PALETTE.iter().take(8).enumerate() {
        assert_region(&full, cell(i), *rgb, &format!("cell {i} at 102 people"));
    }
    assert_region(&full, cell(8), PLACEHOLDER, "overflow cell");
    // Back to the two who stayed, side by side.
    let end = frame_at(&path, (p.duration - 1.0).floor() - 0.5, 1280, 720);
    assert_region(&end, (80, 270, 480, 180), PALETTE[0], "end: first left");
    assert_region(&end, (720, 270, 480, 180), PALETTE[1], "end: second right");
    assert!(!frame_has_color(&end, PALETTE[2]), "guests gone at the end");
    // Audio is mixed throughout.
    let pcm = audio_mono(&path, 48_000);
    let rms = |w: &[f32]| (w.iter().map(|x| x * x).sum::<f32>() / w.len().max(1) as f32).sqrt();
    assert!(
        rms(window(&pcm, 48_000, 1.0, 2.0)) > 0.01,
        "audio at the start"
    );
    assert!(
        rms(window(&pcm, 48_000, p.duration - 2.0, p.duration - 1.0)) > 0.01,
        "audio at the end"
    );
    eprintln!(
        "102-person room: {frames} frames in {:.1} s, serve peak RSS {peak_grown:.0} MiB, \
         100 leaves applied in {applied:.2} s",
        p.duration
    );
    // README: serve peak RSS 184–189 MiB.
    assert!(peak_grown <= 380.0, "serve peak RSS {peak_grown:.0} MiB");
}

#[test]
fn participant_ids_that_differ_only_in_punctuation_get_their_own_tiles() {
    let dir = TempDir::new("id-collide");
    let env = serve_env(&dir.path().join("data"), &[]);
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "names", 1, r#"{"layout":"grid"}"#);
    let (_, v) = start_recording(&api, "names");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    std::thread::sleep(Duration::from_secs(1));
    let body = r#"{"events":[{"type":"participant_joined","user_id":"x.1","name":"Dot"},{"type":"participant_joined","user_id":"x-1","name":"Dash"},{"type":"participant_joined","user_id":"x_1","name":"Underscore"}]}"#;
    let (s, v) = api.call("POST", "/v1/rooms/names/events", Some(body));
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(job(&api, &id)["state"], "active");
    assert_eq!(stop_recording(&api, "names").1["result"], 0);
    let j = wait_state(&api, &id, "completed", 30.0);
    assert_eq!(j["result"], 0, "{j}");
    let path = std::path::PathBuf::from(j["segments"][0]["path"].as_str().unwrap());
    let p = probe(&path);
    // Four tiles in a 2 × 2 grid: the first participant and the three guests, in join order.
    let end = frame_at(&path, (p.duration - 1.0).floor() - 0.5, 1280, 720);
    for (i, rgb) in PALETTE.iter().take(4).enumerate() {
        let (x, y) = ((i % 2) * 640, (i / 2) * 360);
        assert_region(&end, (x + 80, y + 90, 480, 180), *rgb, &format!("tile {i}"));
    }
}

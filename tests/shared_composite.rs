//! One composite per room: a room recorded and streamed at once is composited and encoded
//! once, each output keeps its own lifecycle, and either one can end first.

mod support;

use std::path::PathBuf;
use std::time::Duration;
use support::*;

/// The scenarios run one at a time: each is a room with two outputs in real time, and two at
/// once on this machine's two cores would test the machine rather than the sharing.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_streaming(api: &Service, room: &str, url: &str) -> (u16, serde_json::Value) {
    api.call(
        "POST",
        &format!("/v1/rooms/{room}/streaming"),
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"rtmp_urls":["{url}"]}}"#
        )),
    )
}

/// The first file the server received, once it holds more than `bytes`.
fn receiving(server: &NginxRtmp, bytes: u64) -> PathBuf {
    wait_for(15.0, || {
        server
            .recordings()
            .into_iter()
            .find(|f| std::fs::metadata(f).map_or(0, |m| m.len()) > bytes)
    })
    .expect("the RTMP server received nothing")
}

fn size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// The sync reference's flash/beep offsets in `f` (s; positive: the picture later).
fn offsets_of(f: &std::path::Path) -> Vec<f64> {
    av_offsets(&flash_onsets(f, 1200), &beep_onsets_on_timeline(f, 2000.0))
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| o.abs() < 0.5)
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn segment_path(job: &serde_json::Value) -> PathBuf {
    PathBuf::from(job["segments"][0]["path"].as_str().expect("segment path"))
}

/// The recording starts first; the stream joins its composite and is charged only its
/// output (so it starts on a worker with no room for a second composite); the recording
/// stops and the stream goes on uninterrupted; then the stream stops.
#[test]
fn a_stream_joins_the_recording_and_outlives_it() {
    let _one = serial();
    let dir = TempDir::new("shared-rec-first");
    let nginx = NginxRtmp::start(&dir.path().join("nginx"));
    // 720p30, four people: the recording costs 0.38 cores; a second composite (0.41 with its
    // RTMP destination) would not fit beside it.
    let hooks = Receiver::start(0);
    let hook_url = format!("http://127.0.0.1:{}/h", hooks.port);
    let env = serve_env(
        &dir.path().join("data"),
        &[
            ("ROOMCAST_CPU_BUDGET", "0.45"),
            ("ROOMCAST_WEBHOOK_URL", &hook_url),
            ("ROOMCAST_WEBHOOK_SECRET", "shared"),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "both", 4, "{}");
    let (s, v) = start_recording(&api, "both");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let rec = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &rec, "active", 20.0);
    let (s, v) = start_streaming(&api, "both", &nginx.url("shared"));
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let stream = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &stream, "active", 20.0);
    let flv = receiving(&nginx, 50_000);
    // Charged once: the recording's composite and encode, plus the stream's output.
    let used = wait_for(10.0, || {
        let u = used_cores(&api);
        ((u - (0.38 + 0.05)).abs() < 0.011).then_some(u)
    });
    assert!(used.is_some(), "used {}", used_cores(&api));
    let log = api.log_text();
    let built: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("recording started") || l.contains("the mixers produced"))
        .collect();
    assert_eq!(built.len(), 1, "not one composite: {built:#?}");
    assert!(log.contains("a job joined the room's composite"));

    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(stop_recording(&api, "both").1["result"], 0);
    let done = wait_state(&api, &rec, "completed", 30.0);
    assert_eq!(done["result"], 0, "{done}");
    assert_eq!(done["segments"][0]["status"], "local", "{done}");
    let mp4 = segment_path(&done);
    let p = probe(&mp4);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!(
        p.duration > 5.0 && p.duration < 12.0,
        "mp4 {} s",
        p.duration
    );
    assert_eq!(job(&api, &stream)["state"], "active");
    // Each job reports for itself: the recording's end is not the stream's.
    assert!(
        wait_for(10.0, || (hooks.of_type("room-live-recording-off").len()
            == 1)
            .then_some(()))
        .is_some()
    );
    assert_eq!(hooks.of_type("room-streaming-off").len(), 0);

    // The stream goes on, now paying for the composite and encode itself.
    let alone = wait_for(10.0, || {
        let u = used_cores(&api);
        ((u - (0.38 + 0.03)).abs() < 0.011).then_some(u)
    });
    assert!(alone.is_some(), "used {}", used_cores(&api));
    // The same connection keeps receiving.
    let before = size(&flv);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        size(&flv) > before + 50_000,
        "the stream stopped with the recording"
    );

    // A new recording joins the stream (its file written from the running encode): charged
    // its output only, in sync exactly as the first one, which the same composite fed.
    let (s, v) = start_recording(&api, "both");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let rec2 = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &rec2, "active", 20.0);
    let started = std::time::Instant::now();
    let shared = wait_for(10.0, || {
        let u = used_cores(&api);
        ((u - (0.41 + 0.02)).abs() < 0.011).then_some(u)
    });
    assert!(shared.is_some(), "used {}", used_cores(&api));
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(stop_recording(&api, "both").1["result"], 0);
    let recorded = started.elapsed().as_secs_f64();
    let done2 = wait_state(&api, &rec2, "completed", 30.0);
    assert_eq!(done2["result"], 0, "{done2}");
    let mp4b = segment_path(&done2);
    assert_ne!(mp4, mp4b);
    let p2 = probe(&mp4b);
    assert_eq!(p2.video_codec.as_deref(), Some("h264"));
    assert_eq!(p2.audio_codec.as_deref(), Some("aac"));
    assert!(
        (p2.duration - recorded).abs() < 1.5,
        "mp4 {} s for {recorded:.1} s recorded",
        p2.duration
    );
    let times = frame_times(&mp4b);
    assert!(times[0] < 0.1, "first frame at {} s", times[0]);
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gap < 1.5 / 30.0, "mp4 has a {gap} s gap");
    let (first, joined) = (offsets_of(&mp4), offsets_of(&mp4b));
    eprintln!(
        "A/V offset: {:+.1} ms in the composite's own file, {:+.1} ms in the joined one",
        median(&first) * 1000.0,
        median(&joined) * 1000.0
    );
    assert!(
        first.len() >= 5 && joined.len() >= 6,
        "{first:?} {joined:?}"
    );
    // Within one AAC frame (21 ms) of the composite's own file, pair by pair: a file that
    // starts mid-stream begins its sound up to a frame after its picture, which the edit
    // list now accounts for (without it: 25 ms measured; with it: 12–13 ms).
    assert!(
        (median(&joined) - median(&first)).abs() <= 0.004,
        "A/V offsets {joined:?}, in the composite's own file {first:?}"
    );
    let built = api
        .log_text()
        .lines()
        .filter(|l| l.contains("recording started"))
        .count();
    assert_eq!(built, 1, "a second composite");
    assert_eq!(stop_streaming(&api, "both").1["result"], 0);
    let done = wait_state(&api, &stream, "completed", 30.0);
    assert_eq!(done["result"], 0, "{done}");
    let dests = done["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 1, "{done}");
    assert_eq!(dests[0]["state"], "stopped", "{done}");
    assert_eq!(dests[0]["connections"], 1, "{done}");
    assert!(
        wait_for(10.0, || (!hooks.of_type("room-streaming-off").is_empty())
            .then_some(()))
        .is_some()
    );
    assert_eq!(hooks.of_type("room-live-recording-on").len(), 2);
    assert_eq!(hooks.of_type("room-live-recording-off").len(), 2);
    assert!(!hooks.of_type("room-streaming-on").is_empty());
    assert!(hooks.of_type("room-streaming-failed").is_empty());
    let recs = nginx.recordings();
    assert_eq!(recs.len(), 1, "the stream was interrupted: {recs:?}");
    let f = probe(&recs[0]);
    assert_eq!(f.video_codec.as_deref(), Some("h264"));
    assert_eq!(f.audio_codec.as_deref(), Some("aac"));
    assert!(f.duration > p.duration + 3.0, "stream {} s", f.duration);
    let pcm = audio_mono(&recs[0], 48_000);
    let w = window(&pcm, 48_000, f.duration - 2.0, f.duration - 1.0);
    let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len().max(1) as f32).sqrt();
    assert!(
        rms > 0.005,
        "no sound after the recording ended (rms {rms})"
    );
    assert!(
        wait_for(10.0, || (used_cores(&api) == 0.0).then_some(())).is_some(),
        "used {}",
        used_cores(&api)
    );
}

/// The stream starts first; a recording joins it and writes its own file from the running
/// encode, from its own start; a layout change through the stream's PATCH shows in the
/// recording; the stream stops and the recording goes on in the same composite.
#[test]
fn a_recording_joins_the_stream_and_outlives_it() {
    let _one = serial();
    let dir = TempDir::new("shared-stream-first");
    let nginx = NginxRtmp::start(&dir.path().join("nginx"));
    let env = serve_env(&dir.path().join("data"), &[]);
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    // Two people: the first flashes and beeps together once a second (the sync reference).
    register_room(&api, "live", 2, "{}");
    let (s, v) = start_streaming(&api, "live", &nginx.url("first"));
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let stream = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &stream, "active", 20.0);
    let flv = receiving(&nginx, 50_000);
    std::thread::sleep(Duration::from_secs(2));

    let (s, v) = start_recording(&api, "live");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let rec = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &rec, "active", 20.0);
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(7));
    // The stream's layout change is the recording's too.
    let (s, v) = api.call(
        "PATCH",
        "/v1/rooms/live/streaming",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"layout":"speaker"}}"#
        )),
    );
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(Duration::from_secs(4));
    // The stream ends first; the recording goes on.
    assert_eq!(stop_streaming(&api, "live").1["result"], 0);
    let done = wait_state(&api, &stream, "completed", 30.0);
    assert_eq!(done["result"], 0, "{done}");
    assert_eq!(job(&api, &rec)["state"], "active");
    let ended = size(&flv);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(size(&flv), ended, "the stream went on after its stop");
    assert_eq!(nginx.recordings().len(), 1, "{:?}", nginx.recordings());
    assert_eq!(stop_recording(&api, "live").1["result"], 0);
    let recorded = started.elapsed().as_secs_f64();
    let done = wait_state(&api, &rec, "completed", 30.0);
    assert_eq!(done["result"], 0, "{done}");
    let log = api.log_text();
    let built = log
        .lines()
        .filter(|l| l.contains("recording started"))
        .count();
    assert_eq!(built, 1, "two composites for one room");

    let mp4 = segment_path(&done);
    let p = probe(&mp4);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    // From the recording's own start (not the stream's), to its stop, through the stream's
    // end without a gap.
    assert!(
        (p.duration - recorded).abs() < 1.5,
        "mp4 {} s for {recorded:.1} s recorded",
        p.duration
    );
    let times = frame_times(&mp4);
    assert!(times[0] < 0.1, "first frame at {} s", times[0]);
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gap < 1.5 / 30.0, "mp4 has a {gap} s gap");
    let pcm = audio_mono(&mp4, 48_000);
    let w = window(&pcm, 48_000, p.duration - 3.0, p.duration - 1.0);
    let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len().max(1) as f32).sqrt();
    assert!(rms > 0.005, "no sound after the stream ended (rms {rms})");
    // Lip sync within the bound of a recording of its own (the exact comparison with the
    // composite's own file is in the test above).
    let in_file = offsets_of(&mp4);
    assert!(in_file.len() >= 14, "{in_file:?}");
    assert!(
        in_file.iter().all(|o| o.abs() <= 0.045),
        "A/V offsets {in_file:?}"
    );
    // Grid (two tiles side by side) before the change, the speaker layout after.
    let grid = frame_at(&mp4, 4.0, 1280, 720);
    let speaker = frame_at(&mp4, p.duration - 2.0, 1280, 720);
    let (g, sp) = (
        grid.region_color(600, 100, 80, 40),
        speaker.region_color(600, 100, 80, 40),
    );
    assert_ne!(g, sp, "the layout change did not reach the recording");
}

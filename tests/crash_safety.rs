//! Files survive: `kill -9` leaves a playable file; SIGTERM finalizes a normal MP4.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn spawn_demo(out: &std::path::Path) -> std::process::Child {
    Command::new(bin())
        .args(["demo", "--duration", "120", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo")
}

fn wait_for_file(path: &std::path::Path, min_bytes: u64) {
    let t0 = Instant::now();
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < min_bytes {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_leaves_a_playable_file() {
    let dir = TempDir::new("kill9");
    let mut child = spawn_demo(dir.path());
    let file = dir.path().join("demo_1_1.mp4");
    // Recording starts once the file holds its first fragment.
    wait_for_file(&file, 1);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let p = probe(&file);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    let frames = decoded_video_frames(&file);
    assert!(frames >= 4 * 30, "only {frames} frames survived the kill");
    let pcm = audio_mono(&file, 48_000);
    assert!(
        pcm.len() >= 4 * 48_000,
        "only {} audio samples survived",
        pcm.len()
    );

    // The crashed file can be finalized into a normal MP4 afterwards.
    let (ok, stdout, stderr) = run(&["finalize", file.to_str().unwrap()]);
    assert!(ok, "finalize failed: {stderr}");
    let j = last_json(&stdout);
    assert!(j["duration_s"].as_f64().unwrap() >= 4.0, "{j}");
    let boxes = top_level_boxes(&file);
    assert!(!boxes.iter().any(|b| b == "moof"), "{boxes:?}");
    let after = decoded_video_frames(&file);
    eprintln!("frames before finalize {frames}, after {after}");
    assert!(after >= frames);
}

/// Per-track durations (video, audio) ffprobe reads.
fn track_durations(file: &std::path::Path) -> (f64, f64) {
    let out = tool_output(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_type,duration"])
            .args(["-of", "csv=p=0"])
            .arg(file),
    );
    let (mut v, mut a) = (0.0, 0.0);
    for line in String::from_utf8_lossy(&out).lines() {
        let mut parts = line.split(',');
        let kind = parts.next().unwrap_or_default();
        let d: f64 = parts.next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
        match kind {
            "video" => v = d,
            "audio" => a = d,
            _ => {}
        }
    }
    (v, a)
}

/// A segment whose tracks end far apart (audio that fell behind in a crowded room, or video
/// behind an overloaded encoder) is finalized, not left waiting for the shorter track.
#[test]
fn a_segment_with_tracks_of_unequal_length_is_finalized() {
    let dir = TempDir::new("skew");
    // 10 s of video with 1 s of audio, then 1 s of video with 10 s of audio, in 1 s fragments.
    for (name, video_frames, audio_buffers) in [("short_audio", 300, 47), ("short_video", 30, 469)]
    {
        let file = dir.path().join(format!("{name}.mp4"));
        let pipeline = format!(
            "videotestsrc num-buffers={video_frames} ! video/x-raw,framerate=30/1,width=320,height=240 \
             ! x264enc ! h264parse ! mp4mux fragment-duration=1000 name=m ! filesink location={} \
             audiotestsrc num-buffers={audio_buffers} ! audio/x-raw,rate=48000 ! avenc_aac ! m.",
            file.display()
        );
        tool_output(
            Command::new("gst-launch-1.0")
                .arg("-q")
                .args(pipeline.split_whitespace()),
        );
        assert!(top_level_boxes(&file).iter().any(|b| b == "moof"));

        let t0 = Instant::now();
        let (ok, stdout, stderr) = run(&["finalize", file.to_str().unwrap()]);
        assert!(ok, "{name}: finalize failed: {stderr}");
        eprintln!(
            "{name}: finalized in {:?}: {}",
            t0.elapsed(),
            last_json(&stdout)
        );
        let boxes = top_level_boxes(&file);
        assert!(!boxes.iter().any(|b| b == "moof"), "{name}: {boxes:?}");
        let (v, a) = track_durations(&file);
        let (want_v, want_a) = (
            video_frames as f64 / 30.0,
            audio_buffers as f64 * 1024.0 / 48_000.0,
        );
        assert!(
            (v - want_v).abs() < 0.2,
            "{name}: video {v} s, want {want_v}"
        );
        assert!(
            (a - want_a).abs() < 0.2,
            "{name}: audio {a} s, want {want_a}"
        );
    }
}

#[test]
fn sigterm_finalizes_a_fast_start_mp4() {
    let dir = TempDir::new("sigterm");
    let child = spawn_demo(dir.path());
    let file = dir.path().join("demo_1_1.mp4");
    wait_for_file(&file, 1);
    std::thread::sleep(Duration::from_secs(4));
    // SAFETY: plain kill(2) on our own child.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "demo exited with {:?}", out.status);
    let j = last_json(&String::from_utf8_lossy(&out.stdout));
    let reported = j["duration_s"].as_f64().unwrap();
    assert!((3.0..7.0).contains(&reported), "duration {reported}");

    let boxes = top_level_boxes(&file);
    let moov = boxes.iter().position(|b| b == "moov").expect("moov");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat");
    assert!(
        moov < mdat && !boxes.iter().any(|b| b == "moof"),
        "{boxes:?}"
    );
    let p = probe(&file);
    assert!(
        (p.duration - reported).abs() < 0.2,
        "probe {} vs reported {reported}",
        p.duration
    );
    assert!(decoded_video_frames(&file) as f64 >= (reported - 0.2) * 30.0);
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["demo_1_1.mp4"]);
}

#[test]
fn a_full_disk_ends_the_recording_with_7204_and_keeps_what_was_written() {
    let dir = TempDir::new("full-disk");
    let disk = SmallDisk::mount(&dir.path().join("small"), "300k");
    let (ok, j, err) = Demo::new(&disk.0).duration(8).run();
    assert!(!ok, "recording on a full disk succeeded: {j}");
    assert_eq!(last_json(&err)["result"], 7204, "{err}");
    // What reached the disk is kept and reported, not lost with the error.
    let file = std::path::PathBuf::from(j["file"].as_str().expect("file reported"));
    let bytes = std::fs::metadata(&file).expect("file kept").len();
    assert!(bytes > 10_000, "{bytes} bytes kept");
    assert_eq!(j["segments"][0]["status"], "local", "{j}");
}

#[test]
fn a_job_whose_worker_dies_twice_is_failed_not_retried_and_empty_segments_are_removed() {
    let dir = TempDir::new("crash-loop");
    let hooks = Receiver::start(0);
    let data = dir.path().join("data");
    let env = serve_env(
        &data,
        &[
            (
                "ROOMCAST_WEBHOOK_URL",
                &format!("http://127.0.0.1:{}/hook", hooks.port),
            ),
            ("ROOMCAST_WEBHOOK_SECRET", "crash-secret"),
        ],
    );
    let log = |n: u32| dir.path().join(format!("serve{n}.log"));
    // First run: records a few seconds, then its process dies.
    let mut s = Service::start(&["serve"], &env, &log(1), true);
    register_room(&s, "loop", 2, "{}");
    let (_, v) = start_recording(&s, "loop");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&s, &id, "active", 20.0);
    std::thread::sleep(Duration::from_secs(3));
    s.kill9();

    // Second run: the job is taken over and its process dies again, this time before the
    // new segment's first fragment (1 s) reached the disk.
    let mut s = Service::start(&["serve"], &env, &log(2), true);
    let resumed = wait_for(20.0, || {
        let j = job(&s, &id);
        (j["segments"].as_array().map_or(0, |a| a.len()) == 2).then_some(j)
    })
    .expect("the job resumed in a second segment");
    s.kill9();
    let second = std::path::PathBuf::from(resumed["segments"][1]["path"].as_str().unwrap());
    assert!(second.is_file(), "the second run had started its file");

    // Third start: the job is failed with 7204 and not run again.
    let s = Service::start(&["serve"], &env, &log(3), true);
    let j = wait_state(&s, &id, "failed", 20.0);
    assert_eq!(j["result"], 7204, "{j}");
    assert_eq!(j["attempts"], 2, "not started a third time: {j}");
    assert_eq!(j["worker_deaths"], 2, "{j}");
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{j}");
    // The first run's segment is finalized and kept; the second held nothing and is gone.
    assert_eq!(segs[0]["status"], "local", "{j}");
    assert!(segs[0]["duration_s"].as_f64().unwrap() >= 2.0, "{j}");
    let first = std::path::PathBuf::from(segs[0]["path"].as_str().unwrap());
    assert!(decoded_video_frames(&first) >= 60);
    assert_eq!(segs[1]["status"], "empty", "{j}");
    assert!(!second.exists(), "empty segment removed");
    let (_, rec) = s.call("GET", "/v1/recordings?room_id=loop", None);
    let files = rec["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 1, "only the playable segment is listed: {rec}");
    // Its failure went out as a status webhook with the code.
    let failed = wait_for(10.0, || {
        let got = hooks.of_type("room-live-recording-failed");
        (!got.is_empty()).then_some(got)
    })
    .expect("failed status webhook");
    let v: serde_json::Value = serde_json::from_slice(&failed[0].body).unwrap();
    assert_eq!(v["data"]["status"]["resultCode"], 7204, "{v}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(job(&s, &id)["attempts"], 2, "still not retried");
}

/// `roomcast serve` with its data folder on a small tmpfs of `size`, delivering to a folder
/// outside it, recording room `room` for four seconds.
/// (Dropped in field order: the server stops, the disk is unmounted, then the folder goes.)
struct SmallDiskRecording {
    api: Service,
    disk: SmallDisk,
    storage: std::path::PathBuf,
    job: String,
    _dir: TempDir,
}

impl SmallDiskRecording {
    fn start(tag: &str, size: &str, room: &str, extra: &[(&str, &str)]) -> SmallDiskRecording {
        let dir = TempDir::new(tag);
        let disk = SmallDisk::mount(&dir.path().join("small"), size);
        let storage = dir.path().join("storage");
        let target = format!("file://{}", storage.display());
        let mut settings = vec![("ROOMCAST_STORAGE", target.as_str())];
        settings.extend_from_slice(extra);
        let env = serve_env(&disk.0.join("data"), &settings);
        let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
        register_room(&api, room, 2, "{}");
        let (_, v) = start_recording(&api, room);
        let job = v["job_id"].as_str().unwrap().to_string();
        wait_state(&api, &job, "active", 20.0);
        std::thread::sleep(Duration::from_secs(4));
        SmallDiskRecording {
            api,
            disk,
            storage,
            job,
            _dir: dir,
        }
    }
}

#[test]
fn below_the_free_space_floor_recordings_end_cleanly_and_no_new_job_starts() {
    let r = SmallDiskRecording::start(
        "floor",
        "64m",
        "full",
        &[
            ("ROOMCAST_MIN_FREE_MB", "24"),
            ("ROOMCAST_RETRY_AFTER_SECS", "0"),
        ],
    );
    let (disk, storage, api, id) = (&r.disk, &r.storage, &r.api, &r.job);
    // Something else takes the space: less than the floor is left, but room to finalize.
    let filler = fill(&disk.0, Some(available_bytes(&disk.0) - 16 * 1024 * 1024));
    let t0 = std::time::Instant::now();
    // README: ended 2.0 s after the floor was crossed (the disk is checked every second).
    let j = wait_state(api, id, "failed", 4.0);
    eprintln!(
        "ended {:.1} s after the floor was crossed",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(j["result"], 7204, "{j}");
    assert!(j["msg"].as_str().unwrap().contains("floor"), "{j}");
    // The segment was finalized and delivered: a normal MP4 in storage, ~4 s long.
    let delivered = wait_for(15.0, || {
        let files = mp4s_under(storage);
        (!files.is_empty()).then_some(files)
    })
    .expect("segment delivered");
    let p = probe(&delivered[0]);
    assert!(p.duration >= 3.0, "duration {}", p.duration);
    assert!(decoded_video_frames(&delivered[0]) >= 90);
    // The failed job's archive entry says how long its file is.
    let (_, rec) = api.call("GET", "/v1/recordings?room_id=full", None);
    assert!(
        rec["files"][0]["duration_s"].as_f64().unwrap() >= 3.0,
        "{rec}"
    );
    // Below the floor the worker offers no capacity (from its next heartbeat on)…
    let offered = wait_for(5.0, || {
        let (_, h) = api.call("GET", "/v1/health", None);
        (h["capacity_free"].as_f64() == Some(0.0)).then_some(())
    });
    assert!(
        offered.is_some(),
        "{}",
        api.call("GET", "/v1/health", None).1
    );
    // …so a new request waits.
    let (s, v) = start_recording(api, "full");
    assert_eq!((s, v["result"].as_u64()), (202, Some(7207)), "{v}");
    let next = v["job_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(job(api, &next)["state"], "queued");
    // Space comes back: it starts.
    std::fs::remove_file(filler).unwrap();
    wait_state(api, &next, "active", 20.0);
    assert_eq!(stop_recording(api, "full").1["result"], 0);
    wait_state(api, &next, "completed", 30.0);
}

#[test]
fn a_segment_the_full_disk_kept_is_delivered_once_space_returns() {
    let r = SmallDiskRecording::start("kept", "48m", "kept", &[("ROOMCAST_MIN_FREE_MB", "0")]);
    let (disk, storage, api, id) = (&r.disk, &r.storage, &r.api, &r.job);
    // No floor: the disk fills up completely under the recording.
    let filler = fill(&disk.0, None);
    let j = wait_state(api, id, "failed", 20.0);
    assert_eq!(j["result"], 7204, "{j}");
    // The spool could not take it (not even its sidecar fits): kept where it was recorded.
    assert_eq!(j["segments"][0]["status"], "kept", "{j}");
    // Its length is read from its fragments (the header of a file left fragmented has none).
    let kept_s = j["segments"][0]["duration_s"].as_f64().unwrap_or(0.0);
    assert!(kept_s > 1.0, "kept segment listed as {kept_s} s: {j}");
    // Nothing is lost: once there is space again the segment reaches storage.
    std::fs::remove_file(filler).unwrap();
    // README: delivered ≤ 11 s after space returned (kept segments are retried every 10 s).
    let delivered = wait_for(22.0, || {
        let files = mp4s_under(storage);
        (!files.is_empty()).then_some(files)
    })
    .expect("kept segment delivered after space returned");
    assert!(decoded_video_frames(&delivered[0]) >= 60);
    let done = wait_for(15.0, || {
        let j = job(api, id);
        (j["segments"][0]["status"] == "delivered").then_some(j)
    });
    assert!(done.is_some(), "{}", job(api, id));
    let (_, rec) = api.call("GET", "/v1/recordings?room_id=kept", None);
    assert_eq!(rec["files"][0]["status"], "delivered", "{rec}");
}

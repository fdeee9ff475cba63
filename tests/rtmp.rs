//! RTMP to three real nginx-rtmp servers from one encode; one server dies and comes back.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn three_destinations_survive_one_dying_and_it_resumes() {
    let dir = TempDir::new("rtmp");
    let mut servers: Vec<NginxRtmp> = (0..3)
        .map(|i| NginxRtmp::start(&dir.path().join(format!("nginx{i}"))))
        .collect();
    let out = dir.path().join("rec");
    let hooks = Receiver::start(0);
    let mut cmd = Command::new(bin());
    cmd.args(["demo", "--duration", "16", "--out"]).arg(&out);
    cmd.env("ROOMCAST_DATA_DIR", dir.path().join("data"));
    cmd.env(
        "ROOMCAST_WEBHOOK_URL",
        format!("http://127.0.0.1:{}/h", hooks.port),
    );
    cmd.env("ROOMCAST_WEBHOOK_SECRET", "rtmp-test");
    for (i, s) in servers.iter().enumerate() {
        cmd.arg("--rtmp").arg(s.url(&format!("stream{i}")));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // All three receive.
    while !servers
        .iter()
        .all(|s| s.recordings().iter().any(|f| file_len(f) > 20_000))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not every server received the stream"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client nobody here wrote pulls stream 0 from nginx while it is live.
    let pulled = dir.path().join("pulled.flv");
    let puller = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(servers[0].url("stream0"))
        .args(["-c", "copy", "-t", "9"])
        .arg(&pulled)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    std::thread::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed()));
    servers[1].kill();
    std::thread::sleep(Duration::from_secs(3));
    servers[1].restart();
    let out_put = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out_put.stderr);
    assert!(out_put.status.success(), "demo failed: {stderr}");
    let j = last_json(&String::from_utf8_lossy(&out_put.stdout));

    // The recording is whole.
    let mp4 = std::path::PathBuf::from(j["file"].as_str().unwrap());
    let p = probe(&mp4);
    assert!(
        (p.duration - 16.0).abs() < 0.5,
        "mp4 duration {}",
        p.duration
    );
    let times = frame_times(&mp4);
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gap < 1.5 / 30.0, "mp4 has a {gap} s gap");

    // The two healthy servers got one uninterrupted stream each.
    for i in [0, 2] {
        let recs = servers[i].recordings();
        assert_eq!(recs.len(), 1, "server {i}: {recs:?}");
        let f = probe(&recs[0]);
        assert_eq!(f.video_codec.as_deref(), Some("h264"));
        assert_eq!(f.audio_codec.as_deref(), Some("aac"));
        assert!(
            f.duration > 14.0 && f.duration < 16.5,
            "server {i} got {} s",
            f.duration
        );
        // The room's sound went out with the picture, the whole way.
        let pcm = audio_mono(&recs[0], 48_000);
        let secs = pcm.len() as f64 / 48_000.0;
        assert!(secs > 14.0, "server {i} got {secs} s of sound");
        for t in [2.0, 8.0, 13.0] {
            let w = window(&pcm, 48_000, t, t + 0.5);
            let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
            assert!(rms > 0.005, "server {i}: silence at {t} s (rms {rms})");
        }
    }
    // What ffmpeg pulled: sound on the AAC frame grid, always forward, in step with the
    // picture (the sync reference flashes and beeps once a second).
    let pull = puller.wait_with_output().unwrap();
    assert!(
        pull.status.success(),
        "ffmpeg pull: {}",
        String::from_utf8_lossy(&pull.stderr)
    );
    check_pulled_stream(&pulled);
    // The killed server got a stream before and a new one after it came back.
    let recs = servers[1].recordings();
    assert!(recs.len() >= 2, "server 1 recordings: {recs:?}");
    let after = probe(recs.last().unwrap());
    assert_eq!(after.video_codec.as_deref(), Some("h264"));
    assert_eq!(after.audio_codec.as_deref(), Some("aac"));
    assert!(
        after.duration > 3.0,
        "resumed stream is {} s",
        after.duration
    );

    let dests = j["rtmp"].as_array().unwrap();
    assert_eq!(dests.len(), 3);
    assert!(dests[1]["connections"].as_u64().unwrap() >= 2, "{j}");
    assert_eq!(dests[0]["connections"], 1);
    assert!(dests.iter().all(|d| d["state"] == "stopped"));
    // Streaming status webhooks: each destination went on and off; the killed one failed.
    assert!(
        hooks.of_type("room-streaming-on").len() >= 4,
        "{:?}",
        hooks.received().len()
    );
    assert_eq!(hooks.of_type("room-streaming-off").len(), 3);
    let failed = hooks.of_type("room-streaming-failed");
    assert!(!failed.is_empty());
    let f: serde_json::Value = serde_json::from_slice(&failed[0].body).unwrap();
    assert_eq!(f["data"]["status"]["resultCode"], 7020);
    assert_eq!(f["data"]["status"]["success"], false);
    // Stream keys never reach the logs.
    assert!(!stderr.contains("stream1"), "stream key in logs");
}

/// Decode timestamps (s) of a file's audio packets, in file order.
fn audio_dts(path: &std::path::Path) -> Vec<f64> {
    let out = tool_output(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
            .args(["packet=dts_time", "-of", "csv=p=0"])
            .arg(path),
    );
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// A pulled FLV: every audio packet's timestamp after the one before, one AAC frame apart
/// (1024 samples at 48 kHz, 21.3 ms, within FLV's millisecond rounding), and each flash
/// within 45 ms of its beep (the MP4's bound).
fn check_pulled_stream(path: &std::path::Path) {
    let dts = audio_dts(path);
    assert!(dts.len() > 250, "{} audio packets", dts.len());
    let steps: Vec<f64> = dts.windows(2).map(|w| w[1] - w[0]).collect();
    let backwards = steps.iter().filter(|d| **d <= 0.0).count();
    assert_eq!(
        backwards,
        0,
        "{backwards} of {} audio timestamps not after the last",
        dts.len()
    );
    let off_grid = steps
        .iter()
        .filter(|d| (**d - 0.021333).abs() > 0.0015)
        .count();
    assert!(
        off_grid * 100 <= steps.len(),
        "{off_grid} of {} audio steps off the AAC frame grid",
        steps.len()
    );
    let flashes = flash_onsets(path, 1200);
    let beeps = beep_onsets_on_timeline(path, 2000.0);
    let offsets = av_offsets(&flashes, &beeps);
    assert!(
        offsets.len() >= 6,
        "{} flashes found: {flashes:?}",
        offsets.len()
    );
    for (t, off) in &offsets {
        assert!(
            off.abs() <= 0.045,
            "pulled stream: A/V offset {:.1} ms at {t:.2} s",
            off * 1000.0
        );
    }
    let mut sorted: Vec<f64> = offsets.iter().map(|(_, o)| *o).collect();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "RTMP pull: {} audio packets, median A/V offset {:+.1} ms over {} flashes",
        dts.len(),
        sorted[sorted.len() / 2] * 1000.0,
        sorted.len()
    );
}

#[test]
fn bad_rtmp_lists_are_refused_with_codes() {
    let dir = TempDir::new("rtmp-bad");
    let out = dir.path().to_str().unwrap();
    let mut args = vec!["demo", "--out", out];
    for _ in 0..4 {
        args.extend(["--rtmp", "rtmp://127.0.0.1/live/x"]);
    }
    let (ok, _, err) = run(&args);
    assert!(!ok);
    assert_eq!(last_json(&err)["result"], 7101, "{err}");
    let (ok, _, err) = run(&["demo", "--out", out, "--rtmp", "http://example/live/x"]);
    assert!(!ok);
    assert_eq!(last_json(&err)["result"], 7102, "{err}");
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_added_and_removed_while_recording() {
    use roomcast::job::{record, JobCommand, RecordingSpec};
    use roomcast::layout::Layout;
    use roomcast::pipeline::rtmp::RtmpUrl;
    use roomcast::pipeline::{self, Preset};
    use roomcast::room::synthetic::SyntheticRoom;
    use roomcast::room::RoomConnector;

    pipeline::init().unwrap();
    let dir = TempDir::new("rtmp-live");
    let server = NginxRtmp::start(&dir.path().join("nginx"));
    // Scheduled keyframes 20 s apart: a destination that waited for one would get nothing in
    // this recording, so only the keyframe asked for on connecting can start its stream.
    let mut preset = Preset::resolve("h264-720p30").unwrap();
    preset.video.as_mut().unwrap().keyframe_interval = 600;
    let spec = RecordingSpec {
        page: None,
        page_layer: false,
        hls: None,
        room_id: "r".into(),
        conf_num: "1".into(),
        out_dir: dir.path().join("rec"),
        preset,
        layout: Layout::resolve("grid").unwrap(),
        watermark: None,
        max_duration: None,
        rtmp: Vec::new(),
        record: true,
        first_segment: 1,
        min_free_bytes: 0,
        start_timeout: None,
    };
    let room = SyntheticRoom::steady(2).connect().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let job = tokio::spawn(record(spec, room, rx));
    // Added well after the recording's first keyframe and long before its next scheduled one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(server.recordings().is_empty());
    let url = RtmpUrl::parse(&server.url("late")).unwrap();
    tx.send(JobCommand::AddRtmp(url)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    tx.send(JobCommand::RemoveRtmp(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let size_after_remove: u64 = server.recordings().iter().map(|f| file_len(f)).sum();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.send(JobCommand::Stop).await.unwrap();
    let rec = job.await.unwrap().unwrap();

    let recs = server.recordings();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let f = probe(&recs[0]);
    assert_eq!(f.video_codec.as_deref(), Some("h264"));
    // The stream starts when the destination connects (a keyframe is requested then), not
    // at the next scheduled keyframe (20 s away): about the 5 s it was attached for, and its
    // first picture is a keyframe.
    assert!(
        f.duration > 4.5 && f.duration < 5.6,
        "streamed {} s",
        f.duration
    );
    let first = tool_output(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-read_intervals",
                "%+#1",
            ])
            .args(["-show_entries", "packet=flags", "-of", "csv=p=0"])
            .arg(&recs[0]),
    );
    assert!(
        String::from_utf8_lossy(&first)
            .trim_start()
            .starts_with('K'),
        "the stream's first picture is not a keyframe: {}",
        String::from_utf8_lossy(&first)
    );
    // Nothing more arrived after the removal.
    assert_eq!(file_len(&recs[0]), size_after_remove);
    assert!(
        rec.destinations.is_empty(),
        "removed destinations are not reported at the end"
    );
    let d = rec.file.as_ref().unwrap().duration.mseconds() as f64 / 1000.0;
    assert!(d > 9.0, "recording {d} s");
}

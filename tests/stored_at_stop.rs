//! A recording is stored moments after it stops, and the file users get plays at once.
//!
//! - An hour-long recording, finalized, starts playing and seeks anywhere within a second in
//!   headless Chromium's `<video>` over HTTP range requests, and in ffmpeg.
//! - On S3 the finished file's object is uploaded while the recording goes on: at the stop
//!   only its index, first part and tail go up; the object is the local file byte for byte;
//!   a finished file that differs from what went up early is uploaded whole instead; no
//!   unfinished multipart upload is left, also when the recording's machine was lost.

mod support;
use roomcast::delivery::s3::{early, S3Target};
use roomcast::delivery::spool::SegmentMeta;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Writes a fragmented MP4 as a recording run does (`mp4mux`, one-second fragments) from
/// a `videotestsrc` pattern and a tone.
fn record_fragmented(out: &Path, secs: u32, size: (u32, u32), fps: u32, pattern: &str, kbps: u32) {
    let frames = secs * fps;
    let audio_buffers = secs * 48_000 / 1024;
    let status = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            &format!("num-buffers={frames}"),
            &format!("pattern={pattern}"),
        ])
        .arg("!")
        .arg(format!(
            "video/x-raw,width={},height={},framerate={fps}/1",
            size.0, size.1
        ))
        .args(["!", "x264enc", "speed-preset=ultrafast", "tune=zerolatency"])
        .arg(format!("key-int-max={}", fps * 2))
        .arg(format!("bitrate={kbps}"))
        .args(["!", "h264parse", "!", "mux.", "audiotestsrc"])
        .arg(format!("num-buffers={audio_buffers}"))
        .args([
            "samplesperbuffer=1024",
            "wave=ticks",
            "!",
            "audio/x-raw,rate=48000,channels=1",
        ])
        .args(["!", "avenc_aac", "!", "aacparse", "!", "mux."])
        .args([
            "mp4mux",
            "name=mux",
            "fragment-duration=1000",
            "streamable=true",
            "!",
        ])
        .args(["filesink", &format!("location={}", out.display())])
        .status()
        .expect("gst-launch-1.0");
    assert!(status.success(), "recording the fragmented file failed");
}

fn top_level(path: &Path) -> Vec<String> {
    let d = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut i = 0usize;
    while i + 8 <= d.len() {
        let size = u32::from_be_bytes(d[i..i + 4].try_into().unwrap()) as usize;
        out.push(String::from_utf8_lossy(&d[i + 4..i + 8]).to_string());
        if size < 8 {
            break;
        }
        i += size;
    }
    out
}

#[test]
fn an_hour_long_recording_plays_and_seeks_at_once_in_chromium_and_ffmpeg() {
    let dir = TempDir::new("hour");
    let file = dir.path().join("hour_1_1.mp4");
    record_fragmented(&file, 3600, (320, 180), 15, "ball", 200);
    let t0 = Instant::now();
    let (ok, stdout, stderr) = run(&["finalize", file.to_str().unwrap()]);
    assert!(ok, "finalize: {stderr}");
    eprintln!(
        "finalized an hour in {:.2} s: {}",
        t0.elapsed().as_secs_f64(),
        stdout.trim()
    );
    let boxes = top_level(&file);
    assert_eq!(
        &boxes[..2],
        ["ftyp", "moov"],
        "index first: {:?}",
        &boxes[..4]
    );
    let p = probe(&file);
    assert!((p.duration - 3600.0).abs() < 1.0, "{p:?}");
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));

    // ffmpeg: a frame from anywhere, each within a second.
    for at in [5.0, 1800.0, 3590.0, 900.0] {
        let t = Instant::now();
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-ss", &at.to_string(), "-i"])
            .arg(&file)
            .args(["-frames:v", "1", "-f", "image2pipe", "-vcodec", "png", "-"])
            .output()
            .unwrap();
        let took = t.elapsed();
        assert!(
            out.status.success() && out.stdout.len() > 100,
            "ffmpeg at {at}"
        );
        assert!(
            took < Duration::from_secs(1),
            "ffmpeg seek to {at} s took {took:?}"
        );
    }

    // Chromium over HTTP with range requests.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/play_seek.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .args(["1800", "3590", "60", "2700", "10"])
        .output()
        .expect("play_seek.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    eprintln!("chromium: {r}");
    assert!(r["error"].is_null(), "{r}");
    assert!(
        (r["duration"].as_f64().unwrap() - 3600.0).abs() < 1.0,
        "{r}"
    );
    let start = r["start_ms"].as_f64().unwrap();
    assert!(start < 1000.0, "started playing after {start} ms");
    for s in r["seeks"].as_array().unwrap() {
        let (to, ms, at) = (
            s["to"].as_f64().unwrap(),
            s["ms"].as_f64().unwrap(),
            s["at"].as_f64().unwrap(),
        );
        assert!(ms < 1000.0, "seek to {to} s took {ms} ms");
        assert!((at - to).abs() < 1.0, "seek to {to} s landed at {at} s");
        assert!(
            s["ready"].as_u64().unwrap() >= 2,
            "no frame after the seek to {to}: {s}"
        );
    }
}

fn meta(file: &Path) -> SegmentMeta {
    let data = std::fs::read(file).unwrap();
    SegmentMeta {
        job_id: "j".into(),
        app_id: "app".into(),
        room_id: "room".into(),
        conf_num: "1".into(),
        segment: 1,
        file_name: file.file_name().unwrap().to_string_lossy().to_string(),
        started_at_unix_ms: 0,
        ended_at_unix_ms: 0,
        size: data.len() as u64,
        sha256: Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        hls: None,
        bundle: None,
        chunk: None,
    }
}

/// The ETag of `data` uploaded in `part` byte parts.
fn whole_file_etag(data: &[u8], part: usize) -> String {
    use md5::Md5;
    let digests: Vec<u8> = data
        .chunks(part)
        .flat_map(|c| Md5::digest(c).to_vec())
        .collect();
    let hex: String = Md5::digest(&digests)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}-{}", data.len().div_ceil(part))
}

/// Feeds the fragmented file to the early upload the way the recording's chunk cuts do: each
/// time at a box boundary a little further on.
async fn record_with_early_parts(target: &S3Target, m: &SegmentMeta, file: &Path) {
    let len = std::fs::metadata(file).unwrap().len();
    let mut end = 0u64;
    let mut last = 0u64;
    while let Some(next) = roomcast::delivery::chunks::cut_point(file, end).unwrap() {
        end = next;
        if end - last >= 1024 * 1024 || end == len {
            early::grow(target.clone(), m.clone(), file.to_path_buf(), end).await;
            last = end;
        }
        if end >= len {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_object_goes_up_while_recording_and_is_stored_moments_after_the_stop() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let dir = TempDir::new("early");
    let s3 = MotoS3::start_on(free_port());
    s3.create_bucket("rec");
    let target = S3Target::parse(&format!(
        "s3://rec?endpoint={}&part_size_mb=5",
        s3.endpoint()
    ))
    .unwrap();
    // Noise does not compress: about 1.5 MB a second.
    for (name, tamper) in [("room_1_1.mp4", false), ("room_1_2.mp4", true)] {
        let file = dir.path().join(name);
        record_fragmented(&file, 16, (640, 360), 25, "snow", 12_000);
        let m = meta(&file);
        record_with_early_parts(&target, &m, &file).await;
        let (ok, _, err) = run(&["finalize", file.to_str().unwrap()]);
        assert!(ok, "{err}");
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(
            size > 20 * 1024 * 1024,
            "{size} bytes: too few for early parts"
        );
        if tamper {
            // The finished file differs from what went up early: it goes up whole.
            let mut d = std::fs::read(&file).unwrap();
            let at = d.len() / 2;
            d[at] ^= 0xff;
            std::fs::write(&file, d).unwrap();
        }
        let m = meta(&file);
        let t = Instant::now();
        let url = target.put(&file, &m).await.expect("stored");
        let took = t.elapsed();
        let key = url.trim_start_matches("s3://rec/").to_string();
        let stored = s3.get("rec", &key).await;
        assert_eq!(
            stored,
            std::fs::read(&file).unwrap(),
            "the object is the file"
        );
        let etag = s3.etag("rec", &key).await;
        eprintln!("{name}: {size} bytes stored {took:?} after the stop, ETag {etag}");
        let whole = whole_file_etag(&stored, 5 * 1024 * 1024);
        if tamper {
            // Whole, in the target's 5 MiB parts.
            assert_eq!(etag, whole);
        } else {
            // The first part (index + 5 MiB), 5 MiB early parts and the tail: not the file cut
            // in 5 MiB parts.
            assert_ne!(etag, whole, "the early parts were not used");
            assert!(etag.ends_with("-5"), "{etag}");
        }
        assert!(s3.unfinished_uploads("rec").await.is_empty());
    }

    // A machine lost while its upload was under way: the worker that stores the rebuilt file
    // removes the file's chunks, and with them the unfinished upload.
    let file = dir.path().join("room_1_3.mp4");
    record_fragmented(&file, 16, (640, 360), 25, "snow", 12_000);
    let m = meta(&file);
    record_with_early_parts(&target, &m, &file).await;
    assert_eq!(
        s3.unfinished_uploads("rec").await.len(),
        1,
        "an upload under way"
    );
    let storage = roomcast::delivery::Storage::S3(target.clone());
    storage.remove_chunks(&m).await.unwrap();
    assert!(
        s3.unfinished_uploads("rec").await.is_empty(),
        "the abandoned upload is aborted"
    );
}

/// The stop → stored figures of the README: for recordings of 1, 10 and 60 minutes
/// (`ROOMCAST_STOP_MINUTES` to choose), 30 fps H.264 at about 2.5 Mbit/s and AAC in
/// one-second fragments (noise, so the bytes are a real 720p recording's; the stop path
/// neither decodes nor encodes), sent to moto the way a recording's chunk cuts send them;
/// then the stop: finalize, complete the upload, verify. Printed with the same file
/// finalized by remuxing (`qtdemux ! mp4mux faststart=true`, the former path) and uploaded
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn stop_to_stored_figures() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let minutes: Vec<u32> = std::env::var("ROOMCAST_STOP_MINUTES")
        .unwrap_or_else(|_| "1,10,60".into())
        .split(',')
        .map(|m| m.trim().parse().unwrap())
        .collect();
    // ROOMCAST_STOP_KBPS: the video bitrate (the synthetic demo's is about 200).
    let kbps: u32 = std::env::var("ROOMCAST_STOP_KBPS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(2_500);
    let dir = TempDir::new("stop-figures");
    // The early upload logs how long its last steps took: the server's share is read there.
    let logs = Captured::default();
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(logs.clone())
        .try_init();
    let s3 = MotoS3::start_on(free_port());
    s3.create_bucket("rec");
    let target = S3Target::parse(&format!("s3://rec?endpoint={}", s3.endpoint())).unwrap();
    for m in minutes {
        let file = dir.path().join(format!("room_{m}_1.mp4"));
        record_fragmented(&file, m * 60, (160, 90), 30, "snow", kbps);
        let size = std::fs::metadata(&file).unwrap().len();
        // The former path on a copy: remux, then the whole file up.
        let old = dir.path().join(format!("old_{m}_1.mp4"));
        let t = Instant::now();
        let unbounded = ["max-size-time=0", "max-size-bytes=0", "max-size-buffers=0"];
        let status = Command::new("gst-launch-1.0")
            .args([
                "-q",
                "filesrc",
                &format!("location={}", file.display()),
                "!",
                "qtdemux",
                "name=d",
            ])
            .args(["mp4mux", "name=mux", "faststart=true", "!", "filesink"])
            .arg(format!("location={}", old.display()))
            .args(["d.video_0", "!", "queue"])
            .args(unbounded)
            .args([
                "!",
                "h264parse",
                "!",
                "mux.video_0",
                "d.audio_0",
                "!",
                "queue",
            ])
            .args(unbounded)
            .args(["!", "aacparse", "!", "mux.audio_0"])
            .status()
            .unwrap();
        assert!(status.success());
        let remux = t.elapsed();
        assert!(
            std::fs::metadata(&old).unwrap().len() > size / 2,
            "the remux wrote nothing"
        );
        let t = Instant::now();
        target.put(&old, &meta(&old)).await.unwrap();
        let whole = t.elapsed();
        // Now: parts while recording, then the stop.
        let m0 = meta(&file);
        record_with_early_parts(&target, &m0, &file).await;
        let t = Instant::now();
        let (ok, _, err) = run(&["finalize", file.to_str().unwrap()]);
        assert!(ok, "{err}");
        let finalize = t.elapsed();
        let t = Instant::now();
        let url = target.put(&file, &meta(&file)).await.unwrap();
        let put = t.elapsed();
        let key = url.trim_start_matches("s3://rec/").to_string();
        assert_eq!(
            s3.etag("rec", &key)
                .await
                .rsplit('-')
                .next()
                .map(|n| n.parse::<u64>().is_ok()),
            Some(true)
        );
        let (ours, server) = logs.early_upload_steps();
        println!(
            "{m} min, {:.0} MB: stop → stored {:.2} s (finalize {:.2} s, upload {:.2} s: \
             check and last parts {ours:.2} s, the server's completion {server:.2} s); \
             former path {:.2} s (remux {:.2} s, whole upload {:.2} s)",
            size as f64 / 1e6,
            (finalize + put).as_secs_f64(),
            finalize.as_secs_f64(),
            put.as_secs_f64(),
            (remux + whole).as_secs_f64(),
            remux.as_secs_f64(),
            whole.as_secs_f64()
        );
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&old);
    }
}

/// Log lines, kept.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// The last early upload's check-and-send and completion times, in seconds.
    fn early_upload_steps(&self) -> (f64, f64) {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).to_string();
        let line = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "stored from parts sent while recording")
            .expect("the early upload's log line");
        let ms = |k: &str| line["fields"][k].as_f64().unwrap() / 1000.0;
        (ms("checked_and_sent_ms"), ms("completed_ms"))
    }
}

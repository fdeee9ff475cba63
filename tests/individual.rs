//! Individual recording: every participant's tracks as received, one Matroska file per track
//! and publication, and a manifest that places them on one timeline.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

/// Synthetic palette (see `pipeline::source::generated`): p1 red, p2 green, p3 blue, p4 yellow.
const PALETTE: [u32; 4] = [0xd02020, 0x20a040, 0x2040d0, 0xd0b020];
const SCREEN: u32 = 0x90e0f0;

fn manifest(folder: &Path) -> Value {
    let text = std::fs::read_to_string(folder.join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

fn files_of(m: &Value) -> Vec<Value> {
    m["files"].as_array().cloned().unwrap_or_default()
}

fn find<'a>(files: &'a [Value], participant: &str, kind: &str) -> &'a Value {
    files
        .iter()
        .find(|f| f["participant_id"] == participant && f["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} file of {participant} in {files:?}"))
}

fn event_time(m: &Value, kind: &str, participant: &str, track: Option<&str>) -> f64 {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["type"] == kind
                && e["participant_id"] == participant
                && track.is_none_or(|k| e["kind"] == k)
        })
        .unwrap_or_else(|| panic!("no {kind} event of {participant}"))["t_ms"]
        .as_f64()
        .unwrap()
        / 1000.0
}

fn ms(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        / 1000.0
}

/// Packets in the file's one stream and the end of its last one (s), as ffprobe reads them.
fn packets(path: &Path) -> (usize, f64) {
    let out = tool_output(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "packet=pts_time,duration_time",
            ])
            .args(["-of", "csv=p=0"])
            .arg(path),
    );
    let mut n = 0;
    let mut end = 0.0f64;
    for line in String::from_utf8_lossy(&out).lines() {
        let mut it = line.split(',').map(|s| s.trim().parse::<f64>().ok());
        if let (Some(Some(pts)), Some(d)) = (it.next(), it.next()) {
            n += 1;
            end = end.max(pts + d.unwrap_or(0.0));
        }
    }
    (n, end)
}

/// Decodes the whole file; fails on any decoding error.
fn decodes_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{} does not decode cleanly: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn size(path: &Path) -> (usize, usize) {
    let out = tool_output(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=width,height"])
            .args(["-of", "csv=p=0"])
            .arg(path),
    );
    let text = String::from_utf8_lossy(&out);
    let mut it = text.trim().split(',').map(|s| s.parse::<usize>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[test]
fn a_synthetic_room_is_recorded_track_by_track() {
    let dir = TempDir::new("individual");
    // Script over 9 s: p4 joins at 2.4 s, p2 leaves at 4.2 s, p3 shares a screen from 6 s.
    let (ok, line, err) = Demo::new(dir.path())
        .participants(4)
        .duration(9)
        .arg("--room", "indiv")
        .flag("--individual")
        .run();
    assert!(ok, "demo --individual failed: {err}");
    let folder = PathBuf::from(line["folder"].as_str().expect("folder"));
    assert_eq!(folder, dir.path().join("indiv_1_1_tracks"));
    let m = manifest(&folder);
    assert_eq!(m["complete"], true);
    assert!((ms(&m, "duration_ms") - 9.0).abs() < 0.3, "{m}");
    let files = files_of(&m);
    assert_eq!(
        files.len(),
        9,
        "p1-p4 camera and microphone, p3's screen: {files:?}"
    );
    assert_eq!(line["files"].as_array().unwrap().len(), 9);

    for f in &files {
        let path = folder.join(f["file"].as_str().unwrap());
        decodes_cleanly(&path);
        let p = probe(&path);
        let audio = f["kind"] == "audio";
        let (codec, frame) = if audio {
            (p.audio_codec.clone(), 0.020)
        } else if f["kind"] == "screen" {
            (p.video_codec.clone(), 1.0 / 15.0)
        } else {
            (p.video_codec.clone(), 1.0 / 30.0)
        };
        assert_eq!(
            codec.as_deref(),
            Some(if audio { "opus" } else { "vp8" }),
            "{f}"
        );
        assert_eq!(f["codec"], if audio { "OPUS" } else { "VP8" });
        // The manifest's span is what the file holds, within a frame.
        let (n, end) = packets(&path);
        assert_eq!(n as u64, f["frames"].as_u64().unwrap(), "{f}");
        let span = ms(f, "end_ms") - ms(f, "start_ms");
        assert!(
            (end - span).abs() <= frame + 0.002,
            "{}: file holds {end:.3} s, manifest says {span:.3} s",
            f["file"]
        );
    }

    // Everyone present from the start starts at the start; the late joiner at their join, the
    // leaver ends at their leave, the screen share starts when it was published.
    for p in ["p1", "p2", "p3"] {
        for kind in ["audio", "video"] {
            let start = ms(find(&files, p, kind), "start_ms");
            assert!(start < 0.15, "{p} {kind} starts at {start}");
        }
    }
    let joined = event_time(&m, "joined", "p4", None);
    assert!((joined - 2.4).abs() < 0.3, "p4 joined at {joined}");
    for kind in ["audio", "video"] {
        let start = ms(find(&files, "p4", kind), "start_ms");
        assert!(
            start >= joined && start - joined < 0.2,
            "p4 {kind} starts at {start}, joined at {joined}"
        );
    }
    let left = event_time(&m, "left", "p2", None);
    for kind in ["audio", "video"] {
        let end = ms(find(&files, "p2", kind), "end_ms");
        assert!(
            (end - left).abs() < 0.2,
            "p2 {kind} ends at {end}, left at {left}"
        );
    }
    let shared = event_time(&m, "published", "p3", Some("screen"));
    let screen = find(&files, "p3", "screen");
    assert!((ms(screen, "start_ms") - shared).abs() < 0.2);
    assert!(
        (shared - 6.0).abs() < 0.3,
        "screen share published at {shared}"
    );

    // Talking events as the script has them: p1 from the start, p4 from 4.8 s.
    let talking: Vec<(String, bool, f64)> = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "talking")
        .map(|e| {
            (
                e["participant_id"].as_str().unwrap().to_string(),
                e["talking"].as_bool().unwrap(),
                e["t_ms"].as_f64().unwrap() / 1000.0,
            )
        })
        .collect();
    assert!(
        talking
            .iter()
            .any(|(p, on, t)| p == "p4" && *on && (t - 4.8).abs() < 0.3),
        "{talking:?}"
    );

    // What is in each file is whose it is: camera colours, the screen, each one's tone.
    for (i, p) in ["p1", "p2", "p3", "p4"].iter().enumerate() {
        let f = find(&files, p, "video");
        let path = folder.join(f["file"].as_str().unwrap());
        let (w, h) = size(&path);
        assert_eq!((w, h), (640, 360));
        // Half a second past a timeline second: clear of the sync reference's flash.
        let t = 1.5 - ms(f, "start_ms").fract();
        let frame = frame_at(&path, t, w, h);
        let c = frame.region_color(0, h / 3, w, h * 2 / 3);
        assert!(dist(c, PALETTE[i]) < 40.0, "{p} camera is {c:?}");
        let a = find(&files, p, "audio");
        let pcm = audio_mono(&folder.join(a["file"].as_str().unwrap()), 48_000);
        let hz = if i == 0 {
            2000.0
        } else {
            220.0 + 110.0 * (i as f64 + 1.0)
        };
        let at = 1.0 - ms(a, "start_ms").fract() + 0.02;
        let tone = tone_amplitude(window(&pcm, 48_000, at, at + 0.06), hz, 48_000);
        assert!(tone > 0.05, "{p} microphone: {hz} Hz at {tone}");
    }
    let path = folder.join(screen["file"].as_str().unwrap());
    let (w, h) = size(&path);
    assert_eq!((w, h), (1280, 720));
    let c = frame_at(&path, 1.0, w, h).region_color(0, h / 3, w, h * 2 / 3);
    assert!(dist(c, SCREEN) < 40.0, "screen is {c:?}");

    // The sync reference's flashes and beeps, placed by the manifest, line up within a frame.
    let (v, a) = (find(&files, "p1", "video"), find(&files, "p1", "audio"));
    // A flash is compared when its whole beep (100 ms) lies inside the audio file: the run
    // stops on a whole second, where the last flash may land in the video's final frame
    // while the audio file has already ended. Likewise a flash or beep already under way when
    // its file begins is left out: each track's file starts on its own first buffer, so the
    // first one may open mid-flash, where the flash's start is not in the file.
    let audio_end = ms(a, "end_ms");
    let flashes: Vec<f64> = flash_onsets_seen(&folder.join(v["file"].as_str().unwrap()), 20_000)
        .into_iter()
        .map(|t| t + ms(v, "start_ms"))
        .filter(|t| t + 0.1 <= audio_end)
        .collect();
    let beeps: Vec<f64> = beep_onsets_seen(&folder.join(a["file"].as_str().unwrap()), 2000.0)
        .into_iter()
        .map(|t| t + ms(a, "start_ms"))
        .collect();
    let offsets = av_offsets(&flashes, &beeps);
    assert!(offsets.len() >= 7, "flashes {flashes:?} beeps {beeps:?}");
    for (at, off) in offsets {
        assert!(
            off.abs() <= 0.034,
            "flash at {at:.3} is {:.1} ms off its beep",
            off * 1e3
        );
    }
}

#[test]
fn killed_mid_recording_leaves_playable_files_and_a_manifest() {
    let dir = TempDir::new("individual-kill");
    let mut child = Command::new(bin())
        .args([
            "demo",
            "--individual",
            "--participants",
            "3",
            "--duration",
            "60",
        ])
        .arg("--out")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let folder = dir.path().join("demo_1_1_tracks");
    // Three people, the third joining at 16 s: until the two there from the start have a
    // few seconds in their files.
    let ready = wait_for(30.0, || {
        let text = std::fs::read_to_string(folder.join("manifest.json")).ok()?;
        let m: Value = serde_json::from_str(&text).ok()?;
        let files = files_of(&m);
        let span = |f: &Value| Some(f["end_ms"].as_f64()? - f["start_ms"].as_f64()?);
        (files.len() == 4 && files.iter().all(|f| span(f) >= Some(4500.0))).then_some(())
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(ready.is_some(), "files did not grow");
    let m = manifest(&folder);
    assert_eq!(m["complete"], false, "a killed recording is not complete");
    for f in files_of(&m) {
        assert_eq!(f["open"], true);
        let path = folder.join(f["file"].as_str().unwrap());
        decodes_cleanly(&path);
        let (n, end) = packets(&path);
        let listed = ms(&f, "end_ms") - ms(&f, "start_ms");
        // At most the last second (one cluster) is lost, and the manifest is at most a second
        // behind the file.
        assert!(
            end >= listed - 1.1 && n > 0,
            "{}: {end:.2} s playable, manifest lists {listed:.2} s",
            f["file"]
        );
        if f["kind"] == "video" {
            let (w, h) = size(&path);
            let i = if f["participant_id"] == "p1" { 0 } else { 1 };
            let last = (end - 0.5).max(0.0);
            let t = last.floor() + 0.5 - ms(&f, "start_ms").fract();
            let c = frame_at(&path, t.min(last), w, h).region_color(0, h / 3, w, h * 2 / 3);
            assert!(dist(c, PALETTE[i]) < 40.0, "{} at {t:.2}: {c:?}", f["file"]);
        }
    }

    // What the killed recording kept can still be transcoded: up to the last listed frame.
    let (ok, line, err) = run_env(
        &[],
        &["transcode", folder.join("manifest.json").to_str().unwrap()],
    );
    assert!(ok, "transcode of a killed recording: {err}");
    let mp4 = PathBuf::from(line["file"].as_str().unwrap());
    let last = files_of(&m)
        .iter()
        .map(|f| ms(f, "end_ms"))
        .fold(0.0, f64::max);
    let p = probe(&mp4);
    assert!(
        (p.duration - last).abs() < 1.2,
        "transcoded {:.2} s, the manifest's files end at {last:.2} s",
        p.duration
    );
    let f = frame_at(&mp4, 1.5, 1280, 720);
    assert!(frame_has_color(&f, PALETTE[0]) && frame_has_color(&f, PALETTE[1]));
}

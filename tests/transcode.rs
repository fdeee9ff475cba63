//! Transcoding an individual recording: the same scripted room recorded live (composite) and
//! individually, the individual segment transcoded; the two MP4s must show the same tiles at
//! the same times and carry the same voices.

mod support;

use std::path::{Path, PathBuf};
use support::*;

const W: usize = 1280;
const H: usize = 720;

fn run_demo(out: &Path, individual: bool) -> serde_json::Value {
    let mut d = Demo::new(out).participants(4).duration(12);
    if individual {
        d = d.flag("--individual");
    }
    let (ok, line, err) = d.run();
    assert!(ok, "demo (individual: {individual}) failed: {err}");
    line
}

/// The median colour of each cell of an 8×6 grid.
fn cells(f: &Frame) -> Vec<[u8; 3]> {
    let (cw, ch) = (f.w / 8, f.h / 6);
    (0..6)
        .flat_map(|j| (0..8).map(move |i| (i, j)))
        .map(|(i, j)| f.region_color(i * cw, j * ch, cw, ch))
        .collect()
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        < 40.0
}

#[test]
fn a_transcode_shows_what_the_live_recording_showed() {
    let dir = TempDir::new("transcode");
    let (live_dir, indiv_dir) = (dir.path().join("live"), dir.path().join("individual"));
    // The same 12 s script, live and individually, at once: p4 joins at 3.2 s, p2 leaves at
    // 5.6 s, the talker changes at 6.4 s, p3 shares a screen from 8 s.
    let (live, indiv) = std::thread::scope(|s| {
        let a = s.spawn(|| run_demo(&live_dir, false));
        let b = s.spawn(|| run_demo(&indiv_dir, true));
        (a.join().unwrap(), b.join().unwrap())
    });
    let live_mp4 = PathBuf::from(live["file"].as_str().expect("live file"));
    let manifest = PathBuf::from(indiv["manifest"].as_str().expect("manifest"));
    let out = dir.path().join("transcoded");
    let (ok, line, err) = run_env(
        &[],
        &[
            "transcode",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "transcode failed: {err}");
    let mp4 = PathBuf::from(line["file"].as_str().expect("file"));
    assert_eq!(mp4, out.join("demo_1_1_transcoded.mp4"));
    eprintln!(
        "transcode: {:.1} s of media in {:.2} s ({:.1}x real time), {:.2} cpu s",
        line["duration_s"].as_f64().unwrap(),
        line["wall_s"].as_f64().unwrap(),
        line["speed"].as_f64().unwrap(),
        line["cpu_s"].as_f64().unwrap()
    );
    let p = probe(&mp4);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert_eq!((p.width, p.height), (W as u32, H as u32));
    let lp = probe(&live_mp4);
    assert!(
        (p.duration - lp.duration).abs() < 0.3,
        "transcoded {} s, live {} s",
        p.duration,
        lp.duration
    );

    // The same tiles in the same places: grid of three, four with the late joiner, three
    // after the leaver, the presentation layout with the screen share.
    for t in [1.5, 4.5, 7.5, 10.5] {
        let a = cells(&frame_at(&live_mp4, t, W, H));
        let b = cells(&frame_at(&mp4, t, W, H));
        let differ: Vec<usize> = (0..a.len()).filter(|&i| !close(a[i], b[i])).collect();
        assert!(
            differ.is_empty(),
            "at {t} s cells {differ:?} differ: live {:?} transcoded {:?}",
            differ.iter().map(|&i| a[i]).collect::<Vec<_>>(),
            differ.iter().map(|&i| b[i]).collect::<Vec<_>>()
        );
    }
    // And not a picture that would match anything: the screen share fills most of it at
    // 10.5 s, Bob (green) is gone.
    let f = frame_at(&mp4, 10.5, W, H);
    assert_region(
        &f,
        (100, 150, 800, 420),
        0x90e0f0,
        "10.5 s: the screen share large",
    );
    assert!(!frame_has_color(&f, 0x20a040), "10.5 s: Bob left");

    // Voices: Bob (440 Hz) until he left, Dave (660 Hz) from his join.
    let pcm = audio_mono(&mp4, 48_000);
    let tone = |hz: f64, a: f64, b: f64| tone_amplitude(window(&pcm, 48_000, a, b), hz, 48_000);
    assert!(tone(440.0, 1.0, 5.0) > 0.01, "Bob audible");
    assert!(tone(440.0, 6.5, 11.0) < 0.003, "Bob silent after leaving");
    assert!(tone(660.0, 1.0, 3.0) < 0.003, "Dave silent before joining");
    assert!(tone(660.0, 4.0, 11.0) > 0.01, "Dave audible after joining");

    // Lip sync of the sync reference within the live recording's bound.
    let offsets = av_offsets(&flash_onsets(&mp4, 1200), &beep_onsets(&mp4, 2000.0));
    assert!(offsets.len() >= 8, "{offsets:?}");
    for (at, off) in offsets {
        assert!(
            off.abs() <= 0.045,
            "flash at {at:.2} s is {:.1} ms off",
            off * 1e3
        );
    }
}

#[test]
fn a_transcode_carries_the_watermark_and_refuses_a_broken_manifest() {
    let dir = TempDir::new("transcode-mark");
    let line = run_demo(dir.path(), true);
    let manifest = PathBuf::from(line["manifest"].as_str().unwrap());
    let mark = dir.path().join("mark.png");
    make_png(&mark, 100, 100, "0xff00ff");
    let (ok, line, err) = run_env(
        &[],
        &[
            "transcode",
            manifest.to_str().unwrap(),
            "--layout",
            "speaker",
            "--watermark",
            mark.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let mp4 = PathBuf::from(line["file"].as_str().unwrap());
    let f = frame_at(&mp4, 2.5, W, H);
    assert_region(
        &f,
        (W - 24 - 100, 24, 100, 100),
        0xff00ff,
        "watermark top right",
    );

    // A manifest naming a file that is not there: a 7xxx code and what is missing.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["files"][0]["file"] = "gone.mkv".into();
    let broken = manifest.with_file_name("broken.json");
    std::fs::write(&broken, m.to_string()).unwrap();
    let (ok, _, err) = run(&["transcode", broken.to_str().unwrap()]);
    assert!(!ok);
    let e = last_json(&err);
    assert_eq!(e["result"], 7017, "{err}");
    assert!(e["msg"].as_str().unwrap().contains("gone.mkv"), "{err}");
}

/// A sync reference nobody here generated: ffmpeg's `lavfi` draws a white box for the first
/// 100 ms of every second and sounds a 2 kHz tone over exactly the same samples (the pair is
/// sample-exact), encoded to VP8 and Opus as a participant's track files. Laid out by a
/// transcode, each flash must meet its beep: the A/V measurement checked against a stimulus
/// that does not share roomcast's own flash and beep generator.
#[test]
fn an_outside_sync_reference_stays_in_sync_through_a_transcode() {
    let dir = TempDir::new("transcode-lavfi");
    let seg = dir.path().join("ref_1_1_tracks");
    std::fs::create_dir_all(&seg).unwrap();
    let secs = 10;
    let ffmpeg = |args: &[&str]| {
        tool_output(
            std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-y"])
                .args(args),
        );
    };
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!(
            "color=black:s=640x360:r=30:d={secs},drawbox=x=0:y=0:w=640:h=360:color=white:t=fill:enable='lt(mod(t,1),0.1)'"
        ),
        "-c:v",
        "libvpx",
        "-b:v",
        "1M",
        "-deadline",
        "realtime",
        seg.join("ann_video_1.mkv").to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("aevalsrc='if(lt(mod(t,1),0.1),0.5*sin(2*PI*2000*t),0)':s=48000:d={secs}"),
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        seg.join("ann_audio_1.mkv").to_str().unwrap(),
    ]);
    let end_ms = secs * 1000;
    let size = |f: &str| std::fs::metadata(seg.join(f)).unwrap().len();
    let manifest = serde_json::json!({
        "version": 1, "room_id": "ref", "conf_num": "1", "segment": 1,
        "started_at_unix_ms": 1_700_000_000_000u64,
        "ended_at_unix_ms": 1_700_000_000_000u64 + end_ms,
        "duration_ms": end_ms, "complete": true,
        "participants": [{"id": "ann", "name": "Ann", "joined_ms": 0, "left_ms": null}],
        "files": [
            {"file": "ann_video_1.mkv", "participant_id": "ann", "participant_name": "Ann",
             "kind": "video", "codec": "VP8", "start_ms": 0, "end_ms": end_ms,
             "frames": secs * 30, "bytes": size("ann_video_1.mkv"), "open": false},
            {"file": "ann_audio_1.mkv", "participant_id": "ann", "participant_name": "Ann",
             "kind": "audio", "codec": "OPUS", "start_ms": 0, "end_ms": end_ms,
             "frames": secs * 50, "bytes": size("ann_audio_1.mkv"), "open": false}
        ],
        "events": [{"t_ms": 0, "type": "joined", "participant_id": "ann", "name": "Ann"}]
    });
    let path = seg.join("manifest.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    let out = dir.path().join("out");
    let (ok, line, err) = run_env(
        &[],
        &[
            "transcode",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let mp4 = PathBuf::from(line["file"].as_str().expect("file"));
    let flashes = flash_onsets(&mp4, 20_000);
    let beeps = beep_onsets_on_timeline(&mp4, 2000.0);
    assert!(flashes.len() >= secs as usize - 1, "flashes {flashes:?}");
    assert!(beeps.len() >= secs as usize - 1, "beeps {beeps:?}");
    let offsets: Vec<f64> = av_offsets(&flashes, &beeps)
        .into_iter()
        .map(|(_, o)| o * 1000.0)
        .collect();
    let mut sorted = offsets.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    eprintln!("lavfi reference through a transcode: offsets {sorted:?} ms, median {median:+.1}");
    // Measured: median +0.5 ms, every pair within 2.5 ms. Bounded below a frame (33 ms) so a
    // picture one frame off its sound fails: median 10 ms, each pair 20 ms.
    assert!(median.abs() <= 10.0, "median {median:.1} ms");
    for o in &offsets {
        assert!(o.abs() <= 20.0, "an A/V offset of {o:.1} ms: {sorted:?}");
    }
}

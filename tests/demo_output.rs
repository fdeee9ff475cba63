//! `roomcast demo` end to end: decode the MP4 and check what is in it.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use support::*;

const RED: u32 = 0xd02020; // Alice (sync reference)
const GREEN: u32 = 0x20a040; // Bob (leaves at 7 s)
const BLUE: u32 = 0x2040d0; // Carol (shares her screen from 10 s)
const YELLOW: u32 = 0xd0b020; // Dave (joins at 4 s, talks from 8 s)
const SCREEN: u32 = 0x90e0f0;
const BLACK: u32 = 0x000000;

struct Demo {
    _dir: TempDir,
    file: PathBuf,
    json: serde_json::Value,
}

/// One 15 s demo recording shared by the tests of this file.
fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = TempDir::new("demo");
        let out = dir.path().to_str().unwrap().to_string();
        let (ok, stdout, stderr) = run(&["demo", "--out", &out]);
        assert!(ok, "demo failed: {stderr}");
        let json = last_json(&stdout);
        let file = PathBuf::from(json["file"].as_str().expect("file in json"));
        Demo {
            _dir: dir,
            file,
            json,
        }
    })
}

#[test]
fn demo_writes_a_fast_start_h264_aac_mp4() {
    let d = demo();
    assert_eq!(d.file.file_name().unwrap(), "demo_1_1.mp4");
    assert_eq!(d.json["width"], 1280);
    assert_eq!(d.json["height"], 720);
    assert_eq!(
        d.json["bytes"].as_u64().unwrap(),
        std::fs::metadata(&d.file).unwrap().len()
    );
    let js = d.json["duration_s"].as_f64().unwrap();
    assert!((js - 15.0).abs() <= 0.5, "reported duration {js}");

    let p = probe(&d.file);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert_eq!((p.width, p.height), (1280, 720));
    assert_eq!(p.audio_rate, 48_000);
    assert!((p.duration - 15.0).abs() <= 0.5, "duration {}", p.duration);

    let boxes = top_level_boxes(&d.file);
    let moov = boxes.iter().position(|b| b == "moov").expect("moov");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat");
    assert!(moov < mdat, "moov must come before mdat: {boxes:?}");
    assert!(
        !boxes.iter().any(|b| b == "moof"),
        "finalized file is not fragmented: {boxes:?}"
    );
    // Every frame decodes, from the first (a keyframe at 0) to the last.
    let frames = decoded_video_frames(&d.file);
    assert!(
        frames as f64 >= (p.duration - 0.1) * 30.0,
        "{frames} frames decode"
    );
}

#[test]
fn tiles_follow_the_room() {
    let d = demo();
    let f = |t| frame_at(&d.file, t, 1280, 720);

    // 2.5 s: Alice, Bob, Carol in a 2x2 grid, last row centred; Dave not yet there.
    let a = f(2.5);
    assert_region(&a, (0, 0, 640, 360), RED, "2.5s Alice top-left");
    assert_region(&a, (640, 0, 640, 360), GREEN, "2.5s Bob top-right");
    assert_region(&a, (320, 360, 640, 360), BLUE, "2.5s Carol bottom-centre");
    assert_region(&a, (0, 360, 300, 360), BLACK, "2.5s empty bottom-left");
    assert!(!frame_has_color(&a, YELLOW), "Dave shown before joining");

    // 5.5 s: Dave joined: 2x2.
    let b = f(5.5);
    assert_region(&b, (0, 0, 640, 360), RED, "5.5s Alice");
    assert_region(&b, (640, 0, 640, 360), GREEN, "5.5s Bob");
    assert_region(&b, (0, 360, 640, 360), BLUE, "5.5s Carol");
    assert_region(&b, (640, 360, 640, 360), YELLOW, "5.5s Dave");

    // 8.5 s: Bob left; Dave talks now, so he leads the order.
    let c = f(8.5);
    assert_region(&c, (0, 0, 640, 360), YELLOW, "8.5s Dave (talking) first");
    assert_region(&c, (640, 0, 640, 360), RED, "8.5s Alice");
    assert_region(&c, (320, 360, 640, 360), BLUE, "8.5s Carol");
    assert!(!frame_has_color(&c, GREEN), "Bob shown after leaving");

    // 12.5 s: Carol's screen share switches the grid to presentation.
    let e = f(12.5);
    assert_region(&e, (0, 72, 1024, 576), SCREEN, "12.5s screen share large");
    assert_region(&e, (0, 0, 1024, 60), BLACK, "12.5s letterbox bar");
    assert_region(&e, (1024, 144, 256, 144), YELLOW, "12.5s Dave in column");
    assert_region(&e, (1024, 288, 256, 144), RED, "12.5s Alice in column");
    assert_region(&e, (1024, 432, 256, 144), BLUE, "12.5s Carol in column");
}

#[test]
fn audio_mixes_whoever_is_present() {
    let d = demo();
    let rate = 48_000;
    let pcm = audio_mono(&d.file, rate);
    assert!((pcm.len() as f64 / rate as f64 - 15.0).abs() < 0.5);
    let rms = (pcm.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 0.05, "audio is silent (rms {rms})");

    let amp =
        |freq: f64, from: f64| tone_amplitude(window(&pcm, rate, from, from + 0.5), freq, rate);
    let (bob, carol, dave) = (440.0, 550.0, 660.0);
    assert!(
        amp(bob, 1.2) > 0.03,
        "Bob audible at 1.2 s: {}",
        amp(bob, 1.2)
    );
    assert!(
        amp(bob, 9.2) < 0.005,
        "Bob silent after leaving: {}",
        amp(bob, 9.2)
    );
    assert!(
        amp(dave, 1.2) < 0.005,
        "Dave silent before joining: {}",
        amp(dave, 1.2)
    );
    assert!(
        amp(dave, 5.2) > 0.03,
        "Dave audible after joining: {}",
        amp(dave, 5.2)
    );
    assert!(amp(carol, 13.2) > 0.03, "Carol audible throughout");
    // Alice's beep: 100 ms at 2 kHz at the start of every second.
    let beep = tone_amplitude(window(&pcm, rate, 3.0, 3.1), 2000.0, rate);
    let gap = tone_amplitude(window(&pcm, rate, 3.3, 3.8), 2000.0, rate);
    assert!(
        beep > 0.05 && gap < 0.005,
        "beep {beep}, between beeps {gap}"
    );
}

#[test]
fn audio_and_video_stay_in_sync() {
    let d = demo();
    // The smallest tile Alice takes (256x144 in the presentation column) is 2304 px at 1/4 scale.
    let flashes = flash_onsets(&d.file, 1200);
    let beeps = beep_onsets(&d.file, 2000.0);
    assert!(
        flashes.len() >= 13,
        "found {} flashes: {flashes:?}",
        flashes.len()
    );
    assert!(beeps.len() >= 13, "found {} beeps: {beeps:?}", beeps.len());
    let offsets = av_offsets(&flashes, &beeps);
    let mut worst = 0.0f64;
    for &(f, off) in &offsets {
        assert!(
            off.abs() <= 0.045,
            "A/V offset {:.1} ms at {f:.3} s (flashes {flashes:?}, beeps {beeps:?})",
            off * 1000.0
        );
        eprintln!("flash {f:.3} s offset {:+.1} ms", off * 1000.0);
        worst = worst.max(off.abs());
    }
    assert_eq!(offsets.len(), flashes.len());
    // Flashes after the late join (4 s) and after the layout change (10 s) are among them.
    assert!(flashes.iter().any(|&t| t > 4.5 && t < 9.5));
    assert!(flashes.iter().any(|&t| t > 10.5));
    eprintln!(
        "A/V sync: {} flashes, worst offset {:.1} ms",
        offsets.len(),
        worst * 1000.0
    );
}

//! Command-line behaviour: layout previews, watermark, audio-only preset, error codes.

mod support;

use support::*;

const PALETTE: [u32; 4] = [0xd02020, 0x20a040, 0x2040d0, 0xd0b020];

#[test]
fn preview_draws_numbered_tiles_where_the_layout_says() {
    let dir = TempDir::new("preview");
    let out = dir.path().join("grid.png");
    let (ok, _, err) = run(&[
        "layout",
        "preview",
        "grid",
        "--participants",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let img = image(&out, 1280, 720);
    for (i, (x, y)) in [(0, 0), (640, 0), (0, 360), (640, 360)]
        .into_iter()
        .enumerate()
    {
        assert_region(
            &img,
            (x, y, 640, 360),
            PALETTE[i],
            &format!("tile {}", i + 1),
        );
    }

    // With a screen share the grid previews as a presentation.
    let out = dir.path().join("share.png");
    let (ok, _, err) = run(&[
        "layout",
        "preview",
        "grid",
        "--participants",
        "3",
        "--screen-share",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let img = image(&out, 1280, 720);
    assert_region(&img, (0, 72, 1024, 576), 0x90e0f0, "screen share");
    assert_region(&img, (1024, 144, 256, 144), PALETTE[0], "column 1");
    assert_region(&img, (1024, 432, 256, 144), PALETTE[2], "column 3");

    // A custom file, with its own background colour.
    let custom = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/layouts/picture-in-picture.json"
    );
    let out = dir.path().join("pip.png");
    let (ok, _, err) = run(&[
        "layout",
        "preview",
        custom,
        "--participants",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let img = image(&out, 1280, 720);
    assert_region(&img, (0, 0, 900, 500), PALETTE[0], "pip background speaker");
    assert_region(&img, (960, 518, 294, 180), PALETTE[1], "pip inset");
}

#[test]
fn bad_input_fails_with_a_code_and_a_message() {
    let dir = TempDir::new("errors");
    let out = dir.path().join("x.png");
    let (ok, _, err) = run(&[
        "layout",
        "preview",
        "mosaic",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    let j = last_json(&err);
    assert_eq!(j["result"], 7073, "{err}");
    assert!(j["msg"].as_str().unwrap().contains("mosaic"));

    let (ok, _, err) = run(&["layout", "preview", "", "--out", out.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(last_json(&err)["result"], 7075, "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"b\"\n[[region]]\nx = 0.5\ny = 0\nw = 0.7\nh = 1\nfill = \"others\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "demo",
        "--layout",
        bad.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    let j = last_json(&err);
    assert_eq!(j["result"], 7073);
    assert!(j["msg"].as_str().unwrap().contains("region[0].w"), "{j}");

    let (ok, _, err) = run(&[
        "demo",
        "--preset",
        "8k",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_eq!(last_json(&err)["result"], 7017, "{err}");
    // Nothing was recorded for the rejected jobs.
    assert!(std::fs::read_dir(dir.path())
        .unwrap()
        .all(|e| { !e.unwrap().file_name().to_string_lossy().ends_with(".mp4") }));
}

#[test]
fn watermark_is_drawn_top_right_and_size_is_checked() {
    let dir = TempDir::new("watermark");
    let wm = dir.path().join("wm.png");
    make_png(&wm, 100, 100, "0xff00ff");
    let out = dir.path().join("rec");
    let (ok, stdout, err) = run(&[
        "demo",
        "--participants",
        "1",
        "--duration",
        "3",
        "--watermark",
        wm.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let file = last_json(&stdout)["file"].as_str().unwrap().to_string();
    // Before Alice's screen share at 2 s and after her flash at 1.0–1.1 s.
    let f = frame_at(std::path::Path::new(&file), 1.3, 1280, 720);
    // 24 px from the top and right edges.
    assert_region(&f, (1280 - 24 - 100, 24, 100, 100), 0xff00ff, "watermark");
    assert_region(&f, (200, 200, 400, 300), PALETTE[0], "Alice under it");

    let big = dir.path().join("big.png");
    make_png(&big, 200, 200, "0xff00ff");
    let (ok, _, err) = run(&[
        "demo",
        "--duration",
        "2",
        "--watermark",
        big.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    let j = last_json(&err);
    assert_eq!(j["result"], 7017);
    assert!(j["msg"].as_str().unwrap().contains("140x140"), "{j}");
    // The rejected job leaves no file behind; the earlier recording is untouched.
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files, ["demo_1_1.mp4"]);
}

#[test]
fn audio_only_preset_writes_aac_without_video() {
    let dir = TempDir::new("audio-only");
    let (ok, stdout, err) = run(&[
        "demo",
        "--preset",
        "audio-only",
        "--duration",
        "3",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let file = last_json(&stdout)["file"].as_str().unwrap().to_string();
    let p = probe(std::path::Path::new(&file));
    assert_eq!(p.video_codec, None);
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!((p.duration - 3.0).abs() < 0.5, "{}", p.duration);
    let pcm = audio_mono(std::path::Path::new(&file), 48_000);
    // Bob (440 Hz) is in the mix until he leaves at 7/15 of the recording (1.4 s).
    let bob = tone_amplitude(window(&pcm, 48_000, 0.4, 0.9), 440.0, 48_000);
    assert!(bob > 0.03, "Bob's tone {bob}");
}

#[test]
fn portrait_preset_stacks_the_grid() {
    let dir = TempDir::new("portrait");
    let (ok, stdout, err) = run(&[
        "demo",
        "--preset",
        "h264-720p30-portrait",
        "--participants",
        "2",
        "--duration",
        "3",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let j = last_json(&stdout);
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(720), Some(1280))
    );
    let file = std::path::PathBuf::from(j["file"].as_str().unwrap());
    let p = probe(&file);
    assert_eq!((p.width, p.height), (720, 1280));
    // Bob joins at 0.8 s, Alice talks until 1.6 s and shares her screen from 2 s: at 1.2 s
    // (0.4 s from either change) Alice is on top, Bob below.
    let f = frame_at(&file, 1.2, 720, 1280);
    assert_region(&f, (0, 0, 720, 640), PALETTE[0], "Alice on top");
    assert_region(&f, (0, 640, 720, 640), PALETTE[1], "Bob below");
    // From 2 s the share takes the top of the portrait canvas; Bob (now talking) and Alice
    // fill the grid below it.
    let f = frame_at(&file, 2.5, 720, 1280);
    assert_region(&f, (0, 100, 720, 370), 0x90e0f0, "screen share on top");
    assert_region(&f, (0, 576, 720, 352), PALETTE[1], "Bob below the share");
    assert_region(&f, (0, 928, 720, 352), PALETTE[0], "Alice at the bottom");
}

/// Runs the binary with `env`; returns (exit code, stderr).
fn exit_code(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run roomcast");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_configuration_is_one_coded_line_and_exit_code_2() {
    let dir = TempDir::new("bad-config");
    let data = dir.path().to_str().unwrap();
    let cases: [(&str, &str, &[&str]); 3] = [
        // A percent sign before a multi-byte character in a storage URL.
        (
            "ROOMCAST_STORAGE",
            "s3://b?region=%aé",
            &["deliver", "--wait", "0"],
        ),
        // A wait too long to be a duration.
        (
            "ROOMCAST_QUEUE_WAIT_SECS",
            "1e30",
            &["serve", "--insecure-dev"],
        ),
        (
            "ROOMCAST_RETRY_AFTER_SECS",
            "NaN",
            &["serve", "--insecure-dev"],
        ),
    ];
    for (var, value, args) in cases {
        let env = [
            ("ROOMCAST_DATA_DIR", data),
            ("ROOMCAST_LISTEN", "127.0.0.1:0"),
            (var, value),
        ];
        let (code, err) = exit_code(&env, args);
        assert_eq!(code, Some(2), "{var}={value}: {err}");
        assert!(!err.contains("panicked"), "{var}={value}: {err}");
        let j = last_json(&err);
        assert!(j["result"].as_u64().is_some_and(|c| c >= 7000), "{err}");
        assert!(j["msg"].as_str().unwrap().contains(var), "{err}");
    }
}

#[test]
fn preview_draws_a_custom_view_page_with_the_tiles_where_it_marks_them() {
    let dir = TempDir::new("preview-page");
    let page = dir.path().join("view.html");
    std::fs::write(
        &page,
        r#"<!doctype html><html><head><style>
html,body{margin:0;background:transparent;overflow:hidden}
#band{position:absolute;left:0;top:640px;width:1280px;height:80px;background:#ff00ff}
#spk{position:absolute;left:640px;top:0;width:640px;height:360px}
#rest{position:absolute;left:0;top:360px;width:640px;height:280px}
</style></head><body><div id="band"></div>
<div id="spk" data-roomcast-tile="speaker"></div><div id="rest" data-roomcast-tile="others"></div>
</body></html>"#,
    )
    .unwrap();
    let out = dir.path().join("page.png");
    let url = format!("file://{}", page.display());
    let (ok, _, err) = run(&[
        "layout",
        "preview",
        "--url",
        &url,
        "--participants",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let img = image(&out, 1280, 720);
    assert_region(&img, (0, 640, 1280, 80), 0xff00ff, "the page's band");
    assert_region(
        &img,
        (640, 0, 640, 360),
        PALETTE[0],
        "tile 1 where the page marks the speaker",
    );
    // Nothing where no region is marked.
    assert_region(&img, (0, 0, 640, 360), 0x000000, "unmarked top left");
}

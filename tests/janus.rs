//! Recording a real Janus VideoRoom as a hidden participant. Each test runs inside its own
//! network namespace (see `support::janus`).

mod support;
use std::time::{Duration, Instant};
use support::janus::*;
use support::*;

const RED: u32 = 0xd02020;
const GREEN: u32 = 0x20a040;
const BLUE: u32 = 0x2040d0;
const SCREEN: u32 = 0x90e0f0;
const YELLOW: u32 = 0xd0b020;

/// A publisher joining `room` (sending `rgb` and a `hz` tone).
fn join(
    rt: &tokio::runtime::Runtime,
    janus: &Janus,
    room: u64,
    name: &str,
    rgb: u32,
    hz: f64,
    codec: Codec,
) -> Publisher {
    rt.block_on(Publisher::publish(&janus.url(), room, name, rgb, hz, codec))
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn output(dir: &std::path::Path) -> serde_json::Value {
    last_json(&std::fs::read_to_string(dir.join("record.out")).unwrap_or_default())
}

#[test]
fn hidden_recorder_records_joins_leaves_and_a_screen_share() {
    if !in_network_namespace("hidden_recorder_records_joins_leaves_and_a_screen_share") {
        return;
    }
    gst::init().unwrap();
    let dir = TempDir::new("janus-room");
    let room = 4242;
    let (janus, rt, admin) = janus_room(dir.path(), room);
    let ann = join(&rt, &janus, room, "Ann", RED, 330.0, Codec::Vp8);
    let bob = join(&rt, &janus, room, "Bob", GREEN, 440.0, Codec::H264);
    rt.block_on(async {
        ann.wait_connected().await;
        bob.wait_connected().await;
    });
    let spawned = Instant::now();
    let (mut rec, t0) = recorder(
        &janus,
        room,
        dir.path(),
        &["--duration", "14", "--layout", "grid"],
    );
    // While recording, the room lists exactly its two publishers: the recorder is not there.
    std::thread::sleep(Duration::from_secs(2));
    let listed = rt.block_on(admin.participants(room));
    assert_eq!(listed.len(), 2, "{listed:?}");
    sleep_until(t0 + Duration::from_secs(3));
    let cat = join(&rt, &janus, room, "Cat", BLUE, 550.0, Codec::Vp8);
    sleep_until(t0 + Duration::from_secs(7));
    rt.block_on(bob.leave());
    sleep_until(t0 + Duration::from_secs(9));
    let screen = join(&rt, &janus, room, "Ann screen", SCREEN, 660.0, Codec::Vp8);
    let status = wait_for(30.0, || rec.try_wait().ok().flatten()).expect("recorder exits");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.path().join("record.log")).unwrap()
    );
    let out = output(dir.path());
    let path = std::path::PathBuf::from(out["file"].as_str().expect("file"));
    let p = probe(&path);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert!(
        (13.0..15.5).contains(&p.duration),
        "duration {}",
        p.duration
    );

    // Join latency: recorder start → first recorded frame with a publisher's picture.
    let first = all_frames(&path, 64, 36)
        .into_iter()
        .find(|(_, f)| frame_has_color(f, RED))
        .map(|(t, _)| t)
        .expect("Ann appears");
    eprintln!(
        "join latency: {:.0} ms (pipeline start {:.0} ms + first frame at {:.0} ms)",
        (t0 - spawned).as_secs_f64() * 1000.0 + first * 1000.0,
        (t0 - spawned).as_secs_f64() * 1000.0,
        first * 1000.0
    );
    // Tiles over time (grid; presentation once the screen share is live).
    let f = frame_at(&path, 2.5, 1280, 720);
    assert!(
        frame_has_color(&f, RED) && frame_has_color(&f, GREEN),
        "2.5 s: Ann and Bob"
    );
    assert!(!frame_has_color(&f, BLUE), "2.5 s: no Cat yet");
    let f = frame_at(&path, 6.0, 1280, 720);
    for (c, who) in [(RED, "Ann"), (GREEN, "Bob"), (BLUE, "Cat")] {
        assert!(frame_has_color(&f, c), "6 s: {who}");
    }
    let f = frame_at(&path, 8.5, 1280, 720);
    assert!(
        frame_has_color(&f, RED) && frame_has_color(&f, BLUE),
        "8.5 s: Ann and Cat"
    );
    assert!(!frame_has_color(&f, GREEN), "8.5 s: Bob left");
    let f = frame_at(&path, 12.5, 1280, 720);
    assert_region(
        &f,
        (100, 150, 800, 420),
        SCREEN,
        "12.5 s: the screen share large",
    );
    assert!(
        frame_has_color(&f, RED) && frame_has_color(&f, BLUE),
        "12.5 s: cameras beside it"
    );
    // Audio: everyone's tone while they are there, at the level sent (0.42 measured on
    // every run, silence at 0.0002).
    let pcm = audio_mono(&path, 48_000);
    let w = |a: f64, b: f64| window(&pcm, 48_000, a, b);
    assert!(
        tone_amplitude(w(1.0, 3.5), 330.0, 48_000) > 0.2,
        "Ann audible"
    );
    assert!(
        tone_amplitude(w(1.0, 3.5), 440.0, 48_000) > 0.2,
        "Bob audible"
    );
    assert!(
        tone_amplitude(w(5.0, 6.5), 550.0, 48_000) > 0.2,
        "Cat audible after joining"
    );
    assert!(
        tone_amplitude(w(1.0, 3.5), 550.0, 48_000) < 0.003,
        "Cat silent before joining"
    );
    assert!(
        tone_amplitude(w(8.5, 10.0), 440.0, 48_000) < 0.003,
        "Bob silent after leaving"
    );

    // Another participant's view, from before the recorder came until after it left: every
    // room event Ann got was about Bob, Cat, the screen share or Zed — none about the
    // recorder. Zed joins after the recorder left: Janus tells Ann of events in order, so once
    // she has heard of Zed she has heard everything that came before.
    let zed = join(&rt, &janus, room, "Zed", BLUE, 660.0, Codec::Vp8);
    let heard_zed = |e: &serde_json::Value| {
        let d = &e["plugindata"]["data"];
        d["publishers"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["id"].as_u64() == Some(zed.id)))
            || d["joining"]["id"].as_u64() == Some(zed.id)
    };
    wait_for(10.0, || {
        ann.events
            .lock()
            .unwrap()
            .iter()
            .any(heard_zed)
            .then_some(())
    })
    .expect("Ann heard of Zed");
    let others = [bob.id, cat.id, screen.id, zed.id];
    let seen = ann.events.lock().unwrap().clone();
    let mut about = Vec::new();
    for e in &seen {
        let d = &e["plugindata"]["data"];
        for key in ["leaving", "unpublished", "joining", "kicked"] {
            if let Some(id) = d[key].as_u64().or_else(|| d[key]["id"].as_u64()) {
                about.push(id);
            }
        }
        for p in d["publishers"].as_array().into_iter().flatten() {
            about.push(p["id"].as_u64().unwrap_or(0));
        }
    }
    assert!(
        about.contains(&cat.id),
        "Ann saw Cat arrive (the view works): {seen:?}"
    );
    for id in &about {
        assert!(
            others.contains(id),
            "Ann was told about participant {id}: {seen:?}"
        );
    }
    drop((cat, screen, zed));
}

#[test]
fn janus_restart_is_survived_and_room_destroyed_ends_the_job() {
    if !in_network_namespace("janus_restart_is_survived_and_room_destroyed_ends_the_job") {
        return;
    }
    gst::init().unwrap();
    let dir = TempDir::new("janus-restart");
    let room = 77;
    let (mut janus, rt, _admin) = janus_room(dir.path(), room);
    let ann = join(&rt, &janus, room, "Ann", RED, 330.0, Codec::Vp8);
    // Ann is up before the recorder starts: the picture at 2.5 s is hers, whatever the load.
    rt.block_on(ann.wait_connected());
    let (mut rec, t0) = recorder(&janus, room, dir.path(), &["--layout", "grid"]);
    sleep_until(t0 + Duration::from_secs(4));
    janus.restart();
    drop(ann);
    // The room and the publisher come back on the new server.
    let admin = rt.block_on(Admin::connect(&janus.url()));
    rt.block_on(admin.create_room(room));
    let _ann = join(&rt, &janus, room, "Ann", RED, 330.0, Codec::Vp8);
    let back = wait_for(30.0, || {
        std::fs::read_to_string(dir.path().join("record.log"))
            .unwrap_or_default()
            .contains("reconnected to Janus")
            .then_some(())
    });
    assert!(back.is_some(), "no reconnect");
    std::thread::sleep(Duration::from_secs(5));
    let destroyed_at = Instant::now();
    rt.block_on(admin.destroy_room(room));
    let status = wait_for(20.0, || rec.try_wait().ok().flatten()).expect("recorder ends");
    eprintln!(
        "room destroyed → recorder exit: {:?}",
        destroyed_at.elapsed()
    );
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.path().join("record.log")).unwrap()
    );
    let out = output(dir.path());
    let path = std::path::PathBuf::from(out["file"].as_str().expect("file"));
    let p = probe(&path);
    assert!(p.duration > 9.0, "duration {}", p.duration);
    assert!(
        top_level_boxes(&path).iter().any(|b| b == "moov"),
        "finalized"
    );
    // Media before and after the restart.
    assert!(
        frame_has_color(&frame_at(&path, 2.5, 1280, 720), RED),
        "before"
    );
    assert!(
        frame_has_color(&frame_at(&path, p.duration - 1.5, 1280, 720), RED),
        "after"
    );
}

#[test]
fn janus_gone_for_good_ends_with_7026_and_keeps_the_file() {
    // Signalling only (no media), so no network namespace is needed.
    let dir = TempDir::new("janus-gone");
    let (mut janus, _rt, _admin) = janus_room(dir.path(), 9);
    let (mut rec, _t0) = recorder(&janus, 9, dir.path(), &["--max-reconnects", "2"]);
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    janus.kill();
    let status = wait_for(20.0, || rec.try_wait().ok().flatten()).expect("recorder gives up");
    eprintln!("gave up {:?} after Janus went away", killed.elapsed());
    assert!(!status.success());
    let err = std::fs::read_to_string(dir.path().join("record.log")).unwrap();
    assert_eq!(last_json(&err)["result"], 7026, "{err}");
    let out = output(dir.path());
    let path = std::path::PathBuf::from(out["file"].as_str().expect("file kept"));
    assert!(probe(&path).duration >= 2.5);
    assert_eq!(out["end"], "Disconnected");
}

#[test]
fn unknown_room_is_refused_with_a_code() {
    let dir = TempDir::new("janus-noroom");
    let janus = Janus::start(&dir.path().join("janus"));
    let (ok, _, err) = run(&[
        "record",
        "--janus",
        &janus.url(),
        "--room",
        "31337",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.path().join("rec").to_string_lossy().to_string()])
    .collect::<Vec<_>>()
    .iter()
    .map(|s| s.as_str())
    .collect::<Vec<_>>());
    assert!(!ok);
    assert_eq!(last_json(&err)["result"], 7026, "{err}");
    // A room with a PIN: a wrong or missing PIN is refused up front (7027), the right one
    // records.
    let rt = rt();
    let admin = rt.block_on(Admin::connect(&janus.url()));
    rt.block_on(admin.create_room_with_pin(55, Some("2468")));
    let rec = dir.path().join("rec").to_string_lossy().to_string();
    let url = janus.url();
    let record = |pin: &[&str]| {
        let mut args = vec!["record", "--janus", &url, "--room", "55", "--out", &rec];
        args.extend(["--duration", "1"]);
        args.extend(pin);
        run(&args)
    };
    for pin in [&["--pin", "1357"][..], &[]] {
        let (ok, _, err) = record(pin);
        assert!(!ok, "{pin:?}");
        let v = last_json(&err);
        assert_eq!(v["result"], 7027, "{pin:?}: {err}");
        assert!(
            v["msg"].as_str().unwrap_or_default().contains("PIN"),
            "{err}"
        );
        assert!(!err.contains("1357"), "the PIN is in the output: {err}");
    }
    let (ok, out, err) = record(&["--pin", "2468"]);
    assert!(ok, "{err}");
    assert!(last_json(&out)["file"].is_string(), "{out}");
    let (ok, _, err) = run(&["record", "--janus", "ws://127.0.0.1:1", "--room", "1"]);
    assert!(!ok);
    assert_eq!(last_json(&err)["result"], 7028, "{err}");
}

/// CPU of one recording of four real WebRTC publishers (640x360 30 fps VP8 + Opus), 720p30
/// grid, measured with /usr/bin/time; and the same recorder on four synthetic participants.
/// Run with `cargo test --release --test janus -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_cpu_with_four_webrtc_publishers() {
    if !in_network_namespace("measure_cpu_with_four_webrtc_publishers") {
        return;
    }
    gst::init().unwrap();
    let dir = TempDir::new("janus-cpu");
    let (janus, rt, _admin) = janus_room(dir.path(), 1);
    let pubs: Vec<Publisher> = [(RED, 330.0), (GREEN, 440.0), (BLUE, 550.0), (SCREEN, 660.0)]
        .iter()
        .enumerate()
        .map(|(i, (c, hz))| {
            let p = rt.block_on(Publisher::publish_sized(
                &janus.url(),
                1,
                &format!("P{i}"),
                *c,
                *hz,
                Codec::Vp8,
                (640, 360, 30),
            ));
            rt.block_on(p.wait_connected());
            p
        })
        .collect();
    let secs = 30;
    // Whole-run figures from /usr/bin/time, and the steady state (10 s to 25 s in, without
    // the start-up's one-off work) from the process's own CPU counters.
    let run = |args: Vec<String>| -> (f64, f64, u64) {
        let child = std::process::Command::new("/usr/bin/time")
            .args(["-f", "TIME %e %U %S %M", bin()])
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let cpu_ticks = |pid: &str| -> Option<f64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        };
        std::thread::sleep(Duration::from_secs(10));
        let pid = std::fs::read_to_string(&children)
            .unwrap_or_default()
            .trim()
            .to_string();
        let (t1, c1) = (Instant::now(), cpu_ticks(&pid));
        std::thread::sleep(Duration::from_secs(15));
        let (t2, c2) = (Instant::now(), cpu_ticks(&pid));
        if let (Some(a), Some(b)) = (c1, c2) {
            // Clock ticks are 1/100 s here.
            let steady = (b - a) / 100.0 / (t2 - t1).as_secs_f64();
            eprintln!("  steady state (10–25 s): {steady:.3} cores");
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("TIME"))
            .expect("time output");
        let v: Vec<f64> = line[5..].split(' ').map(|x| x.parse().unwrap()).collect();
        (v[0], (v[1] + v[2]) / v[0], v[3] as u64 / 1024)
    };
    // `roomcast record` of the room into `out`, with `extra` options.
    let record = |out: &str, extra: &[&str]| {
        let mut args: Vec<String> = ["record", "--janus", &janus.url(), "--room", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for a in [
            "--ice-address",
            ICE_ADDRESS,
            "--duration",
            &secs.to_string(),
            "--out",
            out,
        ]
        .iter()
        .chain(extra)
        {
            args.push(a.to_string());
        }
        run(args)
    };
    let rec = dir.path().join("rec").to_string_lossy().to_string();
    let (wall, cores, rss) = record(&rec, &[]);
    eprintln!("webrtc x4: {wall:.1} s wall, {cores:.3} cores, peak RSS {rss} MiB");
    let mp4 = std::fs::read_dir(&rec)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mp4"))
        .expect("recording");
    let colours = [RED, GREEN, BLUE, SCREEN];
    let all_at = all_frames(&mp4, 128, 72)
        .into_iter()
        .find(|(_, f)| colours.iter().all(|c| frame_has_color(f, *c)))
        .map(|(t, _)| t)
        .expect("all four publishers appear");
    eprintln!(
        "all four publishers in the recording {:.0} ms after it starts",
        all_at * 1000.0
    );
    let individual = dir.path().join("individual").to_string_lossy().to_string();
    let (wall, cores, rss) = record(&individual, &["--individual"]);
    eprintln!(
        "webrtc x4 individually: {wall:.1} s wall, {cores:.3} cores ({:.4} per participant), \
         peak RSS {rss} MiB",
        cores / 4.0
    );
    let (wall, cores, rss) = run([
        "demo",
        "--participants",
        "4",
        "--duration",
        &secs.to_string(),
        "--out",
        &rec,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect());
    eprintln!("synthetic x4 (live): {wall:.1} s wall, {cores:.3} cores, peak RSS {rss} MiB");
    drop(pubs);
}

#[test]
fn speaker_follows_janus_talking_and_a_described_share_is_presented() {
    if !in_network_namespace("speaker_follows_janus_talking_and_a_described_share_is_presented") {
        return;
    }
    gst::init().unwrap();
    let dir = TempDir::new("janus-speaker");
    let room = 5150;
    let (janus, rt, admin) = janus_room(dir.path(), room);
    let ann = join(&rt, &janus, room, "Ann", RED, 330.0, Codec::Vp8);
    let bob = join(&rt, &janus, room, "Bob", GREEN, 440.0, Codec::Vp9);
    bob.set_tone(false);
    rt.block_on(async {
        ann.wait_connected().await;
        bob.wait_connected().await;
    });
    let (mut rec, t0) = recorder(
        &janus,
        room,
        dir.path(),
        &["--duration", "13", "--layout", "speaker"],
    );
    // Janus's own view (audio-level extension → `talking`): Ann talks, Bob does not.
    std::thread::sleep(Duration::from_secs(2));
    let talking = |name: &str| {
        rt.block_on(admin.participants(room))
            .iter()
            .find(|p| p["display"] == name)
            .map(|p| p["talking"] == true)
    };
    assert_eq!(
        (talking("Ann"), talking("Bob")),
        (Some(true), Some(false)),
        "{:?}",
        rt.block_on(admin.participants(room))
    );
    sleep_until(t0 + Duration::from_secs(5));
    ann.set_tone(false);
    bob.set_tone(true);
    // A share marked only by its stream description ("Dan" is a plain display name).
    sleep_until(t0 + Duration::from_secs(9));
    let _dan = rt.block_on(Publisher::publish_described(
        &janus.url(),
        room,
        "Dan",
        SCREEN,
        660.0,
        "Screen of Dan",
    ));
    let status = wait_for(30.0, || rec.try_wait().ok().flatten()).expect("recorder exits");
    let log = std::fs::read_to_string(dir.path().join("record.log")).unwrap();
    assert!(status.success(), "{log}");
    let path = std::path::PathBuf::from(output(dir.path())["file"].as_str().expect("file"));
    // Speaker layout: the talker fills the top 80 %, the other one is in the strip below
    // (Bob sends VP9).
    let big = (200, 100, 880, 380);
    let f = frame_at(&path, 4.0, 1280, 720);
    assert_region(&f, big, RED, "4 s: Ann (talking) large");
    assert!(frame_has_color(&f, GREEN), "4 s: Bob in the strip");
    let f = frame_at(&path, 8.5, 1280, 720);
    assert_region(&f, big, GREEN, "8.5 s: Bob (now talking) large");
    assert!(frame_has_color(&f, RED), "8.5 s: Ann in the strip");
    // The described share switches the speaker layout to the presentation (Dan is silent:
    // were the description ignored, Bob would stay large).
    let f = frame_at(&path, 12.3, 1280, 720);
    assert_region(
        &f,
        (100, 150, 800, 420),
        SCREEN,
        "12.3 s: Dan's share large",
    );
    drop((ann, bob));
}

/// `wss://` to Janus: trusted through an extra authority file, refused without it. Signalling
/// only (an empty room), so no network namespace is needed.
#[test]
fn records_over_wss_with_an_extra_certificate_authority() {
    let dir = TempDir::new("janus-wss");
    let janus = Janus::start_tls(&dir.path().join("janus"));
    rt().block_on(async {
        let admin = Admin::connect(&janus.url()).await;
        admin.create_room(77).await;
    });
    let wss = janus.wss_url();
    let ca = janus.ca_file().to_string_lossy().to_string();
    let out = dir.path().join("rec").to_string_lossy().to_string();
    let args = [
        "record",
        "--janus",
        &wss,
        "--room",
        "77",
        "--duration",
        "3",
        "--out",
        &out,
    ];
    let (ok, j, err) = run_env(&[("ROOMCAST_EXTRA_CA_FILE", ca)], &args);
    assert!(ok, "{err}");
    let file = std::path::PathBuf::from(j["file"].as_str().unwrap());
    let p = probe(&file);
    assert!(p.duration >= 2.5, "duration {}", p.duration);
    // The same server is not trusted without the authority.
    let (ok, _, err) = run_env(&[("ROOMCAST_EXTRA_CA_FILE", String::new())], &args);
    assert!(!ok, "connected to an untrusted server");
    assert_eq!(last_json(&err)["result"], 7028, "{err}");
}

/// The Matroska files and manifest an individual recording of a Janus room wrote.
fn individual_output(dir: &std::path::Path) -> (std::path::PathBuf, serde_json::Value) {
    let out = output(dir);
    let folder = std::path::PathBuf::from(out["folder"].as_str().expect("folder"));
    let text = std::fs::read_to_string(folder.join("manifest.json")).expect("manifest");
    (folder, serde_json::from_str(&text).expect("manifest json"))
}

#[test]
fn individual_recording_keeps_each_publishers_tracks_as_sent() {
    if !in_network_namespace("individual_recording_keeps_each_publishers_tracks_as_sent") {
        return;
    }
    gst::init().unwrap();
    let dir = TempDir::new("janus-individual");
    let room = 4250;
    let (janus, rt, admin) = janus_room(dir.path(), room);
    let ann = rt.block_on(Publisher::publish_markers(
        &janus.url(),
        room,
        "Ann",
        RED,
        0,
    ));
    let bob = join(&rt, &janus, room, "Bob", GREEN, 440.0, Codec::H264);
    rt.block_on(async {
        ann.wait_connected().await;
        bob.wait_connected().await;
    });
    let (mut rec, t0) = recorder(
        &janus,
        room,
        dir.path(),
        &["--duration", "14", "--individual"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let listed = rt.block_on(admin.participants(room));
    assert_eq!(listed.len(), 2, "the recorder is hidden: {listed:?}");
    sleep_until(t0 + Duration::from_secs(3));
    let cat = join(&rt, &janus, room, "Cat", BLUE, 550.0, Codec::Vp8);
    sleep_until(t0 + Duration::from_secs(6));
    rt.block_on(bob.leave());
    sleep_until(t0 + Duration::from_secs(8));
    let screen = join(&rt, &janus, room, "Ann screen", SCREEN, 660.0, Codec::Vp8);
    // Cat stops publishing and publishes again as the same participant, in another colour.
    sleep_until(t0 + Duration::from_secs(9));
    rt.block_on(cat.leave());
    let cat_id = cat.id;
    drop(cat);
    sleep_until(t0 + Duration::from_secs(10));
    let cat_again = rt.block_on(Publisher::publish_as(
        &janus.url(),
        room,
        "Cat",
        (YELLOW, 550.0, Codec::Vp8),
        cat_id,
    ));
    let status = wait_for(30.0, || rec.try_wait().ok().flatten()).expect("recorder exits");
    let log = std::fs::read_to_string(dir.path().join("record.log")).unwrap();
    assert!(status.success(), "{log}");
    // Nothing was decoded: an individual recording only depayloads.
    assert!(!log.contains("decoded feed branch"), "{log}");
    let (folder, m) = individual_output(dir.path());
    assert_eq!(m["complete"], true);
    let files = m["files"].as_array().unwrap().clone();
    let names: std::collections::HashMap<String, String> = m["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let of = |name: &str, kind: &str| -> serde_json::Value {
        files
            .iter()
            .find(|f| {
                names
                    .get(f["participant_id"].as_str().unwrap())
                    .map(String::as_str)
                    == Some(name)
                    && f["kind"] == kind
            })
            .unwrap_or_else(|| panic!("no {kind} file of {name}: {files:?}"))
            .clone()
    };
    let secs = |f: &serde_json::Value, k: &str| f[k].as_f64().unwrap() / 1000.0;
    // Each file decodes, holds the codec its publisher sent, and its span is the manifest's.
    for (name, codec, rgb) in [
        ("Ann", "vp8", RED),
        ("Bob", "h264", GREEN),
        ("Cat", "vp8", BLUE),
    ] {
        let v = of(name, "video");
        let path = folder.join(v["file"].as_str().unwrap());
        let p = probe(&path);
        assert_eq!(p.video_codec.as_deref(), Some(codec), "{name}");
        let frames = all_frames(&path, 64, 36);
        assert!(frames.len() > 30, "{name}: {} frames", frames.len());
        let (last, _) = frames.last().unwrap();
        let span = secs(&v, "end_ms") - secs(&v, "start_ms");
        assert!(
            (last - span).abs() < 0.1,
            "{name}: last frame at {last:.3}, manifest span {span:.3}"
        );
        // (Ann's picture flashes white a tenth of the time.)
        let coloured = frames
            .iter()
            .filter(|(_, f)| frame_has_color(f, rgb))
            .count();
        assert!(
            coloured * 10 >= frames.len() * 8,
            "{name}'s picture in {coloured} of {} frames",
            frames.len()
        );
        let a = of(name, "audio");
        let apath = folder.join(a["file"].as_str().unwrap());
        assert_eq!(probe(&apath).audio_codec.as_deref(), Some("opus"));
    }
    // Cat starts when she joined; Bob's files end when he left; the screen share is its own.
    let joined = secs(&of("Cat", "video"), "start_ms");
    assert!(
        (2.5..5.0).contains(&joined),
        "Cat's video starts at {joined}"
    );
    let left = secs(&of("Bob", "video"), "end_ms");
    assert!((5.0..7.5).contains(&left), "Bob's video ends at {left}");
    let share = of("Ann screen", "screen");
    assert!(secs(&share, "start_ms") > 7.0);
    // Cat's second publication is a file of its own, after the first ended.
    let cat_video: Vec<&serde_json::Value> = files
        .iter()
        .filter(|f| f["participant_id"] == cat_id.to_string().as_str() && f["kind"] == "video")
        .collect();
    assert_eq!(cat_video.len(), 2, "{files:?}");
    assert!(cat_video[0]["file"]
        .as_str()
        .unwrap()
        .ends_with("_video_1.mkv"));
    assert!(cat_video[1]["file"]
        .as_str()
        .unwrap()
        .ends_with("_video_2.mkv"));
    let (first_end, second_start) = (secs(cat_video[0], "end_ms"), secs(cat_video[1], "start_ms"));
    assert!(
        (8.0..10.0).contains(&first_end),
        "first ends at {first_end}"
    );
    assert!(
        second_start >= first_end && second_start < 12.5,
        "second starts at {second_start}"
    );
    let again = folder.join(cat_video[1]["file"].as_str().unwrap());
    let frames = all_frames(&again, 64, 36);
    assert!(frames.len() > 10, "{} frames published again", frames.len());
    let span = secs(cat_video[1], "end_ms") - second_start;
    assert!((frames.last().unwrap().0 - span).abs() < 0.1, "span {span}");
    assert!(
        frames.iter().all(|(_, f)| frame_has_color(f, YELLOW)),
        "the second publication's picture"
    );
    let pcm = audio_mono(
        &folder.join(of("Bob", "audio")["file"].as_str().unwrap()),
        48_000,
    );
    assert!(
        tone_amplitude(window(&pcm, 48_000, 1.0, 2.0), 440.0, 48_000) > 0.01,
        "Bob's tone"
    );
    // Ann's flashes and beeps, placed by the manifest (her sender's clock), line up.
    let (v, a) = (of("Ann", "video"), of("Ann", "audio"));
    let flashes: Vec<f64> = flash_onsets_seen(&folder.join(v["file"].as_str().unwrap()), 3000)
        .into_iter()
        .map(|t| t + secs(&v, "start_ms"))
        .collect();
    let beeps: Vec<f64> = beep_onsets_seen(&folder.join(a["file"].as_str().unwrap()), 2000.0)
        .into_iter()
        .map(|t| t + secs(&a, "start_ms"))
        .collect();
    let offsets: Vec<f64> = av_offsets(&flashes, &beeps)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    eprintln!(
        "individual Janus A/V offsets (ms): {:?}",
        offsets
            .iter()
            .map(|o| (o * 1e3).round())
            .collect::<Vec<_>>()
    );
    assert!(offsets.len() >= 8, "flashes {flashes:?} beeps {beeps:?}");
    let mut sorted = offsets.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    // README: −5…+2 ms. The median within 25 ms (a run's anchoring at Janus moves it as a
    // whole, see lip_sync), every pair within 45 ms (a frame and a half).
    assert!(
        median.abs() <= 0.025,
        "median A/V offset {:.1} ms",
        median * 1e3
    );
    let worst = sorted.iter().fold(0.0f64, |w, o| w.max(o.abs()));
    assert!(worst <= 0.045, "an A/V offset of {:.1} ms", worst * 1e3);
    drop((ann, cat_again, screen));
}

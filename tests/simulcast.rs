//! Simulcast through a real Janus: a publisher sends its camera in three layers, each its own
//! colour, so the recording shows which layer it received; the layer must be the one that fits
//! the tile the camera is drawn in, and follow it as the layout changes. Each test runs in its
//! own network namespace.

mod support;
use std::time::{Duration, Instant};
use support::janus::*;
use support::*;

/// The simulcast publisher's layers, smallest first.
const LOW: u32 = 0xd02020;
const MID: u32 = 0x20b040;
const TOP: u32 = 0x2040d0;
/// The other publisher.
const GREY: u32 = 0x909090;

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn recording(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("rec"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mp4"))
        .expect("recording")
}

/// A Janus server in a fresh test folder `tag` with room `room` created.
fn janus_room_for(tag: &str, room: u64) -> (TempDir, Janus, tokio::runtime::Runtime, u64) {
    gst::init().unwrap();
    let dir = TempDir::new(tag);
    let (janus, rt, _admin) = janus_room(dir.path(), room);
    (dir, janus, rt, room)
}

/// "Sim": a simulcast camera whose layers are [`LOW`], [`MID`] and [`TOP`], with a tone.
async fn coloured_simulcast(janus: &Janus, room: u64) -> Publisher {
    Publisher::publish_simulcast(
        &janus.url(),
        room,
        "Sim",
        [Layer::Solid(LOW), Layer::Solid(MID), Layer::Solid(TOP)],
        440.0,
        15,
    )
    .await
}

/// Speaker layout on 1280x720: the talker's tile is 576 px tall (the top layer), the strip's
/// 144 px (the smallest). The simulcast publisher sits in the strip while the other talks,
/// then talks itself: its tile shows the smallest layer, then the top one.
#[test]
fn a_simulcast_camera_is_received_in_the_layer_its_tile_needs() {
    if !in_network_namespace("a_simulcast_camera_is_received_in_the_layer_its_tile_needs") {
        return;
    }
    let (dir, janus, rt, room) = janus_room_for("simulcast-layers", 7001);
    let sim = rt.block_on(coloured_simulcast(&janus, room));
    sim.set_tone(false);
    let bob = rt.block_on(Publisher::publish(
        &janus.url(),
        room,
        "Bob",
        GREY,
        330.0,
        Codec::Vp8,
    ));
    rt.block_on(async {
        sim.wait_connected().await;
        bob.wait_connected().await;
    });
    let (rec, t0) = recorder(
        &janus,
        room,
        dir.path(),
        &["--duration", "15", "--layout", "speaker"],
    );
    sleep_until(t0 + Duration::from_secs(7));
    bob.set_tone(false);
    sim.set_tone(true);
    let out = rec.wait_with_output().unwrap();
    let log = std::fs::read_to_string(dir.path().join("record.log")).unwrap();
    assert!(out.status.success(), "{log}");
    let mp4 = recording(dir.path());
    let big = (200, 100, 880, 380);
    // Bob talks: Sim is in the strip, in its smallest layer (no other layer anywhere).
    let f = frame_at(&mp4, 5.0, 1280, 720);
    assert_region(&f, big, GREY, "5 s: Bob (talking) large");
    assert!(
        frame_has_color(&f, LOW),
        "5 s: Sim's smallest layer in the strip"
    );
    assert!(
        !frame_has_color(&f, MID) && !frame_has_color(&f, TOP),
        "5 s: only Sim's smallest layer is received"
    );
    // Sim talks: large, in its top layer.
    let f = frame_at(&mp4, 13.5, 1280, 720);
    assert_region(&f, big, TOP, "13.5 s: Sim (talking) large, top layer");
    assert!(frame_has_color(&f, GREY), "13.5 s: Bob in the strip");
    assert!(
        !frame_has_color(&f, LOW) && !frame_has_color(&f, MID),
        "13.5 s: only Sim's top layer is received"
    );
    // Janus said which layer it relays, and the log shows it.
    let layers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("receiving simulcast layer"))
        .collect();
    assert!(
        layers.iter().any(|l| l.contains("layer=0"))
            && layers.iter().any(|l| l.contains("layer=2")),
        "{layers:?}"
    );
}

/// CPU time (user + system) the process `pid` has used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after its closing parenthesis.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// What simulcast saves: nine simulcast publishers (720p/360p/180p moving test cards at
/// 15 fps) in a grid of nine (tiles 240 px tall on 1280x720), recorded once receiving the layer
/// that fits (360p) and once the top layer (720p). Prints the recorder's cores for each.
/// `ROOMCAST_SIMULCAST_SECS` sets each recording's length (default 40 s; measured over its
/// last three quarters).
#[test]
#[ignore]
fn simulcast_saves_decoding_in_a_room_of_nine() {
    if !in_network_namespace("simulcast_saves_decoding_in_a_room_of_nine") {
        return;
    }
    gst::init().unwrap();
    let secs: u64 = std::env::var("ROOMCAST_SIMULCAST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let dir = TempDir::new("simulcast-nine");
    let room = 7009;
    let (janus, rt, _admin) = janus_room(dir.path(), room);
    let names: Vec<String> = (1..=9).map(|i| format!("P{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let publishers = rt.block_on(Publisher::publish_simulcast_room(
        &janus.url(),
        room,
        &names,
        15,
    ));
    rt.block_on(async {
        for p in &publishers {
            p.wait_connected().await;
        }
    });
    let mut cores = Vec::new();
    for choice in ["fit", "top"] {
        let run = dir.path().join(choice);
        std::fs::create_dir_all(&run).unwrap();
        let (rec, t0) = recorder(
            &janus,
            room,
            &run,
            &["--duration", &secs.to_string(), "--simulcast", choice],
        );
        let pid = rec.id();
        sleep_until(t0 + Duration::from_secs(secs / 4));
        let (c0, w0) = (cpu_seconds(pid), Instant::now());
        sleep_until(t0 + Duration::from_secs(secs - 1));
        let used = (cpu_seconds(pid) - c0) / w0.elapsed().as_secs_f64();
        let out = rec.wait_with_output().unwrap();
        let log = std::fs::read_to_string(run.join("record.log")).unwrap();
        assert!(out.status.success(), "{log}");
        // The layer each feed ended on.
        let mut last = std::collections::HashMap::new();
        for l in log
            .lines()
            .filter(|l| l.contains("receiving simulcast layer"))
        {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .map(str::to_string)
            };
            if let (Some(feed), Some(layer)) = (field("feed="), field("layer=")) {
                last.insert(feed, layer);
            }
        }
        let want = if choice == "fit" { "1" } else { "2" };
        eprintln!("simulcast {choice}: recorder {used:.3} cores; layers {last:?}");
        assert_eq!(last.len(), 9, "{choice}: {last:?}");
        assert!(last.values().all(|l| l == want), "{choice}: {last:?}");
        let frames = decoded_video_frames(&recording(&run));
        eprintln!("simulcast {choice}: {frames} frames in the recording");
        cores.push(used);
    }
    eprintln!(
        "simulcast: fit {:.3} cores, top {:.3} cores, saved {:.3} cores ({:.0} %)",
        cores[0],
        cores[1],
        cores[1] - cores[0],
        100.0 * (cores[1] - cores[0]) / cores[1]
    );
    assert!(cores[0] < cores[1], "{cores:?}");
}

/// An individual recording draws no layout: a simulcast camera is kept as sent at its best,
/// the top layer.
#[test]
fn an_individual_recording_keeps_the_top_simulcast_layer() {
    if !in_network_namespace("an_individual_recording_keeps_the_top_simulcast_layer") {
        return;
    }
    let (dir, janus, rt, room) = janus_room_for("simulcast-individual", 7003);
    let sim = rt.block_on(coloured_simulcast(&janus, room));
    rt.block_on(sim.wait_connected());
    let (rec, _) = recorder(
        &janus,
        room,
        dir.path(),
        &["--duration", "6", "--individual"],
    );
    let out = rec.wait_with_output().unwrap();
    let log = std::fs::read_to_string(dir.path().join("record.log")).unwrap();
    assert!(out.status.success(), "{log}");
    let printed = last_json(&std::fs::read_to_string(dir.path().join("record.out")).unwrap());
    let folder = std::path::PathBuf::from(printed["folder"].as_str().expect("folder"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("manifest.json")).unwrap())
            .unwrap();
    let video = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "video")
        .unwrap_or_else(|| panic!("no video file: {manifest}"));
    let path = folder.join(video["file"].as_str().unwrap());
    let frames = all_frames(&path, 64, 36);
    assert!(frames.len() > 30, "{} frames", frames.len());
    // Janus starts a subscription on the first layer it has and climbs to the one asked for
    // at each layer's next keyframe (one a second here): from then on, every frame is the top
    // layer's.
    let first_top = frames
        .iter()
        .position(|(_, f)| dist(f.region_color(0, 0, 64, 36), TOP) < 40.0)
        .expect("the top layer never arrived");
    let (at, _) = frames[first_top];
    assert!(at < 2.5, "the top layer arrived {at:.2} s into the file");
    for (t, f) in &frames[first_top..] {
        let c = f.region_color(0, 0, 64, 36);
        assert!(
            dist(c, TOP) < 40.0,
            "frame at {t:.2} s is {c:?}, not the top layer"
        );
    }
}

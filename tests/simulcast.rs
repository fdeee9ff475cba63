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

/// Speaker layout on 1280x720: the talker's tile is 576 px tall (the top layer), the strip's
/// 144 px (the smallest). The simulcast publisher sits in the strip while the other talks,
/// then talks itself: its tile shows the smallest layer, then the top one.
#[test]
fn a_simulcast_camera_is_received_in_the_layer_its_tile_needs() {
    if !in_network_namespace("a_simulcast_camera_is_received_in_the_layer_its_tile_needs") {
        return;
    }
    gst::init().unwrap();
    let dir = TempDir::new("simulcast-layers");
    let room = 7001;
    let (janus, rt, _admin) = janus_room(dir.path(), room);
    let sim = rt.block_on(Publisher::publish_simulcast(
        &janus.url(),
        room,
        "Sim",
        [Layer::Solid(LOW), Layer::Solid(MID), Layer::Solid(TOP)],
        440.0,
        15,
    ));
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

//! Inputs leaving the mixers in bursts while they mix (library API): a room of sixty that
//! empties at once, six times over. Nothing crashes, every removed input's mixer pad is
//! released, and the file holds sound and picture for the whole run.

mod support;

use roomcast::layout::{Layout, Tile, TileId};
use roomcast::pipeline::composite::Output;
use roomcast::pipeline::source::{Timing, TrackSource};
use roomcast::pipeline::{self, Composite, CompositeOptions, Preset};
use roomcast::room::synthetic::SyntheticRoom;
use std::time::{Duration, Instant};
use support::*;

const ROUNDS: usize = 6;
const PEOPLE: usize = 60;

fn sink_pads(pipeline: &gst::Pipeline, name: &str) -> usize {
    use gst::prelude::*;
    pipeline
        .by_name(name)
        .map(|e| e.sink_pads().len())
        .unwrap_or(0)
}

/// A live 720p composite of `layout` recording to `out`.
fn live_mp4(layout: &Layout, out: &std::path::Path) -> CompositeOptions {
    CompositeOptions {
        preset: Preset::resolve("h264-720p30").unwrap(),
        timing: Timing::Live,
        output: Output::Mp4(out.to_path_buf()),
        background: 0,
        background_image: None,
        label: layout.def().label.clone(),
        watermark: None,
        page_layer: false,
    }
}

#[test]
fn sixty_inputs_leaving_at_once_while_mixing() {
    use gst::prelude::*;
    pipeline::init().unwrap();
    let dir = TempDir::new("mixer-churn");
    let out = dir.path().join("churn.mp4");
    let layout = Layout::resolve("grid").unwrap();
    let mut comp = Composite::new(&live_mp4(&layout, &out)).unwrap();
    let p = comp.pipeline().clone();
    let (audio_base, video_base) = (sink_pads(&p, "audio_mixer"), sink_pads(&p, "video_mixer"));
    p.set_state(gst::State::Playing).unwrap();
    let started = Instant::now();
    for round in 0..ROUNDS {
        let room = SyntheticRoom::steady(PEOPLE);
        let mut tiles = Vec::new();
        let mut ids = Vec::new();
        for (i, person) in room.participants.iter().enumerate() {
            // Ids of their own each round: nothing is reused from the last.
            let id = format!("r{round}-{}", person.id);
            let ctx = comp.source_context(gst::ClockTime::from_mseconds(200));
            comp.add_video(&TileId::camera(&id), Box::new(room.camera(person)))
                .unwrap();
            comp.add_audio(&id, room.microphone(person).build(&ctx).unwrap())
                .unwrap();
            tiles.push(Tile::new(&id, &person.name, i as u64));
            ids.push(id);
        }
        comp.apply(&layout.place(comp.canvas(), &tiles)).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        for id in &ids {
            comp.remove_audio(id).unwrap();
            comp.remove_video(&TileId::camera(id)).unwrap();
        }
        comp.apply(&layout.place(comp.canvas(), &[])).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every removed input's pad is released by its mixer.
    let released = wait_for(10.0, || {
        (sink_pads(&p, "audio_mixer") == audio_base && sink_pads(&p, "video_mixer") == video_base)
            .then_some(())
    });
    assert!(
        released.is_some(),
        "mixer pads left: audio {} (from {audio_base}), video {} (from {video_base}); \
         every removed input stopped: {}",
        sink_pads(&p, "audio_mixer"),
        sink_pads(&p, "video_mixer"),
        comp.wait_retired(Duration::ZERO)
    );
    let ran = started.elapsed().as_secs_f64();
    eprintln!("churn: pads released {ran:.1} s after the start");
    comp.end_of_stream();
    pipeline::bus::wait_eos_blocking(&p, Duration::from_secs(20), "churn drain").unwrap();
    eprintln!(
        "churn: drained {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );
    p.set_state(gst::State::Null).unwrap();
    drop(comp);
    pipeline::mp4::finalize(&out).unwrap();
    let pr = probe(&out);
    assert!(
        pr.duration > ran - 1.5,
        "{} s of media for {ran:.1} s of mixing",
        pr.duration
    );
    assert_eq!(
        (pr.video_codec.as_deref(), pr.audio_codec.as_deref()),
        (Some("h264"), Some("aac"))
    );
}

/// A composite stopped while a burst of inputs is still being taken out stops: nothing waits
/// on the inputs' streaming threads while the mixers are stopping.
#[test]
fn a_composite_stopped_during_a_burst_of_leaves_stops() {
    pipeline::init().unwrap();
    let dir = TempDir::new("mixer-churn-stop");
    for round in 0..3 {
        let layout = Layout::resolve("grid").unwrap();
        let out = dir.path().join(format!("stop{round}.mp4"));
        let mut comp = Composite::new(&live_mp4(&layout, &out)).unwrap();
        let p = comp.pipeline().clone();
        {
            use gst::prelude::*;
            p.set_state(gst::State::Playing).unwrap();
        }
        let room = SyntheticRoom::steady(PEOPLE);
        let mut tiles = Vec::new();
        let mut ids = Vec::new();
        for (i, person) in room.participants.iter().enumerate() {
            let ctx = comp.source_context(gst::ClockTime::from_mseconds(200));
            comp.add_video(&TileId::camera(&person.id), Box::new(room.camera(person)))
                .unwrap();
            comp.add_audio(&person.id, room.microphone(person).build(&ctx).unwrap())
                .unwrap();
            tiles.push(Tile::new(&person.id, &person.name, i as u64));
            ids.push(person.id.clone());
        }
        comp.apply(&layout.place(comp.canvas(), &tiles)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        for id in &ids {
            comp.remove_audio(id).unwrap();
            comp.remove_video(&TileId::camera(id)).unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(comp);
            let _ = tx.send(());
        });
        let stopping = Instant::now();
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "round {round}: the composite did not stop within 20 s of a burst of leaves"
        );
        eprintln!("round {round}: stopped in {:?}", stopping.elapsed());
    }
}

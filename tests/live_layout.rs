//! Layout changes on a running recording (library API): grid → speaker → presentation in one
//! file, and room events (spotlight, hard-mute, pause) reaching the composite.

mod support;

use roomcast::job::{record, JobCommand, RecordingSpec};
use roomcast::layout::Layout;
use roomcast::pipeline::{self, Preset};
use roomcast::room::synthetic::SyntheticRoom;
use roomcast::room::{ParticipantId, RoomConnector, RoomEvent, RoomHandle, TrackKind};
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;

const RED: u32 = 0xd02020;
const GREEN: u32 = 0x20a040;
const BLUE: u32 = 0x2040d0;
const PLACEHOLDER: u32 = 0x2a2e35;
const BLACK: u32 = 0x000000;

/// A recording of room `room` (each test its own: jobs of one room in a process share its
/// composite).
fn spec(dir: &std::path::Path, room: &str, layout: &str) -> RecordingSpec {
    RecordingSpec {
        page: None,
        page_layer: false,
        hls: None,
        room_id: room.into(),
        conf_num: "7".into(),
        out_dir: dir.to_path_buf(),
        preset: Preset::resolve("h264-720p30").unwrap(),
        layout: Layout::resolve(layout).unwrap(),
        watermark: None,
        max_duration: None,
        rtmp: Vec::new(),
        record: true,
        first_segment: 1,
        min_free_bytes: 0,
        start_timeout: None,
    }
}

/// Wraps a room so the test can inject moderator events into its stream.
async fn room_with_injector(room: SyntheticRoom) -> (RoomHandle, mpsc::Sender<RoomEvent>) {
    let mut inner = room.connect().await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (out_tx, out_rx) = mpsc::channel(64);
    let mut rx: mpsc::Receiver<RoomEvent> = rx;
    let task = tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                Some(ev) = inner.events.recv() => ev,
                Some(ev) = rx.recv() => ev,
                else => return,
            };
            if out_tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    (
        RoomHandle {
            events: out_rx,
            feeds: Default::default(),
            shown: Default::default(),
            leave: Box::new(move || task.abort()),
        },
        tx,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_changes_live_in_one_file() {
    pipeline::init().unwrap();
    let dir = TempDir::new("live-layout");
    let room = SyntheticRoom::steady(2).connect().await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    let job = tokio::spawn(record(spec(dir.path(), "live", "grid"), room, rx));
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.send(JobCommand::SetLayout(Box::new(
        Layout::resolve("speaker").unwrap(),
    )))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let presentation = Layout::resolve("presentation").unwrap();
    tx.send(JobCommand::SetLayout(Box::new(presentation)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.send(JobCommand::Stop).await.unwrap();
    let rec = job.await.unwrap().unwrap();

    assert_eq!(
        rec.file.as_ref().unwrap().path.file_name().unwrap(),
        "live_7_1.mp4"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "one file for the whole recording");
    let d = rec.file.as_ref().unwrap().duration.mseconds() as f64 / 1000.0;
    assert!((8.5..10.0).contains(&d), "duration {d}");
    let f = |t| frame_at(&rec.file.as_ref().unwrap().path, t, 1280, 720);

    // Grid: Alice left, Bob right.
    let a = f(1.5);
    assert_region(&a, (0, 0, 640, 720), RED, "grid Alice");
    assert_region(&a, (640, 0, 640, 720), GREEN, "grid Bob");
    // Speaker: Alice large on top, Bob in the filmstrip below (256x144 centred).
    let b = f(4.5);
    assert_region(&b, (0, 0, 1280, 576), RED, "speaker Alice");
    assert_region(&b, (512, 576, 256, 144), GREEN, "speaker filmstrip Bob");
    assert_region(
        &b,
        (0, 590, 400, 120),
        BLACK,
        "speaker filmstrip empty left",
    );
    // Presentation without a share: Alice in the large region, Bob in the column.
    let c = f(7.5);
    assert_region(&c, (0, 0, 1024, 720), RED, "presentation Alice");
    assert_region(&c, (1024, 288, 256, 144), GREEN, "presentation column Bob");
    let times = frame_times(&rec.file.as_ref().unwrap().path);
    let worst = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(worst < 1.5 / 30.0, "stall of {worst} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderator_events_reach_the_composite() {
    pipeline::init().unwrap();
    let dir = TempDir::new("moderator");
    let (room, inject) = room_with_injector(SyntheticRoom::steady(3)).await;
    let (tx, rx) = mpsc::channel(8);
    let job = tokio::spawn(record(spec(dir.path(), "mods", "grid"), room, rx));
    let pid = |s: &str| ParticipantId(s.into());
    // Media starts a little after the job does: events land ~2.2 s and ~4.2 s into the file,
    // samples below keep at least 0.6 s from them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Carol spotlighted: first cell. Bob's video hard-muted: placeholder with his name.
    inject
        .send(RoomEvent::Spotlight {
            ids: vec![pid("p3")],
        })
        .await
        .unwrap();
    inject
        .send(RoomEvent::HardMute {
            id: pid("p2"),
            kind: TrackKind::Video,
            muted: true,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Bob moves to a break-out room: gone from the composite.
    inject
        .send(RoomEvent::Paused {
            id: pid("p2"),
            paused: true,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tx.send(JobCommand::Stop).await.unwrap();
    let rec = job.await.unwrap().unwrap();
    let f = |t| frame_at(&rec.file.as_ref().unwrap().path, t, 1280, 720);

    // Sample at half seconds: Alice (the sync reference) flashes white at whole seconds.
    let a = f(1.5);
    assert_region(&a, (0, 0, 640, 360), RED, "before: Alice first");
    assert_region(&a, (640, 0, 640, 360), GREEN, "before: Bob second");
    assert_region(&a, (320, 360, 640, 360), BLUE, "before: Carol third");
    let b = f(3.5);
    assert_region(&b, (0, 0, 640, 360), BLUE, "spotlight: Carol first");
    assert_region(&b, (640, 0, 640, 360), RED, "spotlight: Alice second");
    assert_region(
        &b,
        (320, 360, 640, 360),
        PLACEHOLDER,
        "hard-muted Bob is a placeholder",
    );
    assert!(!frame_has_color(&b, GREEN), "muted video still shown");
    let c = f(5.5);
    assert_region(
        &c,
        (0, 0, 640, 720),
        BLUE,
        "paused Bob gone: Carol left half",
    );
    assert_region(
        &c,
        (640, 0, 640, 720),
        RED,
        "paused Bob gone: Alice right half",
    );

    // Bob's 440 Hz tone is in the mix before the pause and gone after it.
    let pcm = audio_mono(&rec.file.as_ref().unwrap().path, 48_000);
    let amp = |from: f64| tone_amplitude(window(&pcm, 48_000, from, from + 0.5), 440.0, 48_000);
    assert!(amp(1.0) > 0.03, "Bob audible before: {}", amp(1.0));
    assert!(amp(5.0) < 0.005, "Bob silent while paused: {}", amp(5.0));
}

//! An individual recording of a scripted room: which files each publication starts.

use super::*;
use crate::model::manifest::{EventKind, FileKind, Manifest};
use crate::pipeline::source::{TestAudio, TestVideo};
use crate::room::RoomHandle;
use crate::room::{ParticipantId, RoomConnector, RoomEvent, TrackKind, TrackSource};
use crate::Error;
use std::sync::Mutex;
use std::time::Duration;

/// A room that says what it is given, each event at its time.
struct Scripted(Mutex<Vec<(Duration, RoomEvent)>>);

impl RoomConnector for Scripted {
    async fn connect(&self) -> std::result::Result<RoomHandle, Error> {
        let steps = std::mem::take(&mut *self.0.lock().unwrap());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for (at, ev) in steps {
                tokio::time::sleep_until(start + at).await;
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        Ok(RoomHandle {
            events: rx,
            feeds: Default::default(),
            shown: Default::default(),
            leave: Box::new(move || task.abort()),
        })
    }
}

fn camera(name: &str, color: u32) -> Box<dyn TrackSource> {
    Box::new(TestVideo {
        name: name.into(),
        color,
        moving_marker: false,
        flash: false,
        width: 320,
        height: 180,
        fps: 30,
        pattern: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_camera_and_a_screen_share_start_files_of_their_own() {
    crate::pipeline::init().unwrap();
    let id = || ParticipantId("p1".into());
    let ms = Duration::from_millis;
    let script = vec![
        (
            ms(0),
            RoomEvent::ParticipantJoined {
                id: id(),
                display_name: "Ann".into(),
            },
        ),
        (
            ms(0),
            RoomEvent::TrackPublished {
                id: id(),
                kind: TrackKind::Video,
                source: camera("cam1", 0xd02020),
            },
        ),
        (
            ms(0),
            RoomEvent::TrackPublished {
                id: id(),
                kind: TrackKind::Audio,
                source: Box::new(TestAudio {
                    name: "mic".into(),
                    freq: 440.0,
                    volume: 0.2,
                    beep_only: false,
                    silent: false,
                }),
            },
        ),
        (
            ms(1000),
            RoomEvent::TrackUnpublished {
                id: id(),
                kind: TrackKind::Video,
            },
        ),
        (
            ms(1500),
            RoomEvent::TrackPublished {
                id: id(),
                kind: TrackKind::Video,
                source: camera("cam2", 0x20a040),
            },
        ),
        (
            ms(2000),
            RoomEvent::TrackPublished {
                id: id(),
                kind: TrackKind::Screen,
                source: camera("screen", 0x90e0f0),
            },
        ),
        (
            ms(2200),
            RoomEvent::HardMute {
                id: id(),
                kind: TrackKind::Audio,
                muted: true,
            },
        ),
    ];
    let dir = std::env::temp_dir().join(format!(
        "roomcast-individual-unit-{}-{}",
        std::process::id(),
        crate::clock::now_ms()
    ));
    let spec = IndividualSpec {
        dir: dir.clone(),
        room_id: "r".into(),
        conf_num: "1".into(),
        segment: 3,
    };
    let room = Scripted(Mutex::new(script));
    let out = record_individual(&room, &spec, Some(ms(3000)), std::future::pending())
        .await
        .unwrap();
    assert_eq!(out.end, IndividualEnd::Duration);
    assert_eq!(out.folder, dir.join("r_1_3_tracks"));
    let m = &out.manifest;
    let names: Vec<&str> = m.files.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(
        names,
        [
            "p1_video_1.mkv",
            "p1_audio_1.mkv",
            "p1_video_2.mkv",
            "p1_screen_1.mkv"
        ]
    );
    let span = |i: usize| {
        let f = &m.files[i];
        (f.start_ms.unwrap() as i64, f.end_ms.unwrap() as i64)
    };
    let near = |a: i64, b: i64| (a - b).abs() <= 150;
    // The first file's start also holds the building of the room's first track pipeline
    // and encoder, cold: 280–358 ms on a loaded two-core test run. The later files start
    // within 150 ms of their publication.
    let (s, e) = span(0);
    assert!(
        (0..=500).contains(&s) && near(e, 1000),
        "first camera {s}..{e}"
    );
    let (s, e) = span(2);
    assert!(near(s, 1500) && near(e, 3000), "second camera {s}..{e}");
    let (s, e) = span(3);
    assert!(near(s, 2000) && near(e, 3000), "screen {s}..{e}");
    for f in &m.files {
        assert!(
            !f.open && f.frames > 0 && f.bytes > 0 && f.error.is_none(),
            "{f:?}"
        );
        let on_disk = std::fs::metadata(out.folder.join(&f.file)).unwrap().len();
        assert_eq!(on_disk, f.bytes, "{}", f.file);
    }
    assert!(m.files[0].codec.as_deref() == Some("VP8"));
    assert!(m.files[1].codec.as_deref() == Some("OPUS"));
    assert!(m.complete && m.participants.len() == 1);
    assert!(m.events.iter().any(|e| matches!(
        &e.what,
        EventKind::HardMute {
            kind: FileKind::Audio,
            muted: true,
            ..
        }
    ) && (2100..2400).contains(&e.t_ms)));
    // The manifest on disk is the one returned.
    let text = std::fs::read_to_string(&out.manifest_path).unwrap();
    assert_eq!(&Manifest::parse(&text).unwrap(), m);
    let _ = std::fs::remove_dir_all(&dir);
}

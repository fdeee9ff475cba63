//! A synthetic room: scripted participants with generated media, for demos, tests and benches.
//!
//! Every participant shows a distinct solid colour with a moving ball (the marker) and plays a
//! distinct tone. The first participant is the sync reference: silent except for a 2 kHz beep,
//! and its video flashes white, both for 100 ms at the start of every second, so A/V offset in
//! the output can be measured. The demo script has one late joiner, one leaver, one screen share
//! and a change of active talker.

use super::{ParticipantId, RoomConnector, RoomEvent, RoomHandle, TrackKind};
use crate::pipeline::source::MARKER_BEEP_HZ;
pub use crate::pipeline::source::{TestAudio, TestVideo, PALETTE, SCREEN_COLOR};
use std::time::Duration;
use tokio::sync::mpsc;

/// Default synthetic camera size.
pub const CAMERA_SIZE: (u32, u32) = (640, 360);
/// Synthetic screen share size.
pub const SCREEN_SIZE: (u32, u32) = (1280, 720);
/// Synthetic screen share frame rate.
pub const SCREEN_FPS: u32 = 15;

/// Longest the script waits for the recorder to take its first events.
const SCRIPT_START_WAIT: Duration = Duration::from_secs(10);

const NAMES: &[&str] = &[
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan",
];

/// One scripted participant.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticParticipant {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Camera colour 0xRRGGBB.
    pub color: u32,
    /// Tone frequency (Hz); the sync reference beeps at [`MARKER_BEEP_HZ`] instead.
    pub tone_hz: f64,
    /// Flashes and beeps once a second (the A/V sync reference).
    pub sync_reference: bool,
    /// When they join.
    pub join_at: Duration,
    /// When they leave, if they do.
    pub leave_at: Option<Duration>,
    /// When they start sharing their screen, if they do.
    pub screen_share_at: Option<Duration>,
    /// Intervals during which they talk.
    pub talking: Vec<(Duration, Duration)>,
}

/// A scripted room.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticRoom {
    /// Participants in join order.
    pub participants: Vec<SyntheticParticipant>,
    /// Camera width and height.
    pub camera_size: (u32, u32),
    /// Camera frame rate.
    pub fps: u32,
}

fn scale(d: Duration, num: u32, den: u32) -> Duration {
    d * num / den
}

impl SyntheticRoom {
    /// `n` participants present from the start, nobody leaving (benches, previews).
    pub fn steady(n: usize) -> Self {
        SyntheticRoom {
            participants: (0..n)
                .map(|i| Self::participant(i, Duration::ZERO))
                .collect(),
            camera_size: CAMERA_SIZE,
            fps: 30,
        }
    }

    fn participant(i: usize, join_at: Duration) -> SyntheticParticipant {
        SyntheticParticipant {
            id: format!("p{}", i + 1),
            name: NAMES
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("Guest {}", i + 1)),
            color: PALETTE[i % PALETTE.len()],
            tone_hz: 220.0 + 110.0 * (i as f64 + 1.0),
            sync_reference: i == 0,
            join_at,
            leave_at: None,
            screen_share_at: None,
            talking: Vec::new(),
        }
    }

    /// The demo script for `n` participants over `duration` (times given for 15 s):
    /// everyone but the last joins at 0; the last joins at 4 s; the second leaves at 7 s; the
    /// third (the first if fewer than four) shares a screen from 10 s; the first talks until 8 s,
    /// then the late joiner talks.
    pub fn demo(n: usize, duration: Duration) -> Self {
        let n = n.max(1);
        let mut room = Self::steady(n);
        let at = |k: u32| scale(duration, k, 15);
        if n >= 2 {
            room.participants[n - 1].join_at = at(4);
        }
        if n >= 3 {
            room.participants[1].leave_at = Some(at(7));
        }
        let sharer = if n >= 4 { 2 } else { 0 };
        room.participants[sharer].screen_share_at = Some(at(10));
        room.participants[0].talking.push((Duration::ZERO, at(8)));
        if n >= 2 {
            room.participants[n - 1].talking.push((at(8), duration));
        }
        room
    }

    /// A participant reported from outside the script (the platform's join event): colour and
    /// tone chosen by `index`, never the sync reference.
    pub fn guest(index: usize, id: &str, name: &str) -> SyntheticParticipant {
        let mut p = Self::participant(index, Duration::ZERO);
        p.id = id.to_string();
        p.name = name.to_string();
        p.sync_reference = false;
        p
    }

    /// The events of `p` joining with camera and microphone.
    pub fn join_events(&self, p: &SyntheticParticipant) -> Vec<RoomEvent> {
        let id = || ParticipantId(p.id.clone());
        vec![
            RoomEvent::ParticipantJoined {
                id: id(),
                display_name: p.name.clone(),
            },
            RoomEvent::TrackPublished {
                id: id(),
                kind: TrackKind::Video,
                source: Box::new(self.camera(p)),
            },
            RoomEvent::TrackPublished {
                id: id(),
                kind: TrackKind::Audio,
                source: Box::new(self.microphone(p)),
            },
        ]
    }

    /// The camera source of participant `p`.
    pub fn camera(&self, p: &SyntheticParticipant) -> TestVideo {
        TestVideo {
            name: format!("{}_camera", p.id),
            color: p.color,
            moving_marker: true,
            flash: p.sync_reference,
            width: self.camera_size.0,
            height: self.camera_size.1,
            fps: self.fps,
            pattern: None,
        }
    }

    /// The screen-share source of participant `p`.
    pub fn screen(&self, p: &SyntheticParticipant) -> TestVideo {
        TestVideo {
            name: format!("{}_screen", p.id),
            color: SCREEN_COLOR,
            moving_marker: true,
            flash: false,
            width: SCREEN_SIZE.0,
            height: SCREEN_SIZE.1,
            fps: SCREEN_FPS,
            pattern: None,
        }
    }

    /// The microphone source of participant `p`.
    pub fn microphone(&self, p: &SyntheticParticipant) -> TestAudio {
        TestAudio {
            name: format!("{}_mic", p.id),
            freq: if p.sync_reference {
                MARKER_BEEP_HZ
            } else {
                p.tone_hz
            },
            volume: 0.2,
            beep_only: p.sync_reference,
            silent: false,
        }
    }

    /// The script as timed events, in order.
    pub fn timeline(&self) -> Vec<(Duration, RoomEvent)> {
        let mut ev: Vec<(Duration, u8, RoomEvent)> = Vec::new();
        for p in &self.participants {
            let id = || ParticipantId(p.id.clone());
            ev.push((
                p.join_at,
                0,
                RoomEvent::ParticipantJoined {
                    id: id(),
                    display_name: p.name.clone(),
                },
            ));
            ev.push((
                p.join_at,
                1,
                RoomEvent::TrackPublished {
                    id: id(),
                    kind: TrackKind::Video,
                    source: Box::new(self.camera(p)),
                },
            ));
            ev.push((
                p.join_at,
                1,
                RoomEvent::TrackPublished {
                    id: id(),
                    kind: TrackKind::Audio,
                    source: Box::new(self.microphone(p)),
                },
            ));
            if let Some(t) = p.screen_share_at {
                ev.push((
                    t,
                    1,
                    RoomEvent::TrackPublished {
                        id: id(),
                        kind: TrackKind::Screen,
                        source: Box::new(self.screen(p)),
                    },
                ));
            }
            for (from, to) in &p.talking {
                ev.push((
                    *from,
                    2,
                    RoomEvent::Talking {
                        id: id(),
                        talking: true,
                    },
                ));
                ev.push((
                    *to,
                    2,
                    RoomEvent::Talking {
                        id: id(),
                        talking: false,
                    },
                ));
            }
            if let Some(t) = p.leave_at {
                ev.push((t, 3, RoomEvent::ParticipantLeft { id: id() }));
            }
        }
        ev.sort_by_key(|(t, prio, _)| (*t, *prio));
        ev.into_iter().map(|(t, _, e)| (t, e)).collect()
    }
}

impl RoomConnector for SyntheticRoom {
    async fn connect(&self) -> Result<RoomHandle, crate::Error> {
        let board = crate::model::feed::FeedBoard::default();
        let counters = std::sync::Arc::new(FeedCounters::default());
        let counting = counters.clone();
        let timeline = self
            .timeline()
            .into_iter()
            .map(move |(at, event)| (at, counting.count(event)));
        let mut events = timeline.peekable();
        // Everything at time zero is in the channel when `connect` returns, so the recorder
        // builds the room as it is before its media clock starts; the script's clock starts when
        // the recorder has taken those events, so scripted times are times in the recording.
        let mut initial = Vec::new();
        while let Some((_, event)) = events.next_if(|(at, _)| at.is_zero()) {
            initial.push(event);
        }
        let (tx, rx) = mpsc::channel(initial.len().max(64));
        for event in initial {
            // Cannot fail: the channel is new, its receiver alive and it has room for all.
            let _ = tx.try_send(event);
        }
        let feeds = board.clone();
        let task = tokio::spawn(async move {
            let waited = tokio::time::Instant::now();
            while tx.capacity() < tx.max_capacity() && waited.elapsed() < SCRIPT_START_WAIT {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let start = tokio::time::Instant::now();
            let mut report = tokio::time::interval(FEED_REPORT);
            loop {
                let next = events.peek().map(|(at, _)| start + *at);
                tokio::select! {
                    _ = report.tick() => counters.report(&feeds),
                    _ = async { tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)).await }, if next.is_some() => {
                        let Some((_, event)) = events.next() else { continue };
                        if let RoomEvent::ParticipantLeft { id } = &event {
                            counters.forget(&id.0);
                        }
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(RoomHandle {
            events: rx,
            feeds: board,
            shown: Default::default(),
            leave: Box::new(move || task.abort()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_script_shape() {
        let room = SyntheticRoom::demo(4, Duration::from_secs(15));
        let p = &room.participants;
        assert_eq!(p[3].join_at, Duration::from_secs(4));
        assert_eq!(p[1].leave_at, Some(Duration::from_secs(7)));
        assert_eq!(p[2].screen_share_at, Some(Duration::from_secs(10)));
        assert!(p[0].sync_reference && !p[1].sync_reference);
        let tl = room.timeline();
        assert!(tl.windows(2).all(|w| w[0].0 <= w[1].0));
        let leaves = tl
            .iter()
            .filter(|(_, e)| matches!(e, RoomEvent::ParticipantLeft { .. }));
        assert_eq!(leaves.count(), 1);
        let colors: std::collections::HashSet<u32> = p.iter().map(|p| p.color).collect();
        assert_eq!(colors.len(), 4);
    }
}

/// How often a synthetic room reports its tracks' figures.
const FEED_REPORT: Duration = Duration::from_secs(1);

/// What each generated camera and microphone gave the recording, reported as feed health
/// (frames and rate; nothing travels over a network, so there is nothing else to report).
#[derive(Default)]
struct FeedCounters {
    tracks: std::sync::Mutex<Vec<CountedTrack>>,
}

struct CountedTrack {
    participant: String,
    kind: &'static str,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    last: (u64, std::time::Instant),
}

impl FeedCounters {
    /// `event`, its camera or microphone counted.
    fn count(&self, event: RoomEvent) -> RoomEvent {
        let RoomEvent::TrackPublished { id, kind, source } = event else {
            return event;
        };
        let name = match kind {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
            _ => return RoomEvent::TrackPublished { id, kind, source },
        };
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(CountedTrack {
                participant: id.0.clone(),
                kind: name,
                count: count.clone(),
                last: (0, std::time::Instant::now()),
            });
        RoomEvent::TrackPublished {
            id,
            kind,
            source: Box::new(crate::pipeline::source::counted::CountedSource::new(
                source, count,
            )),
        }
    }

    fn forget(&self, participant: &str) {
        self.tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| t.participant != participant);
    }

    fn report(&self, board: &crate::model::feed::FeedBoard) {
        use std::sync::atomic::Ordering;
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let health = tracks
            .iter_mut()
            .map(|t| {
                let frames = t.count.load(Ordering::Relaxed);
                let secs = now.duration_since(t.last.1).as_secs_f64();
                let fps = if secs > 0.0 {
                    frames.saturating_sub(t.last.0) as f64 / secs
                } else {
                    0.0
                };
                t.last = (frames, now);
                crate::model::feed::FeedHealth {
                    participant: t.participant.clone(),
                    kind: t.kind.into(),
                    fps: (fps * 10.0).round() / 10.0,
                    frames,
                    generated: true,
                    ..Default::default()
                }
            })
            .collect();
        *board.lock().unwrap_or_else(|e| e.into_inner()) = health;
    }
}

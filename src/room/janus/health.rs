//! Health of one feed's tracks: webrtcbin's receive counters and the recording's frame counts,
//! turned into [`FeedHealth`] once a second, with a log line when a track degrades or
//! recovers.

use crate::model::feed::{FeedHealth, DEGRADED_LOSS};
use crate::pipeline::source::webrtc::{InboundStats, SlotCounts};
use std::time::Instant;
use tracing::{info, warn};

/// The previous reading of one track.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    frames: u64,
    bytes: u64,
    received: u64,
    lost: u64,
}

/// One track's history.
#[derive(Debug, Default)]
struct Track {
    last: Option<Reading>,
    degraded: bool,
}

/// A feed's audio and video history.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    audio: Track,
    video: Track,
}

impl Tracker {
    /// The health of the feed's tracks now. `stats` may be empty (no answer): the counters
    /// then stay where they were.
    pub(super) fn update(
        &mut self,
        participant: &str,
        stats: &[InboundStats],
        audio: SlotCounts,
        video: SlotCounts,
    ) -> Vec<FeedHealth> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (is_video, track, counts) in [
            (false, &mut self.audio, audio),
            (true, &mut self.video, video),
        ] {
            let Some(s) = stats.iter().find(|s| s.video == is_video) else {
                continue;
            };
            let reading = Reading {
                at: now,
                frames: counts.frames,
                bytes: s.bytes_received,
                received: s.packets_received,
                lost: s.packets_lost,
            };
            let (fps, kbps, loss) = match track.last {
                Some(prev) => {
                    let secs = now.duration_since(prev.at).as_secs_f64().max(0.001);
                    let got = reading.received.saturating_sub(prev.received);
                    let lost = reading.lost.saturating_sub(prev.lost);
                    let loss = if got + lost > 0 {
                        lost as f64 / (got + lost) as f64
                    } else {
                        0.0
                    };
                    (
                        reading.frames.saturating_sub(prev.frames) as f64 / secs,
                        reading.bytes.saturating_sub(prev.bytes) as f64 * 8.0 / 1000.0 / secs,
                        loss,
                    )
                }
                None => (0.0, 0.0, 0.0),
            };
            track.last = Some(reading);
            let frozen = is_video && counts.frozen;
            let degraded = frozen || loss > DEGRADED_LOSS;
            let kind = if is_video { "video" } else { "audio" };
            if degraded != track.degraded {
                track.degraded = degraded;
                if degraded {
                    warn!(
                        participant,
                        kind,
                        frozen,
                        loss_pct = loss * 100.0,
                        fps,
                        "feed degraded"
                    );
                } else {
                    info!(participant, kind, fps, "feed recovered");
                }
            }
            out.push(FeedHealth {
                participant: participant.to_string(),
                kind: kind.to_string(),
                packets_received: s.packets_received,
                packets_lost: s.packets_lost,
                jitter_ms: s.jitter * 1000.0,
                nacks_sent: s.nacks_sent,
                plis_sent: s.plis_sent,
                fps: if counts.shown { fps } else { 0.0 },
                frames: counts.frames,
                bitrate_kbps: kbps,
                freezes: if is_video { counts.freezes } else { 0 },
                frozen,
                degraded,
                layer: None,
                generated: false,
            });
        }
        out
    }
}

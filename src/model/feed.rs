//! Health of the WebRTC tracks a job receives, as the job record, `/metrics` and the logs
//! report it.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// A gap between two decoded video frames longer than this is a freeze.
pub const FREEZE_GAP_MS: u64 = 500;
/// Share of packets lost over one report interval above which a track is degraded.
pub const DEGRADED_LOSS: f64 = 0.05;

/// One received track (a publisher's audio or video).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedHealth {
    /// The publisher (participant id).
    pub participant: String,
    /// `audio` or `video`.
    pub kind: String,
    /// RTP packets received since the subscription started.
    pub packets_received: u64,
    /// RTP packets lost (never received, after retransmission) since it started.
    pub packets_lost: u64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f64,
    /// Retransmission requests (RTCP NACK) sent to the publisher.
    pub nacks_sent: u64,
    /// Keyframe requests (RTCP PLI) sent to the publisher.
    pub plis_sent: u64,
    /// Decoded frames (video) or buffers (audio) per second over the last interval; 0 while no
    /// tile shows the video.
    pub fps: f64,
    /// Frames (video) or buffers (audio) the recording took since the subscription started.
    #[serde(default)]
    pub frames: u64,
    /// Received bitrate over the last interval, kbit/s.
    pub bitrate_kbps: f64,
    /// Times the picture stood still for more than [`FREEZE_GAP_MS`] while shown.
    pub freezes: u64,
    /// No new frame for more than [`FREEZE_GAP_MS`] now, while shown.
    pub frozen: bool,
    /// Frozen, or more than [`DEGRADED_LOSS`] of packets lost over the last interval.
    pub degraded: bool,
    /// The simulcast layer received (0 the smallest), for video whose sender sends several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
    /// Generated where it is recorded (a synthetic room), not received over a network: only
    /// `fps` and `frames` mean something.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
}

/// Someone in the room, as the job sees them (the job record's `people`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Talking now (the platform's or the connector's voice activity).
    #[serde(default)]
    pub talking: bool,
    /// Heard in the mix (publishing audio, not muted, not paused).
    #[serde(default)]
    pub audible: bool,
}

/// The latest health of every track of a room, written by its connector, read by the job.
pub type FeedBoard = Arc<Mutex<Vec<FeedHealth>>>;

/// Whether every track that reached the recording in `earlier` (frames over the last
/// interval) has reached it in `now` too: a job's next run records everyone its previous run
/// recorded.
///
/// Generated tracks do not count: a next run generates them itself, from the same script.
pub fn covers(now: &[FeedHealth], earlier: &[FeedHealth]) -> bool {
    earlier
        .iter()
        .filter(|e| e.fps > 0.0 && !e.generated)
        .all(|e| {
            now.iter()
                .any(|n| n.participant == e.participant && n.kind == e.kind && n.frames > 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(who: &str, kind: &str, fps: f64) -> FeedHealth {
        FeedHealth {
            participant: who.into(),
            kind: kind.into(),
            fps,
            frames: (fps > 0.0) as u64,
            ..Default::default()
        }
    }

    #[test]
    fn a_run_covers_the_tracks_with_frames_only() {
        let earlier = [track("ann", "audio", 50.0), track("bob", "video", 0.0)];
        assert!(!covers(&[], &earlier));
        assert!(!covers(&[track("ann", "audio", 0.0)], &earlier));
        assert!(!covers(&[track("ann", "video", 30.0)], &earlier));
        assert!(covers(&[track("ann", "audio", 49.0)], &earlier));
        assert!(covers(&[], &[track("bob", "video", 0.0)]));
    }
}

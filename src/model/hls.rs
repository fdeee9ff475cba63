//! Live HLS output settings and status (see [`crate::pipeline::hls`]).

use serde::{Deserialize, Serialize};

/// Default segment length, seconds.
pub const DEFAULT_SEGMENT_SECS: f64 = 4.0;
/// Default number of segments a live playlist lists.
pub const DEFAULT_WINDOW: u32 = 6;
/// Shortest and longest segment length accepted, seconds.
pub const SEGMENT_SECS_RANGE: (f64, f64) = (1.0, 30.0);
/// Longest live window accepted, segments.
pub const MAX_WINDOW: u32 = 100;

/// How a job's HLS output is cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HlsSpec {
    /// Target segment length, seconds (a segment ends on the first keyframe at or after it).
    #[serde(default = "default_segment")]
    pub segment_secs: f64,
    /// Segments the live playlist lists (older ones stay in storage and in the VOD playlist).
    #[serde(default = "default_window")]
    pub window: u32,
}

fn default_segment() -> f64 {
    DEFAULT_SEGMENT_SECS
}

fn default_window() -> u32 {
    DEFAULT_WINDOW
}

impl Default for HlsSpec {
    fn default() -> Self {
        HlsSpec {
            segment_secs: DEFAULT_SEGMENT_SECS,
            window: DEFAULT_WINDOW,
        }
    }
}

impl HlsSpec {
    /// Checks the values; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let (lo, hi) = SEGMENT_SECS_RANGE;
        if !self.segment_secs.is_finite() || self.segment_secs < lo || self.segment_secs > hi {
            return Err(format!("hls.segment_secs must be between {lo} and {hi}"));
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            return Err(format!("hls.window must be between 1 and {MAX_WINDOW}"));
        }
        Ok(())
    }
}

/// What an HLS file is, for delivery and webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HlsPart {
    /// The initialization segment.
    Init,
    /// A media segment.
    Segment,
    /// The live playlist.
    Live,
    /// The playlist of the ended output (VOD).
    Ended,
}

/// The HLS output's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HlsState {
    /// Waiting for its first segment.
    Starting,
    /// Segments are being cut.
    Live,
    /// The output ended; the playlist is the VOD one.
    Ended,
}

/// The HLS output in a job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HlsStatus {
    /// State.
    pub state: HlsState,
    /// The playlist's file name.
    pub playlist: String,
    /// Where the playlist is (or goes, with storage configured).
    #[serde(default)]
    pub playlist_url: Option<String>,
    /// The newest segment's file name and where it is (or goes).
    #[serde(default)]
    pub latest_segment: Option<String>,
    /// Its URL.
    #[serde(default)]
    pub latest_segment_url: Option<String>,
    /// Segments cut.
    pub segments: u32,
    /// Seconds of media in them.
    pub duration_s: f64,
    /// How long before the newest playlist was written its newest segment's first frame was
    /// composited (the longest a frame waited to be listed), ms.
    #[serde(default)]
    pub latency_ms: u64,
    /// The longest such wait over the output's playlists, ms (goal: a segment + 1 s).
    #[serde(default)]
    pub max_latency_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_limits() {
        let s: HlsSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(s, HlsSpec::default());
        assert!(s.validate().is_ok());
        let bad: HlsSpec = serde_json::from_str(r#"{"segment_secs": 0.2}"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("segment_secs"));
        let bad: HlsSpec = serde_json::from_str(r#"{"window": 0}"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("window"));
    }
}

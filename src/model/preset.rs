//! Encoder presets: data files in `pipelines/` (built in) or a user's own TOML file.

use crate::codes::Code;
use serde::Deserialize;
use std::path::Path;

/// Why a preset was refused: the field at fault, what is wrong with it, and the I/O error
/// when the preset file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct PresetError {
    /// Field at fault (`preset` for the name or file).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Why the file could not be read, if that was the trouble.
    #[source]
    pub cause: Option<std::io::Error>,
}

impl PresetError {
    fn invalid(field: &str, message: impl Into<String>) -> PresetError {
        PresetError {
            field: field.into(),
            message: message.into(),
            cause: None,
        }
    }

    /// 7017 (record parameters) for a bad preset, 7018 when the file cannot be read.
    pub fn code(&self) -> Code {
        match self.cause {
            None => Code::RecordParamsMissing,
            Some(_) => Code::RecordError,
        }
    }
}

/// Name of the default preset.
pub const DEFAULT_PRESET: &str = "h264-720p30";

/// Built-in presets, by name.
pub const BUILTIN_PRESETS: &[(&str, &str)] = &[
    (
        "h264-720p30",
        include_str!("../../pipelines/h264-720p30.toml"),
    ),
    (
        "h264-1080p30",
        include_str!("../../pipelines/h264-1080p30.toml"),
    ),
    (
        "h264-720p30-portrait",
        include_str!("../../pipelines/h264-720p30-portrait.toml"),
    ),
    (
        "audio-only",
        include_str!("../../pipelines/audio-only.toml"),
    ),
];

/// An encoding preset.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Preset name.
    pub name: String,
    /// Video settings; absent for audio-only output.
    #[serde(default)]
    pub video: Option<VideoPreset>,
    /// Audio settings.
    pub audio: AudioPreset,
}

/// H.264 output settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoPreset {
    /// Output width (even).
    pub width: u32,
    /// Output height (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// x264 speed preset (ultrafast … veryslow).
    pub speed_preset: String,
    /// Frames between keyframes.
    pub keyframe_interval: u32,
    /// H.264 profile (baseline, main, high).
    pub profile: String,
}

/// AAC output settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioPreset {
    /// Bitrate in bit/s.
    pub bitrate: u32,
    /// Sample rate in Hz.
    pub rate: u32,
    /// Channel count (1 or 2).
    pub channels: u32,
}

const SPEED_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];

// The cost model, in cores, calibrated on a 2-vCPU machine:
// - encoding + compositing: `roomcast bench composite` gives 0.21 cores for 2 participants at
//   720p30 and 0.32 at 1080p30, so ENCODE_FIXED + ENCODE_PER_720P30 × (pixel rate / 720p30);
// - each participant adds its tile (9 participants: +0.18 over 2 in the bench, ≈ 0.026 each)
//   and, for real rooms, receiving and decoding its media (4 WebRTC 640×360 30 fps publishers:
//   +0.13 over 4 synthetic ones, ≈ 0.032 each): PER_PARTICIPANT 0.045 with some margin;
// - 720p30 with 4 participants: 0.38 (measured with Janus: 0.32–0.37).
/// Fixed part of a video job's encode (audio mix, muxing, sources).
const ENCODE_FIXED: f64 = 0.1;
/// Encode part that scales with the output pixel rate, at 720p30.
const ENCODE_PER_720P30: f64 = 0.1;
/// Receiving, decoding and compositing one participant.
const PER_PARTICIPANT: f64 = 0.045;
/// Fixed cost of an audio-only job.
const AUDIO_ONLY_FIXED: f64 = 0.05;
/// Per participant in an audio-only job (Opus decode and mix).
const AUDIO_ONLY_PER_PARTICIPANT: f64 = 0.01;
/// Participants assumed while the count is unknown (a full 3×3 grid).
pub const ASSUMED_PARTICIPANTS: usize = 9;
/// Extra cost per RTMP destination (its own mux and network pipeline).
pub const COST_PER_RTMP: f64 = 0.03;
/// What one job's outputs cost when they are fed from another job's composite and encode
/// (its MP4 or HLS muxing; RTMP destinations add [`COST_PER_RTMP`] each): `roomcast bench
/// live --shared` measures recording + streaming of one room at 1.0x-1.1x the recording alone.
pub const SHARED_OUTPUT_COST: f64 = 0.02;
/// The smallest video job (720p30, one participant): a worker with less free budget than
/// this does not take more work.
pub const MIN_VIDEO_JOB_COST: f64 = ENCODE_FIXED + ENCODE_PER_720P30 + PER_PARTICIPANT;

impl Preset {
    /// Estimated CPU cores a live job with this preset needs for `participants` people
    /// ([`ASSUMED_PARTICIPANTS`] when unknown): an encode part that scales with the output
    /// pixel rate, a part per participant, and a part per RTMP destination.
    pub fn estimated_cost(&self, rtmp_destinations: usize, participants: Option<usize>) -> f64 {
        let n = participants.unwrap_or(ASSUMED_PARTICIPANTS).max(1) as f64;
        let base = match &self.video {
            None => AUDIO_ONLY_FIXED + AUDIO_ONLY_PER_PARTICIPANT * n,
            Some(v) => {
                let rate = v.width as f64 * v.height as f64 * v.fps as f64;
                let ref_rate = 1280.0 * 720.0 * 30.0;
                ENCODE_FIXED + ENCODE_PER_720P30 * rate / ref_rate + PER_PARTICIPANT * n
            }
        };
        base + COST_PER_RTMP * rtmp_destinations as f64
    }

    /// Estimated CPU cores of a job's own outputs when another job of the room pays for the
    /// composite and the encode ([`SHARED_OUTPUT_COST`] and the RTMP destinations).
    pub fn output_cost(&self, rtmp_destinations: usize) -> f64 {
        SHARED_OUTPUT_COST + COST_PER_RTMP * rtmp_destinations as f64
    }

    /// A built-in preset name or a path to a TOML preset file.
    pub fn resolve(spec: &str) -> Result<Preset, PresetError> {
        let text = match BUILTIN_PRESETS.iter().find(|(n, _)| *n == spec) {
            Some((_, text)) => text.to_string(),
            None if Path::new(spec).is_file() => {
                std::fs::read_to_string(spec).map_err(|e| PresetError {
                    cause: Some(e),
                    ..PresetError::invalid("preset", format!("{spec:?} could not be read"))
                })?
            }
            None => {
                let names: Vec<&str> = BUILTIN_PRESETS.iter().map(|(n, _)| *n).collect();
                return Err(PresetError::invalid(
                    "preset",
                    format!(
                        "unknown preset {spec:?}: expected one of {} or a .toml file",
                        names.join(", ")
                    ),
                ));
            }
        };
        let preset: Preset =
            toml::from_str(&text).map_err(|e| PresetError::invalid("preset", e.message()))?;
        preset.validate()?;
        Ok(preset)
    }

    fn validate(&self) -> Result<(), PresetError> {
        let bad = PresetError::invalid;
        if let Some(v) = &self.video {
            if v.width < 16 || v.height < 16 || v.width > 3840 || v.height > 3840 {
                return Err(bad("video.width", "width and height must be 16..3840"));
            }
            if v.width % 2 != 0 || v.height % 2 != 0 {
                return Err(bad("video.width", "width and height must be even"));
            }
            if !(1..=60).contains(&v.fps) {
                return Err(bad("video.fps", "must be 1..60"));
            }
            if !(100..=50_000).contains(&v.bitrate_kbps) {
                return Err(bad("video.bitrate_kbps", "must be 100..50000"));
            }
            if !SPEED_PRESETS.contains(&v.speed_preset.as_str()) {
                return Err(bad("video.speed_preset", "not an x264 speed preset"));
            }
            if !["baseline", "main", "high"].contains(&v.profile.as_str()) {
                return Err(bad("video.profile", "must be baseline, main or high"));
            }
            if v.keyframe_interval == 0 {
                return Err(bad("video.keyframe_interval", "must be at least 1"));
            }
        }
        let a = &self.audio;
        if ![8000, 16000, 24000, 32000, 44100, 48000].contains(&a.rate) {
            return Err(bad(
                "audio.rate",
                "must be 8000, 16000, 24000, 32000, 44100 or 48000",
            ));
        }
        if !(1..=2).contains(&a.channels) {
            return Err(bad("audio.channels", "must be 1 or 2"));
        }
        if !(32_000..=320_000).contains(&a.bitrate) {
            return Err(bad("audio.bitrate", "must be 32000..320000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid() {
        for (name, _) in BUILTIN_PRESETS {
            let p = Preset::resolve(name).unwrap();
            assert_eq!(&p.name, name);
        }
        let p = Preset::resolve(DEFAULT_PRESET).unwrap();
        let v = p.video.unwrap();
        assert_eq!(
            (v.width, v.height, v.fps, v.bitrate_kbps),
            (1280, 720, 30, 3000)
        );
        assert_eq!((p.audio.bitrate, p.audio.rate), (128_000, 48_000));
        assert!(Preset::resolve("audio-only").unwrap().video.is_none());
    }

    #[test]
    fn cost_follows_preset_participants_and_destinations() {
        let hd = Preset::resolve("h264-720p30").unwrap();
        let cost = |p: &Preset, rtmp, n| p.estimated_cost(rtmp, n);
        assert!((cost(&hd, 0, Some(1)) - MIN_VIDEO_JOB_COST).abs() < 1e-9);
        assert!((cost(&hd, 0, Some(4)) - 0.38).abs() < 1e-9);
        // Unknown: a full grid.
        assert!((cost(&hd, 0, None) - cost(&hd, 0, Some(ASSUMED_PARTICIPANTS))).abs() < 1e-9);
        assert!(cost(&hd, 0, Some(0)) == cost(&hd, 0, Some(1)));
        assert!((cost(&hd, 3, Some(4)) - cost(&hd, 0, Some(4)) - 3.0 * COST_PER_RTMP).abs() < 1e-9);
        let full = Preset::resolve("h264-1080p30").unwrap();
        assert!(cost(&full, 0, Some(4)) > cost(&hd, 0, Some(4)));
        let audio = Preset::resolve("audio-only").unwrap();
        assert!(cost(&audio, 0, Some(9)) < MIN_VIDEO_JOB_COST);
    }

    #[test]
    fn errors_name_the_field() {
        let e = Preset::resolve("8k").unwrap_err();
        assert!(e.to_string().contains("h264-720p30"));
        let dir = std::env::temp_dir().join(format!("roomcast-preset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.toml");
        let text = include_str!("../../pipelines/h264-720p30.toml").replace("1280", "1281");
        std::fs::write(&p, text).unwrap();
        let e = Preset::resolve(p.to_str().unwrap()).unwrap_err();
        assert_eq!(e.field, "video.width");
        std::fs::remove_dir_all(&dir).ok();
    }
}

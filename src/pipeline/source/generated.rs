//! Generated sources: synthetic participants, placeholders, background and silence.
//!
//! Each returns a bin with one `src` ghost pad, timestamped in pipeline running time from
//! [`SourceContext::start`], live or offline as the context says.

use super::{SourceContext, Timing, TrackSource};
use crate::pipeline::{element_safe, expose, make, raw_video_caps, PipelineError};
use gst::prelude::*;

/// Period of the sync marker (flash + beep).
pub const MARKER_PERIOD: gst::ClockTime = gst::ClockTime::SECOND;
/// How long each flash / beep lasts.
pub const MARKER_LENGTH: gst::ClockTime = gst::ClockTime::from_mseconds(100);
/// Frequency of the sync beep, Hz.
pub const MARKER_BEEP_HZ: f64 = 2000.0;
/// Samples per generated audio buffer (20 ms at 48 kHz).
const AUDIO_SAMPLES_PER_BUFFER: i32 = 960;
/// Sample rate of generated audio.
pub const AUDIO_RATE: i32 = 48_000;
/// Participant colours (0xRRGGBB), in join order.
pub const PALETTE: &[u32] = &[
    0xd02020, // red
    0x20a040, // green
    0x2040d0, // blue
    0xd0b020, // yellow
    0xa020c0, // purple
    0x20b0b0, // teal
    0xe07020, // orange
    0xe060a0, // pink
    0x80c040, // lime
];
/// Colour of synthetic screen shares.
pub const SCREEN_COLOR: u32 = 0x90e0f0;

/// A generated video track.
#[derive(Debug, Clone)]
pub struct TestVideo {
    /// Name used for element names.
    pub name: String,
    /// Solid colour 0xRRGGBB.
    pub color: u32,
    /// Draw a moving ball (the marker) over the colour.
    pub moving_marker: bool,
    /// Flash the whole frame white for [`MARKER_LENGTH`] once every [`MARKER_PERIOD`].
    pub flash: bool,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// A `videotestsrc` pattern (e.g. "smpte", "ball") instead of the solid colour.
    pub pattern: Option<String>,
}

/// A generated audio track.
#[derive(Debug, Clone)]
pub struct TestAudio {
    /// Name used for element names.
    pub name: String,
    /// Tone frequency, Hz.
    pub freq: f64,
    /// Volume 0..1.
    pub volume: f64,
    /// Sound only for [`MARKER_LENGTH`] once every [`MARKER_PERIOD`] (the sync beep).
    pub beep_only: bool,
    /// Silence instead of a tone.
    pub silent: bool,
}

fn offset_ns(ctx: &SourceContext) -> i64 {
    i64::try_from(ctx.start.nseconds()).unwrap_or(i64::MAX)
}

fn buffers_for(ctx: &SourceContext, per_second: f64) -> Option<i32> {
    match ctx.timing {
        Timing::Live => None,
        Timing::Offline { duration } => {
            let n = (duration.nseconds() as f64 / 1e9 * per_second).round();
            Some(n.clamp(1.0, i32::MAX as f64) as i32)
        }
    }
}

fn in_marker(t: gst::ClockTime) -> bool {
    t.nseconds() % MARKER_PERIOD.nseconds() < MARKER_LENGTH.nseconds()
}

/// Paints into I420 frames with GStreamer's default strides: a Y plane of
/// `round_up_4(width)` × height bytes, then U and V planes of `round_up_4(width / 2)` × height / 2.
#[derive(Debug, Clone, Copy)]
struct FramePainter {
    width: usize,
    height: usize,
    y_stride: usize,
}

/// Side of the moving marker square, pixels.
const MARKER_SIZE: usize = 24;

impl FramePainter {
    fn new(width: usize, height: usize) -> Self {
        FramePainter {
            width,
            height,
            y_stride: (width + 3) & !3,
        }
    }

    fn fill_white(&self, data: &mut [u8]) {
        let split = (self.y_stride * self.height).min(data.len());
        data[..split].fill(235);
        data[split..].fill(128);
    }

    /// A dark square that crosses the frame left to right every four seconds, near the top.
    fn marker(&self, data: &mut [u8], pts: gst::ClockTime) {
        if self.width <= MARKER_SIZE * 2 || self.height <= MARKER_SIZE * 2 {
            return;
        }
        let span = self.width - MARKER_SIZE;
        let x = ((pts.mseconds() % 4000) as usize * span / 4000) & !1;
        let y = MARKER_SIZE;
        for row in y..y + MARKER_SIZE {
            let start = row * self.y_stride + x;
            if let Some(line) = data.get_mut(start..start + MARKER_SIZE) {
                line.fill(24);
            }
        }
    }
}

fn ghost_bin(name: &str, elements: &[&gst::Element]) -> Result<gst::Element, PipelineError> {
    let bin = gst::Bin::builder().name(name).build();
    bin.add_many(elements).map_err(PipelineError::setup)?;
    gst::Element::link_many(elements).map_err(PipelineError::setup)?;
    let last = elements
        .last()
        .ok_or_else(|| PipelineError::setup("empty bin"))?;
    expose(&bin, last, "src")?;
    Ok(bin.upcast())
}

/// Builds a generated video source.
pub fn test_video(spec: &TestVideo, ctx: &SourceContext) -> Result<gst::Element, PipelineError> {
    let n = element_safe(&spec.name);
    let src = make("videotestsrc", &format!("vsrc_{n}"))?;
    src.set_property("is-live", ctx.timing == Timing::Live);
    // Frames on the running-time grid of their rate (as the composite's are), so that a flash
    // due at a whole second is the frame shown at that second, whenever the source started.
    let fps = u128::from(spec.fps.max(1));
    let first = (u128::from(ctx.start.nseconds()) * fps).div_ceil(1_000_000_000);
    let start = first * 1_000_000_000 / fps;
    src.set_property("timestamp-offset", i64::try_from(start).unwrap_or(i64::MAX));
    match &spec.pattern {
        Some(p) => src.set_property_from_str("pattern", p),
        None => {
            src.set_property_from_str("pattern", "solid-color");
            src.set_property("foreground-color", 0xff00_0000 | spec.color);
        }
    }
    if let Some(nb) = buffers_for(ctx, spec.fps as f64) {
        src.set_property("num-buffers", nb);
    }
    let caps = make("capsfilter", &format!("vsrc_caps_{n}"))?;
    caps.set_property(
        "caps",
        raw_video_caps(spec.width, spec.height, Some(spec.fps)),
    );
    if spec.flash || spec.moving_marker {
        let painter = FramePainter::new(spec.width as usize, spec.height as usize);
        let (flash, marker) = (spec.flash, spec.moving_marker);
        paint(&caps, move |data, pts| {
            // (A frame's time on the grid may be rounded down by a nanosecond or so.)
            if flash && in_marker(pts + gst::ClockTime::from_mseconds(1)) {
                painter.fill_white(data);
            } else if marker {
                painter.marker(data, pts);
            }
        })?;
    }
    ghost_bin(&format!("video_src_{n}"), &[&src, &caps])
}

/// Rewrites every buffer leaving `element`'s src pad in place: `f` gets the writable data and
/// the buffer's timestamp (buffers without one pass untouched).
fn paint(
    element: &gst::Element,
    f: impl Fn(&mut [u8], gst::ClockTime) + Send + Sync + 'static,
) -> Result<(), PipelineError> {
    let pad = element
        .static_pad("src")
        .ok_or_else(|| PipelineError::setup("caps src"))?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(ref mut buffer)) = info.data {
            if let Some(pts) = buffer.pts() {
                if let Ok(mut map) = buffer.make_mut().map_writable() {
                    f(map.as_mut_slice(), pts);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Builds a generated audio source (S16LE, 48 kHz, stereo).
pub fn test_audio(spec: &TestAudio, ctx: &SourceContext) -> Result<gst::Element, PipelineError> {
    let n = element_safe(&spec.name);
    let src = make("audiotestsrc", &format!("asrc_{n}"))?;
    src.set_property("is-live", ctx.timing == Timing::Live);
    src.set_property("timestamp-offset", offset_ns(ctx));
    src.set_property("samplesperbuffer", AUDIO_SAMPLES_PER_BUFFER);
    if spec.silent {
        src.set_property_from_str("wave", "silence");
    } else {
        src.set_property("freq", spec.freq);
        src.set_property("volume", spec.volume);
    }
    if let Some(nb) = buffers_for(ctx, AUDIO_RATE as f64 / AUDIO_SAMPLES_PER_BUFFER as f64) {
        src.set_property("num-buffers", nb);
    }
    let caps = make("capsfilter", &format!("asrc_caps_{n}"))?;
    caps.set_property("caps", super::raw_audio_caps());
    if spec.beep_only {
        paint(&caps, |data, pts| {
            // 4 bytes per stereo S16 frame.
            for (i, frame) in data.chunks_exact_mut(4).enumerate() {
                let t = pts
                    + gst::ClockTime::from_nseconds(i as u64 * 1_000_000_000 / AUDIO_RATE as u64);
                if !in_marker(t) {
                    frame.fill(0);
                }
            }
        })?;
    }
    ghost_bin(&format!("audio_src_{n}"), &[&src, &caps])
}

/// Bits per second a generated track is sent at, by picture size (what a browser sends for
/// a camera and a screen share).
fn sent_bitrate(width: u32, height: u32) -> u32 {
    if width * height > 640 * 360 {
        1_200_000
    } else {
        500_000
    }
}

/// A generated video track as its sender would send it: VP8, real-time encoder settings
/// (no look-ahead, a keyframe every two seconds).
pub fn test_video_encoded(
    spec: &TestVideo,
    ctx: &SourceContext,
) -> Result<gst::Element, PipelineError> {
    let n = element_safe(&spec.name);
    let raw = test_video(spec, ctx)?;
    let enc = make("vp8enc", &format!("venc_{n}"))?;
    enc.set_property("deadline", 1i64);
    enc.set_property("cpu-used", 8i32);
    enc.set_property("lag-in-frames", 0i32);
    enc.set_property("threads", 1i32);
    enc.set_property("keyframe-max-dist", (spec.fps * 2) as i32);
    enc.set_property(
        "target-bitrate",
        sent_bitrate(spec.width, spec.height) as i32,
    );
    enc.set_property_from_str("end-usage", "cbr");
    ghost_bin(&format!("video_sent_{n}"), &[&raw, &enc])
}

/// A generated audio track as its sender would send it: Opus, 20 ms frames.
pub fn test_audio_encoded(
    spec: &TestAudio,
    ctx: &SourceContext,
) -> Result<gst::Element, PipelineError> {
    let n = element_safe(&spec.name);
    let raw = test_audio(spec, ctx)?;
    let enc = make("opusenc", &format!("aenc_{n}"))?;
    enc.set_property("bitrate", 32_000i32);
    ghost_bin(&format!("audio_sent_{n}"), &[&raw, &enc])
}

impl TrackSource for TestVideo {
    fn build(&self, ctx: &SourceContext) -> Result<gst::Element, PipelineError> {
        test_video(self, ctx)
    }

    fn build_encoded(&self, ctx: &SourceContext) -> Result<Option<gst::Element>, PipelineError> {
        test_video_encoded(self, ctx).map(Some)
    }
}

impl TrackSource for TestAudio {
    fn build(&self, ctx: &SourceContext) -> Result<gst::Element, PipelineError> {
        test_audio(self, ctx)
    }

    fn build_encoded(&self, ctx: &SourceContext) -> Result<Option<gst::Element>, PipelineError> {
        test_audio_encoded(self, ctx).map(Some)
    }
}

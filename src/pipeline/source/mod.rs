//! Track sources: what produces one participant's raw audio or video inside the composite.
//!
//! [`TrackSource`] is the seam rooms hand to the pipeline: [`generated`] media (synthetic
//! participants, placeholders, silence) and [`webrtc`] feeds (one subscribed publisher in its
//! own webrtcbin pipeline, bridged in through appsrc). Rooms decide *which* tracks exist; only
//! this module builds their elements.

pub mod counted;
pub mod file;
pub mod generated;
pub mod retime;
pub mod webrtc;

pub use generated::{
    test_audio, test_video, TestAudio, TestVideo, AUDIO_RATE, MARKER_BEEP_HZ, MARKER_LENGTH,
    MARKER_PERIOD, PALETTE, SCREEN_COLOR,
};

use super::PipelineError;
use std::fmt;

/// Raw audio as every source gives it to the mix: S16LE, interleaved, 48 kHz, stereo.
pub fn raw_audio_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("layout", "interleaved")
        .field("rate", AUDIO_RATE)
        .field("channels", 2i32)
        .build()
}

/// How the pipeline runs sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Real time, against the pipeline clock; sources may be added while running.
    Live,
    /// As fast as possible, every source producing exactly `duration`.
    Offline {
        /// Media duration each source produces.
        duration: gst::ClockTime,
    },
}

/// What a source needs to know when it is built.
#[derive(Debug, Clone, Copy)]
pub struct SourceContext {
    /// Live or offline.
    pub timing: Timing,
    /// Pipeline running time at which the source's first buffer belongs.
    pub start: gst::ClockTime,
}

/// Something that builds the GStreamer element producing one track: a bin (or element) with a
/// single `src` pad giving raw video or raw audio, timestamped in the pipeline's running time.
pub trait TrackSource: Send + Sync + fmt::Debug {
    /// Builds the element. Called on the job's pipeline thread, never on a streaming thread.
    fn build(&self, ctx: &SourceContext) -> Result<gst::Element, PipelineError>;

    /// The element built last was taken out of the pipeline (its tile left the screen): stop
    /// spending anything on the track until the next [`TrackSource::build`].
    fn release(&self) {}

    /// Builds the element giving the track still encoded, as it travels between a sender and
    /// the room (depayloaded VP8/VP9/H.264 or Opus, nothing decoded): what an individual
    /// recording keeps. One `src` pad; running time of a pipeline on the system clock whose
    /// base time `ctx` was made for. `None` when the source has no encoded form.
    fn build_encoded(&self, _ctx: &SourceContext) -> Result<Option<gst::Element>, PipelineError> {
        Ok(None)
    }

    /// The element [`TrackSource::build_encoded`] built last was taken out of its pipeline.
    fn release_encoded(&self) {}
}

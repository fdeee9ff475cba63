//! The media pipeline: GStreamer lives here and nowhere else. It depends only on `model`,
//! `layout`, `codes` and `util` — never on rooms, jobs, the queue, the worker or the API, which
//! hand it data (presets, slots, [`source::TrackSource`]s) and read back events.
//!
//! ```text
//!  background (colour/image) ─────────────────┐
//!  tile: src ─ queue ─ convert ─ box ─ scale ─ caps ─ label ─┤ compositor ─ caps ─ page overlay ─ [watermark] ─ queue ─ x264enc ─ h264parse ─┐
//!  tile: …                                      ┘                                                                    │
//!  silence ────────────────────────────────────┐                                                                     ├─ mp4mux (fragmented) ─ filesink
//!  audio: src ─ queue ─ convert ─ resample ─ caps ─┤ audiomixer ─ convert ─ caps ─ queue ─ avenc_aac ─ aacparse ─────┘
//! ```
//!
//! Tiles and audio inputs are added and removed while the pipeline plays; a layout change moves
//! and resizes tiles in place. The MP4 is written fragmented (one fragment a second) so a killed
//! process leaves a playable file, and a graceful stop rewrites it as a normal MP4 with the index
//! at the front ([`mp4::finalize`]).

pub mod blend;
pub(crate) mod bridge;
pub mod bus;
pub mod composite;
pub mod gate;
pub mod hls;
pub mod individual;
pub mod isobmff;
pub mod mp4;
pub mod page;

pub mod preview;
pub mod recorder;
pub mod rtmp;
pub mod snapshot;
pub mod source;
pub(crate) mod tap;

pub use crate::model::preset::{self, Preset};
pub use composite::{Composite, CompositeOptions};

use crate::codes::Code;

/// A failure in the media pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An element could not be created (plugin missing).
    #[error("GStreamer element {factory:?} is not available: {reason}")]
    MissingElement {
        /// Factory name.
        factory: String,
        /// Cause.
        reason: String,
    },
    /// Elements could not be linked or a state change failed.
    #[error("pipeline setup failed: {0}")]
    Setup(String),
    /// An element reported an error while running.
    #[error("element {element} failed: {message}")]
    Runtime {
        /// Element that posted the error.
        element: String,
        /// Its message and debug text.
        message: String,
    },
    /// The pipeline did not finish within the allowed time.
    #[error("pipeline did not {what} within {secs} s")]
    Timeout {
        /// What it was doing.
        what: &'static str,
        /// Limit.
        secs: u64,
    },
    /// Bad preset or watermark input.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// File I/O around the recording.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause (shown in the message, not chained, so it is printed once).
        cause: std::io::Error,
    },
}

impl PipelineError {
    /// The platform code for this failure.
    pub fn code(&self) -> Code {
        match self {
            PipelineError::Invalid { .. } => Code::RecordParamsMissing,
            PipelineError::Timeout { .. } => Code::RecordStopTimedOut,
            _ => Code::RecordError,
        }
    }

    pub(crate) fn setup(e: impl std::fmt::Display) -> Self {
        PipelineError::Setup(e.to_string())
    }
}

/// Creates an element, naming it `name`.
pub(crate) fn make(factory: &str, name: &str) -> Result<gst::Element, PipelineError> {
    create(factory, Some(name))
}

/// Creates an element with a name of GStreamer's choosing (elements made in numbers inside
/// a feed's or a file's own bin, where names route no error).
pub(crate) fn make_unnamed(factory: &str) -> Result<gst::Element, PipelineError> {
    create(factory, None)
}

fn create(factory: &str, name: Option<&str>) -> Result<gst::Element, PipelineError> {
    let mut builder = gst::ElementFactory::make(factory);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    builder.build().map_err(|e| PipelineError::MissingElement {
        factory: factory.to_string(),
        reason: e.to_string(),
    })
}

/// Colorimetry of every raw video frame in the composite. All inputs, the background and the
/// output agree, so the compositor blends without converting (a pad whose colorimetry differs
/// is converted frame by frame, a full-canvas cost for the background).
pub const COLORIMETRY: &str = "bt601";
/// Chroma siting matching [`COLORIMETRY`] as `videotestsrc` and most decoders produce it.
pub const CHROMA_SITE: &str = "jpeg";

/// Raw I420 video caps at `width`×`height` (and `fps` if given) in the composite's colorimetry.
pub fn raw_video_caps(width: u32, height: u32, fps: Option<u32>) -> gst::Caps {
    let mut b = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .field("colorimetry", COLORIMETRY)
        .field("chroma-site", CHROMA_SITE);
    if let Some(fps) = fps {
        b = b.field("framerate", gst::Fraction::new(fps as i32, 1));
    }
    b.build()
}

/// Exposes `element`'s static pad `pad` on `bin` under the same name.
pub(crate) fn expose(
    bin: &gst::Bin,
    element: &gst::Element,
    pad: &str,
) -> Result<gst::GhostPad, PipelineError> {
    use gst::prelude::*;
    let target = element
        .static_pad(pad)
        .ok_or_else(|| PipelineError::Setup(format!("{} has no {pad} pad", element.name())))?;
    let ghost = gst::GhostPad::builder_with_target(&target)
        .map_err(PipelineError::setup)?
        .name(pad)
        .build();
    bin.add_pad(&ghost).map_err(PipelineError::setup)?;
    Ok(ghost)
}

/// Makes a name safe to embed in an element name.
pub(crate) fn element_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Initialises GStreamer once and checks the elements roomcast needs.
pub fn init() -> Result<(), PipelineError> {
    gst::init().map_err(PipelineError::setup)?;
    for f in [
        "compositor",
        "audiomixer",
        "videotestsrc",
        "audiotestsrc",
        "videoconvert",
        "videoscale",
        "videobox",
        "textoverlay",
        "x264enc",
        "h264parse",
        "avenc_aac",
        "aacparse",
        "mp4mux",
        "qtdemux",
    ] {
        if gst::ElementFactory::find(f).is_none() {
            return Err(PipelineError::MissingElement {
                factory: f.to_string(),
                reason: "plugin not installed (run `make setup`)".into(),
            });
        }
    }
    Ok(())
}

/// `pipeline`'s running time now, by its clock (zero before it runs).
pub(crate) fn running_time_now(pipeline: &gst::Pipeline) -> gst::ClockTime {
    use gst::prelude::*;
    pipeline
        .clock()
        .map(|c| c.time())
        .zip(pipeline.base_time())
        .map_or(gst::ClockTime::ZERO, |(t, b)| t.saturating_sub(b))
}

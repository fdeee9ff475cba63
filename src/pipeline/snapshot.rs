//! Pictures of what a composite records, for people to look at while it runs: the console's
//! thumbnail of each job. A probe on the composed picture keeps a reference to the latest frame
//! (no copy, no conversion on the streaming thread); [`jpeg`] turns it into a small JPEG when
//! someone asks, off the streaming thread.

use super::{make, PipelineError};
use gst::prelude::*;
use std::sync::{Arc, Mutex};

/// The latest composed frame, for whoever takes it.
#[derive(Clone, Default)]
pub struct FrameTap {
    latest: Arc<Mutex<Option<gst::Sample>>>,
}

impl FrameTap {
    /// Watches the raw frames leaving `pad` (the composed picture, before the encoder). Each
    /// frame replaces the one kept before: a reference, no copy (the encoder only reads it).
    pub fn install(pad: &gst::Pad) -> FrameTap {
        let tap = FrameTap::default();
        let slot = tap.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let (Some(buffer), Some(caps)) = (info.buffer(), pad.current_caps()) {
                slot.keep(buffer, &caps);
            }
            gst::PadProbeReturn::Ok
        });
        tap
    }

    /// Keeps `buffer` as the latest frame (what the probe does for each frame).
    pub fn keep(&self, buffer: &gst::Buffer, caps: &gst::Caps) {
        let sample = gst::Sample::builder().buffer(buffer).caps(caps).build();
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(sample);
    }

    /// Takes the latest frame (None until a new frame came since the last take).
    pub fn take(&self) -> Option<gst::Sample> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Encodes `frame` as a JPEG `width` pixels wide (height in proportion, even), quality 75.
/// Blocking: a few milliseconds for a 720p frame.
pub fn jpeg(frame: &gst::Sample, width: u32) -> Result<Vec<u8>, PipelineError> {
    let caps = frame
        .caps_owned()
        .ok_or_else(|| PipelineError::setup("a frame without caps"))?;
    let info = gst_video::VideoInfo::from_caps(&caps).map_err(PipelineError::setup)?;
    let width = width.clamp(16, info.width().max(16)) & !1;
    let height = ((u64::from(info.height()) * u64::from(width) / u64::from(info.width().max(1)))
        as u32)
        .max(2)
        & !1;
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let scale = make("videoscale", "snapshot_scale")?;
    let convert = make("videoconvert", "snapshot_convert")?;
    let size = make("capsfilter", "snapshot_size")?;
    size.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let enc = make("jpegenc", "snapshot_jpeg")?;
    enc.set_property("quality", 75i32);
    let sink = gst_app::AppSink::builder().sync(false).build();
    let chain = [
        src.upcast_ref(),
        &scale,
        &convert,
        &size,
        &enc,
        sink.upcast_ref(),
    ];
    pipeline.add_many(chain).map_err(PipelineError::setup)?;
    gst::Element::link_many(chain).map_err(PipelineError::setup)?;
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(PipelineError::setup)?;
        let buffer = frame
            .buffer_owned()
            .ok_or_else(|| PipelineError::setup("a frame without data"))?;
        src.push_buffer(buffer).map_err(PipelineError::setup)?;
        src.end_of_stream().map_err(PipelineError::setup)?;
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(5))
            .ok_or(PipelineError::Timeout {
                what: "encode a snapshot",
                secs: 5,
            })?;
        let data = sample
            .buffer()
            .and_then(|b| b.map_readable().ok().map(|m| m.to_vec()))
            .ok_or_else(|| PipelineError::setup("an empty snapshot"))?;
        Ok(data)
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

//! Taps on a running composite's encoders: every encoded sample handed to a callback, for
//! the outputs that live outside the composite's pipeline (RTMP destinations, live HLS, a
//! recording that joined a running composite), and what they share: running-time rebasing,
//! the AAC priming delay and keyframe requests.

use super::{bridge, expose, make, PipelineError};
use gst::prelude::*;
use std::sync::Arc;

/// How much encoded media a tap queues before dropping the oldest.
const TAP_QUEUE: gst::ClockTime = gst::ClockTime::from_seconds(2);

/// `sample`'s buffer with its times made running times counted from `base` (a running time),
/// then placed `offset` later. The encoders stamp their output in segments of their own (a
/// video encoder's starts 1000 hours in), so only running times put audio and video on one
/// line.
pub(crate) fn rebase(
    sample: &gst::Sample,
    base: gst::ClockTime,
    offset: gst::ClockTime,
) -> Option<gst::Buffer> {
    let buffer = sample.buffer()?;
    let pts = bridge::running_time(sample, buffer.pts()?);
    if pts < base {
        return None;
    }
    let mut out = buffer.copy();
    {
        let b = out.make_mut();
        b.set_pts(pts - base + offset);
        b.set_dts(
            buffer
                .dts()
                .map(|d| bridge::running_time(sample, d).saturating_sub(base) + offset),
        );
    }
    Some(out)
}

/// The AAC encoder's priming delay at the rate `pipeline`'s audio is encoded at.
pub(crate) fn priming(pipeline: &gst::Pipeline) -> gst::ClockTime {
    let rate = pipeline
        .by_name("audio_tee")
        .and_then(|t| t.static_pad("sink"))
        .and_then(|p| p.current_caps())
        .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("rate").ok()))
        .filter(|r| *r > 0)
        .unwrap_or(48_000);
    gst::ClockTime::from_nseconds(super::mp4::AAC_PRIMING_SAMPLES * 1_000_000_000 / rate as u64)
}

/// One tee's tap: a leaky queue and an appsink in a bin on a request pad of the tee.
pub(crate) struct TapBranch {
    tee: gst::Element,
    tee_pad: gst::Pad,
    bin: gst::Element,
}

impl TapBranch {
    /// Removes the branch from `pipeline` (call off the async runtime).
    pub(crate) fn detach(self, pipeline: &gst::Pipeline) {
        let _ = self
            .tee_pad
            .unlink(&self.tee_pad.peer().unwrap_or_else(|| self.tee_pad.clone()));
        self.tee.release_request_pad(&self.tee_pad);
        let _ = self.bin.set_state(gst::State::Null);
        let _ = pipeline.remove(&self.bin);
    }
}

/// Taps on the encoders' tees (`video_tee`, `audio_tee`), named after `prefix`: every encoded
/// sample is handed to `on_video` / `on_audio` on the encoder's thread (which must not block),
/// `on_eos` once per branch at the end. Returns the branches, and the video appsink's sink pad
/// (where a keyframe is requested from the encoder) when there is video.
pub(crate) fn tap_encoders(
    pipeline: &gst::Pipeline,
    prefix: &str,
    on_video: impl Fn(gst::Sample) + Send + Sync + 'static,
    on_audio: impl Fn(gst::Sample) + Send + Sync + 'static,
    on_eos: impl Fn() + Send + Sync + 'static,
) -> Result<(Vec<TapBranch>, Option<gst::Pad>), PipelineError> {
    type OnSample = Arc<dyn Fn(gst::Sample) + Send + Sync>;
    let on_eos: Arc<dyn Fn() + Send + Sync> = Arc::new(on_eos);
    let handlers: [(&str, OnSample); 2] =
        [("video", Arc::new(on_video)), ("audio", Arc::new(on_audio))];
    let mut branches = Vec::new();
    let mut video_pad = None;
    for (kind, on_sample) in handlers {
        let Some(tee) = pipeline.by_name(&format!("{kind}_tee")) else {
            continue;
        };
        let bin = gst::Bin::builder().name(format!("{prefix}_{kind}")).build();
        let q = make("queue", &format!("{prefix}_{kind}_queue"))?;
        q.set_property_from_str("leaky", "downstream");
        q.set_property("max-size-time", TAP_QUEUE.nseconds());
        q.set_property("max-size-buffers", 0u32);
        q.set_property("max-size-bytes", 0u32);
        let eos = on_eos.clone();
        let sink = bridge::sink(
            Some(&format!("{prefix}_{kind}_sink")),
            None,
            0,
            move |sample| on_sample(sample),
            move || eos(),
        );
        let sink: gst::Element = sink.upcast();
        if kind == "video" {
            video_pad = sink.static_pad("sink");
        }
        bin.add_many([&q, &sink]).map_err(PipelineError::setup)?;
        q.link(&sink).map_err(PipelineError::setup)?;
        let ghost = expose(&bin, &q, "sink")?;
        pipeline.add(&bin).map_err(PipelineError::setup)?;
        let tee_pad = tee
            .request_pad_simple("src_%u")
            .ok_or_else(|| PipelineError::setup("tee pad"))?;
        tee_pad
            .link(&ghost)
            .map_err(|e| PipelineError::Setup(format!("link tap: {e:?}")))?;
        bin.sync_state_with_parent().map_err(PipelineError::setup)?;
        branches.push(TapBranch {
            tee,
            tee_pad,
            bin: bin.upcast(),
        });
    }
    Ok((branches, video_pad))
}

/// A force-key-unit request for the first frame at or after running time `at` (None: the
/// next frame).
pub(crate) fn force_key_unit_at(at: Option<gst::ClockTime>) -> gst::Event {
    let s = gst::Structure::builder("GstForceKeyUnit")
        .field("running-time", at.map_or(u64::MAX, |t| t.nseconds()))
        .field("all-headers", true)
        .field("count", 0u32)
        .build();
    gst::event::CustomUpstream::new(s)
}

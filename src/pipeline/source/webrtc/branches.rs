//! A feed's media branches: each received RTP stream depayloaded, decoded (or passed on
//! encoded) and linked to its slot; keyframes asked for by PLI; unwanted streams gated.

use super::slot::*;
use crate::pipeline::{bridge, make_unnamed as make, PipelineError};
use gst::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Keyframe requests from the depayloader and decoder (upstream force-key-unit events) leave
/// webrtcbin as RTCP PLI only when they name the stream's SSRC; they are sent without one, so
/// it is added here from the stream's caps (and the request is made a PLI, which every sender
/// answers, rather than a FIR).
pub(super) fn ask_keyframes_by_pli(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, |pad, info| {
        let Some(gst::PadProbeData::Event(ref mut ev)) = info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(s) = ev.structure() else {
            return gst::PadProbeReturn::Ok;
        };
        if s.name() != "GstForceKeyUnit" || s.has_field("ssrc") {
            return gst::PadProbeReturn::Ok;
        }
        let ssrc = pad
            .current_caps()
            .and_then(|c| c.structure(0).and_then(|c| c.get::<u32>("ssrc").ok()));
        if let Some(ssrc) = ssrc {
            let mut request = s.to_owned();
            request.set("ssrc", ssrc);
            request.set("all-headers", false);
            *ev = gst::event::CustomUpstream::new(request);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Splits a received stream: decoded for the composite (through a valve that stays shut while
/// nothing shows the track; the decoder is only built once something does), and still encoded
/// for an individual recording.
///
/// The decoder is built late on purpose: `decodebin` holds its pipeline in an unfinished
/// state change until it has decoded something, and while it does, every sink added to the
/// feed pipeline waits to preroll — an encoded track added then would never get a frame.
pub(super) fn split(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    audio: bool,
    a: Arc<Slot>,
    v: Arc<Slot>,
    on: Arc<AtomicBool>,
) -> Result<(), PipelineError> {
    let tee = make("tee")?;
    tee.set_property("allow-not-linked", true);
    let queue = make("queue")?;
    let valve = make("valve")?;
    valve.set_property("drop", true);
    pipeline
        .add_many([&tee, &queue, &valve])
        .map_err(PipelineError::setup)?;
    for e in [&tee, &queue, &valve] {
        e.sync_state_with_parent().map_err(PipelineError::setup)?;
    }
    let sink = tee
        .static_pad("sink")
        .ok_or_else(|| PipelineError::setup("tee sink"))?;
    pad.link(&sink).map_err(PipelineError::setup)?;
    gst::Element::link_many([&tee, &queue, &valve]).map_err(PipelineError::setup)?;
    let slot = if audio { a.clone() } else { v.clone() };
    link_encoded(pipeline, &tee, pad, audio, slot.clone(), on.clone())?;
    let feed = pipeline.downgrade();
    let at = valve.downgrade();
    gate_unwanted(&valve, slot, move || {
        let (Some(pipeline), Some(valve)) = (feed.upgrade(), at.upgrade()) else {
            return;
        };
        if let Err(e) = add_decoder(&pipeline, &valve, a.clone(), v.clone(), on.clone()) {
            tracing::warn!(error = %e, "feed decoder not added");
        }
    });
    Ok(())
}

/// Decodes what passes `valve` into the raw slots (`decodebin`, whose depayloaders and
/// decoders ask the sender for keyframes).
pub(super) fn add_decoder(
    pipeline: &gst::Pipeline,
    valve: &gst::Element,
    a: Arc<Slot>,
    v: Arc<Slot>,
    on: Arc<AtomicBool>,
) -> Result<(), PipelineError> {
    let decode = make("decodebin")?;
    // Depayloaders ask the sender for a keyframe (PLI) when they lose packets, and the
    // decoders ask at the start (force-key-unit → PLI): a new subscriber does not wait out
    // the publisher's keyframe interval.
    if let Some(bin) = decode.downcast_ref::<gst::Bin>() {
        bin.connect_deep_element_added(|_, _, element| {
            for prop in ["request-keyframe", "wait-for-keyframe"] {
                if element.has_property(prop) {
                    element.set_property(prop, true);
                }
            }
        });
    }
    let p2 = pipeline.downgrade();
    decode.connect_pad_added(move |_, dpad| {
        let Some(pipeline) = p2.upgrade() else { return };
        let caps = dpad.current_caps().unwrap_or_else(|| dpad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        let is_audio = s.name().starts_with("audio/");
        tracing::debug!(caps = %s.name(), "decoded feed branch");
        let slot = if is_audio { a.clone() } else { v.clone() };
        if let Err(e) = link_raw(&pipeline, dpad, is_audio, slot, on.clone()) {
            tracing::warn!(error = %e, "feed branch not linked");
        }
    });
    pipeline.add(&decode).map_err(PipelineError::setup)?;
    decode
        .sync_state_with_parent()
        .map_err(PipelineError::setup)?;
    valve.link(&decode).map_err(PipelineError::setup)
}

/// Drops a stream's packets (at `valve`, before its decoder) while nothing shows it. The first
/// time it is wanted, `first_wanted` builds the decoder; whenever it is wanted again, the
/// sender is asked for a keyframe (an upstream force-key-unit becomes an RTCP PLI) so the
/// decoder starts at once.
pub(super) fn gate_unwanted(
    valve: &gst::Element,
    slot: Arc<Slot>,
    first_wanted: impl Fn() + Send + Sync + 'static,
) {
    let Some(sinkpad) = valve.static_pad("sink") else {
        return;
    };
    let open = AtomicBool::new(false);
    let built = AtomicBool::new(false);
    let valve = valve.downgrade();
    sinkpad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
        let wanted = slot.wanted.load(Ordering::Relaxed);
        if wanted == open.load(Ordering::Relaxed) {
            return gst::PadProbeReturn::Ok;
        }
        open.store(wanted, Ordering::Relaxed);
        if wanted && !built.swap(true, Ordering::Relaxed) {
            first_wanted();
        }
        if let Some(v) = valve.upgrade() {
            v.set_property("drop", !wanted);
        }
        if wanted {
            ask_keyframe(pad);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Asks the sender for a keyframe from a sink pad of the feed pipeline: an upstream
/// force-key-unit, which becomes an RTCP PLI at webrtcbin ([`ask_keyframes_by_pli`]).
pub(super) fn ask_keyframe(sinkpad: &gst::Pad) {
    let request = gst::Structure::builder("GstForceKeyUnit")
        .field("all-headers", true)
        .build();
    sinkpad.push_event(gst::event::CustomUpstream::new(request));
}

/// The depayloader for an RTP stream's caps, and for H.264 the parser that gives Matroska
/// its stream format (`avc`, whole access units).
pub(super) fn depayloader(rtp: &gst::Pad) -> Result<Vec<gst::Element>, PipelineError> {
    let caps = rtp.current_caps().unwrap_or_else(|| rtp.query_caps(None));
    let encoding = caps
        .structure(0)
        .and_then(|s| {
            s.get::<&str>("encoding-name")
                .ok()
                .map(str::to_ascii_uppercase)
        })
        .unwrap_or_default();
    Ok(match encoding.as_str() {
        "VP8" => vec![make("rtpvp8depay")?],
        "VP9" => vec![make("rtpvp9depay")?],
        "OPUS" => vec![make("rtpopusdepay")?],
        "H264" => {
            let parse = make("h264parse")?;
            let caps = make("capsfilter")?;
            caps.set_property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("stream-format", "avc")
                    .field("alignment", "au")
                    .build(),
            );
            vec![make("rtph264depay")?, parse, caps]
        }
        other => {
            return Err(PipelineError::Invalid {
                field: "feed codec".into(),
                message: format!("{other:?} cannot be recorded as received"),
            })
        }
    })
}

/// The encoded branch: the stream depayloaded (nothing decoded) into the slot's encoded track.
/// Its queue drops the oldest data rather than hold the feed up.
pub(super) fn link_encoded(
    pipeline: &gst::Pipeline,
    tee: &gst::Element,
    rtp: &gst::Pad,
    audio: bool,
    slot: Arc<Slot>,
    active: Arc<AtomicBool>,
) -> Result<(), PipelineError> {
    let queue = make("queue")?;
    queue.set_property_from_str("leaky", "downstream");
    queue.set_property("max-size-time", 2 * gst::ClockTime::SECOND);
    queue.set_property("max-size-bytes", 0u32);
    queue.set_property("max-size-buffers", 0u32);
    // Keyframe requests leave through the branch's first pad, towards webrtcbin.
    let ask_pad = queue
        .static_pad("sink")
        .ok_or_else(|| PipelineError::setup("queue sink"))?
        .downgrade();
    let mut all = vec![queue];
    all.extend(depayloader(rtp)?);
    let feed = pipeline.downgrade();
    let sink = bridge::sink(
        None,
        None,
        0,
        move |sample| {
            if !active.load(Ordering::SeqCst) {
                return;
            }
            let at = feed
                .upgrade()
                .and_then(|p| clock_time(&sample, p.base_time()));
            slot.push_encoded(&sample, audio, at, || {
                if let Some(pad) = ask_pad.upgrade() {
                    ask_keyframe(&pad);
                }
            });
        },
        || {},
    );
    all.push(sink.upcast());
    pipeline.add_many(&all).map_err(PipelineError::setup)?;
    gst::Element::link_many(&all).map_err(PipelineError::setup)?;
    for e in &all {
        e.sync_state_with_parent().map_err(PipelineError::setup)?;
    }
    tee.link(&all[0]).map_err(PipelineError::setup)?;
    Ok(())
}

/// Where a sample of the feed pipeline sits on the clock it shares with the recording.
pub(super) fn clock_time(
    sample: &gst::Sample,
    base: Option<gst::ClockTime>,
) -> Option<gst::ClockTime> {
    let pts = sample.buffer()?.pts()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    Some(segment.to_running_time(pts)? + base?)
}

pub(super) fn link_raw(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    audio: bool,
    slot: Arc<Slot>,
    active: Arc<AtomicBool>,
) -> Result<(), PipelineError> {
    let (elements, caps) = if audio {
        (
            vec![
                make("queue")?,
                make("audioconvert")?,
                make("audioresample")?,
            ],
            crate::pipeline::source::raw_audio_caps(),
        )
    } else {
        (
            vec![make("queue")?, make("videoconvert")?],
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        )
    };
    let feed = pipeline.downgrade();
    let sink = bridge::sink(
        None,
        Some(&caps),
        if audio { 50 } else { 3 },
        move |sample| {
            if active.load(Ordering::SeqCst) {
                let at = feed
                    .upgrade()
                    .and_then(|p| clock_time(&sample, p.base_time()));
                slot.push(&sample, audio, at);
            }
        },
        || {},
    );
    let mut all: Vec<gst::Element> = elements;
    all.push(sink.upcast());
    pipeline.add_many(&all).map_err(PipelineError::setup)?;
    gst::Element::link_many(&all).map_err(PipelineError::setup)?;
    for e in &all {
        e.sync_state_with_parent().map_err(PipelineError::setup)?;
    }
    let sinkpad = all[0]
        .static_pad("sink")
        .ok_or_else(|| PipelineError::setup("queue sink"))?;
    pad.link(&sinkpad).map_err(PipelineError::setup)?;
    Ok(())
}

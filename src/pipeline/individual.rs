//! Individual recording: one participant's track, still encoded as it was received, into a
//! Matroska file of its own ([`TrackFile`]).
//!
//! ```text
//!  encoded source (feed appsrc, or a generated track's encoder) ─ queue ─ matroskamux ─ filesink
//! ```
//!
//! Every track file runs in a pipeline of its own on the system clock, with the base time of its
//! segment: a buffer's running time *is* its time on the segment's room timeline, so the files of
//! one segment line up by the times [`TrackFileSummary`] reports. The file itself starts at zero
//! (`offset-to-zero`) so it plays from its start in any player.
//!
//! Crash safety: the muxer writes each block as it gets it, clusters close at least once a second
//! and the file is written unbuffered, so a file whose process was killed plays up to its last
//! second (Matroska needs no index to be read; only its duration field is missing).

use super::{bus, make, PipelineError};
use crate::pipeline::source::{SourceContext, Timing};
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a cluster of a track file grows: at most this much is unreadable after a crash.
const CLUSTER: gst::ClockTime = gst::ClockTime::SECOND;
/// Margin before a new track file's first buffer is due, so it is not late.
const START_MARGIN: gst::ClockTime = gst::ClockTime::from_mseconds(60);

/// What went through a track file so far.
#[derive(Debug, Default)]
struct Seen {
    first: Option<gst::ClockTime>,
    end: Option<gst::ClockTime>,
    frames: u64,
    codec: Option<String>,
    keyframe: bool,
    error: Option<String>,
}

/// One track being written.
#[derive(Debug)]
pub struct TrackFile {
    pipeline: gst::Pipeline,
    path: PathBuf,
    seen: Arc<Mutex<Seen>>,
}

/// What a track file holds, on its segment's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackFileSummary {
    /// The file.
    pub path: PathBuf,
    /// Codec name as the platform writes it (`VP8`, `VP9`, `H264`, `OPUS`), once known.
    pub codec: Option<String>,
    /// Time of its first frame on the segment's timeline.
    pub start: Option<gst::ClockTime>,
    /// End of its last frame on the segment's timeline.
    pub end: Option<gst::ClockTime>,
    /// Frames (video) or packets (audio) written.
    pub frames: u64,
    /// File size.
    pub bytes: u64,
    /// Why writing stopped early, if it did.
    pub error: Option<String>,
}

/// The codec name of encoded caps.
pub fn codec_name(caps: &gst::CapsRef) -> Option<String> {
    let name = caps.structure(0)?.name();
    Some(
        match name.as_str() {
            "video/x-vp8" => "VP8",
            "video/x-vp9" => "VP9",
            "video/x-h264" => "H264",
            "video/x-av1" => "AV1",
            "audio/x-opus" => "OPUS",
            "audio/x-mulaw" => "PCMU",
            "audio/x-alaw" => "PCMA",
            other => other,
        }
        .to_string(),
    )
}

/// The segment timeline's time now, for a segment whose clock time at its start was `base`.
pub fn timeline_now(base: gst::ClockTime) -> gst::ClockTime {
    gst::SystemClock::obtain().time().saturating_sub(base)
}

impl TrackFile {
    /// How to build a source whose first buffer belongs a little after now, on the timeline of
    /// the segment that started at clock time `base`.
    pub fn context(base: gst::ClockTime) -> SourceContext {
        SourceContext {
            timing: Timing::Live,
            start: timeline_now(base) + START_MARGIN,
        }
    }

    /// Starts writing what `source` gives (encoded audio when `audio`, else encoded video) to
    /// `path`, on the timeline of the segment that started at clock time `base`. A video file
    /// starts at its first keyframe.
    pub fn start(
        name: &str,
        source: gst::Element,
        audio: bool,
        path: &Path,
        base: gst::ClockTime,
    ) -> Result<TrackFile, PipelineError> {
        let n = crate::pipeline::element_safe(name);
        let pipeline = gst::Pipeline::with_name(&format!("track_{n}"));
        pipeline.use_clock(Some(&gst::SystemClock::obtain()));
        pipeline.set_start_time(gst::ClockTime::NONE);
        pipeline.set_base_time(base);
        let queue = make("queue", &format!("track_queue_{n}"))?;
        queue.set_property("max-size-time", 3 * gst::ClockTime::SECOND);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-buffers", 0u32);
        let mux = make("matroskamux", &format!("track_mux_{n}"))?;
        mux.set_property("offset-to-zero", true);
        mux.set_property("max-cluster-duration", CLUSTER.nseconds() as i64);
        mux.set_property("writing-app", "roomcast");
        let sink = make("filesink", &format!("track_sink_{n}"))?;
        sink.set_property("location", path.to_string_lossy().to_string());
        sink.set_property_from_str("buffer-mode", "unbuffered");
        sink.set_property("sync", false);
        sink.set_property("async", false);
        pipeline
            .add_many([&source, &queue, &mux, &sink])
            .map_err(PipelineError::setup)?;
        source.link(&queue).map_err(PipelineError::setup)?;
        let mux_pad = mux
            .request_pad_simple(if audio { "audio_%u" } else { "video_%u" })
            .ok_or_else(|| PipelineError::setup("matroskamux gave no pad"))?;
        queue
            .static_pad("src")
            .ok_or_else(|| PipelineError::setup("queue src"))?
            .link(&mux_pad)
            .map_err(PipelineError::setup)?;
        mux.link(&sink).map_err(PipelineError::setup)?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        watch(&queue, audio, seen.clone())?;
        let errors = seen.clone();
        if let Some(bus) = pipeline.bus() {
            bus.set_sync_handler(move |_, msg| {
                if let Err(e) = bus::check(msg) {
                    errors.lock().unwrap().error.get_or_insert(e.to_string());
                }
                gst::BusSyncReply::Pass
            });
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| PipelineError::setup(format!("track file {name} did not start")))?;
        Ok(TrackFile {
            pipeline,
            path: path.to_path_buf(),
            seen,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file holds so far.
    pub fn summary(&self) -> TrackFileSummary {
        let s = self.seen.lock().unwrap();
        TrackFileSummary {
            path: self.path.clone(),
            codec: s.codec.clone(),
            start: s.first,
            end: s.end,
            frames: s.frames,
            bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
            error: s.error.clone(),
        }
    }

    /// Ends the file: what was written is closed with its index and duration (blocking, at
    /// most `limit`). A file that got no frame is removed.
    pub fn finish(self, limit: Duration) -> TrackFileSummary {
        self.pipeline.send_event(gst::event::Eos::new());
        let ended = bus::wait_eos_blocking(&self.pipeline, limit, "close a track file");
        let _ = self.pipeline.set_state(gst::State::Null);
        let mut summary = self.summary();
        if let Err(e) = ended {
            summary.error.get_or_insert(e.to_string());
        }
        if summary.frames == 0 {
            let _ = std::fs::remove_file(&self.path);
            summary.bytes = 0;
        }
        summary
    }
}

/// Counts what reaches the muxer, notes the codec, and holds a video file back until its
/// first keyframe (a file must start with a picture a decoder can show).
fn watch(queue: &gst::Element, audio: bool, seen: Arc<Mutex<Seen>>) -> Result<(), PipelineError> {
    let pad = queue
        .static_pad("src")
        .ok_or_else(|| PipelineError::setup("queue src"))?;
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Event(ev)) => {
                    if let gst::EventView::Caps(c) = ev.view() {
                        seen.lock().unwrap().codec = codec_name(c.caps());
                    }
                }
                Some(gst::PadProbeData::Buffer(b)) => {
                    let mut s = seen.lock().unwrap();
                    if !audio && !s.keyframe {
                        if b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                            return gst::PadProbeReturn::Drop;
                        }
                        s.keyframe = true;
                    }
                    if let Some(pts) = b.pts() {
                        s.first = Some(s.first.map_or(pts, |f| f.min(pts)));
                        let end = pts + b.duration().unwrap_or(gst::ClockTime::ZERO);
                        s.end = Some(s.end.map_or(end, |e| e.max(end)));
                    }
                    s.frames += 1;
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    Ok(())
}

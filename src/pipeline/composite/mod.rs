//! The composite: one pipeline that mixes every tile and audio input into one encoded output.
//!
//! Inputs are added and removed while playing. [`Composite::apply`] takes the slots a layout
//! produced and moves, resizes, crops and labels tiles in place; tiles without a slot are hidden
//! (live video) or removed (placeholders).
//!
//! By concern: `tiles` (video inputs, placeholders, labels, placement), `background`
//! (colour or image under the tiles, watermark), `audio` (the mix), `output` (encoders,
//! the MP4 sink and the taps that feed streaming), `teardown` (inputs taken out), `geometry`
//! (caps, crops, sizes). This file holds the types they share and
//! the pipeline's life (build, clocking, EOS, error routing).

mod audio;
mod background;
mod geometry;
mod output;
mod teardown;
mod tiles;

pub use geometry::png_size;
use geometry::*;
use teardown::*;

use crate::layout::{parse_color, Canvas, LabelPosition, LabelStyle, Slot, SlotContent, TileId};
use crate::pipeline::source::{test_audio, test_video, TestAudio, TestVideo};
use crate::pipeline::source::{SourceContext, Timing, TrackSource};
use crate::pipeline::{element_safe, expose, make, PipelineError, Preset};
use gst::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Colour of placeholder tiles (no video, hard-muted video, "+N").
const PLACEHOLDER_COLOR: u32 = 0x2a2e35;
/// A video input that failed this often is given up (its tile shows a placeholder).
pub const MAX_INPUT_FAILURES: u32 = 3;
/// Placeholder frame rate: they never change, so a few frames a second suffice.
const PLACEHOLDER_FPS: u32 = 5;
/// Margin before a source added while live starts, so its first buffer is not late.
const LIVE_START_MARGIN: gst::ClockTime = gst::ClockTime::from_mseconds(60);
/// How long the aggregators wait for late input in live mode. WebRTC feeds are placed by
/// their jitter buffers' timestamps, so a frame reaches the mixers after its time by what it
/// spent in the jitter buffer (while a lost packet is retransmitted) and the decoder; within
/// this much it is still used.
pub const AGGREGATOR_LATENCY: gst::ClockTime = gst::ClockTime::from_mseconds(300);
/// How long the muxer waits for every track's first data before it starts.
const MUXER_LATENCY: gst::ClockTime = gst::ClockTime::from_seconds(3);
/// Largest watermark, as the platform's `settings.watermark` allows.
pub const WATERMARK_MAX_PX: u32 = crate::model::watermark::MAX_PX;
/// Watermark distance from the frame edge.
const WATERMARK_MARGIN: i32 = 24;
/// MP4 fragment length: at most this much is lost when the process is killed.
pub const FRAGMENT_MS: u32 = 1000;

/// Where the composite goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Fragmented MP4 file (finalize with [`crate::pipeline::mp4::finalize`] after EOS).
    Mp4(PathBuf),
    /// One PNG frame (layout previews); offline timing only.
    Png(PathBuf),
    /// No file: the encode only feeds streaming taps.
    Discard,
}

/// How to build a composite.
#[derive(Debug, Clone)]
pub struct CompositeOptions {
    /// Encoder settings.
    pub preset: Preset,
    /// Live or offline.
    pub timing: Timing,
    /// Output.
    pub output: Output,
    /// Background colour 0xRRGGBB.
    pub background: u32,
    /// Background image, drawn instead of the colour.
    pub background_image: Option<PathBuf>,
    /// Tile labels.
    pub label: LabelStyle,
    /// Watermark PNG (≤140×140), top right.
    pub watermark: Option<PathBuf>,
    /// Draw a web page's overlay over the tiles ([`Composite::page_overlay`]).
    pub page_layer: bool,
}

/// Where a pipeline error came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorOrigin {
    /// An element no longer in the pipeline (removed while it was stopping).
    Detached,
    /// One input.
    Input(InputRef),
    /// Mixers, encoders, muxer or sink.
    Core,
}

/// Names one input of the composite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRef {
    /// A tile (live video, placeholder or overflow).
    Tile(InputKey),
    /// A participant's audio.
    Audio(String),
}

/// Which compositor input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InputKey {
    /// A participant's camera or screen share.
    Video(TileId),
    /// A named placeholder (no video or hard-muted video).
    Placeholder(TileId),
    /// The "+N" tile.
    Overflow,
}

impl InputKey {
    /// A readable element name, unique through `seq` (participant ids that differ only in
    /// characters an element name cannot hold, such as `x.1` and `x-1`, must not collide).
    fn element_name(&self, seq: u64) -> String {
        match self {
            InputKey::Video(id) => format!("tile_{}_{seq}", element_safe(&id.to_string())),
            InputKey::Placeholder(id) => {
                format!("placeholder_{}_{seq}", element_safe(&id.to_string()))
            }
            InputKey::Overflow => format!("overflow_{seq}"),
        }
    }
}

/// One compositor input: its bin, the compositor pad and the elements a layout change touches.
struct TileInput {
    bin: gst::Bin,
    pad: gst::Pad,
    caps: gst::Element,
    target: Arc<Mutex<CropTarget>>,
    label: gst::Element,
    placed: Option<(Slot, u32)>,
    started: bool,
}

struct Background {
    element: gst::Element,
    pad: gst::Pad,
    /// The colour, for a colour background.
    color: Option<u32>,
}

struct AudioInput {
    bin: gst::Bin,
    pad: gst::Pad,
}

/// The running composite pipeline.
pub struct Composite {
    pipeline: gst::Pipeline,
    compositor: Option<gst::Element>,
    audiomixer: Option<gst::Element>,
    background: Option<Background>,
    background_seq: u32,
    tiles: HashMap<InputKey, TileInput>,
    /// Every video track of the room, shown or not; only tiles on screen have an input in
    /// `tiles` (built when a slot shows them, removed when none does).
    video_sources: HashMap<TileId, Box<dyn TrackSource>>,
    audio: HashMap<String, AudioInput>,
    /// Makes element names unique.
    next_seq: u64,
    /// Failures of each tile's video input (see [`Composite::drop_input`]).
    failures: HashMap<TileId, u32>,
    /// Inputs taken out but still being torn down (their errors no longer matter).
    retiring: Arc<Mutex<Vec<gst::Bin>>>,
    /// Where inputs taken out are stopped, one after another (see [`Teardowns`]).
    teardowns: Teardowns,
    /// Where the mixers' pads of removed inputs wait to be released (see [`PadReleases`]).
    video_releases: PadReleases,
    audio_releases: PadReleases,
    canvas: Canvas,
    fps: u32,
    timing: Timing,
    label: LabelStyle,
    /// When the mixers last produced output (monotonic ns; 0: not yet).
    last_output: Arc<AtomicU64>,
    /// Set once the first encoded frame (else audio) left the encoders.
    encoded: Arc<AtomicBool>,
    /// Running times (ns) of the first video and audio buffers the MP4 muxer got (see
    /// [`Composite::mp4_audio_delay`]).
    mp4_starts: Arc<Mutex<[Option<u64>; 2]>>,
    /// What a web page draws over the tiles (None: no page layer).
    page: Option<Arc<crate::pipeline::page::PageOverlay>>,
    /// The latest composed picture, before the encoder (None: no video).
    frames: Option<crate::pipeline::snapshot::FrameTap>,
}

impl Composite {
    /// Builds the pipeline (not yet playing).
    pub fn new(opts: &CompositeOptions) -> Result<Composite, PipelineError> {
        let pipeline = gst::Pipeline::with_name("composite");
        // WebRTC feeds run in pipelines of their own on this clock; their timestamps carry over.
        pipeline.use_clock(Some(&gst::SystemClock::obtain()));
        let (canvas, fps) = match &opts.preset.video {
            Some(v) => (
                Canvas {
                    width: v.width,
                    height: v.height,
                },
                v.fps,
            ),
            None => (
                Canvas {
                    width: 2,
                    height: 2,
                },
                1,
            ),
        };
        let mut c = Composite {
            pipeline,
            compositor: None,
            audiomixer: None,
            background: None,
            background_seq: 0,
            tiles: HashMap::new(),
            video_sources: HashMap::new(),
            audio: HashMap::new(),
            next_seq: 0,
            failures: HashMap::new(),
            retiring: Arc::default(),
            teardowns: Teardowns::default(),
            video_releases: PadReleases::default(),
            audio_releases: PadReleases::default(),
            canvas,
            fps,
            timing: opts.timing,
            label: opts.label.clone(),
            last_output: Arc::default(),
            encoded: Arc::default(),
            mp4_starts: Arc::default(),
            page: opts.page_layer.then(Arc::default),
            frames: None,
        };
        let is_png = matches!(opts.output, Output::Png(_));
        let mux = match &opts.output {
            Output::Mp4(path) => Some(c.build_mp4_sink(Some(path))?),
            Output::Discard => Some(c.build_mp4_sink(None)?),
            Output::Png(_) => None,
        };
        if opts.preset.video.is_some() {
            c.build_video(opts, mux.as_ref())?;
        }
        if !is_png {
            c.build_audio(opts, mux.as_ref())?;
        }
        c.watch_output();
        Ok(c)
    }

    /// Notes the time of every buffer the video mixer (else the audio mixer) produces, and
    /// the first frame the video encoder (else the audio encoder) produces.
    fn watch_output(&self) {
        let mixer = self.compositor.as_ref().or(self.audiomixer.as_ref());
        if let Some(pad) = mixer.and_then(|m| m.static_pad("src")) {
            let last = self.last_output.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                last.store(gst::get_timestamp().nseconds(), Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        let encoder = ["video_enc", "audio_enc"]
            .iter()
            .find_map(|n| self.pipeline.by_name(n));
        if let Some(pad) = encoder.and_then(|e| e.static_pad("src")) {
            let encoded = self.encoded.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                encoded.store(true, Ordering::Relaxed);
                gst::PadProbeReturn::Remove
            });
        }
    }

    /// The latest composed frame kept for a snapshot, if one was kept since the last call.
    pub fn take_frame(&self) -> Option<gst::Sample> {
        self.frames.as_ref().and_then(|f| f.take())
    }

    /// Whether the encoders have produced their first frame (the recording has begun).
    pub fn has_encoded(&self) -> bool {
        self.encoded.load(Ordering::Relaxed)
    }

    /// How long ago the mixers last produced output; `None` before they first did.
    pub fn output_idle(&self) -> Option<std::time::Duration> {
        let last = self.last_output.load(Ordering::Relaxed);
        (last != 0).then(|| {
            std::time::Duration::from_nanos(gst::get_timestamp().nseconds().saturating_sub(last))
        })
    }

    /// Fault injection for tests of the stall watchdog: from now on the video encoder's input
    /// queue passes nothing, as a wedged element would hold it.
    pub fn wedge(&self) {
        let pad = self
            .pipeline
            .by_name("video_enc_queue")
            .and_then(|q| q.static_pad("src"));
        if let Some(pad) = pad {
            pad.add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| {
                gst::PadProbeReturn::Ok
            });
        }
    }

    fn add(&self, elements: &[&gst::Element]) -> Result<(), PipelineError> {
        self.pipeline
            .add_many(elements)
            .map_err(PipelineError::setup)
    }

    /// Where a web page's frames go to be drawn over the tiles (None: built without a page
    /// layer).
    pub fn page_overlay(&self) -> Option<Arc<crate::pipeline::page::PageOverlay>> {
        self.page.clone()
    }

    /// The GStreamer pipeline (for the bus and state changes).
    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// Output canvas.
    /// The composited canvas's format (and every background's).
    fn canvas_info(&self) -> Result<gst_video::VideoInfo, PipelineError> {
        gst_video::VideoInfo::from_caps(&caps_video(self.canvas, self.fps))
            .map_err(PipelineError::setup)
    }

    pub fn canvas(&self) -> Canvas {
        self.canvas
    }

    /// Context for a source added now.
    pub fn source_context(&self, margin: gst::ClockTime) -> SourceContext {
        let now = match self.timing {
            Timing::Live => self.pipeline.current_running_time().map(|t| t + margin),
            Timing::Offline { .. } => None,
        };
        SourceContext {
            timing: self.timing,
            start: now.unwrap_or(gst::ClockTime::ZERO),
        }
    }

    /// Context for a participant source being added now.
    pub fn next_source_context(&self) -> SourceContext {
        self.source_context(LIVE_START_MARGIN)
    }

    /// How much later than its picture the composite's own MP4 file starts its sound, in
    /// running time (negative: earlier). The fragmented muxer starts every track at zero;
    /// finalizing puts this back ([`crate::pipeline::mp4::finalize_with_audio_delay`]).
    pub fn mp4_audio_delay(&self) -> i64 {
        match *self.mp4_starts.lock().unwrap_or_else(|e| e.into_inner()) {
            [Some(v), Some(a)] => a as i64 - v as i64,
            _ => 0,
        }
    }

    /// Ends the composite's own MP4 file while everything else goes on (the recording of a
    /// room whose stream continues): the muxer's inputs are cut from the encoders and given
    /// end-of-stream. The receiver fires once the muxer has written its last fragment (None:
    /// this composite writes no file of its own).
    pub fn end_recording(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let sink = self.pipeline.by_name("mp4_sink")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        sink.static_pad("sink")?
            .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                    if ev.type_() == gst::EventType::Eos {
                        if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                            let _ = tx.send(());
                        }
                        return gst::PadProbeReturn::Remove;
                    }
                }
                gst::PadProbeReturn::Ok
            });
        for kind in ["video", "audio"] {
            let Some(qsink) = self
                .pipeline
                .by_name(&format!("mp4_{kind}_queue"))
                .and_then(|q| q.static_pad("sink"))
            else {
                continue;
            };
            if let Some(tee_pad) = qsink.peer() {
                let _ = tee_pad.unlink(&qsink);
                if let Some(tee) = tee_pad.parent_element() {
                    tee.release_request_pad(&tee_pad);
                }
            }
            qsink.send_event(gst::event::Eos::new());
        }
        Some(rx)
    }

    /// Ends the recording: EOS goes straight into the encoder branches, so the muxer finishes
    /// whatever state the inputs are in (a live source can be mid-renegotiation, holding its
    /// lock, and would block an EOS sent the usual way through the sources). The mixers see
    /// EOS as their downstream flow result and stop; the inputs follow.
    ///
    /// Sent from a thread of its own: a serialized event waits for room in a full queue, and
    /// a wedged encoder never makes any; the caller's bounded wait for end-of-stream then runs
    /// out instead of the caller hanging.
    pub fn end_of_stream(&self) {
        let pads: Vec<gst::Pad> = ["video_enc_queue", "audio_enc_queue"]
            .iter()
            .filter_map(|name| self.pipeline.by_name(name)?.static_pad("sink"))
            .collect();
        let sent = std::thread::Builder::new()
            .name("end-of-stream".into())
            .spawn(move || {
                for pad in pads {
                    pad.send_event(gst::event::Eos::new());
                }
            });
        if let Err(e) = sent {
            tracing::warn!(error = %e, "no thread to send end-of-stream");
        }
    }

    /// Decides what an error posted by `source` means: an input that was already removed (a
    /// teardown race, ignore), one input that failed (drop it, keep recording), or the core
    /// pipeline (the recording fails).
    pub fn classify_error(&self, source: &gst::Object) -> ErrorOrigin {
        let mut top = source.clone();
        loop {
            match top.parent() {
                Some(p) if p == *self.pipeline.upcast_ref::<gst::Object>() => break,
                Some(p) => top = p,
                None => return ErrorOrigin::Detached,
            }
        }
        if let Some(key) = self
            .tiles
            .iter()
            .find(|(_, t)| t.bin.upcast_ref::<gst::Object>() == &top)
            .map(|(k, _)| k)
        {
            return ErrorOrigin::Input(InputRef::Tile(key.clone()));
        }
        if let Some(id) = self
            .audio
            .iter()
            .find(|(_, a)| a.bin.upcast_ref::<gst::Object>() == &top)
            .map(|(k, _)| k)
        {
            return ErrorOrigin::Input(InputRef::Audio(id.clone()));
        }
        let retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
        if retiring
            .iter()
            .any(|b| b.upcast_ref::<gst::Object>() == &top)
        {
            return ErrorOrigin::Detached;
        }
        ErrorOrigin::Core
    }
}

impl Composite {
    /// Waits (blocking, at most `limit`) until every input taken out has been stopped and
    /// removed; true if none is left.
    pub fn wait_retired(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self
                .retiring
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A number for the next element name.
    pub(super) fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

impl Drop for Composite {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

//! The composite: one pipeline that mixes every tile and audio input into one encoded output.
//!
//! Inputs are added and removed while playing. [`Composite::apply`] takes the slots a layout
//! produced and moves, resizes, crops and labels tiles in place; tiles without a slot are hidden
//! (live video) or removed (placeholders).

use super::source::{test_audio, test_video, TestAudio, TestVideo};
use super::source::{SourceContext, Timing};
use super::{element_safe, expose, make, raw_video_caps, PipelineError, Preset};
use crate::layout::{
    parse_color, Canvas, Fit, LabelPosition, LabelStyle, Slot, SlotContent, TileId,
};
use gst::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Colour of placeholder tiles (no video, hard-muted video, "+N").
const PLACEHOLDER_COLOR: u32 = 0x2a2e35;
/// Placeholder frame rate: they never change, so a few frames a second suffice.
const PLACEHOLDER_FPS: u32 = 5;
/// Margin before a source added while live starts, so its first buffer is not late.
const LIVE_START_MARGIN: gst::ClockTime = gst::ClockTime::from_mseconds(60);
/// How long the aggregators wait for late input in live mode.
const AGGREGATOR_LATENCY: gst::ClockTime = gst::ClockTime::from_mseconds(60);
/// How long the muxer waits for every track's first data before it starts.
const MUXER_LATENCY: gst::ClockTime = gst::ClockTime::from_seconds(3);
/// Largest watermark, as the platform's `settings.watermark` allows.
pub const WATERMARK_MAX_PX: u32 = 140;
/// Watermark distance from the frame edge.
const WATERMARK_MARGIN: i32 = 24;
/// MP4 fragment length: at most this much is lost when the process is killed.
pub const FRAGMENT_MS: u32 = 1000;

/// Where the composite goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Fragmented MP4 file (finalize with [`super::mp4::finalize`] after EOS).
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
    fn element_name(&self) -> String {
        match self {
            InputKey::Video(id) => format!("tile_{}", element_safe(&id.to_string())),
            InputKey::Placeholder(id) => format!("placeholder_{}", element_safe(&id.to_string())),
            InputKey::Overflow => "overflow".into(),
        }
    }
}

/// One compositor input: its bin, the compositor pad and the elements a layout change touches.
struct TileInput {
    bin: gst::Bin,
    pad: gst::Pad,
    caps: gst::Element,
    crop: gst::Element,
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
    audio: HashMap<String, AudioInput>,
    canvas: Canvas,
    fps: u32,
    timing: Timing,
    label: LabelStyle,
}

fn link_pads(src: &gst::Pad, sink: &gst::Pad) -> Result<(), PipelineError> {
    src.link(sink)
        .map(|_| ())
        .map_err(|e| PipelineError::Setup(format!("link: {e:?}")))
}

fn caps_video(canvas: Canvas, fps: u32) -> gst::Caps {
    raw_video_caps(canvas.width, canvas.height, Some(fps))
}

fn tile_caps(w: u32, h: u32) -> gst::Caps {
    raw_video_caps(w, h, None)
}

/// What a tile's crop needs: the input's size and the slot's shape.
#[derive(Debug, Default)]
struct CropTarget {
    source: Option<(u32, u32)>,
    slot: Option<(u32, u32, Fit)>,
}

impl CropTarget {
    /// Pixels to cut (left, right, top, bottom) so the input has the slot's aspect ratio.
    fn crop(&self) -> (i32, i32, i32, i32) {
        let (Some((sw, sh)), Some((w, h, Fit::Crop))) = (self.source, self.slot) else {
            return (0, 0, 0, 0);
        };
        let (sw, sh, w, h) = (sw as u64, sh as u64, w as u64, h as u64);
        if sw * h > w * sh {
            // Input wider than the slot: cut the sides.
            let keep = (sh * w / h).max(2) & !1;
            let cut = sw.saturating_sub(keep) as i32;
            (cut / 2, cut - cut / 2, 0, 0)
        } else {
            let keep = (sw * h / w).max(2) & !1;
            let cut = sh.saturating_sub(keep) as i32;
            (0, 0, cut / 2, cut - cut / 2)
        }
    }

    fn apply(&self, videobox: &gst::Element) {
        let (l, r, t, b) = self.crop();
        for (name, v) in [("left", l), ("right", r), ("top", t), ("bottom", b)] {
            if videobox.property::<i32>(name) != v {
                videobox.set_property(name, v);
            }
        }
    }
}

/// Reads a PNG's size from its header.
pub fn png_size(path: &Path) -> Result<(u32, u32), PipelineError> {
    let bad = |m: String| PipelineError::Invalid {
        field: "watermark".into(),
        message: m,
    };
    let data = std::fs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if data.len() < 24 || &data[..8] != b"\x89PNG\r\n\x1a\n" || &data[12..16] != b"IHDR" {
        return Err(bad(format!("{} is not a PNG file", path.display())));
    }
    let w = u32::from_be_bytes([data[16], data[17], data[18], data[19]]);
    let h = u32::from_be_bytes([data[20], data[21], data[22], data[23]]);
    Ok((w, h))
}

impl Composite {
    /// Builds the pipeline (not yet playing).
    pub fn new(opts: &CompositeOptions) -> Result<Composite, PipelineError> {
        let pipeline = gst::Pipeline::with_name("composite");
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
            audio: HashMap::new(),
            canvas,
            fps,
            timing: opts.timing,
            label: opts.label.clone(),
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
        Ok(c)
    }

    fn add(&self, elements: &[&gst::Element]) -> Result<(), PipelineError> {
        self.pipeline
            .add_many(elements)
            .map_err(PipelineError::setup)
    }

    /// One encode, many outputs: a tee after the parser feeding the MP4 muxer (through a queue)
    /// and any streaming taps added later ([`Composite::add_tap`]).
    fn fan_out(
        &self,
        parse: &gst::Element,
        mux: Option<&gst::Element>,
        kind: &str,
    ) -> Result<(), PipelineError> {
        let tee = make("tee", &format!("{kind}_tee"))?;
        tee.set_property("allow-not-linked", true);
        self.add(&[&tee])?;
        parse.link(&tee).map_err(PipelineError::setup)?;
        if let Some(mux) = mux {
            let q = make("queue", &format!("mp4_{kind}_queue"))?;
            self.add(&[&q])?;
            gst::Element::link_many([&tee, &q, mux]).map_err(PipelineError::setup)?;
        }
        Ok(())
    }

    /// The muxer and its file (or, without a path, a sink that drops what it gets: the muxer
    /// stays so that end-of-stream and timing behave exactly as when recording).
    fn build_mp4_sink(&self, path: Option<&Path>) -> Result<gst::Element, PipelineError> {
        let mux = make("mp4mux", "mp4_mux")?;
        mux.set_property("fragment-duration", FRAGMENT_MS);
        // The muxer is an aggregator: in a live pipeline it would start on a timeout with only
        // the (faster) audio branch and write a header whose video track has no format. Give
        // the encoders time to deliver their first buffers.
        mux.set_property("latency", MUXER_LATENCY.nseconds());
        mux.set_property_from_str("start-time-selection", "first");
        let sink = match path {
            Some(path) => {
                let sink = make("filesink", "mp4_sink")?;
                sink.set_property("location", path.to_string_lossy().to_string());
                // Each fragment goes to the kernel as it is written: a killed process loses
                // nothing that the muxer finished.
                sink.set_property_from_str("buffer-mode", "unbuffered");
                sink
            }
            None => make("fakesink", "mp4_sink")?,
        };
        sink.set_property("sync", false);
        sink.set_property("async", false);
        self.add(&[&mux, &sink])?;
        mux.link(&sink).map_err(PipelineError::setup)?;
        Ok(mux)
    }

    fn build_video(
        &mut self,
        opts: &CompositeOptions,
        mux: Option<&gst::Element>,
    ) -> Result<(), PipelineError> {
        let comp = make("compositor", "video_mixer")?;
        comp.set_property_from_str("background", "black");
        comp.set_property("ignore-inactive-pads", true);
        // Start from the first buffer, not from running time zero: while the pipeline goes to
        // PLAYING an aggregator can see the clock before its base time and, counting from
        // zero, would time out at once and produce garbage or EOS.
        comp.set_property_from_str("start-time-selection", "first");
        if self.timing == Timing::Live {
            comp.set_property("latency", AGGREGATOR_LATENCY.nseconds());
        }
        let caps = make("capsfilter", "video_mixer_caps")?;
        caps.set_property("caps", caps_video(self.canvas, self.fps));
        self.add(&[&comp, &caps])?;
        comp.link(&caps).map_err(PipelineError::setup)?;
        let mut last = caps;
        if let Some(wm) = &opts.watermark {
            let (w, h) = png_size(wm)?;
            if w > WATERMARK_MAX_PX || h > WATERMARK_MAX_PX {
                return Err(PipelineError::Invalid {
                    field: "watermark".into(),
                    message: format!(
                        "{w}x{h} is larger than {WATERMARK_MAX_PX}x{WATERMARK_MAX_PX} pixels"
                    ),
                });
            }
            let overlay = make("gdkpixbufoverlay", "watermark")?;
            overlay.set_property("location", wm.to_string_lossy().to_string());
            overlay.set_property(
                "offset-x",
                self.canvas.width as i32 - w as i32 - WATERMARK_MARGIN,
            );
            overlay.set_property("offset-y", WATERMARK_MARGIN);
            self.add(&[&overlay])?;
            last.link(&overlay).map_err(PipelineError::setup)?;
            last = overlay;
        }
        match (&opts.output, &opts.preset.video) {
            (Output::Png(path), _) => {
                let conv = make("videoconvert", "png_convert")?;
                let enc = make("pngenc", "png_enc")?;
                enc.set_property("snapshot", true);
                let sink = make("filesink", "png_sink")?;
                sink.set_property("location", path.to_string_lossy().to_string());
                self.add(&[&conv, &enc, &sink])?;
                gst::Element::link_many([&last, &conv, &enc, &sink])
                    .map_err(PipelineError::setup)?;
            }
            (Output::Mp4(_) | Output::Discard, Some(v)) => {
                let q = make("queue", "video_enc_queue")?;
                let enc = make("x264enc", "video_enc")?;
                enc.set_property_from_str("speed-preset", &v.speed_preset);
                enc.set_property_from_str("tune", "zerolatency");
                enc.set_property("bitrate", v.bitrate_kbps);
                enc.set_property("key-int-max", v.keyframe_interval);
                let enc_caps = make("capsfilter", "video_enc_caps")?;
                enc_caps.set_property(
                    "caps",
                    gst::Caps::builder("video/x-h264")
                        .field("profile", v.profile.as_str())
                        .build(),
                );
                let parse = make("h264parse", "video_parse")?;
                self.add(&[&q, &enc, &enc_caps, &parse])?;
                gst::Element::link_many([&last, &q, &enc, &enc_caps, &parse])
                    .map_err(PipelineError::setup)?;
                self.fan_out(&parse, mux, "video")?;
            }
            (Output::Mp4(_) | Output::Discard, None) => {}
        }
        self.compositor = Some(comp);
        self.build_background(opts)?;
        Ok(())
    }

    fn build_background(&mut self, opts: &CompositeOptions) -> Result<(), PipelineError> {
        if self.compositor.is_none() {
            return Ok(());
        }
        let ctx = self.source_context(gst::ClockTime::ZERO);
        match &opts.background_image {
            Some(img) => {
                let bin = self.background_image(img, &ctx)?;
                self.attach_background(bin, None)
            }
            None => self.attach_color_background(opts.background, &ctx),
        }
    }

    fn attach_color_background(
        &mut self,
        color: u32,
        ctx: &SourceContext,
    ) -> Result<(), PipelineError> {
        self.background_seq += 1;
        let bin = test_video(
            &TestVideo {
                name: format!("background{}", self.background_seq),
                color,
                moving_marker: false,
                flash: false,
                width: self.canvas.width,
                height: self.canvas.height,
                fps: self.fps,
                pattern: None,
            },
            ctx,
        )?;
        self.attach_background(bin, Some(color))
    }

    /// Links a new background below every tile, then removes the previous one.
    fn attach_background(
        &mut self,
        element: gst::Element,
        color: Option<u32>,
    ) -> Result<(), PipelineError> {
        let Some(comp) = self.compositor.clone() else {
            return Ok(());
        };
        self.add(&[&element])?;
        let pad = comp
            .request_pad_simple("sink_%u")
            .ok_or_else(|| PipelineError::setup("pad"))?;
        pad.set_property("zorder", 0u32);
        let src = element
            .static_pad("src")
            .ok_or_else(|| PipelineError::setup("background src"))?;
        link_pads(&src, &pad)?;
        element
            .sync_state_with_parent()
            .map_err(PipelineError::setup)?;
        let old = self.background.replace(Background {
            element,
            pad,
            color,
        });
        if let Some(old) = old {
            let bin = old
                .element
                .downcast::<gst::Bin>()
                .map_err(|_| PipelineError::setup("bin"))?;
            self.detach(&bin, &old.pad, Some(&comp))?;
        }
        Ok(())
    }

    fn background_image(
        &self,
        img: &Path,
        ctx: &SourceContext,
    ) -> Result<gst::Element, PipelineError> {
        let ext = img
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let dec = match ext.as_str() {
            "png" => "pngdec",
            "jpg" | "jpeg" => "jpegdec",
            _ => {
                return Err(PipelineError::Invalid {
                    field: "background_image".into(),
                    message: "must be a .png or .jpg file".into(),
                })
            }
        };
        let src = make("filesrc", "bg_file")?;
        src.set_property("location", img.to_string_lossy().to_string());
        let dec = make(dec, "bg_dec")?;
        let conv = make("videoconvert", "bg_convert")?;
        let scale = make("videoscale", "bg_scale")?;
        let caps = make("capsfilter", "bg_caps")?;
        caps.set_property("caps", tile_caps(self.canvas.width, self.canvas.height));
        let freeze = make("imagefreeze", "bg_freeze")?;
        freeze.set_property("is-live", ctx.timing == Timing::Live);
        if let Timing::Offline { duration } = ctx.timing {
            let n = (duration.nseconds() as f64 / 1e9 * self.fps as f64)
                .round()
                .max(1.0);
            freeze.set_property("num-buffers", n as i32);
        }
        let rate = make("capsfilter", "bg_rate")?;
        rate.set_property("caps", caps_video(self.canvas, self.fps));
        let bin = gst::Bin::builder().name("background_image").build();
        let els = [&src, &dec, &conv, &scale, &caps, &freeze, &rate];
        bin.add_many(els).map_err(PipelineError::setup)?;
        gst::Element::link_many(els).map_err(PipelineError::setup)?;
        expose(&bin, &rate, "src")?;
        Ok(bin.upcast())
    }

    fn build_audio(
        &mut self,
        opts: &CompositeOptions,
        mux: Option<&gst::Element>,
    ) -> Result<(), PipelineError> {
        let a = &opts.preset.audio;
        let mixer = make("audiomixer", "audio_mixer")?;
        if self.timing == Timing::Live {
            mixer.set_property("latency", AGGREGATOR_LATENCY.nseconds());
        }
        mixer.set_property("ignore-inactive-pads", true);
        mixer.set_property_from_str("start-time-selection", "first");
        let caps = make("capsfilter", "audio_mixer_caps")?;
        caps.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("format", "S16LE")
                .field("rate", a.rate as i32)
                .field("channels", a.channels as i32)
                .build(),
        );
        let conv = make("audioconvert", "audio_enc_convert")?;
        let q = make("queue", "audio_enc_queue")?;
        let enc = make("avenc_aac", "audio_enc")?;
        enc.set_property("bitrate", a.bitrate as i32);
        let parse = make("aacparse", "audio_parse")?;
        self.add(&[&mixer, &caps, &conv, &q, &enc, &parse])?;
        gst::Element::link_many([&mixer, &caps, &conv, &q, &enc, &parse])
            .map_err(PipelineError::setup)?;
        self.fan_out(&parse, mux, "audio")?;
        self.audiomixer = Some(mixer);
        // A silent input keeps the mix running when nobody is publishing audio.
        let ctx = self.source_context(gst::ClockTime::ZERO);
        let silence = test_audio(
            &TestAudio {
                name: "silence".into(),
                freq: 0.0,
                volume: 0.0,
                beep_only: false,
                silent: true,
            },
            &ctx,
        )?;
        self.attach_audio("silence", silence)
    }

    /// The GStreamer pipeline (for the bus and state changes).
    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// Output canvas.
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

    /// Sets the background colour (0xRRGGBB). A colour source is replaced, never changed in
    /// place: `videotestsrc` renders from a cached frame that a property change races with.
    /// An image background stays.
    pub fn set_background(&mut self, color: u32) -> Result<(), PipelineError> {
        match &self.background {
            Some(bg) if bg.color.is_none_or(|c| c == color) => Ok(()),
            _ => {
                let ctx = self.source_context(LIVE_START_MARGIN);
                self.attach_color_background(color, &ctx)
            }
        }
    }

    /// Sets the label style used from the next [`Composite::apply`].
    pub fn set_label_style(&mut self, label: LabelStyle) {
        self.label = label;
    }

    /// Adds a video input for `id` (hidden until a slot shows it).
    pub fn add_video(&mut self, id: &TileId, source: gst::Element) -> Result<(), PipelineError> {
        let key = InputKey::Video(id.clone());
        self.remove_input(&key)?;
        self.attach_tile(key, source)
    }

    /// Removes the video input of `id`, if any.
    pub fn remove_video(&mut self, id: &TileId) -> Result<(), PipelineError> {
        self.remove_input(&InputKey::Video(id.clone()))
    }

    fn attach_tile(&mut self, key: InputKey, source: gst::Element) -> Result<(), PipelineError> {
        let Some(comp) = self.compositor.clone() else {
            return Ok(());
        };
        let n = key.element_name();
        let bin = gst::Bin::builder().name(&n).build();
        let q = make("queue", &format!("{n}_queue"))?;
        let conv = make("videoconvert", &format!("{n}_convert"))?;
        let crop = make("videobox", &format!("{n}_crop"))?;
        let target: Arc<Mutex<CropTarget>> = Arc::default();
        let crop_weak = crop.downgrade();
        let probe_target = target.clone();
        let crop_sink = crop
            .static_pad("sink")
            .ok_or_else(|| PipelineError::setup("crop sink"))?;
        // When the input's size becomes known (or changes), crop it to the slot's shape.
        crop_sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(ref ev)) = info.data {
                if let gst::EventView::Caps(c) = ev.view() {
                    let size = c.caps().structure(0).and_then(|s| {
                        Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
                    });
                    if let (Some(crop), Some((w, h))) = (crop_weak.upgrade(), size) {
                        let mut t = probe_target.lock().unwrap_or_else(|e| e.into_inner());
                        t.source = Some((w.max(1) as u32, h.max(1) as u32));
                        t.apply(&crop);
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
        let scale = make("videoscale", &format!("{n}_scale"))?;
        let caps = make("capsfilter", &format!("{n}_caps"))?;
        caps.set_property("caps", tile_caps(320, 180));
        // On a layout change, frames already on their way at the old size stay acceptable
        // until the new size is negotiated.
        caps.set_property_from_str("caps-change-mode", "delayed");
        let label = make("textoverlay", &format!("{n}_label"))?;
        label.set_property("silent", true);
        label.set_property("auto-resize", false);
        label.set_property("shaded-background", true);
        label.set_property("wait-text", false);
        let els = [&source, &q, &conv, &crop, &scale, &caps, &label];
        bin.add_many(els).map_err(PipelineError::setup)?;
        gst::Element::link_many(els).map_err(PipelineError::setup)?;
        let ghost = expose(&bin, &label, "src")?;
        self.pipeline.add(&bin).map_err(PipelineError::setup)?;
        let pad = comp
            .request_pad_simple("sink_%u")
            .ok_or_else(|| PipelineError::setup("pad"))?;
        pad.set_property("alpha", 0.0f64);
        link_pads(ghost.upcast_ref(), &pad)?;
        // Started by `apply` once its geometry is set, so the first negotiation already has
        // the slot's size (changing caps while the first caps are in flight fails it).
        self.tiles.insert(
            key,
            TileInput {
                bin,
                pad,
                caps,
                crop,
                target,
                label,
                placed: None,
                started: false,
            },
        );
        Ok(())
    }

    fn remove_input(&mut self, key: &InputKey) -> Result<(), PipelineError> {
        let Some(input) = self.tiles.remove(key) else {
            return Ok(());
        };
        self.detach(&input.bin, &input.pad, self.compositor.as_ref())
    }

    fn detach(
        &self,
        bin: &gst::Bin,
        pad: &gst::Pad,
        aggregator: Option<&gst::Element>,
    ) -> Result<(), PipelineError> {
        // Stop the input's threads first so nothing pushes into a released pad.
        bin.set_state(gst::State::Null)
            .map_err(PipelineError::setup)?;
        if let Some(agg) = aggregator {
            agg.release_request_pad(pad);
        }
        self.pipeline.remove(bin).map_err(PipelineError::setup)?;
        Ok(())
    }

    /// Adds an audio input for participant `id`.
    pub fn add_audio(&mut self, id: &str, source: gst::Element) -> Result<(), PipelineError> {
        self.remove_audio(id)?;
        self.attach_audio(id, source)
    }

    fn attach_audio(&mut self, id: &str, source: gst::Element) -> Result<(), PipelineError> {
        let Some(mixer) = self.audiomixer.clone() else {
            return Ok(());
        };
        let n = format!("audio_{}", element_safe(id));
        let bin = gst::Bin::builder().name(&n).build();
        let q = make("queue", &format!("{n}_queue"))?;
        let conv = make("audioconvert", &format!("{n}_convert"))?;
        let res = make("audioresample", &format!("{n}_resample"))?;
        let els = [&source, &q, &conv, &res];
        bin.add_many(els).map_err(PipelineError::setup)?;
        gst::Element::link_many(els).map_err(PipelineError::setup)?;
        let ghost = expose(&bin, &res, "src")?;
        self.pipeline.add(&bin).map_err(PipelineError::setup)?;
        let pad = mixer
            .request_pad_simple("sink_%u")
            .ok_or_else(|| PipelineError::setup("pad"))?;
        link_pads(ghost.upcast_ref(), &pad)?;
        bin.sync_state_with_parent().map_err(PipelineError::setup)?;
        self.audio.insert(id.to_string(), AudioInput { bin, pad });
        Ok(())
    }

    /// Removes the audio input of participant `id`, if any.
    pub fn remove_audio(&mut self, id: &str) -> Result<(), PipelineError> {
        let Some(input) = self.audio.remove(id) else {
            return Ok(());
        };
        self.detach(&input.bin, &input.pad, self.audiomixer.as_ref())
    }

    /// Mutes or un-mutes participant `id` in the mix.
    pub fn set_audio_muted(&self, id: &str, muted: bool) {
        if let Some(input) = self.audio.get(id) {
            input.pad.set_property("mute", muted);
        }
    }

    fn placeholder_source(&self, key: &InputKey) -> Result<gst::Element, PipelineError> {
        test_video(
            &TestVideo {
                name: key.element_name(),
                color: PLACEHOLDER_COLOR,
                moving_marker: false,
                flash: false,
                width: 320,
                height: 180,
                fps: PLACEHOLDER_FPS,
                pattern: None,
            },
            &self.source_context(LIVE_START_MARGIN),
        )
    }

    /// Shows `slots`: every input not named by a slot is hidden (live video) or removed.
    pub fn apply(&mut self, slots: &[Slot]) -> Result<(), PipelineError> {
        if self.compositor.is_none() {
            return Ok(());
        }
        let mut used = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let (key, text, centered) = match &slot.content {
                SlotContent::Tile {
                    id,
                    show_video,
                    name,
                } => {
                    let video = InputKey::Video(id.clone());
                    if *show_video && self.tiles.contains_key(&video) {
                        (video, slot.label.clone(), false)
                    } else {
                        (InputKey::Placeholder(id.clone()), Some(name.clone()), true)
                    }
                }
                SlotContent::Overflow(n) => (InputKey::Overflow, Some(format!("+{n}")), true),
            };
            if !self.tiles.contains_key(&key) {
                let src = self.placeholder_source(&key)?;
                self.attach_tile(key.clone(), src)?;
            }
            let z = slot.z * 100 + i as u32 + 1;
            self.place(&key, slot, z, text.as_deref(), centered);
            used.push(key);
        }
        let unused: Vec<InputKey> = self
            .tiles
            .keys()
            .filter(|k| !used.contains(k))
            .cloned()
            .collect();
        for key in unused {
            match key {
                InputKey::Video(_) => {
                    if let Some(t) = self.tiles.get_mut(&key) {
                        t.pad.set_property("alpha", 0.0f64);
                        t.placed = None;
                    }
                }
                _ => self.remove_input(&key)?,
            }
        }
        // Inputs without a slot still run (hidden), so their sources keep flowing.
        for t in self.tiles.values_mut().filter(|t| !t.started) {
            t.bin
                .sync_state_with_parent()
                .map_err(PipelineError::setup)?;
            t.started = true;
        }
        Ok(())
    }

    fn place(&mut self, key: &InputKey, slot: &Slot, z: u32, text: Option<&str>, centered: bool) {
        let canvas_h = self.canvas.height;
        let style = self.label.clone();
        let Some(t) = self.tiles.get_mut(key) else {
            return;
        };
        let (w, h) = (slot.rect.w, slot.rect.h);
        let same_geometry = t
            .placed
            .as_ref()
            .is_some_and(|(s, _)| s.rect == slot.rect && s.fit == slot.fit);
        if !same_geometry {
            {
                let mut target = t.target.lock().unwrap_or_else(|e| e.into_inner());
                target.slot = Some((w, h, slot.fit));
                target.apply(&t.crop);
            }
            t.caps.set_property("caps", tile_caps(w, h));
        }
        t.pad.set_property("xpos", slot.rect.x);
        t.pad.set_property("ypos", slot.rect.y);
        t.pad.set_property("width", w as i32);
        t.pad.set_property("height", h as i32);
        t.pad.set_property("zorder", z);
        t.pad.set_property("alpha", 1.0f64);
        match text {
            Some(text) if !text.is_empty() => {
                let px = if centered {
                    (h as f64 * 0.16).max(10.0)
                } else {
                    (canvas_h as f64 * style.size).max(8.0)
                };
                // Keep labels inside small tiles.
                let px = px.min(h as f64 * 0.3).round() as u32;
                t.label
                    .set_property("font-desc", format!("Sans Bold {px}px"));
                t.label.set_property("text", text);
                let color = parse_color(&style.color).unwrap_or(0xffffff);
                t.label.set_property("color", 0xff00_0000 | color);
                let (h_al, v_al) = if centered {
                    ("center", "center")
                } else {
                    match style.position {
                        LabelPosition::TopLeft => ("left", "top"),
                        LabelPosition::TopRight => ("right", "top"),
                        LabelPosition::BottomLeft => ("left", "bottom"),
                        LabelPosition::BottomRight => ("right", "bottom"),
                    }
                };
                t.label.set_property_from_str("halignment", h_al);
                t.label.set_property_from_str("valignment", v_al);
                let pad = (px / 2).max(4) as i32;
                t.label.set_property("xpad", pad);
                t.label.set_property("ypad", pad);
                t.label.set_property("silent", false);
            }
            _ => t.label.set_property("silent", true),
        }
        t.placed = Some((slot.clone(), z));
    }

    /// Ends the recording: EOS goes straight into the encoder branches, so the muxer finishes
    /// whatever state the inputs are in (a live source can be mid-renegotiation, holding its
    /// lock, and would block an EOS sent the usual way through the sources). The mixers see
    /// EOS as their downstream flow result and stop; the inputs follow.
    pub fn end_of_stream(&self) {
        for name in ["video_enc_queue", "audio_enc_queue"] {
            if let Some(pad) = self
                .pipeline
                .by_name(name)
                .and_then(|e| e.static_pad("sink"))
            {
                pad.send_event(gst::event::Eos::new());
            }
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
        ErrorOrigin::Core
    }

    /// Removes an input that failed (see [`Composite::classify_error`]).
    pub fn drop_input(&mut self, input: &InputRef) -> Result<(), PipelineError> {
        match input {
            InputRef::Tile(key) => self.remove_input(key),
            InputRef::Audio(id) => self.remove_audio(id),
        }
    }

    /// Number of live video inputs, placeholders included.
    pub fn tile_inputs(&self) -> usize {
        self.tiles.len()
    }
}

impl Drop for Composite {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

//! An MP4 segment recorded from a composite that is already running (a recording that joins a
//! room's stream): a tap on the encoder tees feeds a pipeline of its own.
//!
//! ```text
//!  main pipeline:  video_tee ─ queue (leaky) ─ appsink ┐      ┌ appsrc ─ queue ┐
//!                  audio_tee ─ queue (leaky) ─ appsink ┴ tap ─┴ appsrc ─ queue ┴ mp4mux ─ filesink
//! ```
//!
//! The file is the same fragmented MP4 the composite's own muxer writes (crash-safe, finalized
//! the same way). It starts on a keyframe (one is requested when the tap is attached) with
//! audio and video rebased to zero by the same amount, so their offset is the composite's. An
//! error writing the file (a full disk) stays in this pipeline: the composite and its other
//! outputs go on.

use super::composite::FRAGMENT_MS;
use super::tap::{force_key_unit_at, rebase, tap_encoders, TapBranch};
use super::{bridge, make, PipelineError};
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Bytes an appsrc holds before it drops the oldest buffers (the file system stalled).
const APPSRC_MAX_BYTES: u64 = 32 * 1024 * 1024;

struct Feed {
    video: Option<gst_app::AppSrc>,
    audio: Option<gst_app::AppSrc>,
    /// Running time of the first keyframe written (the file's zero).
    base: Option<gst::ClockTime>,

    /// Time of the first sound written (after the file's zero by less than a frame).
    audio_start: Option<gst::ClockTime>,
    /// Sound that arrived before the first keyframe (the audio encoder runs ahead of the
    /// video encoder by its latency): written from the keyframe's time on once it comes.
    pending: std::collections::VecDeque<gst::Sample>,
    ended: bool,
    /// The running time the file ends at, once it is to end: what comes later is not written.
    end_at: Option<gst::ClockTime>,
    video_done: bool,
    audio_done: bool,
}

/// One AAC frame at 48 kHz: the sound may start this much after the picture (the edit list
/// puts it back in place).
const AUDIO_FRAME: gst::ClockTime = gst::ClockTime::from_nseconds(21_333_334);
/// Most audio buffers held while waiting for the first keyframe (about 5 s of AAC).
const MAX_PENDING_AUDIO: usize = 256;

impl Feed {
    /// Takes a video sample; true when the file cannot start on this keyframe and another
    /// must be requested.
    fn video(&mut self, sample: &gst::Sample) -> bool {
        if self.ended || self.video.is_none() || self.past_end(sample, true) {
            return false;
        }
        let (Some(buffer), Some(src)) = (sample.buffer(), self.video.as_ref()) else {
            return false;
        };
        let first = self.base.is_none();
        if first {
            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                return false;
            }
            let Some(at) = buffer.pts().map(|t| bridge::running_time(sample, t)) else {
                return false;
            };
            // The sound from the keyframe on must all be here or still to come: sound that
            // came first (its encoder runs ahead) is held from the attach on; if what is held
            // starts after the keyframe, the sound before it went by before the attach.
            let held_from = self
                .pending
                .front()
                .and_then(|s| Some(bridge::running_time(s, s.buffer()?.pts()?)));
            if held_from.is_some_and(|h| h > at + AUDIO_FRAME) {
                return true;
            }
            self.base = Some(at);
        }
        let Some(base) = self.base else { return false };
        bridge::follow_caps(src, sample.caps());
        if let Some(b) = rebase(sample, base, gst::ClockTime::ZERO) {
            let _ = src.push_buffer(b);
        }
        if first {
            for s in std::mem::take(&mut self.pending) {
                self.push_audio(&s, base);
            }
        }
        false
    }

    fn push_audio(&mut self, sample: &gst::Sample, base: gst::ClockTime) {
        let Some(src) = self.audio.as_ref() else {
            return;
        };
        bridge::follow_caps(src, sample.caps());
        if let Some(b) = rebase(sample, base, gst::ClockTime::ZERO) {
            if self.audio_start.is_none() {
                self.audio_start = b.pts();
            }
            let _ = src.push_buffer(b);
        }
    }

    fn audio(&mut self, sample: &gst::Sample) {
        let Some(buffer) = sample.buffer() else {
            return;
        };
        if self.ended || self.audio.is_none() || self.past_end(sample, false) {
            return;
        }
        // Audio waits for the first video keyframe (or starts at once without video).
        let base = match (self.base, &self.video) {
            (Some(b), _) => b,
            (None, None) => match buffer.pts().map(|t| bridge::running_time(sample, t)) {
                Some(b) => *self.base.insert(b),
                None => return,
            },
            (None, Some(_)) => {
                if self.pending.len() >= MAX_PENDING_AUDIO {
                    self.pending.pop_front();
                }
                self.pending.push_back(sample.clone());
                return;
            }
        };
        self.push_audio(sample, base);
    }

    /// Whether `sample` is at or after the end: that track is then done, and the file
    /// ends once every track is.
    fn past_end(&mut self, sample: &gst::Sample, video: bool) -> bool {
        let Some(end) = self.end_at else {
            return false;
        };
        let at = sample
            .buffer()
            .and_then(|b| b.pts())
            .map(|t| bridge::running_time(sample, t));
        if at.is_some_and(|t| t < end) {
            return false;
        }
        if video {
            self.video_done = true;
        } else {
            self.audio_done = true;
        }
        self.end_if_done();
        true
    }

    fn end_if_done(&mut self) {
        let video = self.video_done || self.video.is_none();
        let audio = self.audio_done || self.audio.is_none();
        if (video && audio) || (self.end_at.is_some() && self.base.is_none()) {
            self.eos();
        }
    }

    fn eos(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        for src in [&self.video, &self.audio].into_iter().flatten() {
            let _ = src.end_of_stream();
        }
    }
}

fn lock(f: &Mutex<Feed>) -> std::sync::MutexGuard<'_, Feed> {
    f.lock().unwrap_or_else(|e| e.into_inner())
}

/// An MP4 file written from a running composite's encoders.
pub struct Mp4Tap {
    path: PathBuf,
    feed: Arc<Mutex<Feed>>,
    branches: Vec<TapBranch>,
    pipeline: gst::Pipeline,
    error: Arc<Mutex<Option<String>>>,
}

impl Mp4Tap {
    /// Starts writing `main`'s encoded streams to `path` from the next keyframe (call off the
    /// async runtime).
    pub fn attach(main: &gst::Pipeline, path: &Path) -> Result<Mp4Tap, PipelineError> {
        let has_video = main.by_name("video_tee").is_some();
        let has_audio = main.by_name("audio_tee").is_some();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "segment".into());
        let p = gst::Pipeline::with_name(&format!("mp4_{name}"));
        let mux = make("mp4mux", &format!("mp4_{name}_mux"))?;
        mux.set_property("fragment-duration", FRAGMENT_MS);
        let sink = make("filesink", &format!("mp4_{name}_sink"))?;
        sink.set_property("location", path.to_string_lossy().to_string());
        sink.set_property_from_str("buffer-mode", "unbuffered");
        sink.set_property("sync", false);
        sink.set_property("async", false);
        p.add_many([&mux, &sink]).map_err(PipelineError::setup)?;
        mux.link(&sink).map_err(PipelineError::setup)?;
        let source = |kind: &str| -> Result<gst_app::AppSrc, PipelineError> {
            // Not live: the muxer waits for both streams instead of timing out on one.
            let src = gst_app::AppSrc::builder()
                .name(format!("mp4_{name}_{kind}_src"))
                .is_live(false)
                .format(gst::Format::Time)
                .block(false)
                .max_bytes(APPSRC_MAX_BYTES)
                .leaky_type(gst_app::AppLeakyType::Downstream)
                .build();
            let q = make("queue", &format!("mp4_{name}_{kind}_queue"))?;
            p.add_many([src.upcast_ref(), &q])
                .map_err(PipelineError::setup)?;
            src.link(&q).map_err(PipelineError::setup)?;
            let pad = mux
                .request_pad_simple(&format!("{kind}_%u"))
                .ok_or_else(|| PipelineError::setup("mp4mux pad"))?;
            q.static_pad("src")
                .ok_or_else(|| PipelineError::setup("queue src"))?
                .link(&pad)
                .map_err(|e| PipelineError::Setup(format!("link mp4mux: {e:?}")))?;
            Ok(src)
        };
        let feed = Arc::new(Mutex::new(Feed {
            video: if has_video {
                Some(source("video")?)
            } else {
                None
            },
            audio: if has_audio {
                Some(source("audio")?)
            } else {
                None
            },
            base: None,
            audio_start: None,
            pending: Default::default(),
            ended: false,
            end_at: None,
            video_done: false,
            audio_done: false,
        }));
        let error = Arc::new(Mutex::new(None));
        if let Some(bus) = p.bus() {
            let cell = error.clone();
            bus.set_sync_handler(move |_, msg| {
                if let gst::MessageView::Error(e) = msg.view() {
                    let mut c = cell.lock().unwrap_or_else(|e| e.into_inner());
                    c.get_or_insert_with(|| e.error().to_string());
                }
                gst::BusSyncReply::Pass
            });
        }
        p.set_state(gst::State::Playing)
            .map_err(PipelineError::setup)?;
        // Where to ask for another keyframe (known once the tap exists).
        let keyframe_pad: Arc<std::sync::OnceLock<gst::Pad>> = Arc::default();
        let kp = keyframe_pad.clone();
        let (fv, fa, fe) = (feed.clone(), feed.clone(), feed.clone());
        let (branches, video_pad) = tap_encoders(
            main,
            &format!("mp4_tap_{name}"),
            move |s| {
                // Outside the feed's lock: the request travels up to the encoder.
                if lock(&fv).video(&s) {
                    if let Some(pad) = kp.get() {
                        pad.push_event(force_key_unit_at(None));
                    }
                }
            },
            move |s| lock(&fa).audio(&s),
            move || lock(&fe).eos(),
        )?;
        if let Some(pad) = video_pad {
            // The file starts at once, not at the encoder's next scheduled keyframe.
            pad.push_event(force_key_unit_at(None));
            let _ = keyframe_pad.set(pad);
        }
        info!(file = %path.display(), "recording from the running composite");
        Ok(Mp4Tap {
            path: path.to_path_buf(),
            feed,
            branches,
            pipeline: p,
            error,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How much later than the picture the file's sound starts (to give
    /// [`super::mp4::finalize_with_audio_delay`]).
    pub fn audio_delay(&self) -> Duration {
        lock(&self.feed)
            .audio_start
            .map_or(Duration::ZERO, |t| Duration::from_nanos(t.nseconds()))
    }

    /// The error that stopped the file being written, if one did (a full disk, …).
    pub fn failed(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ends the file at the running time it is now: what the encoders still hold from before
    /// (the video encoder lags the sound, by seconds on a loaded machine) is written, up to
    /// `limit`, then the muxer finishes and its pipeline shuts down. The file is then ready
    /// to finalize.
    pub async fn finish(self, main: &gst::Pipeline, limit: Duration) -> Result<(), PipelineError> {
        let Mp4Tap {
            path,
            feed,
            branches,
            pipeline,
            error,
        } = self;
        {
            let mut f = lock(&feed);
            f.end_at = Some(super::running_time_now(main));
            f.end_if_done();
        }
        let wait = |p: gst::Pipeline, limit: Duration| async move {
            tokio::task::spawn_blocking(move || {
                p.bus()?.timed_pop_filtered(
                    gst::ClockTime::from_nseconds(limit.as_nanos() as u64),
                    &[gst::MessageType::Eos, gst::MessageType::Error],
                )
            })
            .await
            .ok()
            .flatten()
        };
        let mut waited = wait(pipeline.clone(), limit).await;
        if waited.is_none() {
            // The encoders never got there: end with what was written.
            lock(&feed).eos();
            waited = wait(pipeline.clone(), Duration::from_secs(2)).await;
        }
        let main = main.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for b in branches {
                b.detach(&main);
            }
        })
        .await;
        let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
        let failed = error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (waited.map(|m| m.type_()), failed) {
            (_, Some(e)) => Err(PipelineError::setup(format!(
                "writing {}: {e}",
                path.display()
            ))),
            (Some(gst::MessageType::Eos), None) => Ok(()),
            _ => {
                warn!(file = %path.display(), "the file's muxer did not finish in time");
                Err(PipelineError::Timeout {
                    what: "drain of the recording's muxer",
                    secs: limit.as_secs(),
                })
            }
        }
    }
}

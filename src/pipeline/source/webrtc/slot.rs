//! Where a feed's decoded frames go ([`Slot`]: the appsrc in the recording pipeline, once
//! built, with the counts the feed's health reads) and the recording's side of a track
//! ([`FeedTrack`]).

use super::super::retime::AudioRetimer;
use super::super::{SourceContext, TrackSource};
use crate::model::feed::FREEZE_GAP_MS;
use crate::pipeline::{bridge, PipelineError};
use gst::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where decoded frames of one track go: the appsrc in the recording pipeline, once built.
#[derive(Debug)]
pub struct Slot {
    appsrc: Mutex<Option<gst_app::AppSrc>>,
    delivered: AtomicU64,
    /// Whether the recording shows this track. A video track that no tile shows is dropped
    /// before its decoder (received, never decoded); when it is shown again the decoder asks
    /// the sender for a keyframe.
    pub(super) wanted: AtomicBool,
    /// When the recording last took a frame (monotonic ns), 0 for none since it was shown.
    last_frame: AtomicU64,
    /// When the recording started showing the track (monotonic ns), 0 while it does not.
    shown_at: AtomicU64,
    /// Gaps longer than [`FREEZE_GAP_MS`] between two frames while shown.
    freezes: AtomicU64,
    /// Where the track goes still encoded (an individual recording's track file), once built.
    encoded: Mutex<Option<gst_app::AppSrc>>,
    /// The encoded track waits for a keyframe (a new file starts with one).
    needs_keyframe: AtomicBool,
    /// When a keyframe was last asked for on behalf of the encoded track (monotonic ns).
    asked_keyframe: AtomicU64,
    /// The last timestamp given to the encoded track (a file's timestamps never go back).
    last_encoded: AtomicU64,
    /// Decoded audio kept on its timestamps against its sender's sound card.
    retimer: Mutex<AudioRetimer>,
}

impl Default for Slot {
    /// Wanted until the recording says otherwise: a new feed starts decoding at once.
    fn default() -> Self {
        Slot {
            appsrc: Mutex::default(),
            delivered: AtomicU64::default(),
            wanted: AtomicBool::new(true),
            last_frame: AtomicU64::default(),
            shown_at: AtomicU64::default(),
            freezes: AtomicU64::default(),
            encoded: Mutex::default(),
            needs_keyframe: AtomicBool::new(true),
            asked_keyframe: AtomicU64::default(),
            last_encoded: AtomicU64::default(),
            retimer: Mutex::default(),
        }
    }
}

pub(super) fn monotonic_ns() -> u64 {
    gst::get_timestamp().nseconds()
}
/// How far from its arrival a feed's frame may be placed: less than the mixers wait for late
/// input and queue ahead ([`crate::pipeline::composite::AGGREGATOR_LATENCY`]).
pub(super) const MAX_OFF_ARRIVAL: gst::ClockTime = gst::ClockTime::from_mseconds(250);

/// What a [`Slot`] has counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotCounts {
    /// Frames (video) or buffers (audio) the recording took.
    pub frames: u64,
    /// Gaps longer than [`FREEZE_GAP_MS`] between two frames while shown.
    pub freezes: u64,
    /// Shown, and no frame for longer than [`FREEZE_GAP_MS`] now.
    pub frozen: bool,
    /// The recording shows the track.
    pub shown: bool,
}

impl Slot {
    /// The counts so far.
    pub fn counts(&self) -> SlotCounts {
        let shown_at = self.shown_at.load(Ordering::Relaxed);
        let last = self.last_frame.load(Ordering::Relaxed).max(shown_at);
        let gap = FREEZE_GAP_MS * 1_000_000;
        SlotCounts {
            frames: self.delivered.load(Ordering::Relaxed),
            freezes: self.freezes.load(Ordering::Relaxed),
            frozen: shown_at != 0 && monotonic_ns().saturating_sub(last) > gap,
            shown: shown_at != 0,
        }
    }

    fn shown(&self, shown: bool) {
        self.last_frame.store(0, Ordering::Relaxed);
        self.shown_at
            .store(if shown { monotonic_ns() } else { 0 }, Ordering::Relaxed);
    }

    pub(super) fn push(&self, sample: &gst::Sample, audio: bool, at: Option<gst::ClockTime>) {
        let src = self.appsrc.lock().unwrap().clone();
        let Some(src) = src else { return };
        let Some(buffer) = sample.buffer_owned() else {
            return;
        };
        let Some(now) = src.current_running_time() else {
            return;
        };
        // An audio packet is sent, and reaches the recorder, once its last sample is captured:
        // its sound began its duration earlier (20 ms for an Opus frame). A video frame is one
        // instant, sent as soon as it is encoded.
        let lead = buffer
            .duration()
            .filter(|_| audio)
            .unwrap_or(gst::ClockTime::ZERO);
        let arrival = now.saturating_sub(lead);
        // Placed where the feed's jitter buffer put it (`at`, on the clock both pipelines
        // share, less the lead): derived from the sender's RTP timestamps and the packets'
        // arrival, smoothed, so jitter, retransmission waits and decoding do not move a frame
        // against its sound. Bounded around the arrival: not so far before it that the mixers
        // have gone past, nor so far after it that their inputs back up.
        let mapped = at
            .zip(src.base_time())
            .and_then(|(at, base)| at.checked_sub(base))
            .map(|m| m.saturating_sub(lead));
        let placed = match mapped {
            Some(m) => m.clamp(
                arrival.saturating_sub(MAX_OFF_ARRIVAL),
                arrival + MAX_OFF_ARRIVAL,
            ),
            None => arrival,
        };
        let mut buffer = buffer;
        if audio {
            // Resampled by a fraction of a percent where its sender's sound card runs off (see
            // `retime`), stamped as one continuous stream.
            let discont = buffer.flags().contains(gst::BufferFlags::DISCONT);
            let mut retimer = self.retimer.lock().unwrap_or_else(|e| e.into_inner());
            let before = retimer.resyncs();
            buffer = retimer.retime(placed, buffer, discont);
            if retimer.resyncs() > before {
                tracing::debug!(
                    track = %src.name(),
                    resyncs = retimer.resyncs(),
                    "audio started again at its timestamps"
                );
            }
        } else {
            let b = buffer.make_mut();
            b.set_pts(placed);
            b.set_dts(gst::ClockTime::NONE);
        }
        match bridge::push(&src, sample.caps(), buffer) {
            Ok(_) => {
                let now = monotonic_ns();
                let before = self.last_frame.swap(now, Ordering::Relaxed);
                if !audio && before != 0 && now - before > FREEZE_GAP_MS * 1_000_000 {
                    self.freezes.fetch_add(1, Ordering::Relaxed);
                }
                let n = self.delivered.fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    tracing::info!(track = %src.name(), "first media of the track in the recording");
                }
            }
            Err(e) => tracing::trace!(track = %src.name(), error = ?e, "frame not taken"),
        }
    }
}

impl Slot {
    /// Hands a depayloaded (still encoded) sample to the encoded track, if one is built:
    /// placed by the jitter buffer's time `at` like decoded frames, never before the previous
    /// one. Until a video track has had a keyframe, the sender is asked for one through
    /// `ask_keyframe` at most once a second (the track file starts at its first keyframe).
    pub(super) fn push_encoded(
        &self,
        sample: &gst::Sample,
        audio: bool,
        at: Option<gst::ClockTime>,
        ask_keyframe: impl Fn(),
    ) {
        let src = self.encoded.lock().unwrap().clone();
        let Some(src) = src else { return };
        let Some(buffer) = sample.buffer_owned() else {
            return;
        };
        if !audio && self.needs_keyframe.load(Ordering::Relaxed) {
            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                let now = monotonic_ns();
                let last = self.asked_keyframe.load(Ordering::Relaxed);
                if last == 0 || now.saturating_sub(last) > 1_000_000_000 {
                    self.asked_keyframe.store(now, Ordering::Relaxed);
                    ask_keyframe();
                }
            } else {
                self.needs_keyframe.store(false, Ordering::Relaxed);
            }
        }
        let Some(now) = src.current_running_time() else {
            return;
        };
        // An RTP timestamp is the capture time of a packet's first sample (measured: no
        // lead as for decoded audio — with one, the sound came 18–20 ms early).
        let placed = at
            .zip(src.base_time())
            .and_then(|(at, base)| at.checked_sub(base))
            .unwrap_or(now);
        let last = self.last_encoded.load(Ordering::Relaxed);
        let placed = placed.max(gst::ClockTime::from_nseconds(last));
        self.last_encoded
            .store(placed.nseconds(), Ordering::Relaxed);
        let mut buffer = buffer;
        {
            let b = buffer.make_mut();
            b.set_pts(placed);
            b.set_dts(gst::ClockTime::NONE);
        }
        if let Err(e) = bridge::push(&src, sample.caps(), buffer) {
            tracing::trace!(track = %src.name(), error = ?e, "encoded frame not taken");
        }
    }
}

/// A track of a Janus feed as the recording pipeline sees it.
#[derive(Debug, Clone)]
pub struct FeedTrack {
    /// Element name prefix.
    pub name: String,
    /// Audio (true) or video.
    pub audio: bool,
    /// Frames arrive here.
    pub slot: Arc<Slot>,
}

impl TrackSource for FeedTrack {
    fn build(&self, _ctx: &SourceContext) -> Result<gst::Element, PipelineError> {
        let max_bytes = if self.audio {
            256 * 1024
        } else {
            8 * 1024 * 1024
        };
        let src = bridge::source(&format!("janus_{}", self.name), max_bytes);
        *self.slot.appsrc.lock().unwrap() = Some(src.clone());
        self.slot.wanted.store(true, Ordering::SeqCst);
        self.slot.shown(true);
        Ok(src.upcast())
    }

    fn release(&self) {
        self.slot.wanted.store(false, Ordering::SeqCst);
        self.slot.shown(false);
        *self.slot.appsrc.lock().unwrap() = None;
    }

    fn build_encoded(&self, _ctx: &SourceContext) -> Result<Option<gst::Element>, PipelineError> {
        let max_bytes = if self.audio {
            256 * 1024
        } else {
            4 * 1024 * 1024
        };
        let src = bridge::source(&format!("janus_sent_{}", self.name), max_bytes);
        self.slot.needs_keyframe.store(true, Ordering::SeqCst);
        self.slot.asked_keyframe.store(0, Ordering::SeqCst);
        self.slot.last_encoded.store(0, Ordering::SeqCst);
        *self.slot.encoded.lock().unwrap() = Some(src.clone());
        Ok(Some(src.upcast()))
    }

    fn release_encoded(&self) {
        *self.slot.encoded.lock().unwrap() = None;
    }
}

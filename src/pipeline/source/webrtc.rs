//! One subscribed publisher: its own small pipeline (webrtcbin → decodebin → raw audio/video
//! appsinks), bridged into the recording pipeline through appsrc elements ([`FeedTrack`]).
//!
//! Keeping WebRTC out of the recording pipeline means a feed's ICE/DTLS failure, renegotiation
//! or teardown can never stall or error the recording: the tile just stops getting frames.

use super::retime::AudioRetimer;
use super::{SourceContext, TrackSource};
use crate::model::feed::FREEZE_GAP_MS;
use crate::pipeline::{bridge, make_unnamed as make, PipelineError};
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
    wanted: AtomicBool,
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

fn monotonic_ns() -> u64 {
    gst::get_timestamp().nseconds()
}
/// How far from its arrival a feed's frame may be placed: less than the mixers wait for late
/// input and queue ahead ([`crate::pipeline::composite::AGGREGATOR_LATENCY`]).
const MAX_OFF_ARRIVAL: gst::ClockTime = gst::ClockTime::from_mseconds(250);

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

    fn push(&self, sample: &gst::Sample, audio: bool, at: Option<gst::ClockTime>) {
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
    fn push_encoded(
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

/// The feed pipeline: webrtcbin and decoders.
pub struct FeedPipeline {
    /// The pipeline.
    pub pipeline: gst::Pipeline,
    /// Its webrtcbin.
    pub webrtc: gst::Element,
    /// Decoded audio.
    pub audio: Arc<Slot>,
    /// Decoded video.
    pub video: Arc<Slot>,
    /// Cleared when the pipeline is stopped: from then on it hands nothing to the slots (its
    /// slots may already belong to a new subscription while it shuts down).
    active: Arc<AtomicBool>,
}

impl FeedPipeline {
    /// Builds the pipeline (not yet playing). `local_ip` is added to the ICE agent's local
    /// addresses when given (hosts whose other interfaces must not be used).
    /// Decoded frames go to `audio` and `video` (kept across re-subscriptions of a feed).
    pub fn new(
        name: &str,
        local_ip: Option<&str>,
        audio: Arc<Slot>,
        video: Arc<Slot>,
    ) -> Result<FeedPipeline, PipelineError> {
        let pipeline = gst::Pipeline::with_name(&format!("feed_{name}"));
        // The recording runs on the same clock: a feed's timestamps carry over.
        pipeline.use_clock(Some(&gst::SystemClock::obtain()));
        let webrtc = make("webrtcbin")?;
        webrtc.set_property_from_str("bundle-policy", "max-bundle");
        webrtc.set_property("latency", 200u32);
        if let Some(ip) = local_ip {
            let agent = webrtc.property::<gst::glib::Object>("ice-agent");
            if agent.has_property("ice-tcp") {
                agent.set_property("ice-tcp", false);
            }
            let _ = agent.emit_by_name::<bool>("add-local-ip-address", &[&ip]);
        }
        // Lost packets are asked for again (RTCP NACK; retransmissions arrive on the RTX
        // stream when the offer has one) before the jitter buffer gives up on them. With one
        // bundled transport the jitter buffers take the setting of one transceiver for all
        // streams, so it is on for audio too: a recording can afford the wait.
        webrtc.connect("on-new-transceiver", false, |args| {
            if let Some(t) = args.get(1).and_then(|v| v.get::<gst::glib::Object>().ok()) {
                t.set_property("do-nack", true);
            }
            None
        });
        pipeline.add(&webrtc).map_err(PipelineError::setup)?;
        let active = Arc::new(AtomicBool::new(true));
        let (a, v) = (audio.clone(), video.clone());
        let pipe = pipeline.downgrade();
        let on = active.clone();
        webrtc.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let Some(pipeline) = pipe.upgrade() else {
                return;
            };
            let (a, v, on) = (a.clone(), v.clone(), on.clone());
            tracing::debug!(caps = ?pad.current_caps(), "feed stream");
            let is_video = pad
                .current_caps()
                .and_then(|c| {
                    c.structure(0)
                        .and_then(|s| s.get::<&str>("media").ok().map(|m| m == "video"))
                })
                .unwrap_or(false);
            if is_video {
                ask_keyframes_by_pli(pad);
            }
            if let Err(e) = split(&pipeline, pad, !is_video, a, v, on) {
                tracing::warn!(error = %e, "feed stream not linked");
            }
        });
        Ok(FeedPipeline {
            pipeline,
            webrtc,
            audio,
            video,
            active,
        })
    }

    /// Applies Janus's offer, answers, waits for ICE gathering, returns the answer SDP.
    pub async fn answer(&self, offer_sdp: &str) -> Result<String, PipelineError> {
        let p = self.pipeline.clone();
        tokio::task::spawn_blocking(move || p.set_state(gst::State::Playing))
            .await
            .map_err(PipelineError::setup)?
            .map_err(PipelineError::setup)?;
        let sdp = gst_sdp::SDPMessage::parse_buffer(offer_sdp.as_bytes())
            .map_err(|_| PipelineError::setup("unreadable SDP offer"))?;
        let offer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let promise = gst::Promise::with_change_func(move |_| {
            let _ = tx.send(());
        });
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&offer, &promise]);
        rx.await
            .map_err(|_| PipelineError::setup("set-remote-description"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let promise = gst::Promise::with_change_func(move |reply| {
            let answer = reply.ok().flatten().and_then(|s| {
                s.value("answer")
                    .ok()
                    .and_then(|v| v.get::<gst_webrtc::WebRTCSessionDescription>().ok())
            });
            let _ = tx.send(answer);
        });
        self.webrtc
            .emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
        let answer = rx
            .await
            .ok()
            .flatten()
            .ok_or_else(|| PipelineError::setup("create-answer failed"))?;
        self.webrtc
            .emit_by_name::<()>("set-local-description", &[&answer, &None::<gst::Promise>]);
        // Non-trickle answer: wait until the candidates are in the local description.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let state = self
                .webrtc
                .property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
            if state == gst_webrtc::WebRTCICEGatheringState::Complete
                || tokio::time::Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let local = self
            .webrtc
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .ok_or_else(|| PipelineError::setup("no local description"))?;
        local
            .sdp()
            .as_text()
            .map_err(|_| PipelineError::setup("answer SDP"))
    }

    /// webrtcbin's receive statistics, one entry per incoming RTP stream (empty when it does
    /// not answer within a second).
    pub async fn stats(&self) -> Vec<InboundStats> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let promise = gst::Promise::with_change_func(move |reply| {
            let _ = tx.send(reply.ok().flatten().map(|s| s.to_owned()));
        });
        self.webrtc
            .emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
        match tokio::time::timeout(std::time::Duration::from_secs(1), rx).await {
            Ok(Ok(Some(report))) => inbound_stats(&report, &self.video_ssrcs()),
            _ => Vec::new(),
        }
    }

    /// The SSRCs the offer announced for video (webrtcbin's stats do not tell a stream's kind
    /// reliably when streams are bundled).
    fn video_ssrcs(&self) -> Vec<u32> {
        let Some(remote) = self
            .webrtc
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("remote-description")
        else {
            return Vec::new();
        };
        remote
            .sdp()
            .medias()
            .filter(|m| m.media() == Some("video"))
            .flat_map(|m| {
                m.attributes()
                    .filter(|a| a.key() == "ssrc")
                    .filter_map(|a| a.value()?.split_whitespace().next()?.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// Whether ICE failed or the connection closed.
    pub fn failed(&self) -> bool {
        use gst_webrtc::WebRTCPeerConnectionState as S;
        matches!(
            self.webrtc.property::<S>("connection-state"),
            S::Failed | S::Closed
        )
    }

    /// Stops the pipeline: it hands over nothing more at once, and shuts down (a blocking
    /// state change: webrtcbin joins its threads) on a blocking thread when called from the
    /// async runtime.
    pub fn stop(self) {
        self.active.store(false, Ordering::SeqCst);
        let pipeline = self.pipeline;
        let shut_down = move || {
            let _ = pipeline.set_state(gst::State::Null);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(shut_down);
            }
            Err(_) => shut_down(),
        }
    }
}

/// Receive statistics of one incoming RTP stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundStats {
    /// Video (else audio).
    pub video: bool,
    /// Packets received.
    pub packets_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Packets lost.
    pub packets_lost: u64,
    /// Interarrival jitter, seconds.
    pub jitter: f64,
    /// NACKs sent.
    pub nacks_sent: u64,
    /// PLIs sent.
    pub plis_sent: u64,
}

/// The `inbound-rtp` entries of a webrtcbin stats report, summed per kind (a stream and its
/// retransmission stream count together); a stream is video when its SSRC is in `video`.
fn inbound_stats(report: &gst::StructureRef, video: &[u32]) -> Vec<InboundStats> {
    let count = |s: &gst::Structure, field: &str| -> u64 {
        if let Ok(v) = s.get::<u64>(field) {
            v
        } else if let Ok(v) = s.get::<i64>(field) {
            v.max(0) as u64
        } else if let Ok(v) = s.get::<u32>(field) {
            v as u64
        } else if let Ok(v) = s.get::<i32>(field) {
            v.max(0) as u64
        } else {
            0
        }
    };
    let mut out: Vec<InboundStats> = Vec::new();
    for s in report
        .iter()
        .filter_map(|(_, v)| v.get::<gst::Structure>().ok())
        .filter(|s| {
            s.get::<gst_webrtc::WebRTCStatsType>("type").ok()
                == Some(gst_webrtc::WebRTCStatsType::InboundRtp)
        })
    {
        let is_video = s.get::<u32>("ssrc").is_ok_and(|ssrc| video.contains(&ssrc));
        let i = match out.iter().position(|e| e.video == is_video) {
            Some(i) => i,
            None => {
                out.push(InboundStats {
                    video: is_video,
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        let e = &mut out[i];
        e.packets_received += count(&s, "packets-received");
        e.bytes_received += count(&s, "bytes-received");
        e.packets_lost += count(&s, "packets-lost");
        e.jitter = e.jitter.max(s.get::<f64>("jitter").unwrap_or(0.0));
        e.nacks_sent += count(&s, "nack-count");
        e.plis_sent += count(&s, "pli-count");
    }
    out
}

/// Keyframe requests from the depayloader and decoder (upstream force-key-unit events) leave
/// webrtcbin as RTCP PLI only when they name the stream's SSRC; they are sent without one, so
/// it is added here from the stream's caps (and the request is made a PLI, which every sender
/// answers, rather than a FIR).
fn ask_keyframes_by_pli(pad: &gst::Pad) {
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
fn split(
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
fn add_decoder(
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
fn gate_unwanted(
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
fn ask_keyframe(sinkpad: &gst::Pad) {
    let request = gst::Structure::builder("GstForceKeyUnit")
        .field("all-headers", true)
        .build();
    sinkpad.push_event(gst::event::CustomUpstream::new(request));
}

/// The depayloader for an RTP stream's caps, and for H.264 the parser that gives Matroska
/// its stream format (`avc`, whole access units).
fn depayloader(rtp: &gst::Pad) -> Result<Vec<gst::Element>, PipelineError> {
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
fn link_encoded(
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
fn clock_time(sample: &gst::Sample, base: Option<gst::ClockTime>) -> Option<gst::ClockTime> {
    let pts = sample.buffer()?.pts()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    Some(segment.to_running_time(pts)? + base?)
}

fn link_raw(
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
            super::raw_audio_caps(),
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

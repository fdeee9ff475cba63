//! One subscribed publisher: its own small pipeline (webrtcbin → decodebin → raw audio/video
//! appsinks), bridged into the recording pipeline through appsrc elements ([`FeedTrack`]).
//!
//! Keeping WebRTC out of the recording pipeline means a feed's ICE/DTLS failure, renegotiation
//! or teardown can never stall or error the recording: the tile just stops getting frames.

//!
//! Files: [`slot`] (where frames go), [`stats`] (receive statistics), [`branches`] (media
//! branches); this file holds the feed's signalling handle ([`FeedPipeline`]).

mod branches;
mod slot;
mod stats;

pub use slot::{FeedTrack, Slot, SlotCounts};
pub use stats::InboundStats;

use self::branches::*;
use self::stats::*;
use crate::pipeline::{make_unnamed as make, PipelineError};
use gst::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

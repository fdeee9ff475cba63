//! A feed's receive statistics, read from webrtcbin's stats ([`InboundStats`]).

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
pub(super) fn inbound_stats(report: &gst::StructureRef, video: &[u32]) -> Vec<InboundStats> {
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

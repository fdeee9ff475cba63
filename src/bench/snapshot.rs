//! `roomcast bench snapshot`: what the thumbnail of a running job costs — keeping a
//! reference to every composed frame (the probe on the encoder's input) and encoding one
//! 320-pixel JPEG every 2 s.

use crate::pipeline::snapshot;
use serde::Serialize;
use std::time::Instant;

/// What one snapshot and the frame tap cost.
#[derive(Debug, Serialize)]
pub struct SnapshotReport {
    /// Frame size the snapshots were taken of.
    pub frame: String,
    /// Snapshots encoded.
    pub snapshots: u32,
    /// CPU per snapshot (every thread of the encode), milliseconds.
    pub cpu_ms_per_snapshot: f64,
    /// Size of one snapshot, bytes.
    pub jpeg_bytes: usize,
    /// Wall time of the tap's work per frame (a reference kept, the previous one dropped),
    /// nanoseconds.
    pub tap_ns_per_frame: f64,
    /// Cores a job spends on its thumbnail: a snapshot every 2 s and the tap on 30 frames a
    /// second.
    pub cores_per_job: f64,
}

/// Measures with a 1280×720 frame: `count` snapshots, and the tap's work on 30 000 frames.
pub fn snapshot_cost(count: u32) -> anyhow::Result<SnapshotReport> {
    gst::init()?;
    let (w, h) = (1280u32, 720u32);
    let caps = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, w, h)
        .fps(gst::Fraction::new(30, 1))
        .build()?
        .to_caps()?;
    let size = (w * h * 3 / 2) as usize;
    // A picture with detail (JPEG of a flat colour would cost less than a real room's).
    let data: Vec<u8> = (0..size).map(|i| ((i * 7919) % 251) as u8).collect();
    let buffer = gst::Buffer::from_mut_slice(data);
    let sample = gst::Sample::builder().buffer(&buffer).caps(&caps).build();

    let cpu0 = crate::util::cpu_seconds();
    let mut jpeg_bytes = 0;
    for _ in 0..count.max(1) {
        jpeg_bytes = snapshot::jpeg(&sample, 320)?.len();
    }
    let cpu_ms = (crate::util::cpu_seconds() - cpu0) * 1000.0 / count.max(1) as f64;

    // The tap's work, as its probe does it for each frame.
    let tap = snapshot::FrameTap::default();
    let frames = 30_000u32;
    let t0 = Instant::now();
    for _ in 0..frames {
        tap.keep(&buffer, &caps);
    }
    let tap_ns = t0.elapsed().as_nanos() as f64 / frames as f64;
    Ok(SnapshotReport {
        frame: format!("{w}x{h}"),
        snapshots: count.max(1),
        cpu_ms_per_snapshot: (cpu_ms * 100.0).round() / 100.0,
        jpeg_bytes,
        tap_ns_per_frame: tap_ns.round(),
        cores_per_job: ((cpu_ms / 1000.0 / 2.0 + tap_ns * 30.0 / 1e9) * 1e5).round() / 1e5,
    })
}

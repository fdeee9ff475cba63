//! `roomcast bench live`: N real-time recordings of synthetic rooms at once in this process,
//! as a worker runs them, optionally each also streaming to an RTMP destination. Prints, per
//! recording, the video frames written against those its duration calls for and the worst A/V
//! offset of its sync reference, and in total the cores used: "N recordings on this machine"
//! becomes a figure the command prints.

use super::probe::{av_offsets_ms, probe};
use crate::job::{record, RecordingSpec};
use crate::layout::Layout;
use crate::model::{Preset, RtmpUrl};
use crate::room::synthetic::SyntheticRoom;
use crate::room::RoomConnector;
use crate::util::{cpu_seconds, peak_rss_mib};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Share of the expected frames a recording must hold to count as kept up.
pub const KEPT_UP: f64 = 0.995;

/// One recording's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LiveJob {
    /// Index of the recording.
    pub job: usize,
    /// Video frames in the file.
    pub frames: u64,
    /// Frames its seconds call for.
    pub expected_frames: u64,
    /// `frames` ÷ `expected_frames`.
    pub written: f64,
    /// Flash/beep pairs found.
    pub av_pairs: usize,
    /// Largest |beep − flash| (ms).
    pub worst_av_offset_ms: f64,
}

/// What a live bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    /// Recordings run at once.
    pub jobs: usize,
    /// Participants in each room.
    pub participants: usize,
    /// Preset name.
    pub preset: String,
    /// Seconds each recorded.
    pub seconds: u32,
    /// Whether each also streamed to an RTMP destination (its own stream: the URL's key
    /// followed by `_<index>`).
    pub rtmp: bool,
    /// Whether each room's stream ran as a job of its own (sharing the recording's composite
    /// unless `ROOMCAST_SHARED_COMPOSITE=0`).
    pub stream_job: bool,
    /// Whether jobs of one room share a composite (`ROOMCAST_SHARED_COMPOSITE`).
    pub shared_composite: bool,
    /// Process CPU seconds ÷ wall seconds while they ran.
    pub cores_total: f64,
    /// `cores_total` ÷ `jobs`.
    pub cores_per_job: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Recordings holding at least 99.5 % of their frames.
    pub kept_up: usize,
    /// Each recording.
    pub per_job: Vec<LiveJob>,
}

/// Runs `jobs` recordings of `participants`-person synthetic rooms for `seconds` each.
#[allow(clippy::too_many_arguments)] // the bench's command-line options, one each
pub async fn live(
    jobs: usize,
    participants: usize,
    seconds: u32,
    preset: &Preset,
    layout: &Layout,
    rtmp: Option<RtmpUrl>,
    hls: Option<crate::model::hls::HlsSpec>,
    stream_job: bool,
) -> anyhow::Result<LiveReport> {
    let dir = std::env::temp_dir().join(format!("roomcast-bench-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fps = preset.video.as_ref().map_or(30, |v| v.fps) as f64;
    let mut running = Vec::new();
    let mut streams = Vec::new();
    let mut keep = Vec::new();
    for i in 0..jobs {
        let spec = RecordingSpec {
            page: None,
            page_layer: false,
            hls: hls.clone(),
            room_id: format!("bench{i}"),
            conf_num: "1".into(),
            out_dir: dir.join(format!("job{i}")),
            preset: preset.clone(),
            layout: layout.clone(),
            watermark: None,
            max_duration: Some(Duration::from_secs(seconds as u64)),
            // One stream per recording: a server takes one publisher per stream key.
            rtmp: match &rtmp {
                Some(u) => vec![RtmpUrl::parse(&format!("{}_{i}", u.secret()))?],
                None => Vec::new(),
            },
            record: true,
            first_segment: 1,
            min_free_bytes: 0,
            start_timeout: None,
        };
        let room = SyntheticRoom::steady(participants).connect().await?;
        // The command channel stays open until the recording ends by its duration.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        keep.push(tx);
        let stream = stream_job.then(|| RecordingSpec {
            record: false,
            hls: None,
            ..spec.clone()
        });
        let mut spec = spec;
        if stream.is_some() {
            spec.rtmp.clear();
        }
        running.push(tokio::spawn(record(spec, room, rx)));
        if let Some(stream) = stream {
            // The room's stream as a job of its own, as a start-streaming request makes it.
            let room = SyntheticRoom::steady(participants).connect().await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            keep.push(tx);
            streams.push(tokio::spawn(record(stream, room, rx)));
        }
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut files = Vec::new();
    for (i, r) in running.into_iter().enumerate() {
        let rec = r.await??;
        let file = rec
            .file
            .ok_or_else(|| anyhow::anyhow!("recording {i} wrote no file"))?;
        files.push((i, file));
    }
    for s in streams {
        s.await??;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    drop(keep);
    let mut per_job = Vec::new();
    for (i, file) in files {
        let path = file.path.clone();
        let p = tokio::task::spawn_blocking(move || probe(&path)).await??;
        let expected = (seconds as f64 * fps).round() as u64;
        let offsets = av_offsets_ms(&p.flashes, &p.beeps);
        tracing::debug!(job = i, flashes = ?p.flashes, beeps = ?p.beeps, ?offsets, "sync reference");
        per_job.push(LiveJob {
            job: i,
            frames: p.frames,
            expected_frames: expected,
            written: p.frames as f64 / expected.max(1) as f64,
            av_pairs: offsets.len(),
            worst_av_offset_ms: offsets.iter().fold(0.0, |w, o| o.abs().max(w)),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(LiveReport {
        jobs,
        participants,
        preset: preset.name.clone(),
        seconds,
        rtmp: rtmp.is_some(),
        stream_job,
        shared_composite: crate::job::media::session::sharing(),
        cores_total: cpu / wall,
        cores_per_job: cpu / wall / jobs.max(1) as f64,
        peak_rss_mib: peak_rss_mib(),
        kept_up: per_job.iter().filter(|j| j.written >= KEPT_UP).count(),
        per_job,
    })
}

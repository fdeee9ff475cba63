//! Turning the fragmented recording into a normal MP4.
//!
//! While recording, `mp4mux` writes a fragmented MP4 (a `moof`+`mdat` pair every
//! [`super::mixer::FRAGMENT_MS`]), so a process killed mid-recording leaves a file that plays up to
//! its last complete fragment. On a graceful stop [`finalize`] remuxes it (no re-encode) into a
//! plain MP4 with the `moov` index at the front, writes it beside the original, syncs it and
//! renames it over the original, so the file under the final name is playable at every moment.

use super::{make, PipelineError};
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Time allowed per 100 MB when remuxing (local disk streams far faster).
const REMUX_SECS_PER_100MB: u64 = 20;
/// Minimum time allowed for a remux.
const REMUX_MIN_SECS: u64 = 30;

/// A finished recording file.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentFile {
    /// Where it is.
    pub path: PathBuf,
    /// Media duration.
    pub duration: gst::ClockTime,
    /// Size in bytes.
    pub bytes: u64,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> PipelineError {
    move |source| PipelineError::Io { context, source }
}

/// Remuxes `path` in place into a fast-start MP4 and returns what it holds.
pub fn finalize(path: &Path) -> Result<SegmentFile, PipelineError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.finalizing"));
    let scratch = dir.join(format!(".{name}.moov"));
    let duration = remux(path, &tmp, &scratch);
    let _ = std::fs::remove_file(&scratch);
    let duration = match duration {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let f = std::fs::File::open(&tmp).map_err(io(format!("opening {}", tmp.display())))?;
    f.sync_all()
        .map_err(io(format!("syncing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming {}", tmp.display())))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let bytes = std::fs::metadata(path)
        .map_err(io(format!("stat {}", path.display())))?
        .len();
    Ok(SegmentFile {
        path: path.to_path_buf(),
        duration,
        bytes,
    })
}

fn remux(src_path: &Path, out: &Path, scratch: &Path) -> Result<gst::ClockTime, PipelineError> {
    let size = std::fs::metadata(src_path)
        .map_err(io(format!("stat {}", src_path.display())))?
        .len();
    let pipeline = gst::Pipeline::with_name("finalize");
    let src = make("filesrc", "finalize_src")?;
    src.set_property("location", src_path.to_string_lossy().to_string());
    let demux = make("qtdemux", "finalize_demux")?;
    let mux = make("mp4mux", "finalize_mux")?;
    mux.set_property("faststart", true);
    mux.set_property("faststart-file", scratch.to_string_lossy().to_string());
    let sink = make("filesink", "finalize_sink")?;
    sink.set_property("location", out.to_string_lossy().to_string());
    pipeline
        .add_many([&src, &demux, &mux, &sink])
        .map_err(PipelineError::setup)?;
    src.link(&demux).map_err(PipelineError::setup)?;
    mux.link(&sink).map_err(PipelineError::setup)?;

    let end = Arc::new(AtomicU64::new(0));
    let pipeline_weak = pipeline.downgrade();
    let mux_weak = mux.downgrade();
    let end_probe = end.clone();
    demux.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(mux)) = (pipeline_weak.upgrade(), mux_weak.upgrade()) else {
            return;
        };
        let Ok(q) = make("queue", &format!("finalize_queue_{}", pad.name())) else {
            return;
        };
        if pipeline.add(&q).is_err() {
            return;
        }
        let _ = q.sync_state_with_parent();
        if let Some(qs) = q.static_pad("sink") {
            let _ = pad.link(&qs);
        }
        let _ = q.link(&mux);
        let end = end_probe.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(ref b)) = info.data {
                if let Some(pts) = b.pts() {
                    let stop = pts + b.duration().unwrap_or(gst::ClockTime::ZERO);
                    end.fetch_max(stop.nseconds(), Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    });

    pipeline
        .set_state(gst::State::Playing)
        .map_err(PipelineError::setup)?;
    let secs = REMUX_MIN_SECS + size / 100_000_000 * REMUX_SECS_PER_100MB;
    let result = wait_eos(&pipeline, Duration::from_secs(secs), "finalize the MP4");
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    Ok(gst::ClockTime::from_nseconds(end.load(Ordering::Relaxed)))
}

/// Blocks until the pipeline posts EOS (Ok) or an error, or the time runs out.
pub(crate) fn wait_eos(
    pipeline: &gst::Pipeline,
    limit: Duration,
    what: &'static str,
) -> Result<(), PipelineError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| PipelineError::setup("no bus"))?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(PipelineError::Timeout {
                what,
                secs: limit.as_secs(),
            });
        }
        let timeout = gst::ClockTime::from_mseconds(left.as_millis() as u64);
        let Some(msg) =
            bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error])
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => {
                return Err(PipelineError::Runtime {
                    element: msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
                    message: format!("{} ({:?})", e.error(), e.debug()),
                })
            }
            _ => {}
        }
    }
}

//! Live HLS from the job's one encode: fMP4 (CMAF) segments cut on keyframes, a live playlist
//! rewritten after each segment, and the VOD playlist when the output ends.
//!
//! ```text
//!  main pipeline:  video_tee ─ queue (leaky) ─ appsink ┐
//!                  audio_tee ─ queue (leaky) ─ appsink ┴ channel ─ writer thread ─ files
//! ```
//!
//! The appsinks only hand samples to a channel; the writer thread builds the segments, so
//! the encoders never wait on a disk. Each file is written under a temporary name and renamed,
//! so a reader (or the spool) never sees half a segment or half a playlist. Every file the
//! writer finishes is announced as an [`HlsFile`] for delivery.

//!
//! Files: [`files`] (names, journal, recovery), [`writer`] (segments and playlists),
//! [`fmp4`] and [`playlist`] (the formats); this file runs the output.

mod files;
pub mod fmp4;
pub mod playlist;
mod writer;

pub use files::{folder, folder_of, init_name, playlist_name, recover, HlsFile};

use super::tap::{tap_encoders, TapBranch};
use super::PipelineError;
pub use crate::model::hls::{HlsPart, HlsSpec};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use tracing::{info, warn};
use writer::*;

/// What the writer thread is told.
enum Msg {
    Video(gst::Sample),
    Audio(gst::Sample),
    Eos,
}

/// A running HLS output.
pub struct HlsOutput {
    branches: Vec<TapBranch>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Tells the writer the streams ended when the output ends before the pipeline does.
    ended: mpsc::Sender<Msg>,
    eos_needed: usize,
}

impl HlsOutput {
    /// Starts cutting `pipeline`'s encoded streams into `dir`, names starting with `stem`;
    /// each finished file is passed to `on_file` (from the writer thread).
    pub fn start(
        pipeline: &gst::Pipeline,
        dir: &Path,
        stem: &str,
        spec: &HlsSpec,
        on_file: impl Fn(HlsFile) + Send + 'static,
    ) -> Result<HlsOutput, PipelineError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            PipelineError::setup(format!("creating the HLS folder {}: {e}", dir.display()))
        })?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let tx_video = std::sync::Mutex::new(tx.clone());
        let tx_audio = std::sync::Mutex::new(tx.clone());
        let ended = tx.clone();
        let tx_eos = std::sync::Mutex::new(tx);
        let (branches, video_pad) = tap_encoders(
            pipeline,
            &format!("hls_{stem}"),
            move |s| {
                let _ = tx_video.lock().map(|t| t.send(Msg::Video(s)));
            },
            move |s| {
                let _ = tx_audio.lock().map(|t| t.send(Msg::Audio(s)));
            },
            move || {
                let _ = tx_eos.lock().map(|t| t.send(Msg::Eos));
            },
        )?;
        let eos_needed = branches.len();
        let mut w = Writer::new(dir.to_path_buf(), stem, spec, pipeline, video_pad);
        let writer = std::thread::Builder::new()
            .name("hls-writer".into())
            .spawn(move || {
                let mut eos = 0;
                while let Ok(msg) = rx.recv() {
                    let result = match msg {
                        Msg::Video(s) => w.video(&s, &on_file),
                        Msg::Audio(s) => w.audio(&s, &on_file),
                        Msg::Eos => {
                            eos += 1;
                            if eos < eos_needed {
                                continue;
                            }
                            break;
                        }
                    };
                    if let Err(e) = result {
                        warn!(error = %e, "HLS segment not written");
                    }
                }
                if let Err(e) = w.finish(&on_file) {
                    warn!(error = %e, "HLS output not finished");
                }
            })
            .map_err(|e| PipelineError::setup(format!("HLS writer thread: {e}")))?;
        info!(dir = %dir.display(), stem, segment_s = spec.segment_secs, "HLS output started");
        Ok(HlsOutput {
            branches,
            writer: Some(writer),
            ended,
            eos_needed,
        })
    }

    /// Ends the output while the pipeline goes on (its job stopped, others use the
    /// composite): the taps are removed, then the writer cuts its last segment and writes the
    /// VOD playlist (waited for up to `limit`).
    pub async fn end(mut self, pipeline: &gst::Pipeline, limit: Duration) {
        self.detach_taps(pipeline).await;
        for _ in 0..self.eos_needed {
            let _ = self.ended.send(Msg::Eos);
        }
        self.finish(pipeline, limit).await;
    }

    /// After the main pipeline's end of stream: waits (up to `limit`) for the writer to cut
    /// the last segment and write the VOD playlist, then removes the taps.
    pub async fn finish(mut self, pipeline: &gst::Pipeline, limit: Duration) {
        if let Some(writer) = self.writer.take() {
            let joined = tokio::task::spawn_blocking(move || writer.join());
            if tokio::time::timeout(limit, joined).await.is_err() {
                warn!("the HLS writer did not finish in time");
            }
        }
        self.detach_taps(pipeline).await;
    }

    /// Removes the taps from `pipeline` (off the async runtime).
    async fn detach_taps(&mut self, pipeline: &gst::Pipeline) {
        let p = pipeline.clone();
        let branches = std::mem::take(&mut self.branches);
        let _ = tokio::task::spawn_blocking(move || {
            for b in branches {
                b.detach(&p);
            }
        })
        .await;
    }
}

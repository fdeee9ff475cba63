//! A recording segment on its way to storage while it records ([`crate::delivery::chunks`]):
//! every chunk interval the bytes its file grew by go to the spool as its next chunk
//! ([`Run::cut_chunk`]); a segment whose machine is gone is rebuilt from its chunks by the
//! worker that takes the job over ([`Run::rebuild_from_chunks`]).

use super::context::Run;
use crate::delivery::chunks::{chunk_meta, copy_range, cut_point, ChunkCursor};
use crate::job::files::outbox::HandOff;
use crate::job::files::records::segment_meta;
use crate::job::spec::host::JobHost;
use crate::queue::{SegmentRecord, SegmentStatus};
use std::path::PathBuf;
use std::time::Instant;
use tracing::{info, warn};

/// What became of a lost machine's segment.
pub(crate) enum Rebuild {
    /// Rebuilt here, at this path.
    Rebuilt(PathBuf),
    /// No chunk of it reached storage (or no storage is configured).
    Nothing,
    /// Storage could not be read: worth another try.
    Later,
}

/// A segment an earlier run left `recording` whose file is not on this machine (its machine
/// is gone).
pub(crate) fn lost(seg: &SegmentRecord) -> bool {
    seg.status == SegmentStatus::Recording && !seg.path.exists()
}

impl<H: JobHost> Run<'_, H> {
    /// Cuts the recording segment's next chunk when the chunk interval has passed since the
    /// last (with storage configured and chunks on).
    pub(crate) async fn cut_chunk(&mut self) {
        let Some(every) = self
            .env
            .outbox
            .deliverer
            .as_ref()
            .and_then(|d| d.chunk_every)
        else {
            return;
        };
        let Some(seg) = self.job.segments.last().filter(|s| {
            matches!(
                s.status,
                SegmentStatus::Recording | SegmentStatus::HandedOver
            ) && s.file_name.ends_with(".mp4")
        }) else {
            return;
        };
        let cursor = &mut self.chunks;
        if cursor.file != seg.file_name {
            *cursor = ChunkCursor {
                file: seg.file_name.clone(),
                offset: 0,
                seq: 0,
                last: Some(Instant::now()),
            };
        }
        if cursor.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        cursor.last = Some(Instant::now());
        let (path, from, seq) = (seg.path.clone(), cursor.offset, cursor.seq + 1);
        // Beside the segment only until the spool takes it (a rename on the same disk).
        let out = path.with_file_name(crate::delivery::chunks::chunk_name(&seg.file_name, seq));
        let whole = segment_meta(&self.job, seg);
        let meta = chunk_meta(&whole, seq);
        let cut = {
            let (out, path) = (out.clone(), path.clone());
            tokio::task::spawn_blocking(move || {
                let Some(to) = cut_point(&path, from)? else {
                    return Ok(None);
                };
                copy_range(&path, from, to, &out)?;
                Ok::<_, std::io::Error>(Some(to))
            })
            .await
        };
        let to = match cut {
            Ok(Ok(Some(to))) => to,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                warn!(error = %e, file = %meta.file_name, "chunk not cut; the next cut takes its bytes");
                let _ = std::fs::remove_file(&out);
                return;
            }
            Err(e) => {
                warn!(error = %e, "chunk task failed");
                return;
            }
        };
        let target = self.job.spec.storage.clone();
        match self.env.outbox.hand_off(meta, &out, target).await {
            HandOff::Spooled { .. } => {
                self.chunks.offset = to;
                self.chunks.seq = seq;
                // On S3 the finished file's own upload starts now too (see `early`).
                if let Some(crate::delivery::Storage::S3(t)) = self.job_storage() {
                    tokio::spawn(crate::delivery::s3::early::grow(t, whole, path, to));
                }
            }
            _ => {
                warn!(file = %self.chunks.file, seq, "chunk not spooled; the next cut takes its bytes");
                let _ = std::fs::remove_file(&out);
            }
        }
    }

    /// Where this job's files go (its own target or the configured one), if anywhere.
    fn job_storage(&self) -> Option<crate::delivery::Storage> {
        let d = self.env.outbox.deliverer.as_ref()?;
        d.storage_for(self.job.spec.storage.as_deref()).ok()
    }

    /// A segment an earlier run on another machine left `recording` (its file is not here):
    /// its chunks in storage, end to end, in this machine's recordings folder.
    pub(crate) async fn rebuild_from_chunks(&self, seg: &SegmentRecord) -> Rebuild {
        let Some(storage) = self.job_storage() else {
            return Rebuild::Nothing;
        };
        let dest = self.env.recordings_dir.join(&seg.file_name);
        let meta = segment_meta(&self.job, seg);
        match storage.fetch_chunks(&meta, &dest).await {
            Ok(0) => Rebuild::Nothing,
            Ok(n) => {
                info!(file = %seg.file_name, chunks = n, "segment of a lost machine rebuilt from its chunks in storage");
                Rebuild::Rebuilt(dest)
            }
            Err(e) => {
                warn!(error = %e, file = %seg.file_name,
                    "chunks of a lost machine's segment could not be read; tried again when the job ends");
                let _ = std::fs::remove_file(&dest);
                Rebuild::Later
            }
        }
    }

    /// When the job ends: the segments of a lost machine whose chunks storage could not give
    /// when the job was taken over are tried once more; what still cannot be read is listed
    /// `missing` (its chunks stay in storage).
    pub(crate) async fn retry_lost_segments(&mut self) {
        self.settle_handed_over().await;
        if !self.job.segments.iter().any(lost) {
            return;
        }
        self.recover_segments().await;
        for seg in self.job.segments.iter_mut().filter(|s| lost(s)) {
            warn!(file = %seg.file_name, "a lost machine's segment could not be rebuilt: its chunks stay in storage");
            seg.status = SegmentStatus::Missing;
        }
    }

    /// Segments an earlier run handed over while it went on recording them: one its worker
    /// delivered takes the archive's word; one whose worker is gone (no heartbeat) before it
    /// delivered it is lost like a segment whose machine is gone — listed `recording` again,
    /// to be rebuilt from its chunks. True if any was.
    pub(crate) async fn settle_handed_over(&mut self) -> bool {
        let handed = |s: &SegmentRecord| s.status == SegmentStatus::HandedOver;
        if !self.job.segments.iter().any(handed) {
            return false;
        }
        // Those delivered take the archive's word and are handed over no more.
        self.job.apply_deliveries(&self.host.archived().await);
        let mut orphaned = false;
        for i in 0..self.job.segments.len() {
            let seg = &self.job.segments[i];
            if !handed(seg) {
                continue;
            }
            let by = seg.handed_over_by.clone();
            let alive = match &by {
                Some(w) => self.host.worker_alive(w).await,
                None => false,
            };
            if !alive {
                warn!(file = %seg.file_name, worker = ?by, "the worker that went on recording \
                      this segment is gone and did not deliver it: rebuilding it from its chunks");
                self.job.segments[i].status = SegmentStatus::Recording;
                orphaned = true;
            }
        }
        orphaned
    }

    /// Removes the chunks in storage of a segment rebuilt from them and then found to hold
    /// nothing (a run that died as it started).
    pub(crate) async fn forget_chunks(&self, seg: &SegmentRecord) {
        let Some(storage) = self.job_storage() else {
            return;
        };
        if let Err(e) = storage.remove_chunks(&segment_meta(&self.job, seg)).await {
            warn!(error = %e, file = %seg.file_name, "chunks of an empty segment left in storage");
        }
    }

    /// Ends the HLS output of a segment whose machine was lost: its files went to storage as
    /// they were cut, and its journal was lost with the machine. The job record says how many
    /// segments were cut and how long they were (they are cut to one length); those that
    /// reached storage are listed in the output's VOD playlist, which goes to storage like
    /// the output's own last playlist would have (with its `hls` "ended" webhook).
    pub(crate) async fn end_lost_hls(&mut self, seg: &SegmentRecord) {
        use crate::pipeline::hls::playlist::{Entry, Playlist};
        use crate::pipeline::hls::{init_name, playlist_name, HlsFile, HlsPart};
        let stem = seg.file_name.trim_end_matches(".mp4").to_string();
        let (Some(status), Some(spec)) = (self.job.hls.clone(), self.job.spec.hls.clone()) else {
            return;
        };
        if status.playlist != playlist_name(&stem)
            || status.state == crate::model::hls::HlsState::Ended
            || status.segments == 0
        {
            return;
        }
        let Some(storage) = self.job_storage() else {
            return;
        };
        let each = status.duration_s / f64::from(status.segments);
        let name = |n: u32| format!("{stem}_{n:05}.m4s");
        let mut meta = segment_meta(&self.job, seg);
        // The newest segments may not have left the lost machine.
        let mut n = status.segments;
        while n > 0 {
            meta.file_name = name(n);
            match storage.has(&meta).await {
                Ok(true) => break,
                Ok(false) => n -= 1,
                Err(e) => {
                    warn!(error = %e, "the HLS output of a lost machine could not be read; left live");
                    return;
                }
            }
        }
        let mut playlist = Playlist::new(init_name(&stem), spec.segment_secs, spec.window as usize);
        playlist.entries = (1..=n)
            .map(|i| Entry {
                sequence: i,
                uri: name(i),
                duration: each,
            })
            .collect();
        let path = self
            .env
            .recordings_dir
            .join(format!("{}.ended", playlist_name(&stem)));
        if let Err(e) = crate::util::write_atomic(&path, playlist.vod().as_bytes()) {
            warn!(error = %e, "the VOD playlist of a lost machine's HLS output could not be written");
            return;
        }
        info!(
            segments = n,
            of = status.segments,
            "ended the HLS output of a lost machine's segment"
        );
        self.on_hls(HlsFile {
            path,
            name: playlist_name(&stem),
            part: HlsPart::Ended,
            segments: n,
            duration_s: playlist.duration(),
            latency_ms: 0,
        })
        .await;
    }
}

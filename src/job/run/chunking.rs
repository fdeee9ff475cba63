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
        let Some(seg) = self
            .job
            .segments
            .last()
            .filter(|s| s.status == SegmentStatus::Recording && s.file_name.ends_with(".mp4"))
        else {
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
        let meta = chunk_meta(&segment_meta(&self.job, seg), seq);
        let cut = {
            let out = out.clone();
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
            }
            _ => {
                warn!(file = %self.chunks.file, seq, "chunk not spooled; the next cut takes its bytes");
                let _ = std::fs::remove_file(&out);
            }
        }
    }

    /// A segment an earlier run on another machine left `recording` (its file is not here):
    /// its chunks in storage, end to end, in this machine's recordings folder. Returns where,
    /// or `None` when no chunk of it reached storage (or storage could not be read).
    pub(crate) async fn rebuild_from_chunks(&self, seg: &SegmentRecord) -> Option<PathBuf> {
        let d = self.env.outbox.deliverer.as_ref()?;
        let storage = d.storage_for(self.job.spec.storage.as_deref()).ok()?;
        let dest = self.env.recordings_dir.join(&seg.file_name);
        let meta = segment_meta(&self.job, seg);
        match storage.fetch_chunks(&meta, &dest).await {
            Ok(0) => None,
            Ok(n) => {
                info!(file = %seg.file_name, chunks = n, "segment of a lost machine rebuilt from its chunks in storage");
                Some(dest)
            }
            Err(e) => {
                warn!(error = %e, file = %seg.file_name, "chunks of a lost machine's segment could not be read");
                let _ = std::fs::remove_file(&dest);
                None
            }
        }
    }

    /// Removes the chunks in storage of a segment rebuilt from them and then found to hold
    /// nothing (a run that died as it started).
    pub(crate) async fn forget_chunks(&self, seg: &SegmentRecord) {
        let Some(d) = self.env.outbox.deliverer.as_ref() else {
            return;
        };
        let Ok(storage) = d.storage_for(self.job.spec.storage.as_deref()) else {
            return;
        };
        if let Err(e) = storage.remove_chunks(&segment_meta(&self.job, seg)).await {
            warn!(error = %e, file = %seg.file_name, "chunks of an empty segment left in storage");
        }
    }
}

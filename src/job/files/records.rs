//! A job's segment files as records: what the spool and the archive say about a segment and
//! its chat transcript, and what becomes of a file a run left behind (found empty and removed,
//! or read back as it is).

use super::naming::segment_number;
use crate::delivery::spool::SegmentMeta;
use crate::pipeline::mp4::SegmentFile;
use crate::queue::{now_ms, ArchiveEntry, ChatFile, Job, SegmentRecord, SegmentStatus};
use tracing::{info, warn};

/// A crashed run's segment shorter than one fragment is removed and recorded as empty.
pub const MIN_RECOVERED: gst::ClockTime =
    gst::ClockTime::from_mseconds(crate::pipeline::composite::FRAGMENT_MS as u64);
/// Removes a segment file that holds no media fragment (its run ended within the first
/// fragment) and records it as empty; true if it did.
pub fn discard_if_empty(seg: &mut SegmentRecord) -> bool {
    if !seg.path.is_file() || crate::pipeline::mp4::holds_media(&seg.path) {
        return false;
    }
    discard(seg)
}

/// After this machine's own run of a segment: a file that was never written (the run ended
/// before its muxer produced a byte) or holds no media fragment leaves the segment empty;
/// true if it did.
pub fn discard_if_nothing_written(seg: &mut SegmentRecord) -> bool {
    match std::fs::metadata(&seg.path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!(file = %seg.path.display(), "segment ended before its file was written");
            seg.status = SegmentStatus::Empty;
            seg.size = 0;
            seg.duration_s = 0.0;
            true
        }
        _ => discard_if_empty(seg),
    }
}

/// Removes a segment's file and records the segment as empty; true if it did.
pub fn discard(seg: &mut SegmentRecord) -> bool {
    match std::fs::remove_file(&seg.path) {
        Ok(()) => {
            info!(file = %seg.path.display(), "segment ended within its first fragment: removed");
            seg.status = SegmentStatus::Empty;
            seg.size = 0;
            seg.duration_s = 0.0;
            true
        }
        Err(e) => {
            warn!(error = %e, file = %seg.path.display(), "empty segment could not be removed");
            false
        }
    }
}

/// What the spool and storage know about a segment of `job`.
pub fn segment_meta(job: &Job, seg: &SegmentRecord) -> SegmentMeta {
    let spec = &job.spec;
    SegmentMeta {
        job_id: job.id.clone(),
        app_id: spec.app_id.clone(),
        room_id: spec.room_id.clone(),
        conf_num: spec.conf_num.clone(),
        segment: segment_number(&seg.file_name).unwrap_or(1),
        file_name: seg.file_name.clone(),
        started_at_unix_ms: seg.started_ms,
        ended_at_unix_ms: seg.ended_ms.unwrap_or_else(now_ms),
        size: seg.size,
        sha256: String::new(),
        hls: None,
        bundle: None,
        chunk: None,
    }
}

/// The archive's entry for a segment of `job`.
pub fn archive_entry(job: &Job, seg: &SegmentRecord) -> ArchiveEntry {
    ArchiveEntry {
        room_id: job.spec.room_id.clone(),
        conf_num: job.spec.conf_num.clone(),
        job_id: job.id.clone(),
        file_name: seg.file_name.clone(),
        size: seg.size,
        duration_s: seg.duration_s,
        started_ms: seg.started_ms,
        ended_ms: seg.ended_ms.unwrap_or_else(now_ms),
        url: seg.url.clone(),
        status: seg.status,
        delivery_error: seg.delivery_error.clone(),
    }
}

/// What a segment that ended in an error left on disk, if anything (the runner finalized
/// what reached the file; its duration is read from the file's header).
pub fn written(seg: &SegmentRecord) -> Option<SegmentFile> {
    let bytes = std::fs::metadata(&seg.path)
        .ok()
        .filter(|m| m.is_file())?
        .len();
    (bytes > 0).then(|| SegmentFile {
        sha256: None,
        bytes,
        duration: crate::pipeline::mp4::duration(&seg.path).unwrap_or(gst::ClockTime::ZERO),
        path: seg.path.clone(),
    })
}

/// What the spool and storage know about a segment's chat transcript.
pub fn chat_meta(job: &Job, seg: &SegmentRecord, chat: &ChatFile) -> SegmentMeta {
    let mut meta = segment_meta(job, seg);
    meta.file_name = chat.file_name.clone();
    meta.size = chat.size;
    meta
}

/// The archive's entry for a segment's chat transcript.
pub fn chat_archive_entry(job: &Job, seg: &SegmentRecord, chat: &ChatFile) -> ArchiveEntry {
    let mut entry = archive_entry(job, seg);
    entry.file_name = chat.file_name.clone();
    entry.size = chat.size;
    entry.duration_s = 0.0;
    entry.url = chat.url.clone();
    entry.status = chat.status;
    entry.delivery_error = chat.delivery_error.clone();
    entry
}

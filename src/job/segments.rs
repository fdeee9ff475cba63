//! A job's segment files as records: what the spool and the archive say about them, and what
//! becomes of a file a run left behind (finalized, found empty and removed, or kept as it is),
//! how segment files are named, and how a run recovers and hands off its segments.

use super::chat;
use super::execute::Run;
use super::host::JobHost;
use super::outbox::HandOff;
use crate::delivery::spool::SegmentMeta;
use crate::error::Error;
use crate::pipeline::mp4::{finalize, SegmentFile};
use crate::queue::{now_ms, ArchiveEntry, ChatFile, Job, SegmentRecord, SegmentStatus};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// A crashed run's segment shorter than one fragment is removed and recorded as empty.
pub(super) const MIN_RECOVERED: gst::ClockTime =
    gst::ClockTime::from_mseconds(crate::pipeline::composite::FRAGMENT_MS as u64);
/// Removes a segment file that holds no media fragment (its run ended within the first
/// fragment) and records it as empty; true if it did.
pub(super) fn discard_if_empty(seg: &mut SegmentRecord) -> bool {
    if !seg.path.is_file() || crate::pipeline::mp4::holds_media(&seg.path) {
        return false;
    }
    discard(seg)
}

/// After this machine's own run of a segment: a file that was never written (the run ended
/// before its muxer produced a byte) or holds no media fragment leaves the segment empty;
/// true if it did.
pub(super) fn discard_if_nothing_written(seg: &mut SegmentRecord) -> bool {
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
pub(super) fn discard(seg: &mut SegmentRecord) -> bool {
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
pub(super) fn written(seg: &SegmentRecord) -> Option<SegmentFile> {
    let bytes = std::fs::metadata(&seg.path)
        .ok()
        .filter(|m| m.is_file())?
        .len();
    (bytes > 0).then(|| SegmentFile {
        bytes,
        duration: crate::pipeline::mp4::duration(&seg.path).unwrap_or(gst::ClockTime::ZERO),
        path: seg.path.clone(),
    })
}

impl<H: JobHost> Run<'_, H> {
    /// Finalizes the segments an earlier run left `recording` and hands them off.
    pub(super) async fn recover_segments(&mut self) {
        // Individual segments: their files are written as they come; what their manifests
        // list is delivered and transcoded.
        let folders: Vec<std::path::PathBuf> = self
            .job
            .segments
            .iter()
            .filter(|s| s.status == SegmentStatus::Recording && s.path.is_dir())
            .map(|s| s.path.clone())
            .collect();
        for folder in folders {
            self.finish_folder(&folder).await;
        }
        let mut segments = std::mem::take(&mut self.job.segments);
        for seg in segments
            .iter_mut()
            .filter(|s| s.status == SegmentStatus::Recording)
        {
            if !seg.path.is_file() {
                warn!(file = %seg.path.display(), "segment of an earlier run is not on this machine");
                seg.status = SegmentStatus::Missing;
                continue;
            }
            self.recover_hls(&seg.path).await;
            let path = seg.path.clone();
            match tokio::task::spawn_blocking(move || finalize(&path)).await {
                Ok(Ok(file)) if file.duration < MIN_RECOVERED => {
                    // Not even one whole fragment: a run that died as it started.
                    discard(seg);
                }
                Ok(Ok(file)) => {
                    info!(file = %seg.file_name, duration_s = file.duration.mseconds() as f64 / 1000.0,
                        "finalized the segment of an earlier run");
                    self.deliver_segment(seg, &file).await;
                }
                Ok(Err(_)) if discard_if_empty(seg) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, file = %seg.path.display(), "segment of an earlier run is unreadable");
                    seg.status = SegmentStatus::Unreadable;
                }
                Err(e) => warn!(error = %e, "finalize task failed"),
            }
        }
        self.job.segments = segments;
    }

    /// Ends the HLS output of a segment whose run died, if it had one: what it wrote goes to
    /// delivery with the VOD playlist of everything it cut.
    async fn recover_hls(&mut self, segment: &std::path::Path) {
        let Some((dir, stem)) = crate::pipeline::hls::folder_of(segment) else {
            return;
        };
        if !dir.is_dir() {
            return;
        }
        let files =
            tokio::task::spawn_blocking(move || crate::pipeline::hls::recover(&dir, &stem)).await;
        match files {
            Ok(Ok(files)) => {
                for f in files {
                    self.on_hls(f).await;
                }
            }
            Ok(Err(e)) => warn!(error = %e, "the HLS output of an earlier run could not be ended"),
            Err(e) => warn!(error = %e, "HLS recovery task failed"),
        }
    }

    /// Hands a finished segment to delivery and records where it went.
    pub(super) async fn deliver_segment(&mut self, seg: &mut SegmentRecord, file: &SegmentFile) {
        seg.size = file.bytes;
        if !file.duration.is_zero() {
            seg.duration_s = file.duration.mseconds() as f64 / 1000.0;
        }
        seg.ended_ms = Some(now_ms());
        let meta = segment_meta(&self.job, seg);
        let handed = self
            .env
            .outbox
            .hand_off(meta, &file.path, self.job.spec.storage.clone())
            .await;
        match &handed {
            HandOff::Spooled { .. } => {
                seg.status = SegmentStatus::Spooled;
                info!(file = %seg.file_name, "segment spooled for delivery");
            }
            HandOff::Local { url, .. } => {
                seg.status = SegmentStatus::Local;
                seg.url = Some(url.clone());
            }
            // Stays where it was recorded; the worker hands it to the spool again later.
            HandOff::Kept => seg.status = SegmentStatus::Kept,
        }
        self.host.archive(&archive_entry(&self.job, seg)).await;
        self.outcome.segment = Some((file.clone(), handed));
        self.deliver_chat(seg).await;
        if seg.status == SegmentStatus::Spooled
            || seg
                .chat
                .as_ref()
                .is_some_and(|c| c.status == SegmentStatus::Spooled)
        {
            self.host.spooled().await;
        }
    }

    /// Chat said once the run was told to stop: the runner may already have let go of the
    /// segment (it journals only what reached it before its file was finalized), so this run
    /// writes such messages into the segment's journal itself, before the transcript is sealed.
    /// Returns the actions that still go to the runner.
    pub(super) fn journal_chat_while_stopping(
        &self,
        actions: Vec<super::platform::Action>,
    ) -> Vec<super::platform::Action> {
        use super::platform::Action;
        if self.job.state != crate::queue::JobState::Stopping {
            return actions;
        }
        let journal = self
            .job
            .segments
            .last()
            .filter(|s| s.status == SegmentStatus::Recording && s.path.is_file())
            .map(|s| chat::journal_path(&s.path));
        actions
            .into_iter()
            .filter_map(|a| match (a, &journal) {
                (Action::Chat(line), Some(journal)) => {
                    if let Err(e) = chat::append(journal, &line) {
                        warn!(error = %e, "chat message not written to the segment's journal");
                    }
                    None
                }
                (a, _) => Some(a),
            })
            .collect()
    }

    /// Chat still waiting in the queue store when the recording ended (the loop that reads
    /// commands has stopped): journaled like [`Self::journal_chat_while_stopping`]. Only for a
    /// run that ends because it was stopped: a run handed back leaves its commands to the next.
    pub(super) async fn journal_late_chat(&mut self, translator: &mut super::platform::Translator) {
        let super::host::Poll::Commands(cmds) = self.host.poll(&self.job).await else {
            return;
        };
        for cmd in cmds {
            if let crate::queue::Command::Room { event } = &cmd {
                // The recording has ended: what is not chat has nowhere to go.
                let _ = self.journal_chat_while_stopping(translator.translate(event));
            }
        }
    }

    /// Seals the segment's chat journal into its transcript and hands it off like the
    /// segment (its `chatdata` webhook follows its delivery).
    async fn deliver_chat(&mut self, seg: &mut SegmentRecord) {
        let header = chat::Header {
            app_id: self.job.spec.app_id.clone(),
            room_id: self.job.spec.room_id.clone(),
            conf_num: self.job.spec.conf_num.clone(),
            job_id: self.job.id.clone(),
            recording: seg.file_name.clone(),
            started_ms: seg.started_ms,
            ended_ms: seg.ended_ms.unwrap_or_else(now_ms),
        };
        let path = seg.path.clone();
        let sealed = tokio::task::spawn_blocking(move || chat::seal(&path, &header)).await;
        let (transcript, messages) = match sealed {
            Ok(Ok(Some(t))) => t,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                // The journal stays beside the segment; nothing of it is lost.
                warn!(error = %e, file = %seg.file_name, "chat transcript could not be written");
                return;
            }
            Err(e) => {
                warn!(error = %e, "chat transcript task failed");
                return;
            }
        };
        let mut file = ChatFile {
            file_name: crate::util::file_name(&transcript),
            messages,
            size: std::fs::metadata(&transcript).map_or(0, |m| m.len()),
            status: SegmentStatus::Kept,
            url: None,
            delivery_error: None,
        };
        let handed = self
            .env
            .outbox
            .hand_off(
                chat_meta(&self.job, seg, &file),
                &transcript,
                self.job.spec.storage.clone(),
            )
            .await;
        match handed {
            HandOff::Spooled { .. } => file.status = SegmentStatus::Spooled,
            HandOff::Local { url, .. } => {
                file.status = SegmentStatus::Local;
                file.url = Some(url);
            }
            HandOff::Kept => {}
        }
        info!(file = %file.file_name, messages, status = ?file.status, "chat transcript handed off");
        self.host
            .archive(&chat_archive_entry(&self.job, seg, &file))
            .await;
        seg.chat = Some(file);
    }
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

pub(crate) fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `n` of a segment file name `<room>_<conf>_<n>.mp4`.
pub fn segment_number(file_name: &str) -> Option<u64> {
    file_name
        .trim_end_matches(".mp4")
        .trim_end_matches("_tracks")
        .trim_end_matches("_transcoded")
        .rsplit('_')
        .next()?
        .parse()
        .ok()
}

/// Reserves the next segment file `<room>_<conf>_<n>.mp4` in `dir`: n is above every
/// segment already there and at least `first`.
pub fn reserve_segment(dir: &Path, room: &str, conf: &str, first: u64) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let prefix = format!("{}_{}_", file_safe(room), file_safe(conf));
    let mut n = first.max(1);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(k) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".mp4"))
                .and_then(|k| k.parse::<u64>().ok())
            {
                n = n.max(k + 1);
            }
        }
    }
    loop {
        let path = dir.join(format!("{prefix}{n}.mp4"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_count_up() {
        let dir = std::env::temp_dir().join(format!("roomcast-seg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = reserve_segment(&dir, "room 1", "c/7", 1).unwrap();
        assert_eq!(a.file_name().unwrap(), "room_1_c_7_1.mp4");
        let b = reserve_segment(&dir, "room 1", "c/7", 1).unwrap();
        assert_eq!(b.file_name().unwrap(), "room_1_c_7_2.mp4");
        std::fs::write(dir.join("room_1_c_7_9.mp4"), b"").unwrap();
        let c = reserve_segment(&dir, "room 1", "c/7", 1).unwrap();
        assert_eq!(c.file_name().unwrap(), "room_1_c_7_10.mp4");
        let other = reserve_segment(&dir, "room 2", "c/7", 1).unwrap();
        assert_eq!(other.file_name().unwrap(), "room_2_c_7_1.mp4");
        let later = reserve_segment(&dir, "room 2", "c/7", 5).unwrap();
        assert_eq!(later.file_name().unwrap(), "room_2_c_7_5.mp4");
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! A live run's segments handed off: the ones an earlier run left behind finalized and
//! delivered ([`Run::recover_segments`]), a finished segment and its chat transcript handed
//! to delivery and the archive ([`Run::deliver_segment`]), and chat said while a recording
//! stops written into its journal.

use super::chunking::{lost, Rebuild};
use super::context::Run;
use crate::job::files::chat;
use crate::job::files::outbox::HandOff;
use crate::job::files::records::{
    archive_entry, chat_archive_entry, chat_meta, discard, discard_if_empty, segment_meta,
    MIN_RECOVERED,
};
use crate::job::spec::host::JobHost;
use crate::pipeline::mp4::{finalize, SegmentFile};
use crate::queue::{now_ms, ChatFile, SegmentRecord, SegmentStatus};
use tracing::{info, warn};
impl<H: JobHost> Run<'_, H> {
    /// Finalizes the MP4 segments an earlier run left `recording` and hands them off
    /// (individual segments' folders are recovered before, by their kind).
    pub(crate) async fn recover_segments(&mut self) {
        // The HLS output of a segment whose machine is gone is ended first, with the record
        // whole (ending it saves the record).
        let lost: Vec<SegmentRecord> = self
            .job
            .segments
            .iter()
            .filter(|s| lost(s))
            .cloned()
            .collect();
        for seg in &lost {
            self.end_lost_hls(seg).await;
        }
        let mut segments = std::mem::take(&mut self.job.segments);
        for seg in segments
            .iter_mut()
            .filter(|s| s.status == SegmentStatus::Recording)
        {
            let mut rebuilt = false;
            if !seg.path.is_file() {
                match self.rebuild_from_chunks(seg).await {
                    Rebuild::Rebuilt(path) => {
                        seg.path = path;
                        rebuilt = true;
                    }
                    // Still `recording`: tried again when the job ends.
                    Rebuild::Later => continue,
                    Rebuild::Nothing => {
                        warn!(file = %seg.path.display(), "segment of an earlier run is not on this machine");
                        seg.status = SegmentStatus::Missing;
                        continue;
                    }
                }
            }
            self.recover_hls(&seg.path).await;
            let path = seg.path.clone();
            match tokio::task::spawn_blocking(move || finalize(&path)).await {
                Ok(Ok(file)) if file.duration < MIN_RECOVERED => {
                    // Not even one whole fragment: a run that died as it started.
                    if discard(seg) && rebuilt {
                        self.forget_chunks(seg).await;
                    }
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
    pub(crate) async fn deliver_segment(&mut self, seg: &mut SegmentRecord, file: &SegmentFile) {
        seg.size = file.bytes;
        if !file.duration.is_zero() {
            seg.duration_s = file.duration.mseconds() as f64 / 1000.0;
        }
        seg.ended_ms = Some(now_ms());
        let meta = segment_meta(&self.job, seg);
        let dropped = self.env.outbox.drop_chunks(&meta).await;
        if dropped > 0 {
            info!(file = %seg.file_name, chunks = dropped, "chunks still waiting to be sent dropped: the finished file holds them");
        }
        let handed = self
            .env
            .outbox
            .hand_off_hashed(
                meta,
                &file.path,
                self.job.spec.storage.clone(),
                file.sha256.clone(),
            )
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
    pub(crate) fn journal_chat_while_stopping(
        &self,
        actions: Vec<crate::job::spec::platform::Action>,
    ) -> Vec<crate::job::spec::platform::Action> {
        use crate::job::spec::platform::Action;
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
    pub(crate) async fn journal_late_chat(
        &mut self,
        translator: &mut crate::job::spec::platform::Translator,
    ) {
        let crate::job::spec::host::Poll::Commands(cmds) = self.host.poll(&self.job).await else {
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

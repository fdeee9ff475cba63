//! The platform's (legacy) recording through the one job path: an `individual` job records
//! every track of the room into a segment folder (see [`super::individual`]), hands each file
//! to delivery as one bundle (the `recording` webhook lists them once all are delivered) and
//! queues a `transcode` job for the segment, which lays it out into one MP4 (the `transcoded`
//! webhook).
//!
//! Files are handed off from the folder through hard links, so the folder stays whole for its
//! transcode while the spool delivers; the transcode removes it once every file of it is in
//! the spool. Without storage the folder is where the files are reported.

use crate::codes::Code;
use crate::delivery::spool::{Bundle, BundleKind};
use crate::job::files::notify::{Subject, Transition};
use crate::job::files::outbox::{HandOff, Outbox};
use crate::job::files::records::{archive_entry, segment_meta};
use crate::job::kinds::folder_chunks::{
    delivered_name, drop_folder_chunks, folder_files, FolderChunks,
};
use crate::job::kinds::individual::{record_joined, IndividualEnd, IndividualSpec, MANIFEST_FILE};
use crate::job::run::context::{Run, COMMAND_POLL};
use crate::job::spec::host::{JobHost, Poll};
use crate::job::spec::plan::Plan;
use crate::job::spec::JobCommand;
use crate::model::manifest::Manifest;
use crate::queue::{
    now_ms, Command, Job, JobKind, JobSpec, JobState, PlatformEvent, SegmentRecord, SegmentStatus,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// What a transcode costs (cores): it runs as fast as the machine allows.
pub const TRANSCODE_COST: f64 = 1.5;
/// What an individual recording costs per participant (cores): received media is written as
/// it came (measured 0.025–0.026 per WebRTC feed over a whole run, with some margin).
pub const INDIVIDUAL_COST_PER_PARTICIPANT: f64 = 0.04;
/// Free space below which a failed live recording does not fall back (its disk is full).
const FALLBACK_MIN_FREE: u64 = 64 * 1024 * 1024;
/// Marks a file of a segment folder as handed to the spool (`.sent-<file>`).
const SENT_PREFIX: &str = ".sent-";

/// What stopped a recording from outside.
#[derive(Debug, Clone, PartialEq)]
enum Stopped {
    /// A stop request (by whom).
    By(String),
    /// The room was destroyed.
    RoomDestroyed,
    /// Another worker holds the job now.
    Superseded,
    /// Free disk space fell below the floor.
    DiskLow,
}

/// Whether every file of `folder` was handed to the spool.
fn all_sent(folder: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(folder.join(MANIFEST_FILE)) else {
        return false;
    };
    let Ok(m) = Manifest::parse(&text) else {
        return false;
    };
    folder_files(&m)
        .iter()
        .all(|f| folder.join(format!("{SENT_PREFIX}{f}")).exists() || !folder.join(f).exists())
}

/// A link to `file` to hand to the spool (which moves what it is given), so the folder keeps
/// its own copy; a copy where links are not possible.
fn spool_link(file: &Path) -> std::io::Result<PathBuf> {
    // In a folder of its own: the spool names its entry after the file's stem.
    let dir = file.with_file_name(".out");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join(crate::util::file_name(file));
    let _ = std::fs::remove_file(&link);
    if std::fs::hard_link(file, &link).is_err() {
        std::fs::copy(file, &link)?;
    }
    Ok(link)
}

impl<H: JobHost> Run<'_, H> {
    /// Runs an `individual` job: joins the room, records its tracks until stopped (or the
    /// room ends), delivers the folder and queues its transcode.
    pub(crate) async fn run_individual(
        &mut self,
        mut local: mpsc::Receiver<JobCommand>,
        hand_back: Arc<AtomicBool>,
    ) {
        let handle = match self.join_room().await {
            Ok((h, _)) => h,
            Err((code, msg)) => return self.fail(code, msg).await,
        };
        let own_next = self.own_next_segment();
        let segment = match self
            .host
            .next_segment(&self.job.spec.room_id, &self.job.spec.conf_num, own_next)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                (handle.leave)();
                return self.fail(Code::Generic, e.to_string()).await;
            }
        };
        let ispec = IndividualSpec {
            dir: self.env.recordings_dir.clone(),
            room_id: self.job.spec.room_id.clone(),
            conf_num: self.job.spec.conf_num.clone(),
            segment: segment as u32,
        };
        let folder = ispec.folder();
        let max_duration = self.remaining_duration();
        self.job
            .segments
            .push(SegmentRecord::recording(folder.clone()));
        self.job.state = JobState::Active;
        self.job.msg = "active".into();
        let first_start = self.job.started_ms.is_none();
        self.job.started_ms.get_or_insert(now_ms());
        self.save().await;
        if first_start {
            self.status(Subject::Job, Transition::On, self.fallback_code());
        }
        info!(folder = %folder.display(), "individual recording active");

        let stopped: Mutex<Option<Stopped>> = Mutex::new(None);
        let watch = {
            let host = self.host;
            let job = self.job.clone();
            let stopped = &stopped;
            let local = &mut local;
            let (dir, floor) = (self.env.recordings_dir.clone(), self.env.min_free_bytes);
            let (outbox, folder) = (&self.env.outbox, folder.clone());
            async move {
                let mut chunks = FolderChunks::default();
                let why = loop {
                    chunks.cut(outbox, &job, &folder).await;
                    if floor > 0 && crate::util::free_bytes(&dir).is_some_and(|b| b < floor) {
                        break Stopped::DiskLow;
                    }
                    tokio::select! {
                        cmd = local.recv() => match cmd {
                            Some(JobCommand::Stop | JobCommand::HandOver) | None => {
                                break Stopped::By("system".into())
                            }
                            Some(_) => {}
                        },
                        _ = tokio::time::sleep(COMMAND_POLL) => match host.poll(&job).await {
                            Poll::Superseded => break Stopped::Superseded,
                            Poll::Commands(cmds) => {
                                let why = cmds.into_iter().find_map(|c| match c {
                                    Command::Stop { by } => Some(Stopped::By(by)),
                                    Command::Room { event: PlatformEvent::RoomDestroyed } => {
                                        Some(Stopped::RoomDestroyed)
                                    }
                                    _ => None,
                                });
                                if let Some(why) = why {
                                    break why;
                                }
                            }
                        },
                    }
                };
                *stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            }
        };
        let result = record_joined(handle, &ispec, max_duration, watch).await;
        let stopped = stopped.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(Stopped::By(by)) = &stopped {
            self.job.stopped_by = Some(by.clone());
        }
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                // What reached the folder is delivered; a failed stop of a fall-back
                // recording is 7035.
                self.finish_folder(&folder).await;
                let code = if stopped.is_some() && self.job.spec.fallback_for.is_some() {
                    Code::RecordStopLegacyFailed
                } else {
                    Code::RecordError
                };
                return self.fail(code, e.to_string()).await;
            }
        };
        self.job.state = JobState::Delivering;
        self.job.msg = "delivering".into();
        self.save().await;
        self.finish_folder(&outcome.folder).await;
        if stopped == Some(Stopped::Superseded) {
            warn!("another worker took the job over; this run's segment is delivered");
            return;
        }
        if stopped == Some(Stopped::DiskLow) {
            let msg = "free disk space fell below the floor (ROOMCAST_MIN_FREE_MB): the segment \
                       was ended and its files delivered before the disk filled";
            return self.fail(Code::RecordError, msg.into()).await;
        }
        let by_worker = matches!(&stopped, Some(Stopped::By(b)) if b == "system");
        if by_worker && hand_back.load(Ordering::SeqCst) {
            return self.hand_back().await;
        }
        let (result, msg) = match (&outcome.end, &stopped) {
            (IndividualEnd::Disconnected(reason), _) => {
                let msg = format!("lost the room connection: {reason}");
                return self.fail(Code::StateDisconnected, msg).await;
            }
            (IndividualEnd::RoomDestroyed, _) | (_, Some(Stopped::RoomDestroyed)) => (
                Code::StateDisconnected.as_u16(),
                "room destroyed; recording finalized",
            ),
            (IndividualEnd::Duration, _) => (0, "maximum duration reached"),
            _ => (0, "completed"),
        };
        let (result, msg) = match self.fallback_code() {
            Some(c) if result == 0 => (c.as_u16(), c.message()),
            _ => (result, msg),
        };
        self.job.end(JobState::Completed, result, msg);
        self.save().await;
        self.status(Subject::Job, Transition::Off, self.fallback_code());
        info!(
            segments = self.job.segments.len(),
            "individual recording completed"
        );
        self.host.release(&self.job).await;
    }

    /// A live recording whose composite failed (`cause`, `msg`): an individual recording of
    /// the room is queued in its place and the live job ends with 7014 ("available
    /// post-session with a delay"); 7205 when the room already records individually; the
    /// plain failure when nothing can be queued.
    pub(crate) async fn fall_back(&mut self, cause: Code, msg: String) {
        // An individual recording writes to the same disk: none when that disk is what
        // failed (and a store on it must not be written to either).
        let free = crate::util::free_bytes(&self.env.recordings_dir).unwrap_or(u64::MAX);
        if free < self.env.min_free_bytes.max(FALLBACK_MIN_FREE) || msg.contains("No space left") {
            warn!(free_bytes = free, "disk full: no fall-back recording");
            return self.fail(cause, msg).await;
        }
        let job = fallback_job(&self.job);
        match self.host.enqueue(&job).await {
            Ok(true) => {
                let msg = format!(
                    "{msg}; recording the room individually instead (job {}): the recording will \
                     be made available post-session",
                    job.id
                );
                self.fail(Code::RecordDelayed, msg).await;
            }
            Ok(false) => {
                let msg = format!("{msg}; the room already records individually");
                self.fail(Code::RecordLegacyRunning, msg).await;
            }
            Err(e) => {
                warn!(error = %e, "no fall-back recording");
                self.fail(cause, msg).await;
            }
        }
    }

    /// 7014 for a recording made in place of a live recording.
    fn fallback_code(&self) -> Option<Code> {
        self.job
            .spec
            .fallback_for
            .is_some()
            .then_some(Code::RecordDelayed)
    }

    /// Finishes the individual segments an earlier run left `recording`: their files are
    /// written as they come; what their manifests list is delivered and transcoded.
    pub(crate) async fn recover_folders(&mut self) {
        self.rebuild_lost_folders().await;
        let folders: Vec<PathBuf> = self
            .job
            .segments
            .iter()
            .filter(|s| s.status == SegmentStatus::Recording && s.path.is_dir())
            .map(|s| s.path.clone())
            .collect();
        for folder in folders {
            self.finish_folder(&folder).await;
        }
    }

    /// Ends a segment folder: records it, hands its files to delivery (one bundle) and queues
    /// its transcode. A folder without a readable manifest (the run died before writing one)
    /// is left where it is.
    pub(crate) async fn finish_folder(&mut self, folder: &Path) {
        let name = crate::util::file_name(folder);
        let Some(i) = self.job.segments.iter().position(|s| s.file_name == name) else {
            return;
        };
        let manifest = match std::fs::read_to_string(folder.join(MANIFEST_FILE))
            .map_err(|e| e.to_string())
            .and_then(|t| Manifest::parse(&t).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                warn!(folder = %folder.display(), error = %e, "segment folder has no readable manifest");
                self.job.segments[i].status = SegmentStatus::Unreadable;
                self.save().await;
                return;
            }
        };
        drop_folder_chunks(
            &self.env.outbox,
            &self.job,
            &self.job.segments[i],
            folder,
            &manifest,
        )
        .await;
        {
            let seg = &mut self.job.segments[i];
            seg.size = manifest.files.iter().map(|f| f.bytes).sum();
            seg.duration_s = manifest.span_ms() as f64 / 1000.0;
            seg.ended_ms = Some(seg.ended_ms.unwrap_or_else(now_ms));
        }
        let status = hand_off_folder(&self.env.outbox, &mut self.job, i, folder, &manifest).await;
        self.job.segments[i].status = status;
        self.host
            .archive(&archive_entry(&self.job, &self.job.segments[i]))
            .await;
        self.save().await;
        if status == SegmentStatus::Spooled {
            self.host.spooled().await;
        }
        if manifest.files.is_empty() {
            info!(folder = %folder.display(), "nothing was published: no transcode");
            return;
        }
        let transcode = transcode_job(&self.job, folder.join(MANIFEST_FILE));
        match self.host.enqueue(&transcode).await {
            Ok(true) => info!(job = %transcode.id, "transcode queued"),
            Ok(false) => info!("the segment's transcode is already queued"),
            Err(e) => warn!(error = %e, "transcode not queued"),
        }
    }

    /// Runs a `transcode` job: lays out its segment's manifest into one MP4 and hands it to
    /// delivery (the `transcoded` webhook follows it).
    pub(crate) async fn run_transcode(&mut self) {
        let Some(manifest) = self.job.spec.manifest.clone() else {
            return self
                .fail(
                    Code::RecordParamsMissingInternal,
                    "no manifest given".into(),
                )
                .await;
        };
        if !manifest.is_file() {
            let msg = format!(
                "manifest {} is not on this worker (transcodes run where their segment was \
                 recorded, or on a shared recordings folder)",
                manifest.display()
            );
            return self.fail(Code::RecordParamsMissingInternal, msg).await;
        }
        let plan = match Plan::from_spec(&self.job.spec) {
            Ok(p) => p,
            Err((code, msg)) => return self.fail(code, msg).await,
        };
        let watermark = match &self.job.spec.watermark {
            None => None,
            Some(w) => match crate::model::watermark::materialize(
                w,
                &self.env.recordings_dir.join(".assets"),
            ) {
                Ok(p) => Some(p),
                Err(e) => return self.fail(Code::RecordParamsMissingInternal, e).await,
            },
        };
        self.job.state = JobState::Active;
        self.job.msg = "transcoding".into();
        self.job.started_ms = Some(now_ms());
        self.save().await;
        let spec = crate::job::kinds::transcode::TranscodeSpec {
            manifest: manifest.clone(),
            out_dir: self.env.recordings_dir.clone(),
            layout: plan.layout,
            preset: plan.preset,
            watermark,
        };
        let report = match crate::job::kinds::transcode::transcode(&spec).await {
            Ok(r) => r,
            Err(e) => return self.fail(e.code(), e.to_string()).await,
        };
        info!(file = %report.file.display(), speed = report.speed, duration_s = report.duration_s,
            "transcoded");
        let folder = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut seg = SegmentRecord {
            size: report.bytes,
            duration_s: report.duration_s,
            started_ms: self.job.started_ms.unwrap_or_else(now_ms),
            ended_ms: Some(now_ms()),
            ..SegmentRecord::recording(report.file.clone())
        };
        self.job.realtime_factor = Some(report.speed);
        self.job.state = JobState::Delivering;
        self.job.msg = "delivering".into();
        self.save().await;
        let mut meta = segment_meta(&self.job, &seg);
        meta.bundle = Some(Bundle {
            id: format!("{}-{}", self.job.id, seg.file_name),
            kind: BundleKind::Transcoded,
            files: 1,
        });
        let target = self.job.spec.storage.clone();
        seg.status = match self.env.outbox.hand_off(meta, &report.file, target).await {
            HandOff::Spooled { .. } => SegmentStatus::Spooled,
            HandOff::Local { url, .. } => {
                seg.url = Some(url);
                SegmentStatus::Local
            }
            HandOff::Kept => SegmentStatus::Kept,
        };
        self.host.archive(&archive_entry(&self.job, &seg)).await;
        self.job.segments.push(seg);
        if self.env.outbox.deliverer.is_some() && all_sent(&folder) {
            // Every track file is in the spool: the folder is no longer needed here.
            match std::fs::remove_dir_all(&folder) {
                Ok(()) => {
                    info!(folder = %folder.display(), "segment folder removed after its transcode")
                }
                Err(e) => {
                    warn!(folder = %folder.display(), error = %e, "segment folder not removed")
                }
            }
        }
        self.job.end(JobState::Completed, 0, "completed");
        self.save().await;
        self.host.spooled().await;
        self.host.release(&self.job).await;
    }
}

/// Hands every file of the folder not handed yet to delivery; what the segment's status
/// becomes (`local` without storage, `kept` while one could not be spooled).
pub(crate) async fn hand_off_folder(
    outbox: &Outbox,
    job: &mut Job,
    i: usize,
    folder: &Path,
    manifest: &Manifest,
) -> SegmentStatus {
    // A killed run's manifest may list a file that never got a frame (and was removed).
    let files: Vec<String> = folder_files(manifest)
        .into_iter()
        .filter(|f| {
            let here = folder.join(f).is_file();
            if !here {
                warn!(file = %f, "listed file is not in the segment folder");
            }
            here
        })
        .collect();
    let bundle = Bundle {
        id: format!("{}-{}", job.id, crate::util::file_name(folder)),
        kind: BundleKind::Recording,
        files: files.len() as u32,
    };
    let storage = outbox.deliverer.is_some();
    let mut status = if storage {
        SegmentStatus::Spooled
    } else {
        SegmentStatus::Local
    };
    for f in files {
        let marker = folder.join(format!("{SENT_PREFIX}{f}"));
        if marker.exists() {
            continue;
        }
        let path = folder.join(&f);
        let mut meta = segment_meta(&*job, &job.segments[i]);
        meta.file_name = delivered_name(folder, &f);
        meta.bundle = Some(bundle.clone());
        let handed_path = if storage {
            match spool_link(&path) {
                Ok(p) => p,
                Err(e) => {
                    warn!(file = %f, error = %e, "track file not linked for delivery; kept");
                    status = SegmentStatus::Kept;
                    continue;
                }
            }
        } else {
            path.clone()
        };
        let target = job.spec.storage.clone();
        match outbox.hand_off(meta, &handed_path, target).await {
            HandOff::Spooled { .. } | HandOff::Local { .. } => {
                if let Err(e) = std::fs::write(&marker, b"") {
                    warn!(file = %f, error = %e, "hand-off marker not written");
                }
            }
            HandOff::Kept => {
                if storage {
                    let _ = std::fs::remove_file(&handed_path);
                }
                status = SegmentStatus::Kept;
            }
        }
    }
    if !storage {
        job.segments[i].url = Some(crate::util::file_url(folder));
    }
    status
}

/// Hands the files of a segment folder that the spool could not take before (a full disk) to
/// it again; whether the segment's status changed.
pub(crate) async fn retry_kept_folder(outbox: &Outbox, job: &mut Job, i: usize) -> bool {
    let folder = job.segments[i].path.clone();
    let Ok(text) = std::fs::read_to_string(folder.join(MANIFEST_FILE)) else {
        return false;
    };
    let Ok(manifest) = Manifest::parse(&text) else {
        return false;
    };
    let status = hand_off_folder(outbox, job, i, &folder, &manifest).await;
    let changed = status != job.segments[i].status;
    job.segments[i].status = status;
    changed
}

/// The individual recording that replaces the live recording `live`.
pub fn fallback_job(live: &Job) -> Job {
    let spec = JobSpec {
        kind: JobKind::Individual,
        fallback_for: Some(live.id.clone()),
        rtmp_urls: Vec::new(),
        page: None,
        hls: None,
        manifest: None,
        runs_on: None,
        cost: INDIVIDUAL_COST_PER_PARTICIPANT,
        ..live.spec.clone()
    };
    Job::new(Job::new_id(JobKind::Individual), spec)
}

/// The `transcode` job of an individual segment of `job`.
pub fn transcode_job(job: &Job, manifest: PathBuf) -> Job {
    let spec = JobSpec {
        kind: JobKind::Transcode,
        manifest: Some(manifest),
        fallback_for: None,
        // Its files are on the disk of the worker that recorded them.
        runs_on: job.worker.clone(),
        rtmp_urls: Vec::new(),
        page: None,
        hls: None,
        max_duration_secs: None,
        started_by: job.id.clone(),
        cost: TRANSCODE_COST,
        ..job.spec.clone()
    };
    Job::new(Job::new_id(JobKind::Transcode), spec)
}

//! What the queue stores about a job: its kind, state and spec, its segments and their
//! files, the job record itself ([`Job`]) and the archive's entry for a delivered file
//! ([`ArchiveEntry`]).
//!
//! Plain serde data, held the same by the embedded store and Redis.

use super::room::ConnectorSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use crate::clock::now_ms;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Live recording into MP4 segments.
    Recording,
    /// Live streaming to RTMP destinations.
    Streaming,
    /// The platform's (legacy) recording: every track into its own file, as received, with
    /// a manifest per segment; each segment is then transcoded by a `transcode` job.
    Individual,
    /// The composite MP4 of one individual segment, made from its manifest and track files.
    Transcode,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker took it and is joining the room.
    Starting,
    /// Recording / streaming.
    Active,
    /// Told to stop; finalizing.
    Stopping,
    /// Handing files to storage.
    Delivering,
    /// Done.
    Completed,
    /// Ended with an error code.
    Failed,
    /// Removed from the waiting queue before it started.
    Cancelled,
}

impl JobKind {
    /// The prefix of this kind's status webhooks (`room-live-recording-on`, …).
    pub fn status_prefix(self) -> &'static str {
        match self {
            JobKind::Recording => "room-live-recording",
            JobKind::Streaming => "room-streaming",
            JobKind::Individual => "room-record",
            JobKind::Transcode => "room-transcode",
        }
    }

    /// Lower-case name (the store's key of a room's live job of this kind, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Recording => "recording",
            JobKind::Streaming => "streaming",
            JobKind::Individual => "individual",
            JobKind::Transcode => "transcode",
        }
    }

    /// Whether jobs of this kind run a live composite (recording or streaming).
    pub fn is_live(self) -> bool {
        matches!(self, JobKind::Recording | JobKind::Streaming)
    }
}

impl JobState {
    /// Every state (for metrics).
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Active,
        JobState::Stopping,
        JobState::Delivering,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// Completed, failed or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Active => "active",
            JobState::Stopping => "stopping",
            JobState::Delivering => "delivering",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Who asked for something.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    /// Client id of the participant.
    pub client_id: String,
    /// `moderator` or `participant`.
    pub role: String,
}

impl Requester {
    /// Whether the requester is a moderator.
    pub fn is_moderator(&self) -> bool {
        self.role == "moderator"
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Recording or streaming.
    pub kind: JobKind,
    /// Room id.
    pub room_id: String,
    /// Application id.
    pub app_id: String,
    /// Conference number.
    pub conf_num: String,
    /// How to join the room.
    pub connector: ConnectorSpec,
    /// Layout name or inline definition (already validated).
    pub layout: serde_json::Value,
    /// Encoder preset name.
    pub preset: String,
    /// Watermark PNG.
    #[serde(default)]
    pub watermark: Option<PathBuf>,
    /// RTMP destinations (streaming).
    #[serde(default)]
    pub rtmp_urls: Vec<String>,
    /// Most talkers treated as active speakers at once.
    #[serde(default)]
    pub max_active_talkers: Option<u32>,
    /// Stop by itself after this many seconds.
    #[serde(default)]
    pub max_duration_secs: Option<f64>,
    /// Client id (or `auto`) that started it.
    pub started_by: String,
    /// Estimated CPU cost in cores.
    pub cost: f64,
    /// Storage URL for this job's files instead of the configured one (kept with each
    /// spooled file, so a later delivery honours it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// A web page drawn over the tiles (custom view), already checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<crate::model::page::PageSpec>,
    /// A live HLS output from the same encode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<crate::model::hls::HlsSpec>,
    /// The manifest a `transcode` job reads (on the worker that recorded its segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PathBuf>,
    /// The worker that must run this job (a transcode runs where its segment was recorded);
    /// none: any worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_on: Option<String>,
    /// An individual recording started because the room's live recording could not run
    /// (the live job's id): its answers carry 7014, its failed stop 7035.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_for: Option<String>,
}

/// Where a segment's file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentStatus {
    /// Being written.
    Recording,
    /// Finalized and waiting in the spool for storage.
    Spooled,
    /// In storage (`url` says where).
    Delivered,
    /// Finalized and kept where it was recorded (no storage configured, or spooling failed).
    Local,
    /// Written by an earlier run on another machine; not found here.
    Missing,
    /// Left by an earlier run but could not be finalized.
    Unreadable,
    /// Ended before a single fragment reached the disk: nothing playable; the file was
    /// removed.
    Empty,
    /// Finalized, but the spool could not take it (no space): kept where it was recorded and
    /// handed to the spool again until it can.
    Kept,
    /// Handed over with its job by a stopping worker, which went on recording it until the
    /// job's next worker had started its own segment, then finalized and delivered it (the
    /// archive says where it went).
    HandedOver,
}

/// One MP4 segment of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Segment file name.
    pub file_name: String,
    /// Where it is being written (on the worker).
    pub path: PathBuf,
    /// Where the file is.
    pub status: SegmentStatus,
    /// Storage URL once delivered (or `file://` for local files).
    #[serde(default)]
    pub url: Option<String>,
    /// Bytes.
    #[serde(default)]
    pub size: u64,
    /// Media seconds.
    #[serde(default)]
    pub duration_s: f64,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// End, ms since the epoch.
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// Why the file has not reached its storage yet (while it waits in the spool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_error: Option<DeliveryFailure>,
    /// The chat transcript of the segment (when the room chatted while it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatFile>,
    /// The worker that went on recording the segment after handing its job over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over_by: Option<String>,
}

impl SegmentRecord {
    /// A segment starting now at `path` (a file, or an individual segment's folder).
    pub fn recording(path: PathBuf) -> SegmentRecord {
        SegmentRecord {
            file_name: crate::util::file_name(&path),
            path,
            status: SegmentStatus::Recording,
            url: None,
            size: 0,
            duration_s: 0.0,
            started_ms: now_ms(),
            ended_ms: None,
            delivery_error: None,
            chat: None,
            handed_over_by: None,
        }
    }
}

/// The chat transcript of one segment (`<room>_<conf>_<n>.chat.json`), delivered with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatFile {
    /// Transcript file name.
    pub file_name: String,
    /// Messages in it.
    pub messages: u32,
    /// Bytes.
    #[serde(default)]
    pub size: u64,
    /// Where the file is (`spooled`, `delivered`, `local` or `kept`).
    pub status: SegmentStatus,
    /// Storage URL once delivered (or `file://` for local files).
    #[serde(default)]
    pub url: Option<String>,
    /// Why the file has not reached its storage yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_error: Option<DeliveryFailure>,
}

/// A failed attempt to move a segment's file to its storage: 7051 (retried with backoff) or
/// 7052 (the storage refuses it as configured; retried in case that is corrected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    /// 7051 or 7052.
    pub code: u16,
    /// What happened (no secrets).
    pub msg: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A job and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// What to do.
    pub spec: JobSpec,
    /// Where it is.
    pub state: JobState,
    /// 0, or the 7xxx code it failed or ended with.
    pub result: u16,
    /// Human-readable status.
    pub msg: String,
    /// Created, ms since the epoch.
    pub created_ms: u64,
    /// Last state change.
    pub updated_ms: u64,
    /// Recording / streaming since.
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// Ended at.
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// Worker holding it.
    #[serde(default)]
    pub worker: Option<String>,
    /// How many times a worker started it (more than one after a reclaim or hand-back).
    #[serde(default)]
    pub attempts: u32,
    /// Runs in a row that ended with their worker's process (crash or kill) instead of a
    /// stop or a hand-back; reset by a run that records for ten minutes.
    #[serde(default)]
    pub worker_deaths: u32,
    /// Segments in a row that ended because the output stalled (each followed by a new
    /// segment); reset by a run that records for ten minutes.
    #[serde(default)]
    pub stall_restarts: u32,
    /// Client id that stopped it.
    #[serde(default)]
    pub stopped_by: Option<String>,
    /// Segments recorded so far.
    #[serde(default)]
    pub segments: Vec<SegmentRecord>,
    /// RTMP destination status, as last reported.
    #[serde(default)]
    pub destinations: Vec<crate::model::DestinationStatus>,
    /// Media time produced per wall-clock second (1.0 = keeping up).
    #[serde(default)]
    pub realtime_factor: Option<f64>,
    /// Health of the tracks received over the network, as last reported while running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<crate::model::feed::FeedHealth>,
    /// Who is in the room (names, talking, heard), reported with the feeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub people: Vec<crate::model::feed::Person>,
    /// The custom view page, while the job shows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<crate::model::page::PageStatus>,
    /// The HLS output, when the job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<crate::model::hls::HlsStatus>,
    /// The queue entry the holding worker acknowledges when the job ends (Redis stream id).
    #[serde(default)]
    pub queue_entry: Option<String>,
}

impl Job {
    /// Records an RTMP destination's latest status.
    pub fn update_destination(&mut self, d: &crate::model::DestinationStatus) {
        match self.destinations.iter_mut().find(|v| v.id == d.id) {
            Some(slot) => *slot = d.clone(),
            None => self.destinations.push(d.clone()),
        }
    }

    /// Marks the segments the archive records as delivered (`delivered` with their URL), or
    /// as failing to move (their last `delivery_error`): the delivery loop updates the archive
    /// as a file's attempts go, while the job record keeps what its run knew when it handed
    /// the file over.
    pub fn apply_deliveries(&mut self, archive: &[ArchiveEntry]) {
        let id = &self.id;
        // A file still spooled takes what the archive says of it.
        let apply = |name: &str,
                     status: &mut SegmentStatus,
                     url: &mut Option<String>,
                     error: &mut Option<DeliveryFailure>| {
            if *status != SegmentStatus::Spooled {
                return;
            }
            let Some(entry) = archive
                .iter()
                .find(|e| e.job_id == *id && e.file_name == name)
            else {
                return;
            };
            if entry.status == SegmentStatus::Delivered {
                *status = SegmentStatus::Delivered;
                *url = entry.url.clone();
                *error = None;
            } else {
                *error = entry.delivery_error.clone();
            }
        };
        for seg in self.segments.iter_mut() {
            if seg.status == SegmentStatus::HandedOver {
                // Delivered by the worker that recorded it, which no longer writes the record.
                if let Some(e) = archive
                    .iter()
                    .find(|e| e.job_id == *id && e.file_name == seg.file_name)
                {
                    seg.status = e.status;
                    seg.url = e.url.clone();
                    seg.size = e.size;
                    seg.duration_s = e.duration_s;
                    seg.ended_ms = Some(e.ended_ms);
                }
            }
            apply(
                &seg.file_name,
                &mut seg.status,
                &mut seg.url,
                &mut seg.delivery_error,
            );
            if let Some(c) = seg.chat.as_mut() {
                apply(
                    &c.file_name,
                    &mut c.status,
                    &mut c.url,
                    &mut c.delivery_error,
                );
            }
        }
    }

    /// Ends the job: `state` (completed, failed or cancelled), its result code (0 or 7xxx)
    /// and message, stamped now.
    pub fn end(&mut self, state: JobState, result: u16, msg: impl Into<String>) {
        let now = now_ms();
        self.state = state;
        self.result = result;
        self.msg = msg.into();
        self.ended_ms = Some(now);
        self.updated_ms = now;
    }

    /// A fresh job id: `rec_…` or `str_…`, unique in the fleet.
    pub fn new_id(kind: JobKind) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let prefix = match kind {
            JobKind::Recording => "rec",
            JobKind::Streaming => "str",
            JobKind::Individual => "ind",
            JobKind::Transcode => "tra",
        };
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{prefix}_{:x}{:04x}{:02x}",
            nanos / 1000,
            std::process::id() & 0xffff,
            n & 0xff
        )
    }

    /// A new queued job.
    pub fn new(id: String, spec: JobSpec) -> Job {
        let now = now_ms();
        Job {
            id,
            spec,
            state: JobState::Queued,
            result: 0,
            msg: "queued".into(),
            created_ms: now,
            updated_ms: now,
            started_ms: None,
            ended_ms: None,
            worker: None,
            attempts: 0,
            worker_deaths: 0,
            stopped_by: None,
            segments: Vec::new(),
            destinations: Vec::new(),
            realtime_factor: None,
            feeds: Vec::new(),
            people: Vec::new(),
            page: None,
            hls: None,
            stall_restarts: 0,
            queue_entry: None,
        }
    }
}

/// One file in the archive report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// Room id.
    pub room_id: String,
    /// Conference number.
    pub conf_num: String,
    /// Job id.
    pub job_id: String,
    /// File name.
    pub file_name: String,
    /// Bytes.
    pub size: u64,
    /// Media seconds.
    pub duration_s: f64,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// End, ms since the epoch.
    pub ended_ms: u64,
    /// Storage URL (or `file://` path).
    pub url: Option<String>,
    /// Where the file is.
    pub status: SegmentStatus,
    /// The last failed attempt to move the file to its storage, while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_error: Option<DeliveryFailure>,
}

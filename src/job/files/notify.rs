//! Every webhook a job causes, in one place with one id scheme: status events
//! (`room-live-recording-on`, `room-streaming-failed`, …), the `live_recording` and `chatdata`
//! file events and `move-file-failed` (a file that could not be moved to its storage yet).
//!
//! Ids: a status event is `{type}-{job id}-a{attempt}-{stamp}` (the stamp is a per-process
//! strictly increasing millisecond count, so two events never share an id and a retried one
//! keeps its own); a file event is `lr_{file stem}-{first 12 hex of its SHA-256}` (`cd_` for a
//! chat transcript), derived from
//! the file alone, so reporting the same file twice (a crash between upload and clean-up, or a
//! local file seen again) queues it once.
//!
//! Owns nothing durable itself: events go to the [`WebhookQueue`] on disk.

use crate::codes::Code;
use crate::delivery::spool::SegmentMeta;
use crate::delivery::{DeliveryError, DeliveryListener};
use crate::queue::{Job, JobKind};
use crate::webhook::{status_event, EventContext, WebhookQueue};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// A transition a status event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Started (`-on`).
    On,
    /// Ended normally (`-off`).
    Off,
    /// Failed (`-failed`).
    Failed,
    /// Changed while running (`-updated`).
    Updated,
}

impl Transition {
    fn suffix(self) -> &'static str {
        match self {
            Transition::On => "on",
            Transition::Off => "off",
            Transition::Failed => "failed",
            Transition::Updated => "updated",
        }
    }
}

/// What a status event is about: the job itself, or the RTMP streams of a recording job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The job (`room-live-recording-*` or `room-streaming-*` by its kind).
    Job,
    /// Its streams (`room-streaming-*`).
    Streaming,
}

/// Sends a job's webhooks (or drops them when no receiver is configured).
#[derive(Clone, Default)]
pub struct Notifier {
    queue: Option<Arc<WebhookQueue>>,
    last_stamp: Arc<AtomicU64>,
    /// Serializes updates of the bundles' state files.
    bundles: Arc<std::sync::Mutex<()>>,
}

/// What is known of a bundle whose files are not all delivered yet (kept beside the webhook
/// queue, so a restart forgets nothing).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct BundleState {
    /// Delivered files: name → URL.
    urls: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("configured", &self.queue.is_some())
            .finish()
    }
}

impl Notifier {
    /// A notifier on `queue` (none: webhooks are not configured).
    pub fn new(queue: Option<WebhookQueue>) -> Notifier {
        Notifier {
            queue: queue.map(Arc::new),
            last_stamp: Arc::new(AtomicU64::new(0)),
            bundles: Arc::new(std::sync::Mutex::new(())),
        }
    }

    /// Whether a receiver is configured.
    pub fn is_configured(&self) -> bool {
        self.queue.is_some()
    }

    fn stamp(&self) -> u64 {
        let now = crate::clock::now_ms();
        let prev = self
            .last_stamp
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(prev + 1)
    }

    /// The webhook id of a status event of `job`.
    fn status_id(&self, kind: &str, job: &Job) -> String {
        format!("{kind}-{}-a{}-{}", job.id, job.attempts, self.stamp())
    }

    /// Queues a status event for `job`. `by` is whoever stopped it for `Off`
    /// (`system` when nobody did), else whoever started it.
    pub fn status(&self, job: &Job, subject: Subject, t: Transition, code: Option<Code>) {
        let Some(q) = &self.queue else { return };
        let prefix = match subject {
            Subject::Job => job.spec.kind.status_prefix(),
            Subject::Streaming => JobKind::Streaming.status_prefix(),
        };
        let kind = format!("{prefix}-{}", t.suffix());
        let by = match t {
            Transition::Off => job.stopped_by.clone().unwrap_or_else(|| "system".into()),
            _ => job.spec.started_by.clone(),
        };
        let ctx = EventContext {
            app_id: job.spec.app_id.clone(),
            room_id: job.spec.room_id.clone(),
            conf_num: job.spec.conf_num.clone(),
            by,
        };
        let id = self.status_id(&kind, job);
        if let Err(e) = q.enqueue(&id, &status_event(&kind, &ctx, code)) {
            warn!(error = %e, kind = %kind, "status webhook not queued");
        }
    }

    /// Queues a `move-file-failed` event: `meta`'s file could not be moved to its storage
    /// (7051, or 7052 when the storage refuses it as configured); it stays in the spool and
    /// is tried again. Sent for a file's first failure and when the cause's code changes.
    pub fn move_file_failed(&self, meta: &SegmentMeta, error: &DeliveryError, attempts: u32) {
        let Some(q) = &self.queue else { return };
        let code = error.code;
        let event = json!({
            "type": "move-file-failed",
            "trans_date": crate::clock::now_ms() / 1000,
            "app_id": meta.app_id,
            "room_id": meta.room_id,
            "conf_num": meta.conf_num,
            "file_name": meta.file_name,
            "data": {
                "status": {
                    "resultCode": code.as_u16(),
                    "success": false,
                    "error": { "errorCode": code.as_u16(), "errorDesc": code.message() },
                },
                "reason": error.message,
                "attempts": attempts,
            },
        });
        let id = format!(
            "mf_{}-{}-{}",
            meta.file_name.trim_end_matches(".mp4"),
            code.as_u16(),
            attempts
        );
        if let Err(e) = q.enqueue(&id, &event) {
            warn!(error = %e, "move-file webhook not queued");
        }
    }

    /// Queues a `custom-view` event: `job`'s page was shown, or failed and the room's own
    /// layout is shown instead (7073, the reason in `data.reason`; the recording goes on).
    pub fn page(&self, job: &Job, status: &crate::model::page::PageStatus) {
        use crate::model::page::PagePhase;
        let Some(q) = &self.queue else { return };
        let failure = (status.phase == PagePhase::Fallback).then_some(Code::UnsupportedLayout);
        let code = failure.map(|c| c.as_u16()).unwrap_or(0);
        let event = json!({
            "type": "custom-view",
            "trans_date": crate::clock::now_ms() / 1000,
            "app_id": job.spec.app_id,
            "room_id": job.spec.room_id,
            "conf_num": job.spec.conf_num,
            "job_id": job.id,
            "data": {
                "status": {
                    "resultCode": code,
                    "success": failure.is_none(),
                    "error": {
                        "errorCode": code,
                        "errorDesc": failure.map(|c| c.message()).unwrap_or(""),
                    },
                },
                "url": status.url,
                "phase": status.phase,
                "reason": status.error,
                "failures": status.failures,
            },
        });
        let phase = serde_json::to_value(status.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let id = format!("cv-{}-a{}-{phase}-{}", job.id, job.attempts, self.stamp());
        if let Err(e) = q.enqueue(&id, &event) {
            warn!(error = %e, "custom-view webhook not queued");
        }
    }

    /// Queues the event for a file now at `url`: `live_recording` for a recording,
    /// `chatdata` for a chat transcript.
    pub fn file_delivered(&self, meta: &SegmentMeta, url: &str) -> std::io::Result<()> {
        let Some(q) = &self.queue else {
            return Ok(());
        };
        use crate::model::hls::HlsPart;
        match meta.hls {
            // Segments and later playlists are not announced one by one: the first playlist
            // says the output is live, the VOD playlist that it ended.
            Some(HlsPart::Init | HlsPart::Segment) => return Ok(()),
            Some(HlsPart::Live) if meta.segment != 1 => return Ok(()),
            Some(part) => return q.enqueue(&file_event_id(meta), &hls_event(meta, url, part)),
            None => {}
        }
        if let Some(bundle) = &meta.bundle {
            return self.bundle_file(q, bundle, meta, url);
        }
        if crate::job::files::chat::is_transcript(&meta.file_name) {
            q.enqueue(&file_event_id(meta), &chatdata_event(meta, url))
        } else {
            q.enqueue(&file_event_id(meta), &live_recording_event(meta, url))
        }
    }

    /// Notes a delivered file of `bundle`; the bundle's webhook is queued with the last one.
    fn bundle_file(
        &self,
        q: &WebhookQueue,
        bundle: &crate::delivery::spool::Bundle,
        meta: &SegmentMeta,
        url: &str,
    ) -> std::io::Result<()> {
        let _guard = self.bundles.lock().unwrap_or_else(|e| e.into_inner());
        let dir = q.dir().join("bundles");
        std::fs::create_dir_all(&dir)?;
        let state_path = dir.join(format!("{}.json", crate::util::path_component(&bundle.id)));
        let mut state: BundleState = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        state.urls.insert(meta.file_name.clone(), url.to_string());
        if (state.urls.len() as u32) < bundle.files {
            let data = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
            return crate::util::write_atomic(&state_path, &data);
        }
        let id = format!("{}_{}", bundle.kind.as_str(), bundle.id);
        q.enqueue(&id, &bundle_event(meta, bundle.kind, &state.urls))?;
        match std::fs::remove_file(&state_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// One pass over the queue; what is still pending.
    pub async fn drain_once(&self) -> usize {
        match &self.queue {
            Some(q) => q.drain_once().await.pending,
            None => 0,
        }
    }

    /// Sends until nothing is pending or `limit` passes; what is still pending.
    pub async fn run_until_empty(&self, limit: Duration) -> usize {
        match &self.queue {
            Some(q) => q.run_until_empty(limit).await,
            None => 0,
        }
    }
}

impl DeliveryListener for Notifier {
    fn delivered(&self, meta: &SegmentMeta, url: &str) -> std::io::Result<()> {
        self.file_delivered(meta, url)
    }
}

/// The platform's `live_recording` webhook body for a delivered file.
pub fn live_recording_event(m: &SegmentMeta, url: &str) -> serde_json::Value {
    json!({
        "type": "live_recording",
        "trans_date": m.ended_at_unix_ms / 1000,
        "app_id": m.app_id,
        "room_id": m.room_id,
        "conf_num": m.conf_num,
        "url": url,
        "file_size": m.size.to_string(),
    })
}

/// The platform's `recording` (an individual segment's files) or `transcoded` (its
/// composite MP4) webhook: `{"type", "trans_date", "app_id", "room_id", "conf_num",
/// "<type>": [{"url"}]}`, plus the job and segment and each file's name.
fn bundle_event(
    m: &SegmentMeta,
    kind: crate::delivery::spool::BundleKind,
    urls: &std::collections::BTreeMap<String, String>,
) -> serde_json::Value {
    let list: Vec<serde_json::Value> = urls
        .iter()
        .map(|(name, url)| json!({ "url": url, "file_name": name }))
        .collect();
    let mut event = json!({
        "type": kind.as_str(),
        "trans_date": crate::clock::now_ms() / 1000,
        "app_id": m.app_id,
        "room_id": m.room_id,
        "conf_num": m.conf_num,
        "job_id": m.job_id,
        "segment": m.segment,
    });
    event[kind.as_str()] = serde_json::Value::Array(list);
    event
}

/// roomcast's `hls` webhook: an HLS output's playlist is in storage, live (its first
/// segment) or ended (the VOD playlist).
pub fn hls_event(
    m: &SegmentMeta,
    url: &str,
    part: crate::model::hls::HlsPart,
) -> serde_json::Value {
    let state = match part {
        crate::model::hls::HlsPart::Ended => "ended",
        _ => "live",
    };
    json!({
        "type": "hls",
        "trans_date": m.ended_at_unix_ms / 1000,
        "app_id": m.app_id,
        "room_id": m.room_id,
        "conf_num": m.conf_num,
        "job_id": m.job_id,
        "state": state,
        "playlist_url": url,
        "segments": m.segment,
    })
}

/// The platform's `chatdata` webhook body for a delivered chat transcript.
pub fn chatdata_event(m: &SegmentMeta, url: &str) -> serde_json::Value {
    json!({
        "type": "chatdata",
        "trans_date": m.ended_at_unix_ms / 1000,
        "app_id": m.app_id,
        "room_id": m.room_id,
        "conf_num": m.conf_num,
        "chatdata": [{ "url": url }],
    })
}

/// The id of the event of a delivered file (`lr_` recording, `cd_` chat transcript): from its
/// name and content (`sha256` set).
pub fn file_event_id(m: &SegmentMeta) -> String {
    let sha = &m.sha256[..m.sha256.len().min(12)];
    if m.hls.is_some() {
        return format!("hls_{}-{sha}", m.file_name);
    }
    match m
        .file_name
        .strip_suffix(crate::job::files::chat::TRANSCRIPT_SUFFIX)
    {
        Some(stem) => format!("cd_{stem}-{sha}"),
        None => format!("lr_{}-{sha}", m.file_name.trim_end_matches(".mp4")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_never_repeat() {
        let n = Notifier::new(None);
        let a: Vec<u64> = (0..1000).map(|_| n.stamp()).collect();
        assert!(a.windows(2).all(|w| w[1] > w[0]));
    }
}

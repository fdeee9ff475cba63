//! Webhooks: signed, retried from a durable on-disk queue until delivered or a horizon passes.
//! What to send and with which id is the job's business (`job::notify`); this module only
//! signs, stores and sends.
//!
//! Each request carries `webhook-id` (stable across retries, so receivers can de-duplicate),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"` with the shared secret ([`sign`]).

use crate::clock::now_ms;
use crate::util::{backoff, path_component, write_atomic, Secret};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// Default time a webhook is retried before it is given up (moved to `dead/`).
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay; doubles per attempt.
const RETRY_START: Duration = Duration::from_secs(1);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Webhook endpoint and secret. The secret never appears in `Debug` or logs.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Receiver URL.
    pub url: String,
    /// Shared signing secret.
    pub secret: Secret,
    /// How long to keep retrying one event.
    pub horizon: Duration,
}

/// `v1,<base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))>`.
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Who and what a status event is about.
#[derive(Debug, Clone)]
pub struct EventContext {
    /// Application id.
    pub app_id: String,
    /// Room id.
    pub room_id: String,
    /// Conference number.
    pub conf_num: String,
    /// Client id of whoever started or stopped it (`startedBy` / `stoppedBy`).
    pub by: String,
}

/// A status event in the platform's shape (`room-live-recording-on`, `-off`, `-failed`, …):
/// `{"type", "data": {"status": {"resultCode", "success", "error": {"errorCode", "errorDesc"}},
/// "startedBy"|"stoppedBy"}}`, plus the room it concerns and when.
pub fn status_event(
    kind: &str,
    ctx: &EventContext,
    failure: Option<crate::codes::Code>,
) -> serde_json::Value {
    let code = failure.map(|c| c.as_u16()).unwrap_or(0);
    let desc = failure.map(|c| c.message()).unwrap_or("");
    let by_key = if kind.ends_with("-off") {
        "stoppedBy"
    } else {
        "startedBy"
    };
    let mut data = serde_json::json!({
        "status": {
            "resultCode": code,
            "success": failure.is_none(),
            "error": { "errorCode": code, "errorDesc": desc },
        },
    });
    data[by_key] = serde_json::Value::String(ctx.by.clone());
    if kind.starts_with("room-record-") {
        // The platform's `room-record-on`/`-off` name the moderator who turned it on or off.
        data["moderatorId"] = serde_json::Value::String(ctx.by.clone());
    }
    serde_json::json!({
        "type": kind,
        "trans_date": now_ms() / 1000,
        "app_id": ctx.app_id,
        "room_id": ctx.room_id,
        "conf_num": ctx.conf_num,
        "data": data,
    })
}

/// Why one attempt to send a webhook failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The body could not be serialized.
    #[error("unserializable body: {0}")]
    Body(#[from] serde_json::Error),
    /// No answer (connection refused, timeout, TLS); the URL is left out.
    #[error("request failed: {0}")]
    Request(#[source] reqwest::Error),
    /// The receiver answered with a non-2xx status.
    #[error("receiver answered {0}")]
    Status(u16),
}

/// One queued event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Queued {
    id: String,
    created_unix_ms: u64,
    attempts: u32,
    next_attempt_unix_ms: u64,
    last_error: Option<String>,
    body: serde_json::Value,
}

/// What one pass over the queue did.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct WebhookReport {
    /// Delivered (2xx) and removed.
    pub sent: usize,
    /// Still queued.
    pub pending: usize,
    /// Given up after the horizon (moved to `dead/`).
    pub dead: usize,
}

/// A queued or given-up webhook, as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookState {
    /// The event's id (`webhook-id`).
    pub id: String,
    /// Its type (`room-live-recording-on`, …).
    pub event: String,
    /// Its room.
    pub room_id: String,
    /// When it was queued.
    pub created_unix_ms: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is tried next (none once given up).
    pub next_attempt_unix_ms: Option<u64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Retried past its horizon and kept in `dead/`.
    pub given_up: bool,
}

/// The durable queue: one JSON file per event.
pub struct WebhookQueue {
    dir: PathBuf,
    config: WebhookConfig,
    client: reqwest::Client,
}

impl WebhookQueue {
    /// Opens (creating) the queue folder.
    pub fn open(dir: impl Into<PathBuf>, config: WebhookConfig) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("dead"))?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(std::io::Error::other)?;
        Ok(WebhookQueue {
            dir,
            config,
            client,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        let safe = path_component(id);
        self.dir.join(format!("{safe}.json"))
    }

    /// Queues an event; an id already queued is left as it is.
    pub fn enqueue(&self, id: &str, body: &serde_json::Value) -> std::io::Result<()> {
        let path = self.path(id);
        if path.exists() {
            return Ok(());
        }
        let q = Queued {
            id: id.to_string(),
            created_unix_ms: now_ms(),
            attempts: 0,
            next_attempt_unix_ms: 0,
            last_error: None,
            body: body.clone(),
        };
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&q).map_err(std::io::Error::other)?,
        )
    }

    fn list(&self) -> Vec<(PathBuf, Queued)> {
        Self::read_all(&self.dir)
    }

    fn read_all(dir: &Path) -> Vec<(PathBuf, Queued)> {
        let mut v: Vec<(PathBuf, Queued)> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "json")
                            && !p
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .filter_map(|p| {
                        let q = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
                        Some((p, q))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|(_, q)| q.created_unix_ms);
        v
    }

    /// Number of queued events.
    pub fn pending(&self) -> usize {
        self.list().len()
    }

    /// What is queued and what was given up, oldest first, without the bodies' data: for an
    /// operator's view.
    pub fn states(&self) -> Vec<WebhookState> {
        let state = |q: Queued, given_up: bool| WebhookState {
            event: q
                .body
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string(),
            room_id: q
                .body
                .get("room_id")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string(),
            id: q.id,
            created_unix_ms: q.created_unix_ms,
            attempts: q.attempts,
            next_attempt_unix_ms: (!given_up).then_some(q.next_attempt_unix_ms),
            last_error: q.last_error,
            given_up,
        };
        let dead = Self::read_all(&self.dir.join("dead"));
        let mut out: Vec<WebhookState> = self
            .list()
            .into_iter()
            .map(|(_, q)| state(q, false))
            .chain(dead.into_iter().map(|(_, q)| state(q, true)))
            .collect();
        out.sort_by_key(|w| w.created_unix_ms);
        out
    }

    /// Sends every due event once, oldest first. When the receiver does not answer at all
    /// (timeout, refused connection) the pass ends there: the events after it stay due for the
    /// next pass instead of each waiting out its own timeout.
    pub async fn drain_once(&self) -> WebhookReport {
        let mut report = WebhookReport::default();
        let mut unreachable = false;
        for (path, mut q) in self.list() {
            if unreachable || q.next_attempt_unix_ms > now_ms() {
                report.pending += 1;
                continue;
            }
            let sent = self.send(&q).await;
            unreachable = matches!(sent, Err(SendError::Request(_)));
            match sent {
                Ok(()) => {
                    info!(id = %q.id, attempts = q.attempts + 1, "webhook delivered");
                    let _ = std::fs::remove_file(&path);
                    report.sent += 1;
                }
                Err(e) => {
                    q.attempts += 1;
                    q.last_error = Some(e.to_string());
                    let age = Duration::from_millis(now_ms().saturating_sub(q.created_unix_ms));
                    if age >= self.config.horizon {
                        warn!(id = %q.id, attempts = q.attempts, error = %e,
                            "webhook given up after its retry horizon; kept in dead/");
                        let dead = self
                            .dir
                            .join("dead")
                            .join(path.file_name().unwrap_or_default());
                        let _ =
                            write_atomic(&dead, &serde_json::to_vec_pretty(&q).unwrap_or_default());
                        let _ = std::fs::remove_file(&path);
                        report.dead += 1;
                        continue;
                    }
                    let wait = backoff(q.attempts - 1, RETRY_START, RETRY_MAX);
                    q.next_attempt_unix_ms = now_ms() + wait.as_millis() as u64;
                    warn!(id = %q.id, attempts = q.attempts, retry_in_s = wait.as_secs(),
                        error = %e, "webhook failed, will retry");
                    let _ = write_atomic(&path, &serde_json::to_vec_pretty(&q).unwrap_or_default());
                    report.pending += 1;
                }
            }
        }
        report
    }

    async fn send(&self, q: &Queued) -> Result<(), SendError> {
        let body = serde_json::to_vec(&q.body)?;
        let ts = now_ms() / 1000;
        let sig = sign(self.config.secret.expose(), &q.id, ts, &body);
        let resp = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("webhook-id", &q.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Request(e.without_url()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(SendError::Status(resp.status().as_u16()))
        }
    }

    /// Sends until the queue is empty or `limit` passes; returns how many are left.
    pub async fn run_until_empty(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let pending = self.drain_once().await.pending;
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The queue folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_stable_and_secret_redacted() {
        let a = sign("s3cret", "lr_1", 1_700_000_000, b"{\"a\":1}");
        assert_eq!(a, sign("s3cret", "lr_1", 1_700_000_000, b"{\"a\":1}"));
        assert!(a.starts_with("v1,"));
        assert_ne!(a, sign("other", "lr_1", 1_700_000_000, b"{\"a\":1}"));
        assert_ne!(a, sign("s3cret", "lr_2", 1_700_000_000, b"{\"a\":1}"));
        let c = WebhookConfig {
            url: "http://x".into(),
            secret: "s3cret".into(),
            horizon: DEFAULT_HORIZON,
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}

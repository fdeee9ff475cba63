//! Where a job's finished segments and webhooks go: the spool and storage (when configured),
//! the webhook queue, and the archive records that follow a file to its final place.
//!
//! One [`Outbox`] per process, shared by every job it runs (worker or command line).

use crate::config::DeliveryConfig;
use crate::delivery::spool::{sha256_file, SegmentMeta};
use crate::delivery::{Deliverer, DeliveryListener, DrainReport};
use crate::job::files::notify::Notifier;
use crate::job::spec::host::JobHost;
use crate::queue::{ArchiveEntry, DeliveryFailure, SegmentStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How a finished segment was handed off.
#[derive(Debug, Clone, PartialEq)]
pub enum HandOff {
    /// Moved into the spool; storage will follow.
    Spooled {
        /// Its place in the spool while it waits.
        spool_file: PathBuf,
        /// SHA-256 of the file.
        sha256: String,
    },
    /// Kept where it was recorded (no storage configured), reported at this `file://` URL.
    Local {
        /// `file://` URL.
        url: String,
        /// SHA-256 of the file, if it could be read.
        sha256: Option<String>,
    },
    /// Spooling failed; the file stays where it was recorded.
    Kept,
}

/// The spool, storage and webhooks of one process.
pub struct Outbox {
    /// Storage delivery, when storage is configured.
    pub deliverer: Option<Deliverer>,
    /// Webhooks.
    pub notifier: Notifier,
    drain_lock: tokio::sync::Mutex<()>,
    hooks_lock: tokio::sync::Mutex<()>,
    /// Wakes whoever sends the webhooks (a worker's own task) when there may be new ones.
    hooks_due: tokio::sync::Notify,
}

impl Outbox {
    /// Opens what `cfg` configures.
    pub fn open(cfg: &DeliveryConfig) -> crate::Result<Outbox> {
        let notifier = Notifier::new(cfg.webhook_queue()?);
        let listener: Arc<dyn DeliveryListener> = Arc::new(notifier.clone());
        Ok(Outbox {
            deliverer: cfg.deliverer(Some(listener))?,
            notifier,
            drain_lock: tokio::sync::Mutex::new(()),
            hooks_lock: tokio::sync::Mutex::new(()),
            hooks_due: tokio::sync::Notify::new(),
        })
    }

    /// Hands a finished segment on: into the spool (with the job's own storage target, if it
    /// has one) or, without storage, a `live_recording` event for it where it lies.
    pub async fn hand_off(
        &self,
        meta: SegmentMeta,
        path: &Path,
        target: Option<String>,
    ) -> HandOff {
        self.hand_off_hashed(meta, path, target, None).await
    }

    /// [`Outbox::hand_off`] of a file whose SHA-256 (hex) its writer computed as it wrote it:
    /// the file is not read again.
    pub async fn hand_off_hashed(
        &self,
        mut meta: SegmentMeta,
        path: &Path,
        target: Option<String>,
        sha256: Option<String>,
    ) -> HandOff {
        match &self.deliverer {
            Some(d) => {
                let spool = d.spool.clone();
                let src = path.to_path_buf();
                let put = tokio::task::spawn_blocking(move || {
                    let entry = match sha256 {
                        Some(sha) => {
                            meta.sha256 = sha;
                            spool.put_hashed(&src, meta, target)?
                        }
                        None => spool.put(&src, meta, target)?,
                    };
                    Ok::<_, std::io::Error>((spool.media_path(&entry), entry.meta.sha256))
                })
                .await;
                match put {
                    Ok(Ok((spool_file, sha256))) => HandOff::Spooled { spool_file, sha256 },
                    Ok(Err(e)) => {
                        warn!(error = %e, file = %crate::util::file_name(path), "spooling failed; file kept");
                        HandOff::Kept
                    }
                    Err(e) => {
                        warn!(error = %e, "spool task failed; file kept");
                        HandOff::Kept
                    }
                }
            }
            None => {
                let p = path.to_path_buf();
                let sha = match sha256 {
                    Some(sha) => Some(sha),
                    None => tokio::task::spawn_blocking(move || sha256_file(&p))
                        .await
                        .ok()
                        .and_then(|r| r.ok()),
                };
                let url = std::fs::canonicalize(path)
                    .map(|p| format!("file://{}", p.display()))
                    .unwrap_or_else(|_| format!("file://{}", path.display()));
                if let Some(sha) = &sha {
                    meta.sha256 = sha.clone();
                    if let Err(e) = self.notifier.file_delivered(&meta, &url) {
                        warn!(error = %e, "recording webhook not queued");
                    }
                }
                HandOff::Local { url, sha256: sha }
            }
        }
    }

    /// Takes the chunks of the file `meta` describes that still wait in the spool out of it:
    /// the finished file, spooled next, holds all they hold. Returns how many.
    pub async fn drop_chunks(&self, meta: &SegmentMeta) -> usize {
        let Some(d) = &self.deliverer else { return 0 };
        let (spool, job, prefix) = (
            d.spool.clone(),
            meta.job_id.clone(),
            format!("{}.chunk", meta.file_name),
        );
        tokio::task::spawn_blocking(move || {
            spool
                .list()
                .into_iter()
                .filter(|e| {
                    e.meta.chunk.is_some()
                        && e.meta.job_id == job
                        && e.meta.file_name.starts_with(&prefix)
                })
                .filter(|e| spool.remove(e).is_ok())
                .count()
        })
        .await
        .unwrap_or(0)
    }

    /// One pass over the spool and the webhook queue; delivered files update `host`'s archive.
    /// Returns the spool's report and how many webhooks are still pending.
    /// Files first, then the webhooks (including those the delivered files just queued).
    /// A worker runs the two on separate tasks instead, so a slow webhook receiver never
    /// holds up files.
    pub async fn drain_once<H: JobHost>(&self, host: &H) -> (DrainReport, usize) {
        let report = self.drain_files_once(host).await;
        let hooks = self.drain_hooks_once().await;
        (report, hooks)
    }

    /// One pass over the spool; delivered files update `host`'s archive.
    pub async fn drain_files_once<H: JobHost>(&self, host: &H) -> DrainReport {
        let _guard = self.drain_lock.lock().await;
        let report = match &self.deliverer {
            Some(d) => d.drain_once().await,
            None => DrainReport::default(),
        };
        record_deliveries(host, &self.notifier, &report).await;
        report
    }

    /// Says that webhooks may have been queued: the task that sends them goes at once
    /// instead of at its next round.
    pub fn hooks_queued(&self) {
        self.hooks_due.notify_one();
    }

    /// Resolves when [`Outbox::hooks_queued`] was called (since the last time this resolved).
    pub async fn hooks_wanted(&self) {
        self.hooks_due.notified().await
    }

    /// One pass over the webhook queue; returns how many are still pending.
    pub async fn drain_hooks_once(&self) -> usize {
        let _guard = self.hooks_lock.lock().await;
        self.notifier.drain_once().await
    }

    /// Drains until nothing is pending or `limit` passes.
    pub async fn run_until_empty<H: JobHost>(
        &self,
        host: &H,
        limit: Duration,
    ) -> (DrainReport, usize) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut total = DrainReport::default();
        loop {
            let (r, hooks) = self.drain_once(host).await;
            let pending = r.pending;
            total.absorb(r);
            if (pending == 0 && hooks == 0) || tokio::time::Instant::now() >= deadline {
                return (total, hooks);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Records in the archive where files went: delivered ones with their storage URL, failed
/// attempts with their code (7051/7052). The archive is read once per pass, not once per file.
/// A file's first failure, or a change of its code, is also told by a `move-file-failed`
/// status webhook.
async fn record_deliveries<H: JobHost>(host: &H, notifier: &Notifier, report: &DrainReport) {
    if report.files.is_empty() && report.failures.is_empty() {
        return;
    }
    let archive = host.archived().await;
    let entry_of = |meta: &SegmentMeta| {
        archive
            .iter()
            .find(|e| e.job_id == meta.job_id && e.file_name == meta.file_name)
            .cloned()
            .unwrap_or(ArchiveEntry {
                room_id: meta.room_id.clone(),
                conf_num: meta.conf_num.clone(),
                job_id: meta.job_id.clone(),
                file_name: meta.file_name.clone(),
                size: meta.size,
                duration_s: 0.0,
                started_ms: meta.started_at_unix_ms,
                ended_ms: meta.ended_at_unix_ms,
                url: None,
                status: SegmentStatus::Spooled,
                delivery_error: None,
            })
    };
    // HLS segments and playlists are not recordings: they are not listed in the archive.
    for (meta, url) in report.files.iter().filter(|(m, _)| m.hls.is_none()) {
        let mut entry = entry_of(meta);
        entry.url = Some(url.clone());
        entry.status = SegmentStatus::Delivered;
        entry.delivery_error = None;
        info!(file = %meta.file_name, %url, "archive: delivered");
        host.archive(&entry).await;
    }
    for f in &report.failures {
        if f.meta.hls.is_some() {
            if f.news {
                notifier.move_file_failed(&f.meta, &f.error, f.attempts);
            }
            continue;
        }
        let mut entry = entry_of(&f.meta);
        entry.delivery_error = Some(DeliveryFailure {
            code: f.error.code.as_u16(),
            msg: f.error.message.clone(),
            attempts: f.attempts,
        });
        host.archive(&entry).await;
        if f.news {
            notifier.move_file_failed(&f.meta, &f.error, f.attempts);
        }
    }
}

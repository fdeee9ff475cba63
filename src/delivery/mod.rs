//! Delivery: every finished segment moves into a durable spool, an uploader copies it to the
//! configured storage, verifies it, tells its [`DeliveryListener`] (which queues the
//! `live_recording` webhook) and only then deletes the local copy. A crash, a restart or storage
//! being down loses nothing: the spool is rescanned and retried with exponential backoff.
//!
//! Delivery knows nothing about webhooks, jobs or media: it moves files and reports them.

pub mod chunks;
mod error;
pub mod local;
pub mod s3;
pub mod sftp;
pub mod spool;

pub use crate::util::path_component;
pub use error::DeliveryError;

use crate::clock::now_ms;
use local::LocalTarget;
use spool::{SegmentMeta, Spool, SpoolEntry};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{debug, info, warn};

/// First retry delay of a failed upload; doubles per attempt.
const RETRY_START: Duration = Duration::from_secs(1);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(3600);

/// Where recordings go.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A local (or mounted) folder.
    Local(LocalTarget),
    /// An S3 or S3-compatible bucket.
    S3(s3::S3Target),
    /// An SFTP server.
    Sftp(sftp::SftpTarget),
}

impl Storage {
    /// Parses a storage URL: `file:///dir` or `s3://bucket/prefix?…` (see [`s3`]).
    pub fn parse(url: &str) -> Result<Storage, DeliveryError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(DeliveryError::config(
                    "file:// storage needs an absolute path",
                ));
            }
            return Ok(Storage::Local(LocalTarget::new(PathBuf::from(path))));
        }
        if url.starts_with("sftp://") {
            return Ok(Storage::Sftp(sftp::SftpTarget::parse(url)?));
        }
        if url.starts_with("s3://") {
            return Ok(Storage::S3(s3::S3Target::parse(url)?));
        }
        let scheme = url.split("://").next().unwrap_or("");
        Err(DeliveryError::config(format!(
            "storage scheme {scheme:?} is not supported (use file:///dir, s3://bucket/prefix or sftp://user@host/path)"
        )))
    }

    /// The URL a file described by `meta` has once delivered here.
    pub fn url_for(&self, meta: &SegmentMeta) -> String {
        match self {
            Storage::Local(t) => format!("file://{}", t.path_for(meta).display()),
            Storage::S3(t) => t.url_for(meta),
            Storage::Sftp(t) => t.url_for(meta),
        }
    }

    async fn upload(&self, spool: &Spool, entry: &SpoolEntry) -> Result<String, DeliveryError> {
        match self {
            Storage::Local(t) => {
                let (t, src, meta) = (t.clone(), spool.media_path(entry), entry.meta.clone());
                tokio::task::spawn_blocking(move || t.put(&src, &meta))
                    .await
                    .map_err(|e| DeliveryError::retryable(format!("upload task: {e}")))?
            }
            Storage::S3(t) => t.put(&spool.media_path(entry), &entry.meta).await,
            Storage::Sftp(t) => t.put(&spool.media_path(entry), &entry.meta).await,
        }
    }
}

/// Told about every verified upload before the spool copy is removed. An error keeps the file
/// in the spool (it is uploaded and reported again later), so what the listener records is
/// never lost to a crash between the upload and the clean-up.
pub trait DeliveryListener: Send + Sync {
    /// `meta`'s file is now at `url`.
    fn delivered(&self, meta: &spool::SegmentMeta, url: &str) -> std::io::Result<()>;
}

/// What one pass over the spool did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DrainReport {
    /// Storage URLs of the files delivered.
    pub urls: Vec<String>,
    /// Files delivered and removed from the spool.
    pub delivered: usize,
    /// Files whose upload failed this time (kept for a retry).
    pub failed: usize,
    /// Files still in the spool.
    pub pending: usize,
    /// What was delivered where.
    #[serde(skip)]
    pub files: Vec<(spool::SegmentMeta, String)>,
    /// The files whose attempt failed this time.
    #[serde(skip)]
    pub failures: Vec<FileFailure>,
}

impl DrainReport {
    /// Adds a later pass's report to this one (its `pending` is the latest).
    pub fn absorb(&mut self, r: DrainReport) {
        self.delivered += r.delivered;
        self.urls.extend(r.urls);
        self.files.extend(r.files);
        self.failures.extend(r.failures);
        self.failed += r.failed;
        self.pending = r.pending;
    }
}

/// A file whose attempt to reach its storage failed.
#[derive(Debug, Clone)]
pub struct FileFailure {
    /// The file.
    pub meta: spool::SegmentMeta,
    /// Why.
    pub error: DeliveryError,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Its first failure, or one with another code than the last: worth telling.
    pub news: bool,
}

/// Drains a spool into storage.
pub struct Deliverer {
    /// The spool.
    pub spool: Spool,
    /// Target.
    pub storage: Storage,
    /// Told about each delivered file (the `live_recording` webhook).
    pub listener: Option<std::sync::Arc<dyn DeliveryListener>>,
    /// Used once the primary (or a job's own target) has failed [`BACKUP_AFTER`] times.
    pub backup: Option<Storage>,
    /// How often a recording in progress sends its new bytes to storage as a chunk (none: a
    /// segment reaches storage only once finished). See [`chunks`].
    pub chunk_every: Option<Duration>,
}

/// Failed attempts on the primary target before the backup target is tried.
pub const BACKUP_AFTER: u32 = 3;

use crate::util::backoff;

impl Deliverer {
    /// Where a file goes: a job's own target (kept in its sidecar) overrides the configured
    /// one.
    pub fn storage_for(&self, own: Option<&str>) -> Result<Storage, DeliveryError> {
        match own {
            Some(t) => Storage::parse(t),
            None => Ok(self.storage.clone()),
        }
    }

    /// Tries every due spool entry once.
    ///
    /// The files of an HLS output go strictly in order (a segment never before the
    /// initialization segment, a playlist never before the segments it lists): once one of
    /// them waits, the later ones of the same job wait too. A live playlist that a newer
    /// version of itself replaces is dropped unsent (except the first, which announces the
    /// output).
    pub async fn drain_once(&self) -> DrainReport {
        use crate::model::hls::HlsPart;
        let mut report = DrainReport::default();
        let entries = self.spool.list();
        let playlist_key = |e: &SpoolEntry| match e.meta.hls {
            Some(HlsPart::Live | HlsPart::Ended) => {
                Some((e.meta.job_id.clone(), e.meta.file_name.clone()))
            }
            _ => None,
        };
        let mut newest = std::collections::HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(k) = playlist_key(e) {
                newest.insert(k, i);
            }
        }
        let mut held = std::collections::HashSet::new();
        for (i, mut entry) in entries.into_iter().enumerate() {
            // HLS files and a recording's chunks go in order, each job's after the other.
            let ordered = entry.meta.hls.is_some() || entry.meta.chunk.is_some();
            let superseded = entry.meta.hls == Some(HlsPart::Live)
                && entry.meta.segment != 1
                && playlist_key(&entry).and_then(|k| newest.get(&k).copied()) != Some(i);
            if superseded {
                if let Err(e) = self.spool.remove(&entry) {
                    warn!(error = %e, "spool cleanup of a replaced playlist failed");
                }
                continue;
            }
            if entry.meta.chunk.is_some() && !self.spool.media_path(&entry).is_file() {
                // A chunk whose file was finished (and so taken out of the spool) while it
                // was being sent: nothing left to send.
                let _ = self.spool.remove(&entry);
                continue;
            }
            if ordered && held.contains(&entry.meta.job_id) {
                report.pending += 1;
                continue;
            }
            if entry.next_attempt_unix_ms > now_ms() {
                report.pending += 1;
                if ordered {
                    held.insert(entry.meta.job_id.clone());
                }
                continue;
            }
            let result = self.deliver(&mut entry).await;
            if ordered && result.is_err() {
                held.insert(entry.meta.job_id.clone());
            }
            match result {
                // A chunk is not a delivered file: its file is, once finished.
                Ok(_) if entry.meta.chunk.is_some() => {}
                Ok(url) => {
                    report.delivered += 1;
                    report.files.push((entry.meta.clone(), url.clone()));
                    report.urls.push(url);
                }
                Err(e) => {
                    entry.attempts += 1;
                    let wait = backoff(entry.attempts - 1, RETRY_START, RETRY_MAX);
                    entry.next_attempt_unix_ms = now_ms() + wait.as_millis() as u64;
                    entry.last_error = Some(e.to_string());
                    let code = e.code.as_u16();
                    // A chunk that waits is logged; what is reported is its file's delivery.
                    if entry.meta.chunk.is_none() {
                        report.failures.push(FileFailure {
                            meta: entry.meta.clone(),
                            error: e.clone(),
                            attempts: entry.attempts,
                            news: entry.last_code != Some(code),
                        });
                    }
                    entry.last_code = Some(code);
                    warn!(file = %entry.meta.file_name, code = %e.code, error = %e,
                        attempts = entry.attempts, retry_in_s = wait.as_secs(),
                        "delivery failed, kept in the spool");
                    if let Err(e) = self.spool.update(&entry) {
                        warn!(error = %e, "spool update failed");
                    }
                    report.failed += 1;
                    report.pending += 1;
                }
            }
        }
        report
    }

    async fn deliver(&self, entry: &mut SpoolEntry) -> Result<String, DeliveryError> {
        let primary = self.storage_for(entry.target.as_deref())?;
        let target = match &self.backup {
            Some(b) if entry.attempts >= BACKUP_AFTER => {
                info!(file = %entry.meta.file_name, attempts = entry.attempts,
                    "primary storage keeps failing; using the backup target");
                b
            }
            _ => &primary,
        };
        let url = target.upload(&self.spool, entry).await?;
        if entry.meta.chunk.is_some() {
            debug!(file = %entry.meta.file_name, %url, bytes = entry.meta.size, "chunk stored");
            self.spool
                .remove(entry)
                .map_err(|e| DeliveryError::retryable(format!("spool cleanup: {e}")))?;
            return Ok(url);
        }
        info!(file = %entry.meta.file_name, %url, bytes = entry.meta.size, "recording delivered");
        // A recording's file, or a file of an individual recording's folder (a bundle).
        if entry.meta.hls.is_none()
            && (entry.meta.bundle.is_some() || entry.meta.file_name.ends_with(".mp4"))
        {
            // The whole file is in storage: the chunks sent while it recorded go, from the
            // target that took the file (which answers) and from the others they may have
            // reached (which may be what is down: tried, not waited for).
            let n = target.remove_chunks(&entry.meta).await?;
            for other in std::iter::once(&primary).chain(self.backup.as_ref()) {
                if std::ptr::eq(other, target) {
                    continue;
                }
                if let Err(e) = other.remove_chunks(&entry.meta).await {
                    debug!(file = %entry.meta.file_name, error = %e, "chunks not looked for on a target that fails");
                }
            }
            if n > 0 {
                info!(file = %entry.meta.file_name, chunks = n, "chunks removed from storage");
            }
        }
        if let Some(l) = &self.listener {
            // A crash between this and removing the entry reports the same file again; the
            // listener derives its ids from the file, so the report is de-duplicated.
            l.delivered(&entry.meta, &url)
                .map_err(|e| DeliveryError::retryable(format!("delivery report: {e}")))?;
        }
        self.spool
            .remove(entry)
            .map_err(|e| DeliveryError::retryable(format!("spool cleanup: {e}")))?;
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Code;

    #[test]
    fn storage_urls() {
        assert!(matches!(
            Storage::parse("file:///srv/rec"),
            Ok(Storage::Local(_))
        ));
        assert!(Storage::parse("file://relative").is_err());
        assert_eq!(
            Storage::parse("ftp://x/y").unwrap_err().code,
            Code::MoveFileFailed2
        );
        assert!(matches!(
            Storage::parse("s3://bucket/p"),
            Ok(Storage::S3(_))
        ));
        assert!(matches!(
            Storage::parse("sftp://u@h/p?fingerprint=SHA256:abc"),
            Ok(Storage::Sftp(_))
        ));
    }
}

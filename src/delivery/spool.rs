//! The durable spool: a folder of segment files, each with a JSON sidecar describing it.
//!
//! Writes are atomic (temporary name, fsync, rename): after a crash every sidecar is whole and
//! names a file that is whole.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

pub use crate::util::write_atomic;

/// What the spool knows about one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Job that recorded it.
    pub job_id: String,
    /// Customer application id.
    pub app_id: String,
    /// Room id.
    pub room_id: String,
    /// Conference number.
    pub conf_num: String,
    /// Segment index (the `n` of `<room>_<conf>_<n>.mp4`).
    pub segment: u64,
    /// File name in storage.
    pub file_name: String,
    /// When recording started (Unix ms).
    pub started_at_unix_ms: u64,
    /// When it ended (Unix ms).
    pub ended_at_unix_ms: u64,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// One spooled segment and its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// Spool id (file stem).
    pub id: String,
    /// The segment.
    pub meta: SegmentMeta,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (Unix ms).
    pub next_attempt_unix_ms: u64,
    /// Last failure, if any.
    pub last_error: Option<String>,
    /// This job's own storage URL, overriding the configured target.
    #[serde(default)]
    pub target: Option<String>,
}

/// The spool folder.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl Spool {
    /// Opens (creating) the spool folder.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Spool> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Spool { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves a finished segment into the spool with its sidecar.
    pub fn put(&self, file: &Path, mut meta: SegmentMeta) -> std::io::Result<SpoolEntry> {
        meta.size = std::fs::metadata(file)?.len();
        meta.sha256 = sha256_file(file)?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let id = format!("{stem}-{}", &meta.sha256[..12]);
        let media = self.dir.join(format!("{id}.mp4"));
        if std::fs::rename(file, &media).is_err() {
            // Another file system: copy, sync, then remove the original.
            let tmp = self.dir.join(format!(".{id}.mp4.tmp"));
            std::fs::copy(file, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &media)?;
            std::fs::remove_file(file)?;
        }
        let entry = SpoolEntry {
            id,
            meta,
            attempts: 0,
            next_attempt_unix_ms: 0,
            last_error: None,
            target: None,
        };
        self.update(&entry)?;
        Ok(entry)
    }

    /// Rewrites an entry's sidecar.
    pub fn update(&self, entry: &SpoolEntry) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join(format!("{}.json", entry.id)), &data)
    }

    /// The media file of an entry.
    pub fn media_path(&self, entry: &SpoolEntry) -> PathBuf {
        self.dir.join(format!("{}.mp4", entry.id))
    }

    /// Every entry, oldest first. Unreadable sidecars are skipped (and logged).
    pub fn list(&self) -> Vec<SpoolEntry> {
        let mut out: Vec<SpoolEntry> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().to_string();
                        n.ends_with(".json") && !n.starts_with('.')
                    })
                    .filter_map(|e| {
                        let text = std::fs::read(e.path()).ok()?;
                        match serde_json::from_slice::<SpoolEntry>(&text) {
                            Ok(entry) => Some(entry),
                            Err(err) => {
                                tracing::warn!(file = %e.path().display(), error = %err,
                                    "unreadable spool sidecar left in place");
                                None
                            }
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|e| (e.meta.ended_at_unix_ms, e.id.clone()));
        out
    }

    /// Deletes an entry (media first: a leftover sidecar without media is harmless).
    pub fn remove(&self, entry: &SpoolEntry) -> std::io::Result<()> {
        match std::fs::remove_file(self.media_path(entry)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::remove_file(self.dir.join(format!("{}.json", entry.id)))
    }
}

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
    /// What part of an HLS output the file is (none: a recording or a transcript).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<crate::model::hls::HlsPart>,
    /// The set of files the file belongs to, announced by one webhook once all are delivered
    /// (none: the file is announced by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<Bundle>,
    /// Which chunk of a recording in progress the file is (from 1; none: a whole file). See
    /// [`super::chunks`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
}

/// Files announced together: an individual segment's track files and manifest (`recording`),
/// or a transcode's MP4 (`transcoded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Unique per set (the segment's folder name and job).
    pub id: String,
    /// Which webhook announces it.
    pub kind: BundleKind,
    /// How many files the set has.
    pub files: u32,
}

/// The webhook that announces a [`Bundle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleKind {
    /// `recording`: an individual segment's files.
    Recording,
    /// `transcoded`: the composite made from one.
    Transcoded,
}

impl BundleKind {
    /// The webhook's `type` (also the key of its list of URLs).
    pub fn as_str(self) -> &'static str {
        match self {
            BundleKind::Recording => "recording",
            BundleKind::Transcoded => "transcoded",
        }
    }
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
    /// Its code (7051 or 7052).
    #[serde(default)]
    pub last_code: Option<u16>,
    /// This job's own storage URL, overriding the configured target.
    #[serde(default)]
    pub target: Option<String>,
    /// Where the media was before it moved into the spool. The sidecar is written first, so
    /// a process that dies between the two steps leaves a sidecar naming media still here:
    /// it is delivered from here.
    #[serde(default)]
    pub origin: Option<PathBuf>,
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
    Ok(crate::util::hex(&h.finalize()))
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

    /// Moves a finished segment into the spool with its sidecar. The sidecar is durable
    /// before the media moves; if the media cannot move (another file system and no room for
    /// the copy), the sidecar is taken back and the file stays where it is, untouched.
    pub fn put(
        &self,
        file: &Path,
        mut meta: SegmentMeta,
        target: Option<String>,
    ) -> std::io::Result<SpoolEntry> {
        meta.sha256 = sha256_file(file)?;
        self.put_hashed(file, meta, target)
    }

    /// [`Spool::put`] for a file whose SHA-256 its writer computed as it wrote it
    /// (`meta.sha256`): the file is not read again.
    pub fn put_hashed(
        &self,
        file: &Path,
        mut meta: SegmentMeta,
        target: Option<String>,
    ) -> std::io::Result<SpoolEntry> {
        meta.size = std::fs::metadata(file)?.len();
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let id = format!("{stem}-{}", &meta.sha256[..12]);
        let media = self.dir.join(media_name(&id, &meta.file_name));
        let mut entry = SpoolEntry {
            id,
            meta,
            attempts: 0,
            next_attempt_unix_ms: 0,
            last_error: None,
            last_code: None,
            target,
            origin: Some(file.to_path_buf()),
        };
        self.update(&entry)?;
        if let Err(e) = move_file(file, &media) {
            let _ = std::fs::remove_file(self.dir.join(format!("{}.json", entry.id)));
            return Err(e);
        }
        entry.origin = None;
        // Best effort: a stale origin is harmless (media is looked up in the spool first).
        let _ = self.update(&entry);
        Ok(entry)
    }

    /// Rewrites an entry's sidecar.
    pub fn update(&self, entry: &SpoolEntry) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join(format!("{}.json", entry.id)), &data)
    }

    /// The media file of an entry: in the spool, or still at its origin when the process
    /// died between writing the sidecar and moving the media.
    pub fn media_path(&self, entry: &SpoolEntry) -> PathBuf {
        let spooled = self.dir.join(media_name(&entry.id, &entry.meta.file_name));
        match &entry.origin {
            Some(origin) if !spooled.exists() && origin.is_file() => origin.clone(),
            _ => spooled,
        }
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
        if let Some(origin) = entry.origin.as_ref().filter(|o| o.is_file()) {
            if !self
                .dir
                .join(media_name(&entry.id, &entry.meta.file_name))
                .exists()
            {
                std::fs::remove_file(origin)?;
            }
        }
        match std::fs::remove_file(self.dir.join(media_name(&entry.id, &entry.meta.file_name))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::remove_file(self.dir.join(format!("{}.json", entry.id)))
    }
}

/// The spool's name for the content of entry `id`: `.mp4` for recordings, `.data` for any
/// other file (a chat transcript), so no content is ever taken for a sidecar (`.json`).
fn media_name(id: &str, file_name: &str) -> String {
    if file_name.ends_with(".mp4") {
        format!("{id}.mp4")
    } else {
        format!("{id}.data")
    }
}

/// Renames `from` to `to`; across file systems copies (synced) and removes the original.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = to.with_file_name(format!(".{name}.tmp"));
    let copied = std::fs::copy(from, &tmp).and_then(|_| std::fs::File::open(&tmp)?.sync_all());
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SegmentMeta {
        SegmentMeta {
            job_id: "j".into(),
            app_id: "a".into(),
            room_id: "r".into(),
            conf_num: "1".into(),
            segment: 1,
            file_name: "r_1_1.mp4".into(),
            started_at_unix_ms: 0,
            ended_at_unix_ms: 0,
            size: 0,
            sha256: String::new(),
            hls: None,
            bundle: None,
            chunk: None,
        }
    }

    /// A fresh folder with a spool and a media file `r_1_1.mp4` holding "media".
    fn scratch(tag: &str) -> (PathBuf, Spool, PathBuf) {
        let d = std::env::temp_dir().join(format!("roomcast-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("spool")).unwrap();
        let spool = Spool::open(d.join("spool")).unwrap();
        let file = d.join("r_1_1.mp4");
        std::fs::write(&file, b"media").unwrap();
        (d, spool, file)
    }

    #[test]
    fn a_media_file_that_cannot_move_leaves_no_sidecar_and_stays_put() {
        let (d, spool, file) = scratch("nomove");
        // Block the destination: a folder where the media file would go.
        let sha = sha256_file(&file).unwrap();
        std::fs::create_dir_all(d.join("spool").join(format!("r_1_1-{}.mp4", &sha[..12]))).unwrap();
        assert!(spool.put(&file, meta(), None).is_err());
        assert!(spool.list().is_empty(), "sidecar taken back");
        assert_eq!(std::fs::read(&file).unwrap(), b"media");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_sidecar_whose_media_did_not_move_delivers_from_the_origin() {
        let (d, spool, file) = scratch("origin");
        // What a process that died between the two steps leaves: the sidecar, media unmoved.
        let entry = SpoolEntry {
            id: "r_1_1-abc".into(),
            meta: meta(),
            attempts: 0,
            next_attempt_unix_ms: 0,
            last_error: None,
            last_code: None,
            target: None,
            origin: Some(file.clone()),
        };
        spool.update(&entry).unwrap();
        let listed = spool.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(spool.media_path(&listed[0]), file);
        spool.remove(&listed[0]).unwrap();
        assert!(!file.exists() && spool.list().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn put_moves_the_media_after_its_sidecar() {
        let (d, spool, file) = scratch("put");
        let e = spool.put(&file, meta(), Some("file:///x".into())).unwrap();
        assert!(!file.exists());
        assert_eq!(std::fs::read(spool.media_path(&e)).unwrap(), b"media");
        let listed = spool.list();
        assert_eq!(listed[0].origin, None);
        assert_eq!(listed[0].target.as_deref(), Some("file:///x"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

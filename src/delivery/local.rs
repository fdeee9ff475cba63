//! Local (or mounted) folder storage: copy under a temporary name, sync, verify, rename.

use super::error::DeliveryError;
use super::spool::{sha256_file, SegmentMeta};
use std::path::{Path, PathBuf};

/// A folder recordings are delivered into, as `<room>/<conf>/<file>`.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    root: PathBuf,
}

impl LocalTarget {
    /// A target rooted at `root`.
    pub fn new(root: PathBuf) -> Self {
        LocalTarget { root }
    }

    /// Where a segment goes.
    pub fn path_for(&self, meta: &SegmentMeta) -> PathBuf {
        let safe = crate::util::path_component;
        self.root
            .join(safe(&meta.room_id))
            .join(safe(&meta.conf_num))
            .join(safe(&meta.file_name))
    }

    /// Copies `src` into place and verifies it by size and SHA-256; returns its `file://` URL.
    pub fn put(&self, src: &Path, meta: &SegmentMeta) -> Result<String, DeliveryError> {
        let dest = self.path_for(meta);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        let fail = |what: &str, e: std::io::Error| {
            DeliveryError::retryable(format!("{what} {}: {e}", dest.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating the folder of", e))?;
        let tmp = dir.join(format!(".{}.part", meta.file_name));
        std::fs::copy(src, &tmp).map_err(|e| fail("copying to", e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail("syncing", e))?;
        let size = std::fs::metadata(&tmp)
            .map_err(|e| fail("checking", e))?
            .len();
        let sum = sha256_file(&tmp).map_err(|e| fail("reading back", e))?;
        if size != meta.size || sum != meta.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(DeliveryError::retryable(format!(
                "{} did not verify (size {size}, sha256 {sum})",
                dest.display()
            )));
        }
        std::fs::rename(&tmp, &dest).map_err(|e| fail("renaming into", e))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(format!("file://{}", dest.display()))
    }

    /// The content of the file `meta` describes, if it is there.
    pub fn get(&self, meta: &SegmentMeta) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path_for(meta)) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the file `meta` describes is there.
    pub fn has(&self, meta: &SegmentMeta) -> std::io::Result<bool> {
        match std::fs::metadata(self.path_for(meta)) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the file `meta` describes; false if it was not there.
    pub fn remove(&self, meta: &SegmentMeta) -> std::io::Result<bool> {
        match std::fs::remove_file(self.path_for(meta)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

//! An individual recording's folder on its way to storage while it records, and rebuilt from
//! storage by the worker that takes the job over when its machine is lost.
//!
//! Like a live segment's file ([`crate::delivery::chunks`]): every chunk interval each track
//! file sends what it grew by as its next chunk (`<delivered name>.chunk000001`, …). Matroska
//! is written by appending, so the chunks end to end are the file as it was at the last cut,
//! which plays like a file whose process was killed. The manifest is rewritten in place, not
//! appended to: it goes whole, as one object under its first chunk's name, replaced each time
//! it has changed. A folder rebuilt from storage is the manifest and every file it lists that
//! reached storage; it is finished (delivered as one bundle, transcoded) like a folder a
//! killed run left on its own machine. The chunks are removed once each file is stored.

use crate::delivery::chunks::{chunk_meta, chunk_name, copy_range};
use crate::delivery::spool::SegmentMeta;
use crate::delivery::Storage;
use crate::job::files::outbox::{HandOff, Outbox};
use crate::job::files::records::segment_meta;
use crate::job::kinds::individual::MANIFEST_FILE;
use crate::job::run::chunking::{lost, Rebuild};
use crate::job::run::context::Run;
use crate::job::spec::host::JobHost;
use crate::model::manifest::Manifest;
use crate::queue::{Job, SegmentRecord, SegmentStatus};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use tracing::{info, warn};

/// The name a segment folder's file is delivered under: `<folder>-<file>` (storage keeps
/// one level of names).
pub(crate) fn delivered_name(folder: &Path, file: &str) -> String {
    format!("{}-{file}", crate::util::file_name(folder))
}

/// Files of a segment folder to deliver: every track file the manifest lists, then the
/// manifest.
pub(crate) fn folder_files(manifest: &Manifest) -> Vec<String> {
    let mut files: Vec<String> = manifest.files.iter().map(|f| f.file.clone()).collect();
    files.push(MANIFEST_FILE.to_string());
    files
}

/// Where a recording folder's chunks stand.
#[derive(Debug, Default)]
pub(crate) struct FolderChunks {
    /// Track file → (bytes cut, chunks cut).
    files: HashMap<String, (u64, u32)>,
    /// The manifest last sent.
    manifest: Vec<u8>,
    /// When the last cut was made.
    last: Option<Instant>,
}

/// What the spool and storage know a file of `folder` as.
fn file_meta(job: &Job, seg: &SegmentRecord, folder: &Path, file: &str) -> SegmentMeta {
    let mut m = segment_meta(job, seg);
    m.file_name = delivered_name(folder, file);
    m
}

impl FolderChunks {
    /// Sends what the folder's files grew by since the last cut, once the chunk interval has
    /// passed (with storage configured and chunks on).
    pub(crate) async fn cut(&mut self, outbox: &Outbox, job: &Job, folder: &Path) {
        let Some(every) = outbox.deliverer.as_ref().and_then(|d| d.chunk_every) else {
            return;
        };
        let name = crate::util::file_name(folder);
        let Some(seg) = job.segments.iter().find(|s| s.file_name == name) else {
            return;
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let Ok(text) = std::fs::read(folder.join(MANIFEST_FILE)) else {
            return;
        };
        let Ok(manifest) = Manifest::parse(&String::from_utf8_lossy(&text)) else {
            return;
        };
        for f in folder_files(&manifest) {
            if f == MANIFEST_FILE {
                continue;
            }
            let path = folder.join(&f);
            let Ok(len) = std::fs::metadata(&path).map(|m| m.len()) else {
                continue;
            };
            let (from, seq) = self.files.get(&f).copied().unwrap_or((0, 0));
            if len <= from {
                continue;
            }
            let meta = file_meta(job, seg, folder, &f);
            if send(outbox, job, folder, &meta, seq + 1, |out| {
                copy_range(&path, from, len, out)
            })
            .await
            {
                self.files.insert(f, (len, seq + 1));
            }
        }
        if text != self.manifest {
            let meta = file_meta(job, seg, folder, MANIFEST_FILE);
            let data = text.clone();
            if send(outbox, job, folder, &meta, 1, |out| {
                std::fs::write(out, &data)
            })
            .await
            {
                self.manifest = text;
            }
        }
    }
}

/// Writes chunk `seq` of the file `meta` names with `write` and hands it to the spool; whether
/// it was taken.
async fn send(
    outbox: &Outbox,
    job: &Job,
    folder: &Path,
    meta: &SegmentMeta,
    seq: u32,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> bool {
    // Beside the recording folder until the spool takes it (a rename on the same disk).
    let out = folder
        .parent()
        .unwrap_or(folder)
        .join(chunk_name(&meta.file_name, seq));
    if let Err(e) = write(&out) {
        warn!(error = %e, file = %meta.file_name, "chunk not cut; the next cut takes its bytes");
        let _ = std::fs::remove_file(&out);
        return false;
    }
    match outbox
        .hand_off(chunk_meta(meta, seq), &out, job.spec.storage.clone())
        .await
    {
        HandOff::Spooled { .. } => true,
        _ => {
            let _ = std::fs::remove_file(&out);
            false
        }
    }
}

/// Drops the chunks of `folder`'s files still waiting in the spool: the files themselves go
/// next.
pub(crate) async fn drop_folder_chunks(
    outbox: &Outbox,
    job: &Job,
    seg: &SegmentRecord,
    folder: &Path,
    manifest: &Manifest,
) {
    for f in folder_files(manifest) {
        outbox.drop_chunks(&file_meta(job, seg, folder, &f)).await;
    }
}

/// Rebuilds into `folder` a recording folder whose machine was lost: its manifest and every
/// file it lists, from their chunks in `storage`.
pub(crate) async fn rebuild_folder(
    storage: &Storage,
    job: &Job,
    seg: &SegmentRecord,
    folder: &Path,
) -> Rebuild {
    if let Err(e) = std::fs::create_dir_all(folder) {
        warn!(error = %e, folder = %folder.display(), "recording folder not created");
        return Rebuild::Later;
    }
    let manifest_path = folder.join(MANIFEST_FILE);
    let got = storage
        .fetch_chunks(&file_meta(job, seg, folder, MANIFEST_FILE), &manifest_path)
        .await;
    let manifest = match got {
        Ok(0) => {
            let _ = std::fs::remove_dir_all(folder);
            return Rebuild::Nothing;
        }
        Ok(_) => std::fs::read_to_string(&manifest_path)
            .ok()
            .and_then(|t| Manifest::parse(&t).ok()),
        Err(e) => {
            warn!(error = %e, folder = %seg.file_name, "a lost machine's recording folder could not be read from storage");
            let _ = std::fs::remove_dir_all(folder);
            return Rebuild::Later;
        }
    };
    let Some(manifest) = manifest else {
        warn!(folder = %seg.file_name, "the stored manifest of a lost machine's folder is unreadable");
        return Rebuild::Nothing;
    };
    let mut files = 0;
    for f in folder_files(&manifest) {
        if f == MANIFEST_FILE {
            continue;
        }
        let meta = file_meta(job, seg, folder, &f);
        match storage.fetch_chunks(&meta, &folder.join(&f)).await {
            Ok(n) if n > 0 => files += 1,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, file = %f, "a track file of a lost machine could not be read from storage");
                let _ = std::fs::remove_dir_all(folder);
                return Rebuild::Later;
            }
        }
    }
    info!(folder = %seg.file_name, files, listed = manifest.files.len(),
        "recording folder of a lost machine rebuilt from its chunks in storage");
    Rebuild::Rebuilt(folder.to_path_buf())
}

impl<H: JobHost> Run<'_, H> {
    /// Rebuilds, in this machine's recordings folder, the recording folders an earlier run on
    /// a machine that is gone left `recording` (finished next, like any folder a run left).
    /// One that storage cannot give is listed `missing`; its chunks stay in storage.
    pub(crate) async fn rebuild_lost_folders(&mut self) {
        let Some(storage) = self
            .env
            .outbox
            .deliverer
            .as_ref()
            .and_then(|d| d.storage_for(self.job.spec.storage.as_deref()).ok())
        else {
            return;
        };
        for i in 0..self.job.segments.len() {
            let seg = self.job.segments[i].clone();
            if !lost(&seg) || seg.file_name.ends_with(".mp4") {
                continue;
            }
            let folder = self.env.recordings_dir.join(&seg.file_name);
            match rebuild_folder(&storage, &self.job, &seg, &folder).await {
                Rebuild::Rebuilt(path) => self.job.segments[i].path = path,
                Rebuild::Nothing | Rebuild::Later => {
                    warn!(folder = %seg.file_name, "a lost machine's recording folder could not be rebuilt");
                    self.job.segments[i].status = SegmentStatus::Missing;
                }
            }
        }
    }
}

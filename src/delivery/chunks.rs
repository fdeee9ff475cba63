//! A recording's media on its way to storage while it records: chunks.
//!
//! A segment's fragmented MP4 only grows: whole boxes are appended (`ftyp`, `moov`, then a
//! `moof`+`mdat` pair per fragment). Every few seconds the bytes appended since the last cut,
//! up to the end of the last whole `mdat` (or the header), become the segment's next chunk:
//! an object named `<file>.chunk000001`, `…000002`, … beside where the finished file will be.
//! Chunks travel through the spool like every file (in order, retried while storage is down).
//! Laid end to end they are the recording up to their last cut, byte for byte — which is how
//! a worker that takes over a job whose machine is gone rebuilds the lost segment
//! ([`Storage::fetch_chunks`]). Once the finished file is in storage its chunks are removed
//! ([`Storage::remove_chunks`]), so storage ends with the file alone.
//!
//! Why chunk objects rather than one growing object: S3 has no append and its multipart
//! parts must be 5 MiB (minutes of a recording) except the last, so a multipart upload cannot
//! hold the last ten seconds; chunk objects work the same on S3, SFTP and a folder, and the
//! file users get is still the finished MP4 with its index at the front.

use super::error::DeliveryError;
use super::spool::SegmentMeta;
use super::Storage;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Longest chunk read at once (a cut that fell behind takes the rest at its next turn).
const MAX_CHUNK_BYTES: u64 = 64 * 1024 * 1024;

/// Where a growing file's chunks stand.
#[derive(Debug, Default)]
pub struct ChunkCursor {
    /// The file being cut (its name).
    pub file: String,
    /// Bytes of it already cut.
    pub offset: u64,
    /// Chunks cut.
    pub seq: u32,
    /// When the last cut was made (or the file was first seen).
    pub last: Option<std::time::Instant>,
}

/// The storage name of chunk `seq` (from 1) of the file named `file_name`.
pub fn chunk_name(file_name: &str, seq: u32) -> String {
    format!("{file_name}.chunk{seq:06}")
}

/// Whether `name` is a chunk's name (`….chunkNNNNNN`).
fn is_chunk_name(name: &str) -> bool {
    name.rsplit_once(".chunk")
        .is_some_and(|(_, n)| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Files a process that died left half made in `dir`: chunks cut and never taken by the
/// spool, and fast-start files being written (`.<file>.finalizing`), older than a minute (a
/// running process's own are seconds old). Removes them; returns how many.
pub fn sweep_leftovers(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let old = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(60))
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            (is_chunk_name(&name) || (name.starts_with('.') && name.ends_with(".finalizing")))
                && e.metadata().is_ok_and(|m| m.is_file() && old(&m))
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// What the spool and storage know about chunk `seq` of the file `meta` describes.
pub fn chunk_meta(meta: &SegmentMeta, seq: u32) -> SegmentMeta {
    let mut m = meta.clone();
    m.file_name = chunk_name(&meta.file_name, seq);
    m.chunk = Some(seq);
    m.size = 0;
    m.sha256.clear();
    m
}

/// The end of the whole boxes of `path` from `from` on that a chunk may end at: after an
/// `mdat` or any box other than a `moof` (a fragment's header goes with its media). `None`
/// when nothing new is whole yet.
pub fn cut_point(path: &Path, from: u64) -> std::io::Result<Option<u64>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let limit = len.min(from.saturating_add(MAX_CHUNK_BYTES));
    let (mut pos, mut end) = (from, None);
    while pos + 8 <= len {
        let mut h = [0u8; 16];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut h[..8])?;
        let mut size = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        let mut header = 8;
        if size == 1 {
            if pos + 16 > len {
                break;
            }
            f.read_exact(&mut h[8..16])?;
            size = u64::from_be_bytes(h[8..16].try_into().unwrap_or([0; 8]));
            header = 16;
        }
        // Size 0 ("to the end of the file") is a box still being written.
        if size < header || pos + size > limit {
            break;
        }
        pos += size;
        if &h[4..8] != b"moof" {
            end = Some(pos);
        }
    }
    Ok(end.filter(|e| *e > from))
}

/// Copies bytes `from..to` of `path` into a new file `out` (synced).
pub fn copy_range(path: &Path, from: u64, to: u64, out: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut data = vec![0u8; (to - from) as usize];
    f.read_exact(&mut data)?;
    let mut o = std::fs::File::create(out)?;
    o.write_all(&data)?;
    o.sync_all()
}

/// A rebuilt file, created with its first chunk.
struct Rebuilt<'a> {
    dest: &'a Path,
    file: Option<std::fs::File>,
}

impl Rebuilt<'_> {
    fn io(&self, e: std::io::Error) -> DeliveryError {
        DeliveryError::retryable(format!("writing {}: {e}", self.dest.display()))
    }

    fn append(&mut self, data: &[u8]) -> Result<(), DeliveryError> {
        if self.file.is_none() {
            if let Some(dir) = self.dest.parent() {
                std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
            }
            self.file = Some(std::fs::File::create(self.dest).map_err(|e| self.io(e))?);
        }
        let r = self.file.as_mut().map(|f| f.write_all(data));
        r.transpose().map_err(|e| self.io(e)).map(|_| ())
    }

    fn finish(self) -> Result<(), DeliveryError> {
        match &self.file {
            Some(f) => f.sync_all().map_err(|e| self.io(e)),
            None => Ok(()),
        }
    }
}

impl Storage {
    /// Writes the chunks of the file `meta` describes, in order from the first until one is
    /// missing, end to end into `dest`; returns how many there were (0: none reached
    /// storage, and `dest` is not written).
    pub async fn fetch_chunks(
        &self,
        meta: &SegmentMeta,
        dest: &Path,
    ) -> Result<u32, DeliveryError> {
        let mut out = Rebuilt { dest, file: None };
        let n = match self {
            // One session (one client) for all of them: a connection per chunk would cost
            // more than the chunk on a distant server.
            Storage::Sftp(t) => {
                t.get_each(|seq| chunk_meta(meta, seq), |d| out.append(d))
                    .await?
            }
            Storage::Local(t) => {
                let mut seq = 0;
                while let Some(d) = t.get(&chunk_meta(meta, seq + 1)).map_err(read_error)? {
                    out.append(&d)?;
                    seq += 1;
                }
                seq
            }
            Storage::S3(t) => {
                t.get_each(|seq| chunk_meta(meta, seq), |d| out.append(d))
                    .await?
            }
        };
        out.finish()?;
        Ok(n)
    }

    /// Whether the file `meta` describes is in storage.
    pub async fn has(&self, meta: &SegmentMeta) -> Result<bool, DeliveryError> {
        match self {
            Storage::Local(t) => t.has(meta).map_err(read_error),
            Storage::S3(t) => t.has(meta).await,
            Storage::Sftp(t) => t.has(meta).await,
        }
    }

    /// Removes the chunks of the file `meta` describes (from the first until one is missing);
    /// returns how many it removed.
    pub async fn remove_chunks(&self, meta: &SegmentMeta) -> Result<u32, DeliveryError> {
        let mut seq = 0;
        match self {
            Storage::Sftp(t) => return t.remove_each(|seq| chunk_meta(meta, seq)).await,
            Storage::Local(t) => {
                while t
                    .remove(&chunk_meta(meta, seq + 1))
                    .map_err(|e| DeliveryError::retryable(format!("removing a chunk: {e}")))?
                {
                    seq += 1;
                }
            }
            Storage::S3(t) => {
                let n = t.remove_each(|seq| chunk_meta(meta, seq)).await?;
                // And the file's early upload, if one was left unfinished.
                super::s3::early::abort_stray(t, meta).await;
                return Ok(n);
            }
        }
        Ok(seq)
    }
}

/// A folder's read error as a delivery error.
fn read_error(e: std::io::Error) -> DeliveryError {
    DeliveryError::retryable(format!("reading from the storage folder: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut b = ((body + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(7u8, body));
        b
    }

    #[test]
    fn only_old_leftovers_are_swept() {
        let dir = std::env::temp_dir().join(format!("roomcast-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names = [
            "a.mp4.chunk000003",
            ".b.mkv.chunk000001",
            ".c.mp4.finalizing",
            "d.mp4",
            "e.chunk12",
        ];
        for n in names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        assert_eq!(
            sweep_leftovers(&dir),
            0,
            "fresh files are a running process's"
        );
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        for n in names {
            let f = std::fs::File::options()
                .write(true)
                .open(dir.join(n))
                .unwrap();
            f.set_modified(past).unwrap();
        }
        assert_eq!(sweep_leftovers(&dir), 3);
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        let mut left = left;
        left.sort();
        assert_eq!(left, ["d.mp4", "e.chunk12"]);
    }

    #[test]
    fn a_chunk_ends_after_whole_media_never_inside_a_box_or_between_a_fragments_two_boxes() {
        let dir = std::env::temp_dir().join(format!("roomcast-chunks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r_1_1.mp4");
        let mut data = [mp4_box(b"ftyp", 12), mp4_box(b"moov", 92)].concat();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(cut_point(&path, 0).unwrap(), Some(120), "the header alone");
        data.extend(mp4_box(b"moof", 42));
        std::fs::write(&path, &data).unwrap();
        assert_eq!(
            cut_point(&path, 120).unwrap(),
            None,
            "a fragment header without its media"
        );
        data.extend(mp4_box(b"mdat", 192));
        data.extend(mp4_box(b"moof", 42));
        // Half an mdat: still being written.
        data.extend(&mp4_box(b"mdat", 192)[..100]);
        std::fs::write(&path, &data).unwrap();
        assert_eq!(cut_point(&path, 120).unwrap(), Some(370));
        assert_eq!(cut_point(&path, 370).unwrap(), None);
        let out = dir.join("chunk");
        copy_range(&path, 120, 370, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data[120..370]);
        assert_eq!(chunk_name("r_1_1.mp4", 3), "r_1_1.mp4.chunk000003");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

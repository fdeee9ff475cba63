//! A recording's final object uploaded while it records, so that it is stored moments after
//! the stop whatever its length.
//!
//! The delivered file is the fast-start form of the fragmented recording
//! ([`crate::pipeline::mp4::Layout`]): a new index in front, then the recording's bytes as they
//! are with each fragment header renamed. Everything after the index is known while the
//! recording goes on, so it goes up as parts of a multipart upload as soon as a part's worth
//! has been written ([`grow`]). At the stop only the first part (the index and the first
//! [`RESERVE`] bytes, which keep it above S3's 5 MiB minimum) and the tail are left to upload
//! ([`finish`]). Before completing, every early part is checked against the finished file (an
//! XXH3-64 of its bytes, taken when it was sent: the check reads the file at memory speed,
//! where an MD5 of an hour's gigabyte took seconds); any difference, or any failure, and the
//! upload is aborted and the file goes up whole as before. The chunks ([`crate::delivery::chunks`]) stay what keeps a lost machine's
//! recording: an unfinished multipart upload cannot be read; it is aborted by whoever finds it
//! ([`abort_stray`]).

use super::{sdk_error, S3Target};
use crate::delivery::error::DeliveryError;
use crate::delivery::spool::SegmentMeta;
use crate::pipeline::isobmff::header_at;
use crate::pipeline::mp4::region_bytes;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use tracing::{debug, info, warn};
use xxhash_rust::xxh3::xxh3_64;

/// Bytes after the index kept for the first part (S3's minimum part size).
pub const RESERVE: u64 = 5 * 1024 * 1024;

/// An early part as sent.
#[derive(Clone)]
struct Part {
    n: i32,
    etag: String,
    md5: [u8; 16],
    /// The range of the recording it holds.
    range: (u64, u64),
    /// XXH3-64 of its bytes.
    xxh3: u64,
}

/// One segment's early upload.
struct Upload {
    upload_id: String,
    /// The recording file (fragmented, growing).
    source: PathBuf,
    /// Where its first fragment starts.
    region_start: u64,
    /// Where the early parts start (the first part ends here).
    reserve_end: u64,
    /// Where the early parts end.
    uploaded_to: u64,
    /// Each early part.
    parts: Vec<Part>,
    /// An early part failed: the upload was aborted; the file goes up whole.
    broken: bool,
}

type Registry = Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Upload>>>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn id(t: &S3Target, key: &str) -> String {
    format!("{}|{}|{key}", t.endpoint.as_deref().unwrap_or(""), t.bucket)
}

/// The recording at `source` has whole boxes up to `end`: uploads the next parts of its final
/// object when a part's worth is there. Never fails the recording: a failure is logged and the
/// file goes up whole at the end. A call while another is uploading for the same object
/// returns at once (the next one takes the bytes).
pub async fn grow(t: S3Target, meta: SegmentMeta, source: PathBuf, end: u64) {
    let key = t.key_for(&meta);
    let Ok(slot) = registry()
        .lock()
        .map(|mut r| r.entry(id(&t, &key)).or_default().clone())
    else {
        return;
    };
    let Ok(mut guard) = slot.try_lock() else {
        return;
    };
    if guard.is_none() {
        let Some(up) = start(&t, &key, &source, end).await else {
            return;
        };
        *guard = Some(up);
    }
    let Some(up) = guard.as_mut() else { return };
    while !up.broken {
        let from = up.uploaded_to;
        let Some(to) = boundary_after(&up.source, from, t.part_size as u64, end) else {
            break;
        };
        let n = up.parts.len() as i32 + 2;
        match upload_part(&t, &key, up, n, (from, to)).await {
            Ok(part) => {
                debug!(key, part = n, bytes = to - from, "early part stored");
                up.parts.push(part);
                up.uploaded_to = to;
            }
            Err(e) => {
                warn!(key, part = n, error = %e, "early part failed; the file goes up whole at the end");
                up.broken = true;
                abort(&t, &key, &up.upload_id).await;
            }
        }
    }
}

/// Starts the multipart upload once the first part's bytes and one more part are written.
async fn start(t: &S3Target, key: &str, source: &Path, end: u64) -> Option<Upload> {
    let region_start = first_fragment(source)?;
    let reserve_end = boundary_after(source, region_start, RESERVE, end)?;
    // Not before there is a part to send.
    boundary_after(source, reserve_end, t.part_size as u64, end)?;
    let created = t
        .client()
        .await
        .create_multipart_upload()
        .bucket(&t.bucket)
        .key(key)
        .content_type(super::content_type(key))
        .send()
        .await;
    match created {
        Ok(c) => Some(Upload {
            upload_id: c.upload_id().unwrap_or_default().to_string(),
            source: source.to_path_buf(),
            region_start,
            reserve_end,
            uploaded_to: reserve_end,
            parts: Vec::new(),
            broken: false,
        }),
        Err(e) => {
            debug!(key, error = %sdk_error(&e), "early upload not started");
            None
        }
    }
}

/// The first box boundary at least `min` bytes after `from` and at most `end`.
fn boundary_after(source: &Path, from: u64, min: u64, end: u64) -> Option<u64> {
    let f = std::fs::File::open(source).ok()?;
    let mut pos = from;
    while pos < from + min {
        let size = box_size(&f, pos)?;
        pos += size;
    }
    (pos <= end).then_some(pos)
}

fn box_size(f: &std::fs::File, at: u64) -> Option<u64> {
    header_at(f, at).map(|h| h.size).filter(|s| *s >= 8)
}

/// Where the first `moof` of a fragmented file starts.
fn first_fragment(source: &Path) -> Option<u64> {
    let f = std::fs::File::open(source).ok()?;
    let mut pos = 0;
    for _ in 0..16 {
        let h = header_at(&f, pos)?;
        if &h.kind == b"moof" {
            return Some(pos);
        }
        pos += Some(h.size).filter(|s| *s >= 8)?;
    }
    None
}

async fn upload_part(
    t: &S3Target,
    key: &str,
    up: &Upload,
    n: i32,
    range: (u64, u64),
) -> Result<Part, DeliveryError> {
    let source = up.source.clone();
    let data = tokio::task::spawn_blocking(move || region_bytes(&source, range))
        .await
        .map_err(|e| DeliveryError::retryable(format!("reading: {e}")))?
        .map_err(|e| DeliveryError::retryable(format!("reading: {e}")))?;
    let xxh3 = xxh3_64(&data);
    let (etag, md5) = send_part(t, key, &up.upload_id, n, data).await?;
    Ok(Part {
        n,
        etag,
        md5,
        range,
        xxh3,
    })
}

async fn send_part(
    t: &S3Target,
    key: &str,
    upload_id: &str,
    n: i32,
    data: Vec<u8>,
) -> Result<(String, [u8; 16]), DeliveryError> {
    let md5: [u8; 16] = Md5::digest(&data).into();
    let out = t
        .client()
        .await
        .upload_part()
        .bucket(&t.bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(n)
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| DeliveryError::retryable(format!("s3 part {n}: {}", sdk_error(&e))))?;
    Ok((out.e_tag().unwrap_or_default().to_string(), md5))
}

async fn abort(t: &S3Target, key: &str, upload_id: &str) {
    let _ = t
        .client()
        .await
        .abort_multipart_upload()
        .bucket(&t.bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
}

/// Completes the early upload of `key` with the finished fast-start file `file`: uploads the
/// first part and the tail, after checking every early part against the file. Returns the
/// object's expected ETag, or None when there is no usable early upload (then the file goes
/// up whole; a half one is aborted).
pub async fn finish(t: &S3Target, key: &str, file: &Path) -> Option<Result<String, DeliveryError>> {
    let slot = registry().lock().ok()?.remove(&id(t, key))?;
    let mut guard = slot.lock().await;
    let up = guard.take()?;
    if up.broken {
        return None;
    }
    let t0 = std::time::Instant::now();
    let checked = {
        let (file, parts) = (file.to_path_buf(), up.parts.clone());
        let (start, reserve_end) = (up.region_start, up.reserve_end);
        tokio::task::spawn_blocking(move || check(&file, start, reserve_end, &parts)).await
    };
    let Ok(Some((head_end, len))) = checked else {
        info!(
            key,
            "early parts do not match the finished file; it goes up whole"
        );
        abort(t, key, &up.upload_id).await;
        return None;
    };
    let offset = |x: u64| head_end + x - up.region_start;
    let read = |range: (u64, u64)| {
        let f = std::fs::File::open(file)?;
        let mut b = vec![0u8; (range.1 - range.0) as usize];
        f.read_exact_at(&mut b, range.0)?;
        Ok::<_, std::io::Error>(b)
    };
    let result = async {
        let io = |e: std::io::Error| DeliveryError::retryable(format!("reading: {e}"));
        let mut parts = vec![(
            1,
            send_part(
                t,
                key,
                &up.upload_id,
                1,
                read((0, offset(up.reserve_end))).map_err(io)?,
            )
            .await?,
        )];
        for p in &up.parts {
            parts.push((p.n, (p.etag.clone(), p.md5)));
        }
        let tail = (offset(up.uploaded_to), len);
        if tail.1 > tail.0 {
            let n = up.parts.len() as i32 + 2;
            parts.push((
                n,
                send_part(t, key, &up.upload_id, n, read(tail).map_err(io)?).await?,
            ));
        }
        let sent = t0.elapsed();
        complete(t, key, &up.upload_id, &parts)
            .await
            .map(|etag| (etag, sent, t0.elapsed() - sent))
    }
    .await;
    match result {
        Ok((etag, sent, completed)) => {
            info!(
                key,
                early_parts = up.parts.len(),
                checked_and_sent_ms = sent.as_millis() as u64,
                completed_ms = completed.as_millis() as u64,
                "stored from parts sent while recording"
            );
            Some(Ok(etag))
        }
        Err(e) => {
            abort(t, key, &up.upload_id).await;
            Some(Err(e))
        }
    }
}

/// Whether every early part is what the finished file holds at its place: the end of the
/// file's head and the file's length if so.
fn check(file: &Path, region_start: u64, reserve_end: u64, parts: &[Part]) -> Option<(u64, u64)> {
    let f = std::fs::File::open(file).ok()?;
    let len = f.metadata().ok()?.len();
    // The head is ftyp + moov; the media region starts at the first box after them.
    let mut head_end = 0;
    for _ in 0..2 {
        head_end += box_size(&f, head_end)?;
    }
    let offset = |x: u64| head_end + x - region_start;
    if offset(reserve_end) > len {
        return None;
    }
    let mut buf = Vec::new();
    for p in parts {
        let (oa, ob) = (offset(p.range.0), offset(p.range.1));
        if ob > len {
            return None;
        }
        buf.resize((ob - oa) as usize, 0);
        f.read_exact_at(&mut buf, oa).ok()?;
        if xxh3_64(&buf) != p.xxh3 {
            return None;
        }
    }
    Some((head_end, len))
}

async fn complete(
    t: &S3Target,
    key: &str,
    upload_id: &str,
    parts: &[(i32, (String, [u8; 16]))],
) -> Result<String, DeliveryError> {
    let completed = parts
        .iter()
        .map(|(n, (etag, _))| CompletedPart::builder().part_number(*n).e_tag(etag).build())
        .collect();
    let digests: Vec<u8> = parts.iter().flat_map(|(_, (_, m))| m.to_vec()).collect();
    let client = t.client().await;
    super::complete_upload(&client, &t.bucket, key, upload_id, completed, &digests).await
}

/// Aborts any unfinished multipart upload of `meta`'s object: one a lost machine left, or one
/// of a segment that ends without its file.
pub async fn abort_stray(t: &S3Target, meta: &SegmentMeta) {
    let key = t.key_for(meta);
    let slot = registry()
        .lock()
        .ok()
        .and_then(|mut r| r.remove(&id(t, &key)));
    if let Some(slot) = slot {
        // Wait for a part in flight; what it started is aborted below.
        drop(slot.lock().await);
    }
    let client = t.client().await;
    let Ok(list) = client
        .list_multipart_uploads()
        .bucket(&t.bucket)
        .prefix(&key)
        .send()
        .await
    else {
        return;
    };
    for u in list.uploads() {
        if u.key() == Some(key.as_str()) {
            if let Some(upload_id) = u.upload_id() {
                abort(t, &key, upload_id).await;
                info!(key, "unfinished multipart upload aborted");
            }
        }
    }
}

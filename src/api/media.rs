//! Files for browsers: `GET /v1/recordings/{job_id}/{file_name}/media` (a recording kept on the
//! API's machine or in the S3 or SFTP storage it is configured with, for a player — byte ranges — or a
//! download, `?download=1`) and
//! `GET /v1/jobs/{job_id}/hls/{file}` (a running job's live HLS). Only files the archive or the
//! job record names are served (never a path from the request).

use super::state::{ApiError, ApiState};
use crate::codes::Code;
use crate::delivery::{DeliveryError, Storage};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

/// The most bytes one answer carries: a player asks for the rest as it needs it.
const MAX_PART: u64 = 8 << 20;

/// The byte range a `Range` header asks of a file of `len` bytes (first, last inclusive).
/// None: no (usable) range, the whole file; Err: a range outside the file.
fn range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    // Several ranges at once are answered with the whole file (allowed, and players ask one).
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => (first, last.min(len.saturating_sub(1))),
        (Ok(first), Err(_)) if b.is_empty() => (first, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
        _ => return Err(()),
    };
    if first >= len {
        return Err(());
    }
    Ok(Some((first, last)))
}

fn not_here(what: impl Into<String>) -> Response {
    ApiError::with_status(Code::Generic, StatusCode::NOT_FOUND, what).into_response()
}

pub(super) async fn media(
    State(st): State<Arc<ApiState>>,
    Path((job_id, file_name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let archive = match st.store.archive().await {
        Ok(a) => a,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(entry) = archive
        .into_iter()
        .find(|e| e.job_id == job_id && e.file_name == file_name)
    else {
        return not_here(format!(
            "the archive lists no {file_name:?} of job {job_id:?}"
        ));
    };
    let download = q.get("download").is_some_and(|v| v == "1");
    let url = entry.url.as_deref().unwrap_or_default();
    if let Some(path) = url.strip_prefix("file://") {
        return serve_file(
            std::path::PathBuf::from(path),
            &file_name,
            headers,
            download,
        )
        .await;
    }
    // A file in a storage this API may read (its storage, or the backup).
    let stored = st.storage.iter().find_map(|s| match s {
        Storage::S3(t) => t.key_of(url).map(|k| Stored::S3(t, k)),
        Storage::Sftp(t) => t.path_of(url).map(|p| Stored::Sftp(t, p)),
        Storage::Local(_) => None,
    });
    match stored {
        Some(at) => serve_stored(at, &file_name, headers, download).await,
        None => not_here(format!(
            "{file_name:?} is stored at {}: read it from there",
            if url.is_empty() {
                "no address yet"
            } else {
                url
            }
        )),
    }
}

/// `GET /v1/jobs/{job_id}/hls/{file}`: a running job's live HLS files (playlist, init and
/// media segments) when they are kept on the API's machine (no storage), for the console's
/// preview player; the playlist's relative names resolve to this same route.
pub(super) async fn hls(
    State(st): State<Arc<ApiState>>,
    Path((job_id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && [".m3u8", ".m4s", ".mp4"].iter().any(|x| file.ends_with(x));
    if !plain {
        return not_here(format!("{file:?} is not an HLS file name"));
    }
    let job = match st.store.get_job(&job_id).await {
        Ok(Some(job)) => job,
        Ok(None) => return not_here(format!("no job {job_id:?}")),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let dir = job
        .hls
        .as_ref()
        .and_then(|h| h.playlist_url.as_deref())
        .and_then(|u| u.strip_prefix("file://"))
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()));
    match dir {
        Some(dir) => serve_file(dir.join(&file), &file, headers, false).await,
        None => not_here(format!(
            "job {job_id:?} has no live HLS kept on this machine (none, or it goes to storage)"
        )),
    }
}

fn content_type(file_name: &str) -> &'static str {
    match file_name.rsplit('.').next() {
        Some("mp4") => "video/mp4",
        Some("m4s") => "video/iso.segment",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// What to send of a file of `len` bytes: its first and last byte and whether that is a
/// part (206); Err for a range outside the file.
fn plan(headers: &HeaderMap, len: u64) -> Result<(u64, u64, bool), ()> {
    Ok(match range(headers, len)? {
        Some((a, b)) => (a, b.min(a + MAX_PART - 1), true),
        None if len > MAX_PART => (0, MAX_PART - 1, true),
        None => (0, len.saturating_sub(1), false),
    })
}

fn unsatisfiable(len: u64) -> Response {
    let mut r = ApiError::with_status(
        Code::Generic,
        StatusCode::RANGE_NOT_SATISFIABLE,
        format!("the file has {len} bytes"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

/// The answer carrying `buf`, bytes `first..=last` of `len`, as `file_name`.
fn answer(
    buf: Vec<u8>,
    (first, last, partial): (u64, u64, bool),
    len: u64,
    file_name: &str,
    download: bool,
) -> Response {
    let mut r = buf.into_response();
    *r.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file_name)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let cache = if file_name.ends_with(".m3u8") {
        "no-cache"
    } else {
        "private, max-age=60"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if partial {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if download {
        let safe: String = file_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    r
}

/// `path`'s bytes (the range asked, at most [`MAX_PART`]), as `file_name`.
async fn serve_file(
    path: std::path::PathBuf,
    file_name: &str,
    headers: HeaderMap,
    download: bool,
) -> Response {
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut f = std::fs::File::open(&path)?;
        let len = f.metadata()?.len();
        let Ok(part) = plan(&headers, len) else {
            return Ok(Err(len));
        };
        let mut buf = vec![
            0u8;
            if len == 0 {
                0
            } else {
                (part.1 + 1 - part.0) as usize
            }
        ];
        if len > 0 {
            f.seek(SeekFrom::Start(part.0))?;
            f.read_exact(&mut buf)?;
        }
        Ok(Ok((buf, part, len)))
    })
    .await;
    match read {
        Ok(Ok(Ok((buf, part, len)))) => answer(buf, part, len, file_name, download),
        Ok(Ok(Err(len))) => unsatisfiable(len),
        Ok(Err(e)) => not_here(format!("{file_name:?} cannot be read here: {e}")),
        Err(e) => not_here(format!("{file_name:?} cannot be read here: {e}")),
    }
}

/// Where a stored file is: an S3 object (target, key) or an SFTP file (target, path).
enum Stored<'a> {
    S3(&'a crate::delivery::s3::S3Target, &'a str),
    Sftp(&'a crate::delivery::sftp::SftpTarget, &'a str),
}

impl Stored<'_> {
    async fn size(&self) -> Result<u64, DeliveryError> {
        match self {
            Stored::S3(t, key) => t.size_of(key).await,
            Stored::Sftp(t, path) => t.size_of(path).await,
        }
    }

    async fn read(&self, first: u64, last: u64) -> Result<Vec<u8>, DeliveryError> {
        match self {
            Stored::S3(t, key) => t.read_range(key, first, last).await,
            Stored::Sftp(t, path) => t.read_range(path, first, last).await,
        }
    }
}

/// A stored file (the range asked, at most [`MAX_PART`]), as `file_name`.
async fn serve_stored(
    at: Stored<'_>,
    file_name: &str,
    headers: HeaderMap,
    download: bool,
) -> Response {
    let unreadable = |e: DeliveryError| {
        ApiError::with_status(
            e.code,
            StatusCode::BAD_GATEWAY,
            format!(
                "{file_name:?} could not be read from its storage: {}",
                e.message
            ),
        )
        .into_response()
    };
    let len = match at.size().await {
        Ok(len) => len,
        Err(e) => return unreadable(e),
    };
    let Ok(part) = plan(&headers, len) else {
        return unsatisfiable(len);
    };
    if len == 0 {
        return answer(Vec::new(), part, len, file_name, download);
    }
    match at.read(part.0, part.1).await {
        Ok(buf) => answer(buf, part, len, file_name, download),
        Err(e) => unreadable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(v: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().unwrap());
        range(&h, len)
    }

    #[test]
    fn ranges_are_read_as_a_player_sends_them() {
        assert_eq!(range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(asked("bytes=0-", 100), Ok(Some((0, 99))));
        assert_eq!(asked("bytes=10-19", 100), Ok(Some((10, 19))));
        assert_eq!(asked("bytes=90-200", 100), Ok(Some((90, 99))));
        assert_eq!(asked("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(asked("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(asked("bytes=100-", 100), Err(()));
        assert_eq!(asked("bytes=20-10", 100), Err(()));
        assert_eq!(asked("bytes=x-y", 100), Err(()));
    }
}

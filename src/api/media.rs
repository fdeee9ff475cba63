//! Files kept on the API's machine, for browsers: `GET /v1/recordings/{job_id}/{file_name}/media`
//! (a recording, for a player — byte ranges — or a download, `?download=1`) and
//! `GET /v1/jobs/{job_id}/hls/{file}` (a running job's live HLS). Only files the archive or the
//! job record names are served (never a path from the request).

use super::state::{ApiError, ApiState};
use crate::codes::Code;
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
    let Some(path) = entry.url.as_deref().and_then(|u| u.strip_prefix("file://")) else {
        return not_here(format!(
            "{file_name:?} is stored at {}: read it from there",
            entry.url.as_deref().unwrap_or("no address yet")
        ));
    };
    let download = q.get("download").is_some_and(|v| v == "1");
    serve_file(
        std::path::PathBuf::from(path),
        &file_name,
        headers,
        download,
    )
    .await
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

/// `path`'s bytes (the range asked, at most [`MAX_PART`]), as `file_name`.
async fn serve_file(
    path: std::path::PathBuf,
    file_name: &str,
    headers: HeaderMap,
    download: bool,
) -> Response {
    let content_type = content_type(file_name);
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut f = std::fs::File::open(&path)?;
        let len = f.metadata()?.len();
        let wanted = range(&headers, len);
        let (first, last, partial) = match wanted {
            Err(()) => return Ok(Err(len)),
            Ok(Some((a, b))) => (a, b.min(a + MAX_PART - 1), true),
            Ok(None) if len > MAX_PART => (0, MAX_PART - 1, true),
            Ok(None) => (0, len.saturating_sub(1), false),
        };
        let mut buf = vec![
            0u8;
            if len == 0 {
                0
            } else {
                (last + 1 - first) as usize
            }
        ];
        if len > 0 {
            f.seek(SeekFrom::Start(first))?;
            f.read_exact(&mut buf)?;
        }
        Ok(Ok((buf, first, last, len, partial)))
    })
    .await;
    let (buf, first, last, len, partial) = match read {
        Ok(Ok(Ok(part))) => part,
        Ok(Ok(Err(len))) => {
            let mut r = ApiError::with_status(
                Code::Generic,
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the file has {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        Ok(Err(e)) => return not_here(format!("{file_name:?} cannot be read here: {e}")),
        Err(e) => return not_here(format!("{file_name:?} cannot be read here: {e}")),
    };
    let mut r = buf.into_response();
    *r.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
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

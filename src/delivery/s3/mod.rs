//! S3 (and S3-compatible) storage through `aws-sdk-s3`.
//!
//! `s3://bucket/prefix?region=eu-west-1&endpoint=http://host:9000&path_style=true&key={app_id}/{room_id}/{conf_num}/{file}`
//! Credentials come from the standard AWS chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`,
//! profile, instance role); they are never logged. Files up to [`MULTIPART_THRESHOLD`] go up in
//! one PUT, larger ones in [`PART_SIZE`] parts. An upload counts only when the object's ETag
//! matches the MD5 the file should have (per part for multipart), so a truncated or corrupted
//! upload is retried, never reported.

use super::error::DeliveryError;
use super::spool::SegmentMeta;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use md5::{Digest, Md5};
use std::path::Path;

pub mod early;
mod read;

/// Files larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
pub const PART_CONCURRENCY: usize = 4;
/// Default object key template.
pub const DEFAULT_KEY: &str = "{app_id}/{room_id}/{conf_num}/{file}";

/// An S3 bucket target.
#[derive(Clone)]
pub struct S3Target {
    bucket: String,
    prefix: String,
    key_template: String,
    region: String,
    endpoint: Option<String>,
    path_style: bool,
    part_size: usize,
    threshold: u64,
}

/// The target's place, without its key template and tuning.
impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn query_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k.to_string(), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            // On bytes: a `%` before a multi-byte character must not split it.
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

impl S3Target {
    /// Parses `s3://bucket[/prefix][?region=&endpoint=&path_style=&key=]`.
    pub fn parse(url: &str) -> Result<S3Target, DeliveryError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| DeliveryError::config("not an s3:// URL"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty()
            || !bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
        {
            return Err(DeliveryError::config("s3:// needs a valid bucket name"));
        }
        let mut t = S3Target {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            key_template: DEFAULT_KEY.to_string(),
            region: "us-east-1".to_string(),
            endpoint: None,
            path_style: false,
            part_size: PART_SIZE,
            threshold: MULTIPART_THRESHOLD,
        };
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "region" => {
                    let ok = !v.is_empty()
                        && v.len() <= 64
                        && v.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                    if !ok {
                        return Err(DeliveryError::config(
                            "region must be lower-case letters, digits and '-'",
                        ));
                    }
                    t.region = v;
                }
                "endpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(DeliveryError::config("endpoint must be an http(s) URL"));
                    }
                    t.endpoint = Some(v);
                    // S3-compatible servers rarely do virtual-hosted buckets.
                    t.path_style = true;
                }
                "path_style" => t.path_style = v == "true" || v == "1",
                "key" => t.key_template = v,
                "part_size_mb" => {
                    let mb: usize = v
                        .parse()
                        .map_err(|_| DeliveryError::config("part_size_mb"))?;
                    if !(5..=512).contains(&mb) {
                        return Err(DeliveryError::config("part_size_mb must be 5..512"));
                    }
                    t.part_size = mb * 1024 * 1024;
                }
                "multipart_threshold_mb" => {
                    let mb: u64 = v
                        .parse()
                        .map_err(|_| DeliveryError::config("multipart_threshold_mb"))?;
                    t.threshold = mb.max(5) * 1024 * 1024;
                }
                other => {
                    return Err(DeliveryError::config(format!(
                        "unknown s3:// parameter {other:?}"
                    )))
                }
            }
        }
        Ok(t)
    }

    /// The object key for a segment.
    pub fn key_for(&self, m: &SegmentMeta) -> String {
        let key = self
            .key_template
            // Each value is one path component ("..", "/" and control characters cannot
            // reach the key's structure), as for local and SFTP delivery.
            .replace("{app_id}", &super::path_component(&m.app_id))
            .replace("{room_id}", &super::path_component(&m.room_id))
            .replace("{conf_num}", &super::path_component(&m.conf_num))
            .replace("{job_id}", &super::path_component(&m.job_id))
            .replace("{file}", &super::path_component(&m.file_name));
        if self.prefix.is_empty() {
            key
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    async fn client(&self) -> aws_sdk_s3::Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()));
        if let Some(e) = &self.endpoint {
            loader = loader.endpoint_url(e);
        }
        let shared = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(self.path_style)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The URL an object for `meta` has: `s3://bucket/key`.
    pub fn url_for(&self, meta: &SegmentMeta) -> String {
        format!("s3://{}/{}", self.bucket, self.key_for(meta))
    }

    /// Uploads and verifies; returns `s3://bucket/key`.
    pub async fn put(&self, src: &Path, meta: &SegmentMeta) -> Result<String, DeliveryError> {
        let client = self.client().await;
        let key = self.key_for(meta);
        let size = std::fs::metadata(src)
            .map_err(|e| DeliveryError::retryable(format!("reading {}: {e}", src.display())))?
            .len();
        let expected_etag = if let Some(done) = early::finish(self, &key, src).await {
            done?
        } else if size <= self.threshold {
            self.put_single(&client, src, &key).await?
        } else {
            self.put_multipart(&client, src, &key).await?
        };
        let head = client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| {
                DeliveryError::retryable(format!("verifying s3 object: {}", sdk_error(&e)))
            })?;
        let etag = head.e_tag().unwrap_or("").trim_matches('"').to_string();
        let len = head.content_length().unwrap_or(-1);
        if len != size as i64 || etag != expected_etag {
            return Err(DeliveryError::retryable(format!(
                "s3 object did not verify (size {len} vs {size}, etag {etag} vs {expected_etag})"
            )));
        }
        Ok(format!("s3://{}/{key}", self.bucket))
    }

    async fn put_single(
        &self,
        client: &aws_sdk_s3::Client,
        src: &Path,
        key: &str,
    ) -> Result<String, DeliveryError> {
        let data = std::fs::read(src)
            .map_err(|e| DeliveryError::retryable(format!("reading {}: {e}", src.display())))?;
        let md5 = crate::util::hex(&Md5::digest(&data));
        client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| DeliveryError::retryable(format!("s3 put: {}", sdk_error(&e))))?;
        Ok(md5)
    }

    async fn put_multipart(
        &self,
        client: &aws_sdk_s3::Client,
        src: &Path,
        key: &str,
    ) -> Result<String, DeliveryError> {
        let created = client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .send()
            .await
            .map_err(|e| {
                DeliveryError::retryable(format!("s3 multipart start: {}", sdk_error(&e)))
            })?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(client, src, key, &upload_id).await;
        match result {
            Ok(etag) => Ok(etag),
            Err(e) => {
                // Leave no half upload behind; the spool keeps the file for the retry.
                let _ = client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        client: &aws_sdk_s3::Client,
        src: &Path,
        key: &str,
        upload_id: &str,
    ) -> Result<String, DeliveryError> {
        use futures::StreamExt;
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(src)
            .map_err(|e| DeliveryError::retryable(format!("reading {}: {e}", src.display())))?;
        let size = f
            .metadata()
            .map_err(|e| DeliveryError::retryable(format!("reading: {e}")))?
            .len();
        let count = size.div_ceil(self.part_size as u64).max(1);
        let f = &f;
        // Up to PART_CONCURRENCY parts in flight; results come back in part order.
        let uploads = futures::stream::iter(1..=count)
            .map(|n| async move {
                let offset = (n - 1) * self.part_size as u64;
                let len = (size - offset).min(self.part_size as u64) as usize;
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, offset)
                    .map_err(|e| DeliveryError::retryable(format!("reading: {e}")))?;
                let digest = Md5::digest(&buf);
                let out = client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(n as i32)
                    .body(ByteStream::from(buf))
                    .send()
                    .await
                    .map_err(|e| {
                        DeliveryError::retryable(format!("s3 part {n}: {}", sdk_error(&e)))
                    })?;
                let part = CompletedPart::builder()
                    .part_number(n as i32)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build();
                Ok::<_, DeliveryError>((part, digest))
            })
            .buffered(PART_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut parts = Vec::new();
        let mut digests = Vec::new();
        for r in uploads {
            let (part, digest) = r?;
            parts.push(part);
            digests.extend_from_slice(&digest);
        }
        complete_upload(client, &self.bucket, key, upload_id, parts, &digests).await
    }
}

/// Completes a multipart upload of `parts` whose MD5s, end to end, are `digests`; returns the
/// object's expected ETag (the MD5 of the parts' MD5s and their count).
async fn complete_upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: Vec<CompletedPart>,
    digests: &[u8],
) -> Result<String, DeliveryError> {
    let count = parts.len();
    let completed = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    match completed {
        Ok(_) => {}
        // A 200 whose body the SDK cannot read (some S3-compatible servers name the XML root
        // differently): the HEAD check that follows decides whether the object is whole.
        Err(aws_sdk_s3::error::SdkError::ServiceError(e)) if e.raw().status().as_u16() == 200 => {
            tracing::debug!("multipart completion answered 200 with an unexpected body");
        }
        Err(e) => {
            return Err(DeliveryError::retryable(format!(
                "s3 multipart complete: {}",
                sdk_error(&e)
            )))
        }
    }
    Ok(format!(
        "{}-{count}",
        crate::util::hex(&Md5::digest(digests))
    ))
}

impl S3Target {
    /// With one client: the contents of the objects `nth(1)`, `nth(2)`, … describe, each
    /// given to `sink` in order, until one is not there; returns how many there were.
    pub async fn get_each(
        &self,
        nth: impl Fn(u32) -> SegmentMeta,
        mut sink: impl FnMut(&[u8]) -> Result<(), DeliveryError>,
    ) -> Result<u32, DeliveryError> {
        let client = self.client().await;
        let mut n = 0;
        loop {
            let got = client
                .get_object()
                .bucket(&self.bucket)
                .key(self.key_for(&nth(n + 1)))
                .send()
                .await;
            let body = match got {
                Ok(o) => o.body.collect().await.map_err(|e| {
                    DeliveryError::retryable(format!("s3 get: reading the body: {e}"))
                })?,
                Err(e) if not_found(&e) => return Ok(n),
                Err(e) => {
                    return Err(DeliveryError::retryable(format!(
                        "s3 get: {}",
                        sdk_error(&e)
                    )))
                }
            };
            sink(&body.into_bytes())?;
            n += 1;
        }
    }

    /// Whether the object `meta` describes is there.
    pub async fn has(&self, meta: &SegmentMeta) -> Result<bool, DeliveryError> {
        let client = self.client().await;
        self.exists(&client, &self.key_for(meta)).await
    }

    async fn exists(&self, client: &aws_sdk_s3::Client, key: &str) -> Result<bool, DeliveryError> {
        match client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(DeliveryError::retryable(format!(
                "s3 head: {}",
                sdk_error(&e)
            ))),
        }
    }

    /// With one client: removes the objects `nth(1)`, `nth(2)`, … describe until one is not
    /// there; returns how many it removed.
    pub async fn remove_each(
        &self,
        nth: impl Fn(u32) -> SegmentMeta,
    ) -> Result<u32, DeliveryError> {
        let client = self.client().await;
        let mut n = 0;
        loop {
            let key = self.key_for(&nth(n + 1));
            if !self.exists(&client, &key).await? {
                return Ok(n);
            }
            client
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| DeliveryError::retryable(format!("s3 delete: {}", sdk_error(&e))))?;
            n += 1;
        }
    }
}

/// Whether the service answered 404 (no such key).
fn not_found<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    matches!(e, aws_sdk_s3::error::SdkError::ServiceError(s) if s.raw().status().as_u16() == 404)
}

/// The SDK's error without request details (which can carry signed URLs).
fn sdk_error<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let m = s.err().meta();
            format!(
                "{} ({}): {}",
                m.code().unwrap_or("error"),
                s.raw().status().as_u16(),
                m.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(d) => {
            if d.is_io() {
                "connection failed".into()
            } else if d.is_timeout() {
                "timed out".into()
            } else {
                "request could not be sent".into()
            }
        }
        SdkError::ResponseError(_) => "unreadable response".into(),
        SdkError::ConstructionFailure(_) => "request could not be built".into(),
        _ => "unknown error".into(),
    }
}

/// The content type stored with an object, by its name.
fn content_type(key: &str) -> &'static str {
    if key.ends_with(".mp4") {
        "video/mp4"
    } else if key.ends_with(".json") {
        "application/json"
    } else if key.ends_with(".m3u8") {
        "application/vnd.apple.mpegurl"
    } else if key.ends_with(".m4s") {
        "video/iso.segment"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_templates_keys() {
        let t = S3Target::parse(
            "s3://rec-bucket/archive?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(t.path_style);
        let m = SegmentMeta {
            job_id: "j".into(),
            app_id: "app".into(),
            room_id: "room".into(),
            conf_num: "7".into(),
            segment: 2,
            file_name: "room_7_2.mp4".into(),
            started_at_unix_ms: 0,
            ended_at_unix_ms: 0,
            size: 0,
            sha256: String::new(),
            hls: None,
            bundle: None,
            chunk: None,
        };
        assert_eq!(t.key_for(&m), "archive/app/room/7/room_7_2.mp4");
        // Identifiers cannot climb out of or add levels to the key.
        let hostile = SegmentMeta {
            app_id: "../../etc".into(),
            room_id: "a/b".into(),
            conf_num: "..".into(),
            ..m.clone()
        };
        let key = t.key_for(&hostile);
        assert_eq!(key.matches('/').count(), 4, "{key}");
        assert!(!key.split('/').any(|c| c == ".." || c == "."), "{key}");
        assert!(S3Target::parse("s3://Bad_Bucket").is_err());
        assert!(S3Target::parse("s3://b?color=red").is_err());
        assert!(S3Target::parse("s3://b?region=%aé").is_err());
        assert!(S3Target::parse("s3://b?region=eu-west-3").is_ok());
        assert_eq!(percent_decode("%aé%41"), "%aéA");
        assert!(S3Target::parse("s3://b?endpoint=ftp://x").is_err());
        assert!(!format!("{t:?}").contains("key_template"));
    }
}

//! A moto S3 server (from the project's virtual environment).

use super::*;
use std::process::{Command, Stdio};

/// The Python that has `moto[server]`: `ROOMCAST_TEST_PYTHON` (set by `make test`), else the
/// project's `.tools/venv` when it exists, else `python3`.
pub fn test_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("ROOMCAST_TEST_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// A moto S3 server (PyPI `moto[server]`) on a loopback port.
pub struct MotoS3 {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl MotoS3 {
    pub fn start_on(port: u16) -> MotoS3 {
        let child = Command::new(test_python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto.server (`make test-setup` installs it into .tools/venv)");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed().as_secs() < 30, "moto_server did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        MotoS3 {
            port,
            child: Some(child),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts unsigned requests). A server that has opened its port
    /// can still close the first connections unanswered while it loads: those are retried
    /// for up to 30 s; any answer other than 200 fails at once.
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let t0 = std::time::Instant::now();
        loop {
            let mut resp = String::new();
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = write!(
                    s,
                    "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let _ = s.read_to_string(&mut resp);
            }
            if !resp.is_empty() {
                assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
                return;
            }
            assert!(
                t0.elapsed().as_secs() < 30,
                "create bucket: no answer from moto"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Reads an object back through the real S3 client.
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.try_get(bucket, key).await.expect("get object")
    }

    /// An object's ETag (without quotes), read with HEAD through the real S3 client.
    pub async fn etag(&self, bucket: &str, key: &str) -> String {
        let out = self
            .client()
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("head object");
        out.e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string()
    }

    /// Reads an object back, if it is there.
    pub async fn try_get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = self
            .client()
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(out.body.collect().await.ok()?.into_bytes().to_vec())
    }

    /// Every key in `bucket`, through the real S3 client.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list objects");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// Keys of the multipart uploads started and neither completed nor aborted.
    pub async fn unfinished_uploads(&self, bucket: &str) -> Vec<String> {
        let out = self
            .client()
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .expect("list multipart uploads");
        out.uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_string))
            .collect()
    }

    fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

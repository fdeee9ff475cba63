//! Shared test helpers, one file per thing they start or read: the binary (here), media
//! probes, nginx-rtmp, the webhook receiver, moto S3, sshd, redis and the service; Janus in
//! [`janus`] (its test publishers in `publisher`).
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod janus;
mod media;
mod moto;
mod nginx;
pub mod openapi;
mod publisher;
mod redis;
mod service;
mod sshd;
mod webhook;

pub use media::*;
pub use moto::*;
pub use nginx::*;
pub use redis::*;
pub use service::*;
pub use sshd::*;
pub use webhook::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The roomcast binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_roomcast")
}

/// A fresh, unique temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("roomcast-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("ROOMCAST_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs an ffmpeg/ffprobe command, fails the test if it fails, returns its stdout.
/// Runs the binary to completion, returning (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run roomcast");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs the binary with extra environment variables: (success, last JSON line of stdout, stderr).
pub fn run_env(env: &[(&str, String)], args: &[&str]) -> (bool, serde_json::Value, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run roomcast");
    (
        out.status.success(),
        last_json(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The last JSON line a command printed.
pub fn last_json(text: &str) -> serde_json::Value {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("{}");
    serde_json::from_str(line).expect("json line")
}

/// Kills and reaps a server process started by a helper, if it still runs.
fn stop_child(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` every 200 ms until it returns Some or `secs` pass.
pub fn wait_for<T>(secs: f64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A `roomcast demo` run, built up from its options and environment, then run to its end.
#[derive(Debug, Clone)]
pub struct Demo {
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Demo {
    /// A demo recording into `out`.
    pub fn new(out: &Path) -> Demo {
        Demo {
            args: vec!["demo".into(), "--out".into(), out.display().to_string()],
            env: Vec::new(),
        }
    }

    /// `--participants n`.
    pub fn participants(self, n: u32) -> Demo {
        self.arg("--participants", &n.to_string())
    }

    /// `--duration secs`.
    pub fn duration(self, secs: u32) -> Demo {
        self.arg("--duration", &secs.to_string())
    }

    /// Any other option and its value.
    pub fn arg(mut self, name: &str, value: &str) -> Demo {
        self.args.push(name.into());
        self.args.push(value.into());
        self
    }

    /// An option without a value.
    pub fn flag(mut self, name: &str) -> Demo {
        self.args.push(name.into());
        self
    }

    /// Environment variables for the process.
    pub fn env(mut self, env: &[(&'static str, String)]) -> Demo {
        self.env.extend_from_slice(env);
        self
    }

    /// Runs it: (success, last JSON line, stderr).
    pub fn run(&self) -> (bool, serde_json::Value, String) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, String)> = self.env.iter().map(|(k, v)| (*k, v.clone())).collect();
        run_env(&env, &args)
    }
}

/// A small tmpfs mounted for one test, unmounted on drop.
pub struct SmallDisk(pub std::path::PathBuf);

impl SmallDisk {
    pub fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mounting a tmpfs needs root");
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a file of `bytes` (or until it is full when None).
pub fn fill(dir: &std::path::Path, bytes: Option<u64>) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    while bytes.is_none_or(|b| written < b) {
        if f.write_all(&block).is_err() {
            break;
        }
        written += block.len() as u64;
    }
    let _ = f.sync_all();
    path
}

/// Bytes available on the file system of `dir` (as `df` reports them).
pub fn available_bytes(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Runs `f` to its end on a runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

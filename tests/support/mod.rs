//! Shared test helpers: run the binary, probe and decode its output with ffmpeg.
#![allow(dead_code)]

pub mod janus;

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
#[track_caller]
pub fn tool_output(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What ffprobe says about a file.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: u32,
    pub height: u32,
    pub duration: f64,
    pub audio_rate: u32,
}

pub fn probe(path: &Path) -> Probe {
    let stdout = tool_output(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_streams",
                "-show_format",
            ])
            .arg(path),
    );
    let v: serde_json::Value = serde_json::from_slice(&stdout).expect("ffprobe json");
    let mut p = Probe::default();
    for s in v["streams"].as_array().cloned().unwrap_or_default() {
        match s["codec_type"].as_str() {
            Some("video") => {
                p.video_codec = s["codec_name"].as_str().map(str::to_string);
                p.width = s["width"].as_u64().unwrap_or(0) as u32;
                p.height = s["height"].as_u64().unwrap_or(0) as u32;
            }
            Some("audio") => {
                p.audio_codec = s["codec_name"].as_str().map(str::to_string);
                p.audio_rate = s["sample_rate"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    p.duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    p
}

/// Number of video frames ffprobe can decode.
pub fn decoded_video_frames(path: &Path) -> u64 {
    let stdout = tool_output(
        Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(path),
    );
    String::from_utf8_lossy(&stdout)
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or(0)
}

/// Top-level MP4 box types, in file order.
pub fn top_level_boxes(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).expect("read mp4");
    let mut out = Vec::new();
    let mut i = 0usize;
    while i + 8 <= data.len() {
        let mut size = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as u64;
        let kind = String::from_utf8_lossy(&data[i + 4..i + 8]).to_string();
        if size == 1 && i + 16 <= data.len() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[i + 8..i + 16]);
            size = u64::from_be_bytes(b);
        } else if size == 0 {
            size = (data.len() - i) as u64;
        }
        out.push(kind);
        if size < 8 {
            break;
        }
        i += size as usize;
    }
    out
}

/// An RGB frame.
#[derive(Clone)]
pub struct Frame {
    pub w: usize,
    pub h: usize,
    pub rgb: Vec<u8>,
}

impl Frame {
    pub fn px(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.w + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Median colour of a grid of samples inside the middle of `(x, y, w, h)` (clear of labels
    /// at the edges and of the marker near the top).
    pub fn region_color(&self, x: usize, y: usize, w: usize, h: usize) -> [u8; 3] {
        let mut ch: [Vec<u8>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for j in 0..7 {
            for i in 0..7 {
                let px = x + w * (25 + i * 50 / 6) / 100;
                let py = y + h * (30 + j * 45 / 6) / 100;
                let c = self.px(px.min(self.w - 1), py.min(self.h - 1));
                for k in 0..3 {
                    ch[k].push(c[k]);
                }
            }
        }
        let mut out = [0u8; 3];
        for k in 0..3 {
            ch[k].sort_unstable();
            out[k] = ch[k][ch[k].len() / 2];
        }
        out
    }
}

/// Decodes the frame at `t` seconds at its full size.
pub fn frame_at(path: &Path, t: f64, w: usize, h: usize) -> Frame {
    let stdout = tool_output(
        Command::new("ffmpeg")
            .args(["-v", "error", "-ss", &format!("{t:.3}"), "-i"])
            .arg(path)
            .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]),
    );
    assert_eq!(stdout.len(), w * h * 3, "frame at {t} s has the wrong size");
    Frame { w, h, rgb: stdout }
}

/// Decodes a still image (PNG).
pub fn image(path: &Path, w: usize, h: usize) -> Frame {
    frame_at(path, 0.0, w, h)
}

/// Every video frame, scaled to `w`×`h`, with its time in seconds.
pub fn all_frames(path: &Path, w: usize, h: usize) -> Vec<(f64, Frame)> {
    let stdout = tool_output(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-vf", &format!("scale={w}:{h}"), "-fps_mode", "passthrough"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]),
    );
    let times = frame_times(path);
    let size = w * h * 3;
    assert_eq!(
        stdout.len() / size,
        times.len(),
        "frame count and timestamps disagree"
    );
    stdout
        .chunks_exact(size)
        .zip(times)
        .map(|(c, t)| {
            (
                t,
                Frame {
                    w,
                    h,
                    rgb: c.to_vec(),
                },
            )
        })
        .collect()
}

/// Presentation times of every video frame, seconds.
pub fn frame_times(path: &Path) -> Vec<f64> {
    let stdout = tool_output(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "frame=pts_time",
            ])
            .args(["-of", "csv=p=0"])
            .arg(path),
    );
    String::from_utf8_lossy(&stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// The audio track as mono f32 at `rate` Hz.
pub fn audio_mono(path: &Path, rate: u32) -> Vec<f32> {
    let stdout = tool_output(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args([
                "-vn",
                "-ac",
                "1",
                "-ar",
                &rate.to_string(),
                "-f",
                "f32le",
                "-",
            ]),
    );
    stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Amplitude of the `freq` component of `samples` (Goertzel).
pub fn tone_amplitude(samples: &[f32], freq: f64, rate: u32) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / samples.len() as f64
}

/// The samples between `from` and `to` seconds.
pub fn window(samples: &[f32], rate: u32, from: f64, to: f64) -> &[f32] {
    let a = ((from * rate as f64) as usize).min(samples.len());
    let b = ((to * rate as f64) as usize).min(samples.len());
    &samples[a..b]
}

/// Euclidean RGB distance.
pub fn dist(a: [u8; 3], rgb: u32) -> f64 {
    let b = [(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8];
    (0..3)
        .map(|k| (a[k] as f64 - b[k] as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Asserts the median colour of a region is close to `rgb`.
#[track_caller]
pub fn assert_region(f: &Frame, rect: (usize, usize, usize, usize), rgb: u32, what: &str) {
    let c = f.region_color(rect.0, rect.1, rect.2, rect.3);
    assert!(
        dist(c, rgb) < 60.0,
        "{what}: region {rect:?} is {c:?}, expected #{rgb:06x}"
    );
}

/// Whether any sampled point of the frame is close to `rgb`.
pub fn frame_has_color(f: &Frame, rgb: u32) -> bool {
    (0..f.h)
        .step_by(8)
        .any(|y| (0..f.w).step_by(8).any(|x| dist(f.px(x, y), rgb) < 40.0))
}

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

/// An nginx-rtmp server on a loopback port that records every stream as FLV.
pub struct NginxRtmp {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl NginxRtmp {
    pub fn start(dir: &Path) -> NginxRtmp {
        let port = free_port();
        std::fs::create_dir_all(dir.join("rec")).expect("rec dir");
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
             daemon off;\nmaster_process off;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{\n\
               live on; record all; record_path {d}/rec; record_unique on; }} }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        let mut n = NginxRtmp {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        n.restart();
        n
    }

    /// (Re)starts the server on the same port and folder; returns once it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (apt package nginx + libnginx-mod-rtmp)");
        self.child = Some(child);
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed().as_secs() < 10,
                "nginx did not start on {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGKILL: the server vanishes mid-stream.
    pub fn kill(&mut self) {
        stop_child(&mut self.child);
    }

    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.port)
    }

    /// Recorded FLV files, oldest first.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut v: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(self.dir.join("rec"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "flv"))
                    .map(|e| {
                        (
                            e.metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH),
                            e.path(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

/// A minimal HTTP server on a loopback port that records every request and answers 200.
pub struct Receiver {
    pub port: u16,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub fn start(port: u16) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let got: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let stop: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
        let (g, st) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut r = BufReader::new(stream);
                let mut headers = std::collections::HashMap::new();
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                g.lock().unwrap().push(Received { headers, body });
                let mut s = r.into_inner();
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Receiver { port, got, stop }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Requests whose JSON body has `"type": kind`.
    pub fn of_type(&self, kind: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .is_ok_and(|v| v["type"] == kind)
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The Python that has `moto[server]`: `ROOMCAST_TEST_PYTHON` (set by `make test`), else the
/// project's `.tools/venv` when it exists, else `python3`.
fn test_python() -> std::path::PathBuf {
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

    /// Creates a bucket (moto accepts unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    }

    /// Reads an object back through the real S3 client.
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build();
        let c = aws_sdk_s3::Client::from_conf(conf);
        let out = c
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("get object");
        out.body
            .collect()
            .await
            .expect("read body")
            .into_bytes()
            .to_vec()
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// An OpenSSH server on a loopback port with a generated host key and a client key authorised
/// for the current user.
pub struct Sshd {
    pub port: u16,
    pub dir: PathBuf,
    pub fingerprint: String,
    pub client_key: PathBuf,
    pub user: String,
    child: Option<std::process::Child>,
}

impl Sshd {
    pub fn start(dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        let keygen = |args: &[&str]| {
            let st = Command::new("ssh-keygen")
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen {args:?}");
        };
        let (host, client) = (dir.join("hostkey"), dir.join("client"));
        keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            host.to_str().unwrap(),
        ]);
        keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            client.to_str().unwrap(),
        ]);
        std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(dir.join("hostkey.pub"))
            .output()
            .unwrap();
        let fingerprint = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        let port = free_port();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), conf).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd (apt package openssh-server)");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed().as_secs() < 10, "sshd did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output().unwrap().stdout)
            .trim()
            .to_string();
        Sshd {
            port,
            dir: dir.to_path_buf(),
            fingerprint,
            client_key: client,
            user,
            child: Some(child),
        }
    }

    pub fn url(&self, path: &Path, fingerprint: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}?fingerprint={}&key={}",
            self.user,
            self.port,
            path.display(),
            fingerprint,
            self.client_key.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A running `roomcast serve|api|worker` process; killed (SIGKILL) on drop.
pub struct Service {
    pub child: Option<std::process::Child>,
    /// API address, for processes that serve the API.
    pub addr: Option<String>,
    pub log: PathBuf,
}

impl Service {
    /// Starts `roomcast <args>` with `env`; waits for the API's `{"listening": …}` line when
    /// `api` is set. Its stderr goes to `log`.
    pub fn start(args: &[&str], env: &[(&str, String)], log: &Path, api: bool) -> Service {
        use std::io::BufRead;
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start roomcast");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(a) = v["listening"].as_str() {
                        let _ = tx.send(a.to_string());
                    }
                }
            }
        });
        let addr = if api {
            match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(a) => Some(a),
                Err(_) => panic!(
                    "roomcast {args:?} did not start: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            }
        } else {
            None
        };
        Service {
            child: Some(child),
            addr,
            log: log.to_path_buf(),
        }
    }

    /// Sends SIGKILL and reaps.
    pub fn kill9(&mut self) {
        stop_child(&mut self.child);
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process: a stalled machine or a network
    /// partition, as the rest of the fleet sees it.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Sends SIGTERM and waits up to `secs` for the exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, secs: u64) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP request to this service's API with the bearer token `token`.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, text) = http(
            self.addr.as_deref().expect("an API service"),
            method,
            path,
            Some(TOKEN),
            body.map(|b| b.as_bytes()),
        );
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, v)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// The API token the tests use.
pub const TOKEN: &str = "test-token-3f9a";

/// A minimal HTTP/1.1 client: (status, body text).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the API");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or(b"");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body; a failed write is not an error.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
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

/// A redis-server on a free loopback port, no persistence, in `dir`.
pub struct Redis {
    child: Option<std::process::Child>,
    pub port: u16,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        let port = free_port();
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new("/usr/bin/redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.to_string_lossy(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt package redis-server)");
        let up = wait_for(10.0, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        assert!(up.is_some(), "redis-server did not start");
        Redis {
            child: Some(child),
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Environment for a `roomcast serve` on a free port with data in `data`.
pub fn serve_env(data: &Path, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("ROOMCAST_DATA_DIR", data.to_string_lossy().to_string()),
        ("ROOMCAST_API_TOKEN", TOKEN.to_string()),
        ("ROOMCAST_LISTEN", "127.0.0.1:0".to_string()),
        ("RUST_LOG", "info".to_string()),
    ];
    for (k, v) in extra {
        // Leak is fine in tests: keys are static strings of the caller.
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        env.retain(|(e, _)| *e != k);
        env.push((k, v.to_string()));
    }
    env
}

pub const MODERATOR: &str = r#"{"client_id":"mod-1","role":"moderator"}"#;

/// Registers a synthetic room with `n` generated participants.
pub fn register_room(api: &Service, room: &str, n: u32, settings: &str) {
    let body = format!(
        r#"{{"app_id":"app","conf_num":"1","connector":{{"type":"synthetic","participants":{n}}},"settings":{settings}}}"#
    );
    let (status, v) = api.call("PUT", &format!("/v1/rooms/{room}"), Some(&body));
    assert_eq!(status, 200, "{v}");
}

/// Starts a recording; returns (HTTP status, body).
pub fn start_recording(api: &Service, room: &str) -> (u16, serde_json::Value) {
    api.call(
        "POST",
        &format!("/v1/rooms/{room}/live-recording"),
        Some(&format!(r#"{{"requested_by":{MODERATOR}}}"#)),
    )
}

/// Stops a recording; returns (HTTP status, body).
pub fn stop_recording(api: &Service, room: &str) -> (u16, serde_json::Value) {
    api.call(
        "DELETE",
        &format!("/v1/rooms/{room}/live-recording"),
        Some(&format!(r#"{{"requested_by":{MODERATOR}}}"#)),
    )
}

/// A job record.
pub fn job(api: &Service, id: &str) -> serde_json::Value {
    let (status, v) = api.call("GET", &format!("/v1/jobs/{id}"), None);
    assert_eq!(status, 200, "{v}");
    v["job"].clone()
}

/// Waits until job `id` is in `state`; returns the record.
pub fn wait_state(api: &Service, id: &str, state: &str, secs: f64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(secs, || {
        last = job(api, id);
        (last["state"] == state).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("job {id} not {state} within {secs} s: {last}"))
}

/// With capacity for one job: one running, three waiting (7207, 7208, 7208), one cancelled
/// (7039), the rest start in order as capacity frees. Rooms are registered here.
pub fn queue_order_scenario(api: &Service, prefix: &str) {
    let rooms: Vec<String> = (0..4).map(|i| format!("{prefix}{i}")).collect();
    for r in &rooms {
        register_room(api, r, 1, "{}");
    }
    let (s, a) = start_recording(api, &rooms[0]);
    assert_eq!((s, a["result"].as_u64()), (201, Some(0)), "{a}");
    let a = a["job_id"].as_str().unwrap().to_string();
    wait_state(api, &a, "active", 20.0);
    // Same room again: already running.
    let (_, again) = start_recording(api, &rooms[0]);
    assert_eq!(again["result"], 7019, "{again}");
    let mut ids = Vec::new();
    for (r, want) in rooms[1..].iter().zip([7207, 7208, 7208]) {
        let (s, v) = start_recording(api, r);
        assert_eq!((s, v["result"].as_u64()), (202, Some(want)), "{r}: {v}");
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    // Same room while it waits: the request is in process.
    let (_, again) = start_recording(api, &rooms[1]);
    assert_eq!(again["result"], 7012, "{again}");
    // Cancel the last one while it waits.
    let (s, v) = api.call("DELETE", &format!("/v1/jobs/{}", ids[2]), None);
    assert_eq!((s, v["result"].as_u64()), (200, Some(7039)), "{v}");
    assert_eq!(job(api, &ids[2])["state"], "cancelled");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(job(api, &ids[0])["state"], "queued", "no capacity yet");
    // Capacity frees in turn: B starts, then C; the cancelled one never does.
    assert_eq!(stop_recording(api, &rooms[0]).1["result"], 0);
    wait_state(api, &a, "completed", 30.0);
    let b = wait_state(api, &ids[0], "active", 20.0);
    assert_eq!(job(api, &ids[1])["state"], "queued", "C waits behind B");
    assert_eq!(stop_recording(api, &rooms[1]).1["result"], 0);
    let c = wait_state(api, &ids[1], "active", 30.0);
    assert!(b["started_ms"].as_u64() < c["started_ms"].as_u64());
    assert_eq!(job(api, &ids[2])["state"], "cancelled");
    assert_eq!(stop_recording(api, &rooms[2]).1["result"], 0);
    wait_state(api, &ids[1], "completed", 30.0);
    // A request for a cancelled room's recording finds nothing running.
    let (_, v) = stop_recording(api, &rooms[3]);
    assert_eq!(v["result"], 7021, "{v}");
}

/// With `ROOMCAST_JOB_RETENTION_SECS=2` and no capacity: an ended (cancelled) request's record
/// is deleted after the retention; a request still waiting is kept however old it is.
pub fn retention_scenario(api: &Service) {
    register_room(api, "gone", 1, "{}");
    register_room(api, "kept", 1, "{}");
    let (s, old) = start_recording(api, "gone");
    assert_eq!((s, old["result"].as_u64()), (202, Some(7207)), "{old}");
    let old = old["job_id"].as_str().unwrap().to_string();
    let (s, v) = api.call("DELETE", &format!("/v1/jobs/{old}"), None);
    assert_eq!((s, v["result"].as_u64()), (200, Some(7039)), "{v}");
    let (s, kept) = start_recording(api, "kept");
    assert_eq!((s, kept["result"].as_u64()), (202, Some(7207)), "{kept}");
    let kept = kept["job_id"].as_str().unwrap().to_string();
    assert_eq!(job(api, &old)["state"], "cancelled");
    let deleted = wait_for(10.0, || {
        let (s, _) = api.call("GET", &format!("/v1/jobs/{old}"), None);
        (s == 404).then_some(())
    });
    assert!(
        deleted.is_some(),
        "ended job still on record after the retention"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(job(api, &kept)["state"], "queued");
    let (_, all) = api.call("GET", "/v1/jobs", None);
    let ids: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, [kept.as_str()], "{all}");
}

//! Shared test helpers: run the binary, probe and decode its output with ffmpeg.
#![allow(dead_code)]

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
        let _ = std::fs::remove_dir_all(&self.0);
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

/// A moto S3 server (PyPI `moto[server]`) on a loopback port.
pub struct MotoS3 {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl MotoS3 {
    pub fn start_on(port: u16) -> MotoS3 {
        let child = Command::new("python3")
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
            .expect("start python3 -m moto.server (pip install 'moto[server]')");
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

//! Probing and decoding what roomcast writes: ffprobe facts, frames and pixels, audio tones.

use std::path::Path;
use std::process::Command;

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
    // A playlist is reported twice (as a program and as a stream): the first count is it.
    String::from_utf8_lossy(&stdout)
        .lines()
        .find_map(|l| l.trim().trim_end_matches(',').parse().ok())
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

/// Amplitude of a tone near `freq` in `samples`: over a window of at least 200 ms, the power
/// mean of its amplitude in 100 ms Hann-windowed blocks, so a tone whose pitch sits a fraction
/// of a percent off (a sender's sound card, resampling on arrival) reads at its level, while
/// tones 30 Hz or more away do not count; over a shorter window, one rectangular Goertzel.
pub fn tone_amplitude(samples: &[f32], freq: f64, rate: u32) -> f64 {
    let block = (rate / 10) as usize;
    if samples.len() < 2 * block {
        return goertzel(samples, freq, rate, false);
    }
    let blocks: Vec<f64> = samples
        .chunks_exact(block)
        .map(|b| goertzel(b, freq, rate, true))
        .collect();
    (blocks.iter().map(|a| a * a).sum::<f64>() / blocks.len() as f64).sqrt()
}

/// Amplitude of the `freq` component of `samples` (Goertzel), Hann-windowed when `hann`.
fn goertzel(samples: &[f32], freq: f64, rate: u32, hann: bool) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len();
    let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut gain = 0.0;
    for (i, &x) in samples.iter().enumerate() {
        let k = if hann {
            0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()
        } else {
            1.0
        };
        gain += k;
        let s0 = x as f64 * k + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / gain
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

/// Times where the count of white pixels (at 320x180) rises by more than `min_px` over the
/// usual: the onsets of a sync reference's flashes.
pub fn flash_onsets(file: &Path, min_px: usize) -> Vec<f64> {
    flash_onsets_from(file, min_px, true)
}

/// [`flash_onsets`] without a flash already under way at the file's first frame: where such a
/// flash began is not in the file (a track recorded on its own may start mid-flash).
pub fn flash_onsets_seen(file: &Path, min_px: usize) -> Vec<f64> {
    flash_onsets_from(file, min_px, false)
}

fn flash_onsets_from(file: &Path, min_px: usize, count_start: bool) -> Vec<f64> {
    let frames = all_frames(file, 320, 180);
    let counts: Vec<usize> = frames
        .iter()
        .map(|(_, f)| {
            f.rgb
                .chunks_exact(3)
                .filter(|p| p.iter().all(|&c| c > 215))
                .count()
        })
        .collect();
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    let base = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let on: Vec<bool> = counts.iter().map(|&c| c > base + min_px).collect();
    // Before the first frame counts as dark (when asked): a flash under way at the start is
    // then an onset.
    (0..on.len())
        .filter(|&i| on[i] && if i == 0 { count_start } else { !on[i - 1] })
        .map(|i| frames[i].0)
        .collect()
}

/// The audio track as mono f32 at `rate` Hz on the file's own timeline: sample `i` is at
/// `i / rate` s of the timestamps ffprobe shows for the frames (a track that starts late is
/// preceded by silence), whatever the file's start time.
pub fn audio_mono_on_timeline(path: &Path, rate: u32) -> Vec<f32> {
    // Where the first decoded audio frame is (decoded frames follow each other without gaps).
    let first = tool_output(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "a:0",
                "-read_intervals",
                "%+#4",
            ])
            .args(["-show_entries", "frame=pts_time", "-of", "csv=p=0"])
            .arg(path),
    );
    let start: f64 = String::from_utf8_lossy(&first)
        .lines()
        .find_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .expect("a decoded audio frame");
    let mut pcm = vec![0.0; (start.max(0.0) * rate as f64).round() as usize];
    pcm.extend(audio_mono(path, rate));
    pcm
}

/// Times where a `hz` tone starts (at least 0.5 s apart): the onsets of a sync reference's
/// beeps.
pub fn beep_onsets(file: &Path, hz: f64) -> Vec<f64> {
    onsets_of(&audio_mono(file, 48_000), hz, true)
}

/// [`beep_onsets`] without a beep already under way at the file's first sample: where such a
/// beep began is not in the file.
pub fn beep_onsets_seen(file: &Path, hz: f64) -> Vec<f64> {
    onsets_of(&audio_mono(file, 48_000), hz, false)
}

/// [`beep_onsets`] measured on the file's timeline ([`audio_mono_on_timeline`]).
pub fn beep_onsets_on_timeline(file: &Path, hz: f64) -> Vec<f64> {
    onsets_of(&audio_mono_on_timeline(file, 48_000), hz, true)
}

fn onsets_of(pcm: &[f32], hz: f64, count_start: bool) -> Vec<f64> {
    let rate = 48_000u32;
    let hop = 48; // 1 ms
    let win = 240; // 5 ms
    let env: Vec<f64> = (0..pcm.len().saturating_sub(win))
        .step_by(hop)
        .map(|i| tone_amplitude(&pcm[i..i + win], hz, rate))
        .collect();
    let peak = env.iter().cloned().fold(0.0, f64::max);
    let thr = peak * 0.3;
    let mut out = Vec::new();
    let mut last = -10.0;
    // Before the first sample counts as silent (when asked): a beep under way at the start
    // is then an onset.
    for i in 0..env.len() {
        let t = (i * hop + win / 2) as f64 / rate as f64;
        let before = match i {
            0 if count_start => 0.0,
            0 => f64::INFINITY,
            _ => env[i - 1],
        };
        if env[i] > thr && before <= thr && t - last > 0.5 {
            out.push(t);
            last = t;
        }
    }
    out
}

/// For each flash, the offset (s) of the nearest beep: positive when the picture is later.
pub fn av_offsets(flashes: &[f64], beeps: &[f64]) -> Vec<(f64, f64)> {
    flashes
        .iter()
        .filter_map(|&f| {
            beeps
                .iter()
                .cloned()
                .min_by(|a, b| (a - f).abs().total_cmp(&(b - f).abs()))
                .map(|b| (f, f - b))
        })
        .collect()
}

/// Every `.mp4` file under `dir` (any depth), sorted.
pub fn mp4s_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Writes a `w`×`h` PNG of one colour (`0xRRGGBB`).
pub fn make_png(path: &Path, w: u32, h: u32, color: &str) {
    let st = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("color=c={color}:s={w}x{h}"))
        .args(["-frames:v", "1"])
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(st.success());
}

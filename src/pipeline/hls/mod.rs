//! Live HLS from the job's one encode: fMP4 (CMAF) segments cut on keyframes, a live playlist
//! rewritten after each segment, and the VOD playlist when the output ends.
//!
//! ```text
//!  main pipeline:  video_tee ─ queue (leaky) ─ appsink ┐
//!                  audio_tee ─ queue (leaky) ─ appsink ┴ channel ─ writer thread ─ files
//! ```
//!
//! The appsinks only hand samples to a channel; the writer thread builds the segments, so
//! the encoders never wait on a disk. Each file is written under a temporary name and renamed,
//! so a reader (or the spool) never sees half a segment or half a playlist. Every file the
//! writer finishes is announced as an [`HlsFile`] for delivery.

pub mod fmp4;
pub mod playlist;

use super::tap::{tap_encoders, TapBranch};
use super::{bridge, PipelineError};
pub use crate::model::hls::{HlsPart, HlsSpec};
use fmp4::{AudioFormat, Run, Sample, VideoFormat, AUDIO_TRACK, VIDEO_TIMESCALE, VIDEO_TRACK};
use gst::prelude::*;
use playlist::{Entry, Playlist};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use tracing::{info, warn};

/// A file the writer finished.
#[derive(Debug, Clone)]
pub struct HlsFile {
    /// Where it is (a copy the receiver may move: the writer keeps its own playlist).
    pub path: PathBuf,
    /// Its name in storage, beside the playlist.
    pub name: String,
    /// What it is.
    pub part: HlsPart,
    /// Segments cut so far.
    pub segments: u32,
    /// Seconds of media in them.
    pub duration_s: f64,
    /// For a playlist: how long before it was written the first frame of its newest segment
    /// was composited (pipeline running time), in ms — the longest any frame of that segment
    /// waited to be listed.
    pub latency_ms: u64,
}

/// What the writer thread is told.
enum Msg {
    Video(gst::Sample),
    Audio(gst::Sample),
    Eos,
}

/// A running HLS output.
pub struct HlsOutput {
    branches: Vec<TapBranch>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Tells the writer the streams ended when the output ends before the pipeline does.
    ended: mpsc::Sender<Msg>,
    eos_needed: usize,
}

impl HlsOutput {
    /// Starts cutting `pipeline`'s encoded streams into `dir`, names starting with `stem`;
    /// each finished file is passed to `on_file` (from the writer thread).
    pub fn start(
        pipeline: &gst::Pipeline,
        dir: &Path,
        stem: &str,
        spec: &HlsSpec,
        on_file: impl Fn(HlsFile) + Send + 'static,
    ) -> Result<HlsOutput, PipelineError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            PipelineError::setup(format!("creating the HLS folder {}: {e}", dir.display()))
        })?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let tx_video = std::sync::Mutex::new(tx.clone());
        let tx_audio = std::sync::Mutex::new(tx.clone());
        let ended = tx.clone();
        let tx_eos = std::sync::Mutex::new(tx);
        let (branches, video_pad) = tap_encoders(
            pipeline,
            &format!("hls_{stem}"),
            move |s| {
                let _ = tx_video.lock().map(|t| t.send(Msg::Video(s)));
            },
            move |s| {
                let _ = tx_audio.lock().map(|t| t.send(Msg::Audio(s)));
            },
            move || {
                let _ = tx_eos.lock().map(|t| t.send(Msg::Eos));
            },
        )?;
        let eos_needed = branches.len();
        let mut w = Writer::new(dir.to_path_buf(), stem, spec, pipeline, video_pad);
        let writer = std::thread::Builder::new()
            .name("hls-writer".into())
            .spawn(move || {
                let mut eos = 0;
                while let Ok(msg) = rx.recv() {
                    let result = match msg {
                        Msg::Video(s) => w.video(&s, &on_file),
                        Msg::Audio(s) => w.audio(&s, &on_file),
                        Msg::Eos => {
                            eos += 1;
                            if eos < eos_needed {
                                continue;
                            }
                            break;
                        }
                    };
                    if let Err(e) = result {
                        warn!(error = %e, "HLS segment not written");
                    }
                }
                if let Err(e) = w.finish(&on_file) {
                    warn!(error = %e, "HLS output not finished");
                }
            })
            .map_err(|e| PipelineError::setup(format!("HLS writer thread: {e}")))?;
        info!(dir = %dir.display(), stem, segment_s = spec.segment_secs, "HLS output started");
        Ok(HlsOutput {
            branches,
            writer: Some(writer),
            ended,
            eos_needed,
        })
    }

    /// Ends the output while the pipeline goes on (its job stopped, others use the
    /// composite): the taps are removed, then the writer cuts its last segment and writes the
    /// VOD playlist (waited for up to `limit`).
    pub async fn end(mut self, pipeline: &gst::Pipeline, limit: Duration) {
        self.detach_taps(pipeline).await;
        for _ in 0..self.eos_needed {
            let _ = self.ended.send(Msg::Eos);
        }
        self.finish(pipeline, limit).await;
    }

    /// After the main pipeline's end of stream: waits (up to `limit`) for the writer to cut
    /// the last segment and write the VOD playlist, then removes the taps.
    pub async fn finish(mut self, pipeline: &gst::Pipeline, limit: Duration) {
        if let Some(writer) = self.writer.take() {
            let joined = tokio::task::spawn_blocking(move || writer.join());
            if tokio::time::timeout(limit, joined).await.is_err() {
                warn!("the HLS writer did not finish in time");
            }
        }
        self.detach_taps(pipeline).await;
    }

    /// Removes the taps from `pipeline` (off the async runtime).
    async fn detach_taps(&mut self, pipeline: &gst::Pipeline) {
        let p = pipeline.clone();
        let branches = std::mem::take(&mut self.branches);
        let _ = tokio::task::spawn_blocking(move || {
            for b in branches {
                b.detach(&p);
            }
        })
        .await;
    }
}

/// A sample held for the segment being built (times in the track's timescale).
struct Held {
    decode: u64,
    cts_offset: i32,
    sync: bool,
    data: Vec<u8>,
    /// Duration from the buffer, for a track's last sample.
    duration: Option<u64>,
    /// Its running time (when it was composited), ns.
    running: u64,
}

/// Cuts segments and writes the files.
struct Writer {
    dir: PathBuf,
    stem: String,
    target: Duration,
    has_video: bool,
    video_format: Option<VideoFormat>,
    audio_format: Option<AudioFormat>,
    /// Running time of the first keyframe (media time zero).
    base: Option<gst::ClockTime>,
    /// The AAC encoder's priming delay, ns. The MP4 recording trims it with an edit list;
    /// players of fMP4 segments do not, so here the picture is placed this much later
    /// instead, and the first real sound plays with the picture it was captured with.
    shift: u64,
    /// For the running time when a playlist is written.
    pipeline: gst::Pipeline,
    /// Where the next segment's keyframe is asked of the encoder.
    keyframe_pad: Option<gst::Pad>,
    video: Vec<Held>,
    audio: Vec<Held>,
    /// Media time (ns) the current segment starts at.
    segment_start: Option<u64>,
    init_written: bool,
    playlist: Playlist,
    /// Last video sample duration, for the final sample at the end.
    last_video_duration: u64,
    /// Playlists written so far (names the copies handed over for delivery).
    versions: u32,
}

fn ticks(ns: u64, timescale: u32) -> u64 {
    ((ns as u128 * timescale as u128 + 500_000_000) / 1_000_000_000) as u64
}

fn structure_bytes(caps: &gst::CapsRef, field: &str) -> Option<Vec<u8>> {
    let buf = caps.structure(0)?.get::<gst::Buffer>(field).ok()?;
    let map = buf.map_readable().ok()?;
    Some(map.as_slice().to_vec())
}

impl Writer {
    fn new(
        dir: PathBuf,
        stem: &str,
        spec: &HlsSpec,
        pipeline: &gst::Pipeline,
        keyframe_pad: Option<gst::Pad>,
    ) -> Writer {
        Writer {
            dir,
            stem: stem.to_string(),
            target: Duration::from_secs_f64(spec.segment_secs),
            has_video: keyframe_pad.is_some(),
            video_format: None,
            audio_format: None,
            base: None,
            shift: super::tap::priming(pipeline).nseconds(),
            pipeline: pipeline.clone(),
            keyframe_pad,
            video: Vec::new(),
            audio: Vec::new(),
            segment_start: None,
            init_written: false,
            playlist: Playlist::new(init_name(stem), spec.segment_secs, spec.window as usize),
            last_video_duration: u64::from(VIDEO_TIMESCALE) / 30,
            versions: 0,
        }
    }

    fn video(&mut self, sample: &gst::Sample, on_file: &impl Fn(HlsFile)) -> Result<(), String> {
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            return Ok(());
        };
        if self.video_format.is_none() {
            let s = caps.structure(0).ok_or("video caps without a structure")?;
            if s.get::<&str>("stream-format").ok() != Some("avc") {
                return Err(format!("video is not H.264 in AVC form: {caps}"));
            }
            self.video_format = Some(VideoFormat {
                width: s.get::<i32>("width").unwrap_or(0).max(0) as u32,
                height: s.get::<i32>("height").unwrap_or(0).max(0) as u32,
                avcc: structure_bytes(caps, "codec_data").ok_or("video caps without codec_data")?,
            });
        }
        let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        // Times are running times: the encoders stamp their output in segments of their own
        // (a video encoder's starts 1000 hours in), the two tracks meet on the running time.
        let Some(pts) = buffer.pts().map(|t| bridge::running_time(sample, t)) else {
            return Ok(());
        };
        let dts = buffer
            .dts()
            .map_or(pts, |t| bridge::running_time(sample, t));
        if self.base.is_none() {
            if !key {
                return Ok(());
            }
            self.base = Some(dts.min(pts));
        }
        let base = self.base.unwrap_or_default();
        if dts < base {
            return Ok(());
        }
        let t = dts.nseconds() - base.nseconds() + self.shift;
        if key {
            if let Some(start) = self.segment_start {
                if t.saturating_sub(start) >= self.target.as_nanos() as u64
                    && !self.video.is_empty()
                {
                    self.cut(Some(t), on_file)?;
                }
            }
            if self.segment_start.is_none() {
                self.segment_start = Some(t);
                // The encoder's keyframes follow their own interval (and scene cuts): ask
                // for one exactly where this segment should end, so segments keep their
                // length whatever the interval.
                if let Some(pad) = &self.keyframe_pad {
                    let at = pts + self.target_ct();
                    pad.push_event(super::tap::force_key_unit_at(Some(at)));
                }
            }
        }
        let decode = ticks(t, VIDEO_TIMESCALE);
        let present = ticks(
            pts.nseconds() - base.nseconds() + self.shift,
            VIDEO_TIMESCALE,
        );
        let map = buffer.map_readable().map_err(|e| e.to_string())?;
        self.video.push(Held {
            decode,
            cts_offset: (present as i64 - decode as i64) as i32,
            sync: key,
            data: map.as_slice().to_vec(),
            duration: buffer
                .duration()
                .map(|d| ticks(d.nseconds(), VIDEO_TIMESCALE)),
            running: pts.nseconds(),
        });
        Ok(())
    }

    fn audio(&mut self, sample: &gst::Sample, on_file: &impl Fn(HlsFile)) -> Result<(), String> {
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            return Ok(());
        };
        if self.audio_format.is_none() {
            let s = caps.structure(0).ok_or("audio caps without a structure")?;
            let rate = s.get::<i32>("rate").unwrap_or(0).max(0) as u32;
            if rate == 0 {
                return Err(format!("audio caps without a rate: {caps}"));
            }
            self.audio_format = Some(AudioFormat {
                rate,
                channels: s.get::<i32>("channels").unwrap_or(2).max(1) as u32,
                asc: structure_bytes(caps, "codec_data").ok_or("audio caps without codec_data")?,
            });
        }
        let Some(pts) = buffer.pts().map(|t| bridge::running_time(sample, t)) else {
            return Ok(());
        };
        if self.base.is_none() {
            if self.has_video {
                // Audio waits for the picture's first keyframe.
                return Ok(());
            }
            self.base = Some(pts);
        }
        let base = self.base.unwrap_or_default();
        if pts < base {
            return Ok(());
        }
        let rate = self.audio_format.as_ref().map_or(48_000, |a| a.rate);
        let t = pts.nseconds() - base.nseconds();
        if !self.has_video {
            if let Some(start) = self.segment_start {
                if t.saturating_sub(start) >= self.target.as_nanos() as u64
                    && !self.audio.is_empty()
                {
                    self.cut(Some(t), on_file)?;
                }
            }
            self.segment_start.get_or_insert(t);
        }
        let map = buffer.map_readable().map_err(|e| e.to_string())?;
        self.audio.push(Held {
            decode: ticks(t, rate),
            cts_offset: 0,
            sync: true,
            data: map.as_slice().to_vec(),
            duration: buffer.duration().map(|d| ticks(d.nseconds(), rate)),
            running: pts.nseconds(),
        });
        Ok(())
    }

    fn target_ct(&self) -> gst::ClockTime {
        gst::ClockTime::from_nseconds(self.target.as_nanos() as u64)
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        crate::util::write_atomic(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// Runs of the held samples; `next` is the decode time (ns) of what follows, if known.
    fn runs(&mut self, next: Option<u64>) -> (Vec<Run>, f64) {
        let mut runs = Vec::new();
        let mut seconds = 0.0;
        let has_video = self.has_video;
        let rate = self.audio_format.as_ref().map_or(48_000, |a| a.rate);
        let tracks = [
            (
                VIDEO_TRACK,
                VIDEO_TIMESCALE,
                std::mem::take(&mut self.video),
            ),
            (AUDIO_TRACK, rate, std::mem::take(&mut self.audio)),
        ];
        for (track, timescale, held) in tracks {
            let Some(first) = held.first().map(|h| h.decode) else {
                continue;
            };
            let end_of_last = |h: &Held, last_duration: u64| match next {
                Some(n) if track == VIDEO_TRACK || !has_video => {
                    ticks(n, timescale).max(h.decode + 1)
                }
                _ => h.decode + h.duration.unwrap_or(last_duration).max(1),
            };
            let default_last = if track == VIDEO_TRACK {
                self.last_video_duration
            } else {
                1024
            };
            let mut samples = Vec::with_capacity(held.len());
            for i in 0..held.len() {
                let end = match held.get(i + 1) {
                    Some(n) => n.decode.max(held[i].decode + 1),
                    None => end_of_last(&held[i], default_last),
                };
                let duration = end - held[i].decode;
                if track == VIDEO_TRACK {
                    self.last_video_duration = duration;
                }
                samples.push(Sample {
                    duration: duration as u32,
                    cts_offset: held[i].cts_offset,
                    sync: held[i].sync,
                    data: Vec::new(),
                });
            }
            let last_end = held.last().map_or(first, |h| h.decode)
                + samples.last().map_or(0, |s| u64::from(s.duration));
            if track == VIDEO_TRACK || !has_video {
                seconds = (last_end - first) as f64 / f64::from(timescale);
            }
            for (s, h) in samples.iter_mut().zip(held) {
                s.data = h.data;
            }
            runs.push(Run {
                track,
                decode_time: first,
                samples,
            });
        }
        (runs, seconds)
    }

    /// Writes the held samples as the next segment (and the init segment first), then the
    /// live playlist. `next`: media time (ns) the following segment starts at.
    fn cut(&mut self, next: Option<u64>, on_file: &impl Fn(HlsFile)) -> Result<(), String> {
        let first = if self.has_video {
            &self.video
        } else {
            &self.audio
        };
        let first_running = first.first().map(|h| h.running);
        if !self.init_written {
            let data = fmp4::init_segment(self.video_format.as_ref(), self.audio_format.as_ref());
            let name = self.playlist.map.clone();
            let path = self.write(&name, &data)?;
            self.init_written = true;
            on_file(self.file(path, name, HlsPart::Init, 0));
        }
        let (runs, seconds) = self.runs(next);
        self.segment_start = None;
        if runs.is_empty() {
            return Ok(());
        }
        let sequence = self.playlist.entries.len() as u32 + 1;
        let name = format!("{}_{sequence:05}.m4s", self.stem);
        let data = fmp4::media_segment(sequence, &runs);
        let path = self.write(&name, &data)?;
        journal_append(&self.dir, &self.stem, seconds, &name)?;
        self.playlist.entries.push(Entry {
            sequence,
            uri: name.clone(),
            duration: seconds,
        });
        on_file(self.file(path, name, HlsPart::Segment, 0));
        let playlist = self.playlist_file(HlsPart::Live, first_running)?;
        on_file(playlist);
        Ok(())
    }

    /// The playlist written now, and a copy of it for delivery.
    fn playlist_file(
        &mut self,
        part: HlsPart,
        first_running: Option<u64>,
    ) -> Result<HlsFile, String> {
        let text = match part {
            HlsPart::Ended => self.playlist.vod(),
            _ => self.playlist.live(),
        };
        let name = playlist_name(&self.stem);
        self.write(&name, text.as_bytes())?;
        self.versions += 1;
        let copy = self.write(&format!("{name}.v{}", self.versions), text.as_bytes())?;
        let p = &self.pipeline;
        let now = p
            .clock()
            .and_then(|c| Some(c.time().saturating_sub(p.base_time()?).nseconds()));
        let latency = match (now, first_running) {
            (Some(now), Some(first)) => now.saturating_sub(first) / 1_000_000,
            _ => 0,
        };
        Ok(self.file(copy, name, part, latency))
    }

    fn file(&self, path: PathBuf, name: String, part: HlsPart, latency_ms: u64) -> HlsFile {
        HlsFile {
            path,
            name,
            part,
            segments: self.playlist.entries.len() as u32,
            duration_s: self.playlist.duration(),
            latency_ms,
        }
    }

    /// The end: the last segment and the VOD playlist.
    fn finish(&mut self, on_file: &impl Fn(HlsFile)) -> Result<(), String> {
        if !self.video.is_empty() || !self.audio.is_empty() {
            self.cut(None, on_file)?;
        }
        if self.playlist.entries.is_empty() {
            return Ok(());
        }
        let file = self.playlist_file(HlsPart::Ended, None)?;
        info!(
            segments = file.segments,
            duration_s = file.duration_s,
            "HLS output ended"
        );
        on_file(file);
        // Ended: nothing is left to recover.
        let _ = std::fs::remove_file(journal_path(&self.dir, &self.stem));
        Ok(())
    }
}

/// The list of an output's cut segments (`<duration> <name>` per line, each line synced as
/// the segment is written): what a later run needs to end an output whose process died.
fn journal_path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.segments"))
}

fn journal_append(dir: &Path, stem: &str, seconds: f64, name: &str) -> Result<(), String> {
    use std::io::Write;
    let path = journal_path(dir, stem);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{seconds:.6} {name}")
        .and_then(|_| f.sync_data())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The folder under `out_dir` an output named `stem` is written to.
pub fn folder(out_dir: &Path, stem: &str) -> PathBuf {
    out_dir.join(format!("{stem}_hls"))
}

/// The folder an output of segment file `segment` (`<stem>.mp4`) is written to, and its stem.
pub fn folder_of(segment: &Path) -> Option<(PathBuf, String)> {
    let stem = segment.file_stem()?.to_string_lossy().to_string();
    Some((folder(segment.parent()?, &stem), stem))
}

fn init_name(stem: &str) -> String {
    format!("{stem}_init.m4s")
}

fn playlist_name(stem: &str) -> String {
    format!("{stem}.m3u8")
}

/// Ends the HLS output of a run whose process died: the files it wrote that are still in
/// `dir` (not yet handed over for delivery), then the VOD playlist of every segment its
/// journal lists. Nothing when the output ended normally (no journal).
pub fn recover(dir: &Path, stem: &str) -> Result<Vec<HlsFile>, String> {
    let journal = journal_path(dir, stem);
    let text = match std::fs::read_to_string(&journal) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", journal.display())),
    };
    // A line cut short by the crash is left out (its segment was not finished either).
    let mut playlist = Playlist::new(init_name(stem), 1.0, 1);
    for line in text.lines() {
        let Some((d, name)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(duration), false) = (d.parse::<f64>(), name.is_empty()) else {
            continue;
        };
        playlist.entries.push(Entry {
            sequence: playlist.entries.len() as u32 + 1,
            uri: name.to_string(),
            duration,
        });
    }
    let file = |path: PathBuf, name: String, part: HlsPart, n: usize, p: &Playlist| HlsFile {
        path,
        name,
        part,
        segments: n as u32,
        duration_s: p.entries[..n].iter().map(|e| e.duration).sum(),
        latency_ms: 0,
    };
    let mut out = Vec::new();
    let init = dir.join(&playlist.map);
    if init.is_file() {
        out.push(file(
            init,
            playlist.map.clone(),
            HlsPart::Init,
            0,
            &playlist,
        ));
    }
    for (i, e) in playlist.entries.iter().enumerate() {
        let path = dir.join(&e.uri);
        if path.is_file() {
            out.push(file(
                path,
                e.uri.clone(),
                HlsPart::Segment,
                i + 1,
                &playlist,
            ));
        }
    }
    // Copies of playlists made for delivery and never handed over are stale.
    if let Ok(rd) = std::fs::read_dir(dir) {
        let copies = format!("{}.v", playlist_name(stem));
        for f in rd.flatten() {
            if f.file_name().to_string_lossy().starts_with(&copies) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    if !playlist.entries.is_empty() {
        let name = playlist_name(stem);
        let text = playlist.vod();
        let write = |n: &str| {
            let p = dir.join(n);
            crate::util::write_atomic(&p, text.as_bytes())
                .map(|_| p)
                .map_err(|e| format!("{n}: {e}"))
        };
        write(&name)?;
        let copy = write(&format!("{name}.recovered"))?;
        let n = playlist.entries.len();
        out.push(file(copy, name, HlsPart::Ended, n, &playlist));
    }
    let _ = std::fs::remove_file(&journal);
    info!(dir = %dir.display(), segments = playlist.entries.len(),
        "ended the HLS output of an earlier run");
    Ok(out)
}

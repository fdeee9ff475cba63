//! The writer thread's state ([`Writer`]): samples held for the segment being built, a
//! segment cut on a keyframe and written, the live playlist rewritten, the VOD playlist at the
//! end.

use super::files::*;
use super::fmp4::{
    AudioFormat, Run, Sample, VideoFormat, AUDIO_TRACK, VIDEO_TIMESCALE, VIDEO_TRACK,
};
use super::playlist::{Entry, Playlist};
pub use crate::model::hls::{HlsPart, HlsSpec};
use crate::pipeline::bridge;
use gst::prelude::*;
use std::path::PathBuf;
use std::time::Duration;
use tracing::info;

/// Where the writer announces each file it finished.
pub(super) type OnFile<'a> = &'a dyn Fn(HlsFile);

/// A sample held for the segment being built (times in the track's timescale).
pub(super) struct Held {
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
pub(super) struct Writer {
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

pub(super) fn ticks(ns: u64, timescale: u32) -> u64 {
    ((ns as u128 * timescale as u128 + 500_000_000) / 1_000_000_000) as u64
}

pub(super) fn structure_bytes(caps: &gst::CapsRef, field: &str) -> Option<Vec<u8>> {
    let buf = caps.structure(0)?.get::<gst::Buffer>(field).ok()?;
    let map = buf.map_readable().ok()?;
    Some(map.as_slice().to_vec())
}

impl Writer {
    pub(super) fn new(
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
            shift: crate::pipeline::tap::priming(pipeline).nseconds(),
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

    pub(super) fn video(&mut self, sample: &gst::Sample, on_file: OnFile) -> Result<(), String> {
        let Some((buffer, caps)) = buffer_and_caps(sample) else {
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
                    pad.push_event(crate::pipeline::tap::force_key_unit_at(Some(at)));
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

    pub(super) fn audio(&mut self, sample: &gst::Sample, on_file: OnFile) -> Result<(), String> {
        let Some((buffer, caps)) = buffer_and_caps(sample) else {
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

    pub(super) fn target_ct(&self) -> gst::ClockTime {
        gst::ClockTime::from_nseconds(self.target.as_nanos() as u64)
    }

    pub(super) fn write(&self, name: &str, data: &[u8]) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        crate::util::write_atomic(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// Runs of the held samples; `next` is the decode time (ns) of what follows, if known.
    pub(super) fn runs(&mut self, next: Option<u64>) -> (Vec<Run>, f64) {
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
    pub(super) fn cut(&mut self, next: Option<u64>, on_file: OnFile) -> Result<(), String> {
        let first = if self.has_video {
            &self.video
        } else {
            &self.audio
        };
        let first_running = first.first().map(|h| h.running);
        if !self.init_written {
            let data =
                super::fmp4::init_segment(self.video_format.as_ref(), self.audio_format.as_ref());
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
        let data = super::fmp4::media_segment(sequence, &runs);
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
    pub(super) fn playlist_file(
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

    pub(super) fn file(
        &self,
        path: PathBuf,
        name: String,
        part: HlsPart,
        latency_ms: u64,
    ) -> HlsFile {
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
    pub(super) fn finish(&mut self, on_file: OnFile) -> Result<(), String> {
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

/// A sample's buffer and caps, when it has both (a sample without them is skipped).
fn buffer_and_caps(sample: &gst::Sample) -> Option<(&gst::BufferRef, &gst::CapsRef)> {
    Some((sample.buffer()?, sample.caps()?))
}

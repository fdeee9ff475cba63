//! Turning the fragmented recording into a normal MP4.
//!
//! While recording, `mp4mux` writes a fragmented MP4 (a `moof`+`mdat` pair every
//! [`super::composite::FRAGMENT_MS`]), so a process killed mid-recording leaves a file that plays up to
//! its last complete fragment. On a graceful stop [`finalize`] remuxes it (no re-encode) into a
//! plain MP4 with the `moov` index at the front, writes it beside the original, syncs it and
//! renames it over the original, so the file under the final name is playable at every moment.

use super::{make, PipelineError};
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Time allowed per 100 MB when remuxing (local disk streams far faster).
const REMUX_SECS_PER_100MB: u64 = 20;
/// Minimum time allowed for a remux.
const REMUX_MIN_SECS: u64 = 30;
/// How much of one track a remux holds while the other has no more samples (bytes): at a
/// 720p bitrate, over half an hour of one track running past the other.
const REMUX_QUEUE_BYTES: u32 = 512 * 1024 * 1024;

/// A finished recording file.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentFile {
    /// Where it is.
    pub path: PathBuf,
    /// Media duration.
    pub duration: gst::ClockTime,
    /// Size in bytes.
    pub bytes: u64,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> PipelineError {
    move |cause| PipelineError::Io { context, cause }
}

/// Whether the file holds any media: a fragment (`moof`) of a recording in progress, or a
/// finalized file's `moov` with a non-empty `mdat`. Reads box headers only.
pub fn holds_media(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (mut pos, mut moov, mut mdat) = (0u64, false, false);
    while pos + 8 <= len {
        let mut h = [0u8; 16];
        if f.seek(SeekFrom::Start(pos)).is_err() || f.read_exact(&mut h[..8]).is_err() {
            break;
        }
        let mut size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
        let kind = [h[4], h[5], h[6], h[7]];
        let mut header = 8;
        if size == 1 {
            if f.read_exact(&mut h[8..16]).is_err() {
                break;
            }
            size = u64::from_be_bytes(h[8..16].try_into().unwrap_or([0; 8]));
            header = 16;
        } else if size == 0 {
            size = len - pos;
        }
        if size < header {
            break;
        }
        match &kind {
            b"moof" if pos + size <= len => return !stub_of_a_track(&mut f, len),
            b"moov" => moov = true,
            b"mdat" if size > header => mdat = true,
            _ => {}
        }
        pos += size;
    }
    moov && mdat
}

/// Largest file still taken for a stub when one of its tracks never got a sample description.
const STUB_BYTES: u64 = 1024 * 1024;

/// Whether a small file's index names a track that never got a sample description: its
/// encoder had produced nothing when the recording stopped (a stop within a moment of the
/// start). No player or demuxer reads such a file, and under [`STUB_BYTES`] it holds a few
/// frames of the other track at most: it is no recording.
fn stub_of_a_track(f: &mut std::fs::File, len: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    if len > STUB_BYTES {
        return false;
    }
    let mut data = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_err() || f.read_to_end(&mut data).is_err() {
        return false;
    }
    let Some(moov) = moov(&data) else {
        return false;
    };
    boxes(&data, moov.0, moov.1)
        .into_iter()
        .filter(|(kind, _, _)| kind == b"trak")
        .any(|(_, from, to)| {
            let stsd = child(&data, (from, to), b"mdia")
                .and_then(|r| child(&data, r, b"minf"))
                .and_then(|r| child(&data, r, b"stbl"))
                .and_then(|r| child(&data, r, b"stsd"));
            // Version and flags (4 bytes), then the entry count.
            match stsd {
                Some((a, b)) if b >= a + 8 => be32(&data, a + 4) == 0,
                _ => true,
            }
        })
}

/// Remuxes `path` in place into a fast-start MP4 and returns what it holds.
pub fn finalize(path: &Path) -> Result<SegmentFile, PipelineError> {
    finalize_with_audio_delay(path, 0)
}

/// [`finalize`] for a file whose sound starts `audio_delay_ns` after its picture (negative:
/// before; at most one AAC frame later): the fragmented muxer starts every track at zero, so
/// the edit list moves the sound back to its place (by trimming less, or more, than the
/// encoder's priming).
pub fn finalize_with_audio_delay(
    path: &Path,
    audio_delay_ns: i64,
) -> Result<SegmentFile, PipelineError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.finalizing"));
    let scratch = dir.join(format!(".{name}.moov"));
    let duration = remux(path, &tmp, &scratch);
    let _ = std::fs::remove_file(&scratch);
    let duration = match duration {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    signal_aac_priming(&tmp, audio_delay_ns)?;
    let f = std::fs::File::open(&tmp).map_err(io(format!("opening {}", tmp.display())))?;
    f.sync_all()
        .map_err(io(format!("syncing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming {}", tmp.display())))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let bytes = std::fs::metadata(path)
        .map_err(io(format!("stat {}", path.display())))?
        .len();
    Ok(SegmentFile {
        path: path.to_path_buf(),
        duration,
        bytes,
    })
}

fn remux(src_path: &Path, out: &Path, scratch: &Path) -> Result<gst::ClockTime, PipelineError> {
    let size = std::fs::metadata(src_path)
        .map_err(io(format!("stat {}", src_path.display())))?
        .len();
    let pipeline = gst::Pipeline::with_name("finalize");
    let src = make("filesrc", "finalize_src")?;
    src.set_property("location", src_path.to_string_lossy().to_string());
    let demux = make("qtdemux", "finalize_demux")?;
    let mux = make("mp4mux", "finalize_mux")?;
    mux.set_property("faststart", true);
    mux.set_property("faststart-file", scratch.to_string_lossy().to_string());
    let sink = make("filesink", "finalize_sink")?;
    sink.set_property("location", out.to_string_lossy().to_string());
    pipeline
        .add_many([&src, &demux, &mux, &sink])
        .map_err(PipelineError::setup)?;
    src.link(&demux).map_err(PipelineError::setup)?;
    mux.link(&sink).map_err(PipelineError::setup)?;

    let end = Arc::new(AtomicU64::new(0));
    let pipeline_weak = pipeline.downgrade();
    let mux_weak = mux.downgrade();
    let end_probe = end.clone();
    demux.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(mux)) = (pipeline_weak.upgrade(), mux_weak.upgrade()) else {
            return;
        };
        let Ok(q) = make("queue", &format!("finalize_queue_{}", pad.name())) else {
            return;
        };
        if pipeline.add(&q).is_err() {
            return;
        }
        // A track that ended early (audio that fell behind while recording) leaves the other
        // track's samples waiting here until the demuxer reaches the end of the file: the
        // queue holds them up to REMUX_QUEUE_BYTES rather than a second of media.
        q.set_property("max-size-buffers", 0u32);
        q.set_property("max-size-time", 0u64);
        q.set_property("max-size-bytes", REMUX_QUEUE_BYTES);
        let _ = q.sync_state_with_parent();
        if let Some(qs) = q.static_pad("sink") {
            let _ = pad.link(&qs);
        }
        let _ = q.link(&mux);
        // qtdemux gives every track the movie's earliest start as segment start; a track that
        // starts a few microseconds earlier than another would have its first (key) frame
        // clipped by the muxer. Running time = timestamp keeps every sample.
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
            if let Some(gst::PadProbeData::Event(ref mut ev)) = info.data {
                if let gst::EventView::Segment(seg) = ev.view() {
                    if let Some(seg) = seg.segment().downcast_ref::<gst::ClockTime>() {
                        let mut seg = seg.clone();
                        seg.set_start(gst::ClockTime::ZERO);
                        seg.set_time(gst::ClockTime::ZERO);
                        *ev = gst::event::Segment::new(&seg);
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
        let end = end_probe.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(ref b)) = info.data {
                if let Some(pts) = b.pts() {
                    let stop = pts + b.duration().unwrap_or(gst::ClockTime::ZERO);
                    end.fetch_max(stop.nseconds(), Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    });

    pipeline
        .set_state(gst::State::Playing)
        .map_err(PipelineError::setup)?;
    let secs = REMUX_MIN_SECS + size / 100_000_000 * REMUX_SECS_PER_100MB;
    let result =
        super::bus::wait_eos_blocking(&pipeline, Duration::from_secs(secs), "finalize the MP4");
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    Ok(gst::ClockTime::from_nseconds(end.load(Ordering::Relaxed)))
}

/// The duration a finalized (fast-start) MP4 declares in its `mvhd`; None if the header
/// cannot be read.
pub fn duration(path: &Path) -> Option<gst::ClockTime> {
    let head = read_head(&mut std::fs::File::open(path).ok()?).ok()?;
    let (a, b) = child(&head, moov(&head)?, b"mvhd")?;
    let (timescale, units) = match head.get(a)? {
        0 if b >= a + 20 => (be32(&head, a + 12) as u64, be32(&head, a + 16) as u64),
        1 if b >= a + 32 => {
            let mut d = [0u8; 8];
            d.copy_from_slice(&head[a + 24..a + 32]);
            (be32(&head, a + 20) as u64, u64::from_be_bytes(d))
        }
        _ => return None,
    };
    if timescale == 0 {
        return None;
    }
    if units == 0 {
        // A fragmented file (one a run left behind) says nothing in its header: its
        // fragments do.
        return fragmented_duration(path, &head);
    }
    Some(ticks_to_time(units, timescale))
}

fn ticks_to_time(units: u64, timescale: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(
        (units as u128 * 1_000_000_000 / timescale.max(1) as u128).min(u64::MAX as u128) as u64,
    )
}

/// The length of a fragmented file: for each track, from its first fragment's decode time to
/// the end of its last sample (`tfdt` plus the `trun` sample durations, or the `tfhd`/`trex`
/// defaults), in its own timescale; the longest track. Reads the index and the fragments'
/// headers only.
fn fragmented_duration(path: &Path, head: &[u8]) -> Option<gst::ClockTime> {
    use std::collections::HashMap;
    use std::io::{Read, Seek, SeekFrom};
    let moov = moov(head)?;
    // Track id → (timescale, default sample duration).
    let mut tracks: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut defaults: HashMap<u32, u64> = HashMap::new();
    for (kind, a, b) in boxes(head, moov.0, moov.1) {
        if &kind == b"trak" {
            let tkhd = child(head, (a, b), b"tkhd")?;
            let id = match head[tkhd.0] {
                1 => be32(head, tkhd.0 + 20),
                _ => be32(head, tkhd.0 + 12),
            };
            let mdhd = child(head, (a, b), b"mdia").and_then(|m| child(head, m, b"mdhd"))?;
            let scale = match head[mdhd.0] {
                1 => be32(head, mdhd.0 + 20),
                _ => be32(head, mdhd.0 + 12),
            } as u64;
            tracks.insert(id, (scale, 0));
        } else if &kind == b"mvex" {
            for (k, ta, tb) in boxes(head, a, b) {
                if &k == b"trex" && tb >= ta + 16 {
                    defaults.insert(be32(head, ta + 4), be32(head, ta + 12) as u64);
                }
            }
        }
    }
    // Track id → (first decode time, end of the last sample).
    let mut spans: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut pos = 0u64;
    while pos + 8 <= len {
        let mut h = [0u8; 8];
        f.seek(SeekFrom::Start(pos)).ok()?;
        f.read_exact(&mut h).ok()?;
        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
        if size < 8 || pos + size > len {
            break;
        }
        if &h[4..8] == b"moof" && size < 16 * 1024 * 1024 {
            let mut moof = vec![0u8; size as usize];
            f.seek(SeekFrom::Start(pos)).ok()?;
            f.read_exact(&mut moof).ok()?;
            for (k, a, b) in boxes(&moof, 8, moof.len()) {
                if &k == b"traf" {
                    if let Some((id, start, end)) = fragment_span(&moof, (a, b), &defaults) {
                        let span = spans.entry(id).or_insert((start, end));
                        span.0 = span.0.min(start);
                        span.1 = span.1.max(end);
                    }
                }
            }
        }
        pos += size;
    }
    spans
        .iter()
        .filter_map(|(id, (start, end))| {
            let (scale, _) = tracks.get(id)?;
            Some(ticks_to_time(end.saturating_sub(*start), *scale))
        })
        .max()
}

/// One track fragment's track id, decode time and end (decode time plus its samples'
/// durations).
fn fragment_span(
    d: &[u8],
    traf: (usize, usize),
    defaults: &std::collections::HashMap<u32, u64>,
) -> Option<(u32, u64, u64)> {
    let tfhd = child(d, traf, b"tfhd")?;
    let flags = be32(d, tfhd.0) & 0x00ff_ffff;
    let id = be32(d, tfhd.0 + 4);
    let mut at = tfhd.0 + 8;
    if flags & 0x01 != 0 {
        at += 8;
    }
    if flags & 0x02 != 0 {
        at += 4;
    }
    let default = if flags & 0x08 != 0 && at + 4 <= tfhd.1 {
        be32(d, at) as u64
    } else {
        defaults.get(&id).copied().unwrap_or(0)
    };
    let start = match child(d, traf, b"tfdt") {
        Some((a, b)) if d[a] == 1 && b >= a + 12 => {
            let mut t = [0u8; 8];
            t.copy_from_slice(&d[a + 4..a + 12]);
            u64::from_be_bytes(t)
        }
        Some((a, b)) if b >= a + 8 => be32(d, a + 4) as u64,
        _ => 0,
    };
    let mut total = 0u64;
    for (k, a, b) in boxes(d, traf.0, traf.1) {
        if &k != b"trun" || b < a + 8 {
            continue;
        }
        let flags = be32(d, a) & 0x00ff_ffff;
        let count = be32(d, a + 4) as usize;
        let mut at = a + 8;
        if flags & 0x01 != 0 {
            at += 4;
        }
        if flags & 0x04 != 0 {
            at += 4;
        }
        let per = [0x100, 0x200, 0x400, 0x800]
            .iter()
            .filter(|f| flags & **f != 0)
            .count()
            * 4;
        for i in 0..count {
            let entry = at + i * per;
            total += if flags & 0x100 != 0 && entry + 4 <= b {
                be32(d, entry) as u64
            } else {
                default
            };
        }
    }
    Some((id, start, start + total))
}

/// Samples of encoder delay at the start of every `avenc_aac` stream.
pub const AAC_PRIMING_SAMPLES: u64 = 1024;

/// The front of a file, where a fast-start file's `moov` sits (up to the start of `mdat`):
/// at most 8 MiB.
fn read_head(f: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    f.take(8 * 1024 * 1024).read_to_end(&mut head)?;
    Ok(head)
}

/// The payload range of the top-level `moov` box in `head`.
fn moov(head: &[u8]) -> Option<(usize, usize)> {
    boxes(head, 0, head.len())
        .into_iter()
        .find(|(k, _, _)| k == b"moov")
        .map(|(_, a, b)| (a, b))
}

/// Top-level (or child) boxes of an ISO-BMFF byte range: (type, start, end of payload).
fn boxes(data: &[u8], from: usize, to: usize) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut i = from;
    while i + 8 <= to {
        let size = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
        let mut kind = [0u8; 4];
        kind.copy_from_slice(&data[i + 4..i + 8]);
        let (header, size) = match size {
            0 => (8, to - i),
            1 if i + 16 <= to => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[i + 8..i + 16]);
                (16, u64::from_be_bytes(b) as usize)
            }
            s => (8, s),
        };
        if size < header || i + size > to {
            break;
        }
        out.push((kind, i + header, i + size));
        i += size;
    }
    out
}

fn child(data: &[u8], range: (usize, usize), kind: &[u8; 4]) -> Option<(usize, usize)> {
    boxes(data, range.0, range.1)
        .into_iter()
        .find(|(k, _, _)| k == kind)
        .map(|(_, a, b)| (a, b))
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// The AAC encoder puts [`AAC_PRIMING_SAMPLES`] of silence before the first real sample, and
/// `mp4mux` does not say so: players would start the audio that much late. Like other MP4
/// writers, signal it in the audio track's edit list (media_time = priming, less
/// `audio_delay`), patching the single version-0 entry in place. Only the header is read;
/// the file is not rewritten.
fn signal_aac_priming(path: &Path, audio_delay_ns: i64) -> Result<(), PipelineError> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    let head = read_head(&mut f).map_err(io(format!("reading {}", path.display())))?;
    let Some((ms, me)) = moov(&head) else {
        return Ok(());
    };
    let movie_ts = child(&head, (ms, me), b"mvhd")
        .map(|(a, _)| be32(&head, a + 12))
        .unwrap_or(0);
    for (kind, ts, te) in boxes(&head, ms, me) {
        if &kind != b"trak" {
            continue;
        }
        let Some(mdia) = child(&head, (ts, te), b"mdia") else {
            continue;
        };
        let is_sound =
            child(&head, mdia, b"hdlr").is_some_and(|(a, _)| &head[a + 8..a + 12] == b"soun");
        let is_aac = child(&head, mdia, b"minf")
            .and_then(|m| child(&head, m, b"stbl"))
            .and_then(|s| child(&head, s, b"stsd"))
            .is_some_and(|(a, b)| b >= a + 16 && &head[a + 12..a + 16] == b"mp4a");
        let track_ts = child(&head, mdia, b"mdhd")
            .map(|(a, _)| be32(&head, a + 12))
            .unwrap_or(0);
        let Some(elst) = child(&head, (ts, te), b"edts").and_then(|e| child(&head, e, b"elst"))
        else {
            continue;
        };
        // version 0, one entry: segment_duration (u32), media_time (i32), rate.
        let (a, b) = elst;
        if !is_sound || !is_aac || track_ts == 0 || movie_ts == 0 || b < a + 20 {
            continue;
        }
        if head[a] != 0 || be32(&head, a + 4) != 1 || be32(&head, a + 12) != 0 {
            continue;
        }
        // mp4mux uses the sample rate as the audio track's timescale: priming is in samples.
        // At most one AAC frame of delay; an earlier start at most a second.
        let delay = (audio_delay_ns as i128 * track_ts as i128 / 1_000_000_000)
            .clamp(-(track_ts as i128), AAC_PRIMING_SAMPLES as i128);
        let priming = (AAC_PRIMING_SAMPLES as i128 - delay) as u64;
        let seg = be32(&head, a + 8) as u64;
        let seg = seg.saturating_sub(priming * movie_ts as u64 / track_ts as u64);
        let mut patch = [0u8; 8];
        patch[..4].copy_from_slice(&(seg as u32).to_be_bytes());
        patch[4..].copy_from_slice(&(priming as u32).to_be_bytes());
        f.seek(SeekFrom::Start((a + 8) as u64))
            .map_err(io(format!("seeking {}", path.display())))?;
        f.write_all(&patch)
            .map_err(io(format!("patching {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fragmented file as a run leaves it (no duration in its header): its length comes
    /// from the fragments.
    #[test]
    fn a_fragmented_files_length_is_read_from_its_fragments() {
        gst::init().unwrap();
        let dir = std::env::temp_dir().join(format!("roomcast-frag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.mp4");
        let desc = format!(
            "videotestsrc num-buffers=75 ! video/x-raw,width=160,height=120,framerate=25/1 ! \
             x264enc key-int-max=25 ! h264parse ! mp4mux fragment-duration=1000 streamable=true ! \
             filesink location={}",
            path.display()
        );
        let pipeline = gst::parse::launch(&desc).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        pipeline.set_state(gst::State::Null).unwrap();
        // Written as it went, never rewritten: the header's own length is zero.
        let head = read_head(&mut std::fs::File::open(&path).unwrap()).unwrap();
        let (a, _) = child(&head, moov(&head).unwrap(), b"mvhd").unwrap();
        assert_eq!(be32(&head, a + 16), 0, "the header states no length");
        let d = duration(&path).expect("a length");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            (d.mseconds() as i64 - 3000).abs() <= 40,
            "75 frames at 25 fps read as {d}"
        );
    }
}

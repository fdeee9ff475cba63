//! Turning the fragmented recording into a normal MP4.
//!
//! While recording, `mp4mux` writes a fragmented MP4 (a `moof`+`mdat` pair every
//! [`super::composite::FRAGMENT_MS`]), so a process killed mid-recording leaves a file that
//! plays up to its last complete fragment. On a graceful stop [`finalize`] writes the
//! fast-start form of it beside the original ([`faststart`]: the media bytes copied as they
//! are, a new `moov` index in front), syncs it and renames it over the original, so the file
//! under the final name is playable at every moment.

mod faststart;
mod fragments;

pub use faststart::{copy_region, plan, region_bytes, Layout};

use super::PipelineError;
use crate::pipeline::isobmff::{be32, boxes, child};
use std::path::{Path, PathBuf};

/// A finished recording file.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentFile {
    /// Where it is.
    pub path: PathBuf,
    /// Media duration.
    pub duration: gst::ClockTime,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 (hex) of the file, when its writer computed it as it wrote it.
    pub sha256: Option<String>,
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
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.finalizing"));
    let layout = layout_of(path, audio_delay_ns)?;
    // Hashed as it is written: delivery needs the file's SHA-256, and an hour at a real
    // bitrate is a gigabyte not to read again.
    let written = (|| {
        let file = std::io::BufWriter::with_capacity(1024 * 1024, std::fs::File::create(&tmp)?);
        let mut out = Hashing(file, sha2::Sha256::default());
        faststart::write(path, &layout, &mut out)?;
        out.flush()?;
        out.0.get_ref().sync_all()?;
        Ok::<_, std::io::Error>(crate::util::hex(&sha2::Digest::finalize(out.1)))
    })();
    let sha256 = match written {
        Ok(sha) => sha,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(format!("writing {}", tmp.display()))(e));
        }
    };
    std::fs::rename(&tmp, path).map_err(io(format!("renaming {}", tmp.display())))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(SegmentFile {
        path: path.to_path_buf(),
        duration: layout.duration,
        bytes: layout.output_len(),
        sha256: Some(sha256),
    })
}

/// A writer that hashes what goes through it.
struct Hashing<W>(W, sha2::Sha256);

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        sha2::Digest::update(&mut self.1, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The fast-start form of the fragmented file at `path` (see [`faststart`]).
pub fn layout_of(path: &Path, audio_delay_ns: i64) -> Result<Layout, PipelineError> {
    let head = std::fs::File::open(path)
        .and_then(|mut f| read_head(&mut f))
        .map_err(io(format!("reading {}", path.display())))?;
    faststart::plan(path, &head, audio_delay_ns)
        .map_err(io(format!("reading the fragments of {}", path.display())))?
        .ok_or_else(|| {
            io(format!("reading {}", path.display()))(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no whole fragment",
            ))
        })
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

/// The length of a fragmented file (no length in its header): its longest track, from the
/// fragments' headers.
fn fragmented_duration(path: &Path, head: &[u8]) -> Option<gst::ClockTime> {
    faststart::plan(path, head, 0)
        .ok()
        .flatten()
        .map(|l| l.duration)
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

#[cfg(test)]
mod tests {
    use super::*;
    use gst::prelude::*;

    /// Runs a `gst-launch` description until its end (at most 30 s).
    fn run_to_end(desc: &str) {
        let pipeline = gst::parse::launch(desc).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        pipeline.set_state(gst::State::Null).unwrap();
    }

    /// Records `frames` of 25 fps video and its sound into a fragmented file, as a run does.
    fn fragmented(path: &Path, frames: u32) {
        gst::init().unwrap();
        let desc = format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,width=160,height=120,framerate=25/1 ! \
             x264enc key-int-max=25 ! h264parse ! mux. \
             audiotestsrc num-buffers={} samplesperbuffer=1920 ! audio/x-raw,rate=48000 ! \
             avenc_aac ! aacparse ! mux. \
             mp4mux name=mux fragment-duration=1000 streamable=true ! filesink location={}",
            frames,
            path.display()
        );
        run_to_end(&desc);
    }

    /// The fast-start form: index first, every fragment header renamed, every sample's offset
    /// on its bytes, and any part of it can be produced from the fragmented file alone.
    #[test]
    fn a_fast_start_file_indexes_the_fragments_media_where_it_lies() {
        let dir = std::env::temp_dir().join(format!("roomcast-fast-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.mp4");
        fragmented(&path, 100);
        let source = std::fs::read(&path).unwrap();
        let layout = layout_of(&path, 0).unwrap();
        // Any range of the media region, copied alone, is what the whole file holds there.
        let (a, b) = layout.fragments.region;
        let cut = (a + (b - a) / 3, a + (b - a) * 2 / 3);
        let mut part = Vec::new();
        copy_region(&path, &layout, cut, &mut part).unwrap();
        // And the media region read while recording is what the finished file holds.
        let early = region_bytes(&path, layout.fragments.region).unwrap();
        let seg = finalize(&path).unwrap();
        let out = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(seg.bytes, out.len() as u64);
        assert_eq!(
            seg.sha256.as_deref(),
            Some(crate::util::sha256_hex(&out).as_str()),
            "the SHA-256 taken while writing"
        );
        let at = layout.output_offset(cut.0) as usize;
        assert_eq!(
            &out[at..at + part.len()],
            &part[..],
            "a range copied alone differs"
        );
        assert_eq!(
            &out[layout.head.len()..],
            &early[..],
            "the region read early differs"
        );
        let kinds: Vec<[u8; 4]> = boxes(&out, 0, out.len()).iter().map(|b| b.0).collect();
        assert_eq!(&kinds[..2], &[*b"ftyp", *b"moov"]);
        assert!(
            kinds[2..].iter().all(|k| k == b"free" || k == b"mdat"),
            "{kinds:?}"
        );
        assert!(out.len() as u64 >= source.len() as u64 - 64 * 1024);
        assert!(
            (seg.duration.mseconds() as i64 - 4000).abs() <= 60,
            "100 frames at 25 fps last {}",
            seg.duration
        );
        // Every chunk offset points inside an mdat payload.
        let mdats: Vec<(usize, usize)> = boxes(&out, 0, out.len())
            .into_iter()
            .filter(|b| &b.0 == b"mdat")
            .map(|b| (b.1, b.2))
            .collect();
        let moov = moov(&out).unwrap();
        let mut checked = 0;
        for (k, ta, tb) in boxes(&out, moov.0, moov.1) {
            if &k != b"trak" {
                continue;
            }
            let stco = child(&out, (ta, tb), b"mdia")
                .and_then(|r| child(&out, r, b"minf"))
                .and_then(|r| child(&out, r, b"stbl"))
                .and_then(|r| child(&out, r, b"stco"))
                .unwrap();
            for i in 0..be32(&out, stco.0 + 4) as usize {
                let off = be32(&out, stco.0 + 8 + 4 * i) as usize;
                assert!(mdats.iter().any(|(s, e)| off >= *s && off < *e), "{off}");
                checked += 1;
            }
        }
        assert!(checked >= 8, "{checked} chunks");
    }

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
        run_to_end(&desc);
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

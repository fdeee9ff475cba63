//! Reading a fragmented MP4's samples from its fragment headers.
//!
//! Every `moof` says, per track, where its samples' bytes are (relative to the `moof`),
//! how long each lasts, how big it is and whether it is a sync sample. Read in order they
//! give each track's complete sample table without touching the media. A file a killed run
//! left behind may end inside a fragment: reading stops at the last fragment whose header
//! and media are both whole.

use crate::pipeline::isobmff::{be32, be64, boxes, child, header_at};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Largest fragment header read (a second of 60 fps video needs a few kilobytes).
const MAX_MOOF_BYTES: u64 = 16 * 1024 * 1024;

/// One sample: its size, duration, whether it is a sync sample, composition offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub size: u32,
    pub duration: u32,
    pub sync: bool,
    pub cts_offset: i32,
}

/// One track's samples, in decode order, and the runs of contiguous bytes they lie in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    /// Decode time of the first sample, in the track's timescale.
    pub first_dts: Option<u64>,
    pub samples: Vec<Sample>,
    /// (offset in the file, number of samples): one per `trun`.
    pub chunks: Vec<(u64, u32)>,
}

impl Track {
    /// Sum of the sample durations.
    pub fn duration(&self) -> u64 {
        self.samples.iter().map(|s| s.duration as u64).sum()
    }
}

/// What the fragments of a file hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fragments {
    /// Track id → samples.
    pub tracks: BTreeMap<u32, Track>,
    /// Byte range from the first `moof` to the end of the last whole fragment.
    pub region: (u64, u64),
    /// Offsets of the `moof` boxes in `region`.
    pub moofs: Vec<u64>,
    /// Bytes to overwrite when copying `region` (offset, bytes), in order: each `moof`'s type
    /// (made `free`), and the size of a last `mdat` that a killed run left short (made what
    /// the file holds).
    pub patches: Vec<(u64, Vec<u8>)>,
}

/// Per-track defaults of the `trex` boxes: (sample duration, size, flags).
type Defaults = BTreeMap<u32, (u32, u32, u32)>;

/// The `trex` defaults of an initialization `moov` payload range.
pub fn defaults(head: &[u8], moov: (usize, usize)) -> Defaults {
    let mut out = Defaults::new();
    if let Some(mvex) = child(head, moov, b"mvex") {
        for (k, a, b) in boxes(head, mvex.0, mvex.1) {
            if &k == b"trex" && b >= a + 24 {
                out.insert(
                    be32(head, a + 4),
                    (be32(head, a + 12), be32(head, a + 16), be32(head, a + 20)),
                );
            }
        }
    }
    out
}

/// Reads the fragments of the file at `path`, whose `moov` ends at `from`.
pub fn read(path: &Path, from: u64, defaults: &Defaults) -> std::io::Result<Fragments> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut out = Fragments {
        region: (from, from),
        ..Fragments::default()
    };
    let mut pos = from;
    let mut pending: Option<(u64, Vec<(u32, Track)>)> = None;
    while pos + 8 <= len {
        let Some(h) = header_at(&f, pos) else {
            break;
        };
        let (kind, header) = (h.kind, h.len);
        let size = if h.size == 0 { len - pos } else { h.size };
        if size < header {
            break;
        }
        let short = pos + size > len;
        if short && &kind != b"mdat" {
            break;
        }
        if &kind == b"moof" {
            if size > MAX_MOOF_BYTES {
                break;
            }
            let mut moof = vec![0u8; size as usize];
            f.seek(SeekFrom::Start(pos))?;
            f.read_exact(&mut moof)?;
            let Some(runs) = parse_moof(&moof, pos, defaults) else {
                break;
            };
            if out.moofs.is_empty() {
                out.region = (pos, pos);
            }
            pending = Some((pos, runs));
        } else if &kind == b"mdat" {
            // A fragment counts once its samples lie in its media box, all of them, or (a
            // box a killed run left short, the file's end) those that the file holds whole.
            let Some((moof_at, mut runs)) = pending.take() else {
                if short {
                    break;
                }
                pos += size;
                continue;
            };
            let end = (pos + size).min(len);
            for (_, t) in runs.iter_mut() {
                if !t.chunks.iter().all(|(at, _)| *at >= moof_at) {
                    t.samples.clear();
                    t.chunks.clear();
                }
                keep_within(t, end);
            }
            let whole: usize = runs.iter().map(|(_, t)| t.samples.len()).sum();
            if short && whole == 0 {
                break;
            }
            for (id, t) in runs {
                let track = out.tracks.entry(id).or_default();
                track.first_dts = track.first_dts.or(t.first_dts);
                track.samples.extend(t.samples);
                track.chunks.extend(t.chunks);
            }
            out.moofs.push(moof_at);
            out.patches.push((moof_at + 4, b"free".to_vec()));
            out.region.1 = end;
            if short {
                let fixed = end - pos;
                out.patches.push(if header == 16 {
                    (pos + 8, fixed.to_be_bytes().to_vec())
                } else {
                    (pos, (fixed as u32).to_be_bytes().to_vec())
                });
                break;
            }
        }
        pos += size;
    }
    Ok(out)
}

/// Keeps the samples of a fragment's track run whose bytes end by `end` (all of a whole
/// fragment's), dropping the rest and every later one.
fn keep_within(t: &mut Track, end: u64) {
    let mut kept = 0usize;
    let mut chunks = Vec::new();
    for (at, n) in t.chunks.clone() {
        let mut pos = at;
        let mut here = 0u32;
        for s in &t.samples[kept..kept + n as usize] {
            if pos + s.size as u64 > end {
                break;
            }
            pos += s.size as u64;
            here += 1;
        }
        if here > 0 {
            chunks.push((at, here));
        }
        kept += here as usize;
        if here < n {
            break;
        }
    }
    t.samples.truncate(kept);
    t.chunks = chunks;
}

/// The track runs of one `moof` (at file offset `at`); None if its header is malformed.
fn parse_moof(d: &[u8], at: u64, defaults: &Defaults) -> Option<Vec<(u32, Track)>> {
    let mut out = Vec::new();
    let mut next_base = at;
    for (kind, a, b) in boxes(d, 8, d.len()) {
        if &kind != b"traf" {
            continue;
        }
        let (id, track, end) = parse_traf(d, (a, b), at, next_base, defaults)?;
        next_base = end;
        out.push((id, track));
    }
    Some(out)
}

/// One `traf`: its track id, samples and the end of its data.
fn parse_traf(
    d: &[u8],
    traf: (usize, usize),
    moof_at: u64,
    implicit_base: u64,
    defaults: &Defaults,
) -> Option<(u32, Track, u64)> {
    let tfhd = child(d, traf, b"tfhd")?;
    if tfhd.1 < tfhd.0 + 8 {
        return None;
    }
    let flags = be32(d, tfhd.0) & 0x00ff_ffff;
    let id = be32(d, tfhd.0 + 4);
    let (mut dur, mut size, mut sflags) = defaults.get(&id).copied().unwrap_or((0, 0, 0));
    let mut p = tfhd.0 + 8;
    let mut field = |present: bool, width: usize| -> Option<Option<usize>> {
        if !present {
            return Some(None);
        }
        if p + width > tfhd.1 {
            return None;
        }
        p += width;
        Some(Some(p - width))
    };
    let base = match field(flags & 0x01 != 0, 8)? {
        Some(q) => be64(d, q),
        None if flags & 0x02_0000 != 0 => moof_at,
        None => implicit_base,
    };
    field(flags & 0x02 != 0, 4)?;
    if let Some(q) = field(flags & 0x08 != 0, 4)? {
        dur = be32(d, q);
    }
    if let Some(q) = field(flags & 0x10 != 0, 4)? {
        size = be32(d, q);
    }
    if let Some(q) = field(flags & 0x20 != 0, 4)? {
        sflags = be32(d, q);
    }
    let first_dts = match child(d, traf, b"tfdt") {
        Some((a, b)) if d[a] == 1 && b >= a + 12 => Some(be64(d, a + 4)),
        Some((a, b)) if b >= a + 8 => Some(be32(d, a + 4) as u64),
        _ => None,
    };
    let mut track = Track {
        first_dts,
        ..Track::default()
    };
    let mut data_end = base;
    for (kind, a, b) in boxes(d, traf.0, traf.1) {
        if &kind != b"trun" || b < a + 8 {
            continue;
        }
        let tflags = be32(d, a) & 0x00ff_ffff;
        let count = be32(d, a + 4) as usize;
        let mut q = a + 8;
        let mut start = data_end;
        if tflags & 0x01 != 0 {
            start = base.checked_add_signed(be32(d, q) as i32 as i64)?;
            q += 4;
        }
        let mut first_flags = None;
        if tflags & 0x04 != 0 {
            first_flags = Some(be32(d, q));
            q += 4;
        }
        let per = [0x100, 0x200, 0x400, 0x800]
            .iter()
            .filter(|f| tflags & **f != 0)
            .count()
            * 4;
        if q + per * count > b {
            return None;
        }
        let mut bytes = 0u64;
        for i in 0..count {
            let mut e = q + i * per;
            let mut take = |present: bool| {
                present.then(|| {
                    e += 4;
                    be32(d, e - 4)
                })
            };
            let s_dur = take(tflags & 0x100 != 0).unwrap_or(dur);
            let s_size = take(tflags & 0x200 != 0).unwrap_or(size);
            let s_flags = take(tflags & 0x400 != 0)
                .or(if i == 0 { first_flags } else { None })
                .unwrap_or(sflags);
            let cts = take(tflags & 0x800 != 0).unwrap_or(0) as i32;
            bytes += s_size as u64;
            track.samples.push(Sample {
                size: s_size,
                duration: s_dur,
                // sample_is_non_sync_sample
                sync: s_flags & 0x0001_0000 == 0,
                cts_offset: cts,
            });
        }
        if count > 0 {
            track.chunks.push((start, count as u32));
        }
        data_end = start + bytes;
    }
    Some((id, track, data_end))
}

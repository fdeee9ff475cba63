//! A fast-start MP4 from a fragmented one, without demuxing or decoding.
//!
//! The fragments' media stays byte for byte where it is, in the same order; each `moof` is
//! renamed `free` (players skip it) and a new `moov` in front indexes every sample with its
//! absolute offset. The result is an ordinary MP4 with its index first: it plays before it
//! has downloaded and seeks with one range request. Writing it costs one sequential copy of
//! the file, and the bytes after the index are known while the recording is still going
//! (see [`Layout::output_offset`]), so they can be uploaded before the stop.

use super::fragments::{self, Fragments, Sample, Track};
use super::AAC_PRIMING_SAMPLES;
use crate::pipeline::isobmff::{be32, boxes, bx, child, full, put_u32, put_u64};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Where a fragmented file's parts go in its fast-start form.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// `ftyp` + `moov` of the fast-start file.
    pub head: Vec<u8>,
    /// What the fragments hold.
    pub fragments: Fragments,
    /// Longest track, from zero to its last sample's end.
    pub duration: gst::ClockTime,
}

impl Layout {
    /// Where a byte of the fragmented file's media region is in the fast-start file.
    pub fn output_offset(&self, source_offset: u64) -> u64 {
        self.head.len() as u64 + source_offset - self.fragments.region.0
    }

    /// Size of the fast-start file.
    pub fn output_len(&self) -> u64 {
        self.output_offset(self.fragments.region.1)
    }
}

/// Reads the fragmented file at `path` and plans its fast-start form. `audio_delay_ns`: how
/// long after the picture the sound starts (negative: before), put back by the sound's edit
/// list. None if the file holds no whole fragment.
pub fn plan(path: &Path, head: &[u8], audio_delay_ns: i64) -> std::io::Result<Option<Layout>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let top = boxes(head, 0, head.len());
    let (_, ms, me) = *top
        .iter()
        .find(|(k, _, _)| k == b"moov")
        .ok_or_else(|| bad("no moov"))?;
    let frags = fragments::read(path, me as u64, &fragments::defaults(head, (ms, me)))?;
    if frags.moofs.is_empty() || frags.tracks.values().all(|t| t.samples.is_empty()) {
        return Ok(None);
    }
    let movie_ts = child(head, (ms, me), b"mvhd")
        .map(|m| timescale_of(head, m, 12, 20))
        .filter(|t| *t > 0)
        .ok_or_else(|| bad("no movie timescale"))?;
    // The offsets' width depends on the file's size, never on their values: build once to
    // learn the index's size, then again with the real offsets.
    let region_len = frags.region.1 - frags.region.0;
    let wide = region_len + 64 * 1024 * 1024 > u32::MAX as u64;
    let (moov, duration) = build_moov(head, (ms, me), &frags, movie_ts, audio_delay_ns, 0, wide)?;
    let ftyp = ftyp(head, (ms, me));
    let shift = (ftyp.len() + moov.len()) as u64;
    let (moov, _) = build_moov(
        head,
        (ms, me),
        &frags,
        movie_ts,
        audio_delay_ns,
        shift,
        wide,
    )?;
    Ok(Some(Layout {
        head: [ftyp, moov].concat(),
        fragments: frags,
        duration,
    }))
}

/// Writes the fast-start file: the head, then the media region with every `moof` renamed.
/// ([`Fragments::patches`]).
pub fn write(source: &Path, layout: &Layout, out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(&layout.head)?;
    copy_region(source, layout, layout.fragments.region, out)
}

/// Copies `range` of the source's media region as it reads in the fast-start file.
pub fn copy_region(
    source: &Path,
    layout: &Layout,
    range: (u64, u64),
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut f = std::fs::File::open(source)?;
    f.seek(SeekFrom::Start(range.0))?;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut pos = range.0;
    let patches = &layout.fragments.patches;
    while pos < range.1 {
        let n = ((range.1 - pos) as usize).min(buf.len());
        f.read_exact(&mut buf[..n])?;
        let window_end = pos + n as u64;
        // The patches (renamed fragment headers, a short box's size) that show in this buffer.
        let first = patches.partition_point(|(at, b)| at + b.len() as u64 <= pos);
        for (at, bytes) in patches[first..]
            .iter()
            .take_while(|(at, _)| *at < window_end)
        {
            for (i, c) in bytes.iter().enumerate() {
                let at = at + i as u64;
                if at >= pos && at < window_end {
                    buf[(at - pos) as usize] = *c;
                }
            }
        }
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

/// `range` of a fragmented file that is still being written, as it will read in its
/// fast-start form ([`copy_region`] once it is finished): every `moof` renamed `free`.
/// `range` starts and ends at box boundaries.
pub fn region_bytes(source: &Path, range: (u64, u64)) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(source)?;
    let mut buf = vec![0u8; (range.1 - range.0) as usize];
    f.read_exact_at(&mut buf, range.0)?;
    let mut start = 0;
    for (kind, _, end) in boxes(&buf, 0, buf.len()) {
        if &kind == b"moof" {
            buf[start + 4..start + 8].copy_from_slice(b"free");
        }
        start = end;
    }
    Ok(buf)
}

fn ftyp(head: &[u8], moov: (usize, usize)) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(b"isom");
    put_u32(&mut p, 512);
    for b in [b"isom", b"iso2", b"mp41"] {
        p.extend_from_slice(b);
    }
    if head[moov.0..moov.1].windows(4).any(|w| w == b"avc1") {
        p.extend_from_slice(b"avc1");
    }
    bx(b"ftyp", &p)
}

/// A timescale in a version 0 (`v0_at`) or version 1 (`v1_at`) header box.
fn timescale_of(d: &[u8], r: (usize, usize), v0_at: usize, v1_at: usize) -> u64 {
    let at = if d[r.0] == 1 { v1_at } else { v0_at };
    if r.0 + at + 4 > r.1 {
        return 0;
    }
    be32(d, r.0 + at) as u64
}

/// A version 1 copy of a `mvhd`/`tkhd`/`mdhd` with `duration`: the fields before the
/// duration (times widened to 64 bits) and everything after it kept.
fn with_duration(kind: &[u8; 4], d: &[u8], r: (usize, usize), duration: u64) -> Vec<u8> {
    let (v, flags) = (d[r.0], be32(d, r.0) & 0x00ff_ffff);
    // Bytes between the two times and the duration: timescale (mvhd, mdhd) or track id
    // and a reserved word (tkhd).
    let middle = if kind == b"tkhd" { 8 } else { 4 };
    let mut p = Vec::new();
    let (times, rest_at) = if v == 1 {
        (r.0 + 4, r.0 + 4 + 16 + middle + 8)
    } else {
        (r.0 + 4, r.0 + 4 + 8 + middle + 4)
    };
    if v == 1 {
        p.extend_from_slice(&d[times..times + 16 + middle]);
    } else {
        put_u64(&mut p, be32(d, times) as u64);
        put_u64(&mut p, be32(d, times + 4) as u64);
        p.extend_from_slice(&d[times + 8..times + 8 + middle]);
    }
    put_u64(&mut p, duration);
    p.extend_from_slice(&d[rest_at.min(r.1)..r.1]);
    full(kind, 1, flags, &p)
}

fn scale(v: u64, from: u64, to: u64) -> u64 {
    (v as u128 * to as u128 / from.max(1) as u128) as u64
}

#[allow(clippy::too_many_arguments)]
fn build_moov(
    head: &[u8],
    moov: (usize, usize),
    frags: &Fragments,
    movie_ts: u64,
    audio_delay_ns: i64,
    shift: u64,
    wide: bool,
) -> std::io::Result<(Vec<u8>, gst::ClockTime)> {
    let mut traks = Vec::new();
    let mut others = Vec::new();
    let mut movie_duration = 0u64;
    let mut end = gst::ClockTime::ZERO;
    for (kind, a, b) in boxes(head, moov.0, moov.1) {
        match &kind {
            b"mvhd" | b"mvex" => {}
            b"trak" => {
                let Some(built) = trak(head, (a, b), frags, movie_ts, audio_delay_ns, shift, wide)
                else {
                    continue;
                };
                movie_duration = movie_duration.max(built.movie_duration);
                end = end.max(built.end);
                traks.push(built.bytes);
            }
            _ => others.push(head[a - 8..b].to_vec()),
        }
    }
    let mvhd = child(head, moov, b"mvhd").expect("checked by the caller");
    let mut payload = with_duration(b"mvhd", head, mvhd, movie_duration);
    payload.extend(traks.concat());
    payload.extend(others.concat());
    Ok((bx(b"moov", &payload), end))
}

struct BuiltTrak {
    bytes: Vec<u8>,
    movie_duration: u64,
    end: gst::ClockTime,
}

fn trak(
    d: &[u8],
    r: (usize, usize),
    frags: &Fragments,
    movie_ts: u64,
    audio_delay_ns: i64,
    shift: u64,
    wide: bool,
) -> Option<BuiltTrak> {
    let tkhd = child(d, r, b"tkhd")?;
    let id = be32(d, tkhd.0 + if d[tkhd.0] == 1 { 20 } else { 12 });
    let track = frags.tracks.get(&id).filter(|t| !t.samples.is_empty())?;
    let mdia = child(d, r, b"mdia")?;
    let mdhd = child(d, mdia, b"mdhd")?;
    let ts = timescale_of(d, mdhd, 12, 20).max(1);
    let minf = child(d, mdia, b"minf")?;
    let stbl = child(d, minf, b"stbl")?;
    let stsd = child(d, stbl, b"stsd")?;
    let sound =
        child(d, mdia, b"hdlr").is_some_and(|(a, b)| b >= a + 12 && &d[a + 8..a + 12] == b"soun");
    let aac = stsd.1 >= stsd.0 + 16 && &d[stsd.0 + 12..stsd.0 + 16] == b"mp4a";
    let media_duration = track.duration();
    let first = track.first_dts.unwrap_or(0);
    // The AAC encoder's priming, less the sound's delay (at most one AAC frame later, at
    // most a second earlier), is trimmed by the edit list, as other MP4 writers signal it.
    let skip = if sound && aac {
        let delay = (audio_delay_ns as i128 * ts as i128 / 1_000_000_000)
            .clamp(-(ts as i128), AAC_PRIMING_SAMPLES as i128);
        (AAC_PRIMING_SAMPLES as i128 - delay) as u64
    } else {
        0
    };
    let shown = scale(media_duration.saturating_sub(skip), ts, movie_ts);
    // A normal MP4's samples start at zero: a track whose first fragment starts later
    // keeps its place behind an empty edit.
    let empty = scale(first, ts, movie_ts);
    let mut elst = Vec::new();
    put_u32(&mut elst, if empty > 0 { 2 } else { 1 });
    if empty > 0 {
        put_u64(&mut elst, empty);
        put_u64(&mut elst, u64::MAX);
        put_u32(&mut elst, 0x0001_0000);
    }
    put_u64(&mut elst, shown);
    put_u64(&mut elst, skip);
    put_u32(&mut elst, 0x0001_0000);
    let movie_duration = empty + shown;
    let edts = bx(b"edts", &full(b"elst", 1, 0, &elst));

    let table = stbl_box(d, stsd, track, frags.region.0, shift, wide);
    let mut minf_p = Vec::new();
    for (k, a, b) in boxes(d, minf.0, minf.1) {
        if &k == b"stbl" {
            minf_p.extend(&table);
        } else {
            minf_p.extend_from_slice(&d[a - 8..b]);
        }
    }
    let mut mdia_p = Vec::new();
    for (k, a, b) in boxes(d, mdia.0, mdia.1) {
        match &k {
            b"mdhd" => mdia_p.extend(with_duration(b"mdhd", d, (a, b), media_duration)),
            b"minf" => mdia_p.extend(bx(b"minf", &minf_p)),
            _ => mdia_p.extend_from_slice(&d[a - 8..b]),
        }
    }
    let mut p = with_duration(b"tkhd", d, tkhd, movie_duration);
    p.extend(edts);
    for (k, a, b) in boxes(d, r.0, r.1) {
        match &k {
            b"tkhd" | b"edts" => {}
            b"mdia" => p.extend(bx(b"mdia", &mdia_p)),
            _ => p.extend_from_slice(&d[a - 8..b]),
        }
    }
    Some(BuiltTrak {
        bytes: bx(b"trak", &p),
        movie_duration,
        end: gst::ClockTime::from_nseconds(scale(first + media_duration, ts, 1_000_000_000)),
    })
}

/// The sample table: the original sample descriptions, then times, sync samples, chunks,
/// sizes and offsets.
fn stbl_box(
    d: &[u8],
    stsd: (usize, usize),
    t: &Track,
    region_start: u64,
    shift: u64,
    wide: bool,
) -> Vec<u8> {
    let s = &t.samples;
    let mut p = d[stsd.0 - 8..stsd.1].to_vec();
    p.extend(runs(b"stts", s, |x| x.duration));
    if s.iter().any(|x| x.cts_offset != 0) {
        p.extend(runs(b"ctts", s, |x| x.cts_offset as u32));
    }
    if s.iter().any(|x| !x.sync) {
        let sync: Vec<u32> = (1..=s.len() as u32)
            .filter(|i| s[*i as usize - 1].sync)
            .collect();
        let mut q = Vec::new();
        put_u32(&mut q, sync.len() as u32);
        sync.iter().for_each(|i| put_u32(&mut q, *i));
        p.extend(full(b"stss", 0, 0, &q));
    }
    // Chunks: a new stsc entry wherever the samples per chunk change.
    let mut stsc = Vec::new();
    let mut entries = 0u32;
    let mut last = None;
    for (i, (_, n)) in t.chunks.iter().enumerate() {
        if last != Some(*n) {
            put_u32(&mut stsc, i as u32 + 1);
            put_u32(&mut stsc, *n);
            put_u32(&mut stsc, 1);
            entries += 1;
            last = Some(*n);
        }
    }
    let mut q = Vec::new();
    put_u32(&mut q, entries);
    q.extend(stsc);
    p.extend(full(b"stsc", 0, 0, &q));
    let mut q = Vec::new();
    put_u32(&mut q, 0);
    put_u32(&mut q, s.len() as u32);
    s.iter().for_each(|x| put_u32(&mut q, x.size));
    p.extend(full(b"stsz", 0, 0, &q));
    let mut q = Vec::new();
    put_u32(&mut q, t.chunks.len() as u32);
    for (at, _) in &t.chunks {
        let off = at - region_start + shift;
        if wide {
            put_u64(&mut q, off);
        } else {
            put_u32(&mut q, off as u32);
        }
    }
    p.extend(full(if wide { b"co64" } else { b"stco" }, 0, 0, &q));
    bx(b"stbl", &p)
}

/// A run-length table (`stts`, `ctts`) of one field of the samples.
fn runs(kind: &[u8; 4], s: &[Sample], field: impl Fn(&Sample) -> u32) -> Vec<u8> {
    let mut q = Vec::new();
    let mut count = 0u32;
    let mut current: Option<(u32, u32)> = None;
    for x in s {
        let v = field(x);
        match current {
            Some((n, cv)) if cv == v => current = Some((n + 1, cv)),
            Some((n, cv)) => {
                put_u32(&mut q, n);
                put_u32(&mut q, cv);
                count += 1;
                current = Some((1, v));
            }
            None => current = Some((1, v)),
        }
    }
    if let Some((n, v)) = current {
        put_u32(&mut q, n);
        put_u32(&mut q, v);
        count += 1;
    }
    let mut p = Vec::new();
    put_u32(&mut p, count);
    p.extend(q);
    // Version 1 ctts: signed offsets.
    full(kind, u8::from(kind == b"ctts"), 0, &p)
}

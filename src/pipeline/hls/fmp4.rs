//! Fragmented MP4 (CMAF) for HLS: one initialization segment (`ftyp` + `moov` describing an
//! H.264 and/or an AAC track, no samples) and media segments (`styp` + one `moof` with a
//! `traf` per track + one `mdat`), each segment starting on a video keyframe.
//!
//! Written here rather than by `mp4mux`: its fragments are cut at fixed durations per track,
//! not at keyframes, so they cannot be HLS segments; and GStreamer 1.22 has no CMAF muxer.

use crate::pipeline::isobmff::{bx, full, put_u16, put_u32};

/// Track id of the video track (when there is one).
pub const VIDEO_TRACK: u32 = 1;
/// Track id of the audio track.
pub const AUDIO_TRACK: u32 = 2;
/// Timescale of the video track (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// The video track's format: H.264 in AVC form (length-prefixed NAL units).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFormat {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// The `avcC` record (the caps' `codec_data`).
    pub avcc: Vec<u8>,
}

/// The audio track's format: raw AAC.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFormat {
    /// Sample rate (also the track's timescale).
    pub rate: u32,
    /// Channels.
    pub channels: u32,
    /// The AudioSpecificConfig (the caps' `codec_data`).
    pub asc: Vec<u8>,
}

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Presentation minus decode time, in the track's timescale.
    pub cts_offset: i32,
    /// A sync sample (keyframe; every audio frame).
    pub sync: bool,
    /// The coded bytes.
    pub data: Vec<u8>,
}

/// One track's run of samples in a fragment.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Track id.
    pub track: u32,
    /// Decode time of the first sample, in the track's timescale.
    pub decode_time: u64,
    /// The samples, in decode order.
    pub samples: Vec<Sample>,
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// The unity transformation matrix of `mvhd` and `tkhd`.
fn matrix(out: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        put_u32(out, v);
    }
}

fn mvhd(next_track: u32) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, 0); // creation time
    put_u32(&mut p, 0); // modification time
    put_u32(&mut p, 1000); // timescale
    put_u32(&mut p, 0); // duration: unknown (fragmented)
    put_u32(&mut p, 0x0001_0000); // rate 1.0
    put_u16(&mut p, 0x0100); // volume 1.0
    p.extend_from_slice(&[0; 10]);
    matrix(&mut p);
    p.extend_from_slice(&[0; 24]); // pre_defined
    put_u32(&mut p, next_track);
    full(b"mvhd", 0, 0, &p)
}

fn tkhd(track: u32, audio: bool, width: u32, height: u32) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, 0);
    put_u32(&mut p, 0);
    put_u32(&mut p, track);
    put_u32(&mut p, 0); // reserved
    put_u32(&mut p, 0); // duration
    p.extend_from_slice(&[0; 8]);
    put_u16(&mut p, 0); // layer
    put_u16(&mut p, 0); // alternate group
    put_u16(&mut p, if audio { 0x0100 } else { 0 });
    put_u16(&mut p, 0);
    matrix(&mut p);
    put_u32(&mut p, width << 16);
    put_u32(&mut p, height << 16);
    // Enabled, in movie, in preview.
    full(b"tkhd", 0, 0x7, &p)
}

fn mdhd(timescale: u32) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, 0);
    put_u32(&mut p, 0);
    put_u32(&mut p, timescale);
    put_u32(&mut p, 0);
    put_u16(&mut p, 0x55c4); // "und"
    put_u16(&mut p, 0);
    full(b"mdhd", 0, 0, &p)
}

fn hdlr(audio: bool) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, 0);
    p.extend_from_slice(if audio { b"soun" } else { b"vide" });
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(if audio {
        b"SoundHandler\0"
    } else {
        b"VideoHandler\0"
    });
    full(b"hdlr", 0, 0, &p)
}

fn dinf() -> Vec<u8> {
    let url = full(b"url ", 0, 1, &[]);
    let mut dref = Vec::new();
    put_u32(&mut dref, 1);
    dref.extend_from_slice(&url);
    bx(b"dinf", &full(b"dref", 0, 0, &dref))
}

/// The sample tables of a fragmented track: one sample description, no samples.
fn stbl(entry: Vec<u8>) -> Vec<u8> {
    let mut stsd = Vec::new();
    put_u32(&mut stsd, 1);
    stsd.extend_from_slice(&entry);
    let empty = |kind: &[u8; 4]| full(kind, 0, 0, &0u32.to_be_bytes());
    let mut stsz = Vec::new();
    put_u32(&mut stsz, 0);
    put_u32(&mut stsz, 0);
    bx(
        b"stbl",
        &concat(&[
            full(b"stsd", 0, 0, &stsd),
            empty(b"stts"),
            empty(b"stsc"),
            full(b"stsz", 0, 0, &stsz),
            empty(b"stco"),
        ]),
    )
}

fn avc1(v: &VideoFormat) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0; 6]);
    put_u16(&mut p, 1); // data reference index
    p.extend_from_slice(&[0; 16]); // pre_defined, reserved
    put_u16(&mut p, v.width as u16);
    put_u16(&mut p, v.height as u16);
    put_u32(&mut p, 0x0048_0000); // 72 dpi
    put_u32(&mut p, 0x0048_0000);
    put_u32(&mut p, 0);
    put_u16(&mut p, 1); // frame count
    p.extend_from_slice(&[0; 32]); // compressor name
    put_u16(&mut p, 0x0018); // depth
    put_u16(&mut p, 0xffff); // pre_defined -1
    p.extend_from_slice(&bx(b"avcC", &v.avcc));
    bx(b"avc1", &p)
}

/// An MPEG-4 descriptor: tag, length (4-byte form, as most muxers write it), body.
fn descriptor(tag: u8, body: &[u8]) -> Vec<u8> {
    let n = body.len() as u32;
    let mut out = vec![
        tag,
        0x80 | ((n >> 21) & 0x7f) as u8,
        0x80 | ((n >> 14) & 0x7f) as u8,
        0x80 | ((n >> 7) & 0x7f) as u8,
        (n & 0x7f) as u8,
    ];
    out.extend_from_slice(body);
    out
}

fn mp4a(a: &AudioFormat) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0; 6]);
    put_u16(&mut p, 1);
    p.extend_from_slice(&[0; 8]);
    put_u16(&mut p, a.channels as u16);
    put_u16(&mut p, 16); // sample size
    put_u32(&mut p, 0);
    put_u32(&mut p, a.rate.min(0xffff) << 16);
    let mut dec = vec![0x40, 0x15]; // MPEG-4 audio, audio stream
    dec.extend_from_slice(&[0, 0, 0]); // buffer size
    dec.extend_from_slice(&0u32.to_be_bytes()); // max bitrate
    dec.extend_from_slice(&0u32.to_be_bytes()); // average bitrate
    dec.extend_from_slice(&descriptor(0x05, &a.asc));
    let mut es = vec![0, AUDIO_TRACK as u8, 0]; // ES id, flags
    es.extend_from_slice(&descriptor(0x04, &dec));
    es.extend_from_slice(&descriptor(0x06, &[0x02]));
    p.extend_from_slice(&full(b"esds", 0, 0, &descriptor(0x03, &es)));
    bx(b"mp4a", &p)
}

fn trak(track: u32, timescale: u32, entry: Vec<u8>, audio: bool, size: (u32, u32)) -> Vec<u8> {
    let media_header = if audio {
        full(b"smhd", 0, 0, &[0; 4])
    } else {
        full(b"vmhd", 0, 1, &[0; 8])
    };
    let minf = bx(b"minf", &concat(&[media_header, dinf(), stbl(entry)]));
    let mdia = bx(b"mdia", &concat(&[mdhd(timescale), hdlr(audio), minf]));
    bx(
        b"trak",
        &concat(&[tkhd(track, audio, size.0, size.1), mdia]),
    )
}

fn trex(track: u32) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, track);
    put_u32(&mut p, 1);
    put_u32(&mut p, 0);
    put_u32(&mut p, 0);
    put_u32(&mut p, 0);
    full(b"trex", 0, 0, &p)
}

fn ftyp(major: &[u8; 4], brands: &[&[u8; 4]]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(major);
    put_u32(&mut p, 0);
    for b in brands {
        p.extend_from_slice(*b);
    }
    p
}

/// The initialization segment for these tracks.
pub fn init_segment(video: Option<&VideoFormat>, audio: Option<&AudioFormat>) -> Vec<u8> {
    let mut traks = Vec::new();
    let mut trexs = Vec::new();
    if let Some(v) = video {
        traks.push(trak(
            VIDEO_TRACK,
            VIDEO_TIMESCALE,
            avc1(v),
            false,
            (v.width, v.height),
        ));
        trexs.push(trex(VIDEO_TRACK));
    }
    if let Some(a) = audio {
        traks.push(trak(AUDIO_TRACK, a.rate, mp4a(a), true, (0, 0)));
        trexs.push(trex(AUDIO_TRACK));
    }
    let mut moov = vec![mvhd(AUDIO_TRACK + 1)];
    moov.extend(traks);
    moov.push(bx(b"mvex", &concat(&trexs)));
    concat(&[
        bx(b"ftyp", &ftyp(b"iso6", &[b"iso6", b"cmfc", b"mp41"])),
        bx(b"moov", &concat(&moov)),
    ])
}

const SAMPLE_SYNC: u32 = 0x0200_0000;
const SAMPLE_DEPENDENT: u32 = 0x0101_0000;

/// A media segment holding `runs` (one per track), numbered `sequence` (from 1).
pub fn media_segment(sequence: u32, runs: &[Run]) -> Vec<u8> {
    // The moof's size does not depend on the data offsets it holds: build it once with zero
    // offsets, then write the real ones (moof size + mdat header + the bytes before the run).
    let build = |offsets: &[i32]| {
        let mut mfhd = Vec::new();
        put_u32(&mut mfhd, sequence);
        let mut parts = vec![full(b"mfhd", 0, 0, &mfhd)];
        for (run, offset) in runs.iter().zip(offsets) {
            let mut tfhd = Vec::new();
            put_u32(&mut tfhd, run.track);
            let mut tfdt = Vec::new();
            tfdt.extend_from_slice(&run.decode_time.to_be_bytes());
            let video = run.track == VIDEO_TRACK;
            // data offset, duration, size, flags (and composition offsets for video).
            let flags =
                0x000001 | 0x000100 | 0x000200 | 0x000400 | if video { 0x000800 } else { 0 };
            let mut trun = Vec::new();
            put_u32(&mut trun, run.samples.len() as u32);
            trun.extend_from_slice(&offset.to_be_bytes());
            for s in &run.samples {
                put_u32(&mut trun, s.duration);
                put_u32(&mut trun, s.data.len() as u32);
                put_u32(
                    &mut trun,
                    if s.sync {
                        SAMPLE_SYNC
                    } else {
                        SAMPLE_DEPENDENT
                    },
                );
                if video {
                    trun.extend_from_slice(&s.cts_offset.to_be_bytes());
                }
            }
            parts.push(bx(
                b"traf",
                &concat(&[
                    // The base of data offsets is the moof itself.
                    full(b"tfhd", 0, 0x020000, &tfhd),
                    full(b"tfdt", 1, 0, &tfdt),
                    full(b"trun", 1, flags, &trun),
                ]),
            ));
        }
        bx(b"moof", &concat(&parts))
    };
    let moof_len = build(&vec![0; runs.len()]).len();
    let mut offsets = Vec::with_capacity(runs.len());
    let mut at = moof_len + 8;
    let mut data_len = 0;
    for run in runs {
        offsets.push(at as i32);
        let n: usize = run.samples.iter().map(|s| s.data.len()).sum();
        at += n;
        data_len += n;
    }
    let moof = build(&offsets);
    let mut mdat = Vec::with_capacity(data_len);
    for run in runs {
        for s in &run.samples {
            mdat.extend_from_slice(&s.data);
        }
    }
    concat(&[
        bx(b"styp", &ftyp(b"msdh", &[b"msdh", b"msix"])),
        moof,
        bx(b"mdat", &mdat),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, payload start, end) of the boxes in `d[from..to]`.
    fn boxes(d: &[u8], from: usize, to: usize) -> Vec<([u8; 4], usize, usize)> {
        let mut out = Vec::new();
        let mut i = from;
        while i + 8 <= to {
            let size = u32::from_be_bytes(d[i..i + 4].try_into().unwrap()) as usize;
            out.push((d[i + 4..i + 8].try_into().unwrap(), i + 8, i + size));
            i += size;
        }
        assert_eq!(i, to, "boxes fill their parent exactly");
        out
    }

    #[test]
    fn segment_offsets_point_at_each_runs_data() {
        let run = |track, bytes: &[u8]| Run {
            track,
            decode_time: 0,
            samples: bytes
                .iter()
                .map(|b| Sample {
                    duration: 3000,
                    cts_offset: 0,
                    sync: true,
                    data: vec![*b; 5],
                })
                .collect(),
        };
        let seg = media_segment(7, &[run(VIDEO_TRACK, &[1, 2]), run(AUDIO_TRACK, &[9])]);
        let top = boxes(&seg, 0, seg.len());
        let kinds: Vec<_> = top.iter().map(|b| b.0).collect();
        assert_eq!(kinds, [*b"styp", *b"moof", *b"mdat"]);
        let (_, moof_start, moof_end) = top[1];
        let moof_box = moof_start - 8;
        let trafs: Vec<_> = boxes(&seg, moof_start, moof_end)
            .into_iter()
            .filter(|b| &b.0 == b"traf")
            .collect();
        assert_eq!(trafs.len(), 2);
        let mut firsts = Vec::new();
        for (_, a, b) in trafs {
            let trun = boxes(&seg, a, b)
                .into_iter()
                .find(|x| &x.0 == b"trun")
                .unwrap();
            let offset = i32::from_be_bytes(seg[trun.1 + 8..trun.1 + 12].try_into().unwrap());
            firsts.push(seg[moof_box + offset as usize]);
        }
        assert_eq!(firsts, [1, 9]);
    }

    #[test]
    fn init_segment_is_well_formed() {
        let v = VideoFormat {
            width: 1280,
            height: 720,
            avcc: vec![1, 0x64, 0, 0x1f, 0xff, 0xe0, 0],
        };
        let a = AudioFormat {
            rate: 48000,
            channels: 2,
            asc: vec![0x11, 0x90],
        };
        let init = init_segment(Some(&v), Some(&a));
        let top = boxes(&init, 0, init.len());
        assert_eq!(top[0].0, *b"ftyp");
        assert_eq!(top[1].0, *b"moov");
        let moov: Vec<_> = boxes(&init, top[1].1, top[1].2)
            .iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(moov, [*b"mvhd", *b"trak", *b"trak", *b"mvex"]);
    }
}

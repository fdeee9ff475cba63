//! Keeps a remote sender's sound on the recording's clock.
//!
//! A WebRTC feed's audio buffers are placed where the feed's jitter buffer puts them, which
//! follows the packets' arrival. A sender whose sound card runs fast (or slow) sends more (or
//! fewer) samples per second of that time than the rate it claims: 0.1 % fast is 48 extra
//! samples a second. The audio mixer takes a pad's samples back to back while they are
//! within its alignment threshold (40 ms) of their timestamps, so the surplus piles up as
//! delay until the mixer drops it at once: a 40 ms hole every 41 s, the sound sliding
//! against the picture in between. [`AudioRetimer`]
//! resamples each buffer by a fraction of a percent so the samples it emits stay where the
//! timestamps say, and stamps them as one continuous stream; a jump larger than
//! [`RESYNC`] (a gap after loss, a sender that restarted) starts the stream again at its
//! timestamp.

use gst::ClockTime;

/// Frames per second of the recording's audio.
const RATE: u64 = crate::pipeline::source::AUDIO_RATE as u64;
/// Bytes per frame: stereo S16LE ([`super::raw_audio_caps`]).
const FRAME_BYTES: usize = 4;
/// A distance between where the samples are and where their timestamps say beyond which the
/// stream starts again at the timestamps instead of being bent back.
pub const RESYNC: ClockTime = ClockTime::from_mseconds(60);
/// At most this fraction of a buffer is added or removed (0.5 %: under a tenth of a
/// semitone, not heard on speech or music).
const MAX_STRETCH: f64 = 0.005;
/// How fast the distance is worked off: this fraction of the smoothed distance per buffer
/// (about two seconds at 20 ms buffers).
const GAIN: f64 = 0.01;
/// Weight of a new measurement in the smoothed distance (jitter of the placement averages
/// out over about a second).
const SMOOTHING: f64 = 0.05;

/// The state of one audio track (see the module documentation).
#[derive(Debug, Default)]
pub struct AudioRetimer {
    /// Where the continuous stream began (running time, ns) and how many frames it has
    /// emitted since.
    origin: Option<(u64, u64)>,
    /// Emitted minus due, in frames, smoothed.
    distance: f64,
    /// Fraction of a frame carried to the next buffer.
    carry: f64,
    /// Times the stream started again at its timestamps.
    resyncs: u64,
}

impl AudioRetimer {
    /// Times the stream was started again at its timestamps (not counting the first).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Takes a decoded buffer placed at `placed` (running time) and returns it resampled and
    /// stamped on the continuous stream (PTS and duration set). `discont` starts the stream
    /// again at `placed`.
    pub fn retime(&mut self, placed: ClockTime, buffer: gst::Buffer, discont: bool) -> gst::Buffer {
        let frames = (buffer.size() / FRAME_BYTES) as u64;
        let at = placed.nseconds();
        let due_frames =
            |origin: u64| (at.saturating_sub(origin) as u128 * RATE as u128 / 1_000_000_000) as f64;
        let restart = match self.origin {
            None => true,
            Some((origin, emitted)) => {
                let off = emitted as f64 - due_frames(origin);
                let limit = (RESYNC.nseconds() * RATE / 1_000_000_000) as f64;
                if discont || at < origin || off.abs() > limit {
                    self.resyncs += 1;
                    true
                } else {
                    self.distance += SMOOTHING * (off - self.distance);
                    false
                }
            }
        };
        if restart {
            self.origin = Some((at, 0));
            self.distance = 0.0;
            self.carry = 0.0;
        }
        let (origin, emitted) = self.origin.unwrap_or((at, 0));
        // Ahead (positive distance): fewer frames out than in; behind: more.
        let wanted = frames as f64
            - (self.distance * GAIN)
                .clamp(-(frames as f64) * MAX_STRETCH, frames as f64 * MAX_STRETCH)
            + self.carry;
        let out_frames = wanted.round().max(0.0) as u64;
        self.carry = wanted - out_frames as f64;
        let mut out = if out_frames == frames || frames < 2 {
            buffer
        } else {
            resample(&buffer, frames as usize, out_frames as usize).unwrap_or(buffer)
        };
        let out_frames = (out.size() / FRAME_BYTES) as u64;
        {
            let b = out.make_mut();
            // Both ends from the frame count, so one buffer ends where the next begins.
            let pts = origin + emitted * 1_000_000_000 / RATE;
            let end = origin + (emitted + out_frames) * 1_000_000_000 / RATE;
            b.set_pts(ClockTime::from_nseconds(pts));
            b.set_duration(ClockTime::from_nseconds(end - pts));
            b.set_dts(ClockTime::NONE);
        }
        self.origin = Some((origin, emitted + out_frames));
        out
    }
}

/// `frames` stereo S16LE frames stretched to `to` frames by linear interpolation.
fn resample(buffer: &gst::Buffer, frames: usize, to: usize) -> Option<gst::Buffer> {
    let map = buffer.map_readable().ok()?;
    let input: Vec<[i16; 2]> = map
        .chunks_exact(FRAME_BYTES)
        .map(|f| {
            [
                i16::from_le_bytes([f[0], f[1]]),
                i16::from_le_bytes([f[2], f[3]]),
            ]
        })
        .collect();
    let mut data = Vec::with_capacity(to * FRAME_BYTES);
    let step = (frames - 1) as f64 / (to.max(2) - 1) as f64;
    for i in 0..to {
        let x = i as f64 * step;
        let j = (x.floor() as usize).min(frames - 1);
        let k = (j + 1).min(frames - 1);
        let t = x - j as f64;
        for (a, b) in input[j].iter().zip(input[k].iter()) {
            let v = *a as f64 * (1.0 - t) + *b as f64 * t;
            data.extend_from_slice(&(v.round() as i16).to_le_bytes());
        }
    }
    drop(map);
    let mut out = gst::Buffer::from_mut_slice(data);
    {
        let b = out.get_mut()?;
        let _ = buffer.copy_into(
            b,
            gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::META,
            ..,
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(frames: usize) -> gst::Buffer {
        gst::Buffer::from_mut_slice(vec![0u8; frames * FRAME_BYTES])
    }

    /// 20 ms buffers of a sender `ppm` fast, arriving every 20 ms of its own clock, for
    /// `secs`; returns (emitted − due in ms at the end, resyncs).
    fn run(ppm: f64, secs: u64) -> (f64, u64) {
        gst::init().unwrap();
        let mut r = AudioRetimer::default();
        let period = 20_000_000.0 / (1.0 + ppm / 1e6);
        let start = 5_000_000_000u64;
        let mut end = 0;
        let n = secs * 50;
        let mut last = None;
        for i in 0..n {
            let at = start + (i as f64 * period) as u64;
            let out = r.retime(ClockTime::from_nseconds(at), buffer(960), false);
            end = (out.pts().unwrap() + out.duration().unwrap()).nseconds();
            if let Some(prev) = last {
                assert_eq!(out.pts().unwrap().nseconds(), prev, "continuous");
            }
            last = Some(end);
        }
        let due = start as f64 + n as f64 * period;
        ((end as f64 - due) / 1e6, r.resyncs())
    }

    #[test]
    fn a_fast_sender_stays_on_its_timestamps() {
        let (off, resyncs) = run(1000.0, 600);
        assert!(off.abs() < 5.0, "{off} ms off after ten minutes");
        assert_eq!(resyncs, 0);
    }

    #[test]
    fn a_slow_sender_stays_on_its_timestamps() {
        let (off, resyncs) = run(-1000.0, 600);
        assert!(off.abs() < 5.0, "{off} ms off after ten minutes");
        assert_eq!(resyncs, 0);
    }

    #[test]
    fn an_exact_sender_is_passed_through_unchanged() {
        gst::init().unwrap();
        let mut r = AudioRetimer::default();
        for i in 0..500u64 {
            let out = r.retime(ClockTime::from_mseconds(1000 + i * 20), buffer(960), false);
            assert_eq!(out.size(), 960 * FRAME_BYTES);
            assert_eq!(out.pts(), Some(ClockTime::from_mseconds(1000 + i * 20)));
        }
    }

    #[test]
    fn a_gap_starts_the_stream_again_at_its_timestamp() {
        gst::init().unwrap();
        let mut r = AudioRetimer::default();
        for i in 0..50u64 {
            r.retime(ClockTime::from_mseconds(1000 + i * 20), buffer(960), false);
        }
        let out = r.retime(ClockTime::from_mseconds(3000), buffer(960), false);
        assert_eq!(out.pts(), Some(ClockTime::from_mseconds(3000)));
        assert_eq!(r.resyncs(), 1);
    }

    #[test]
    fn resampling_keeps_a_tone() {
        gst::init().unwrap();
        let frames = 960;
        let mut data = Vec::new();
        for i in 0..frames {
            let v = ((i as f64 * 0.05).sin() * 10_000.0) as i16;
            data.extend_from_slice(&v.to_le_bytes());
            data.extend_from_slice(&v.to_le_bytes());
        }
        let out = resample(&gst::Buffer::from_mut_slice(data), frames, 955).unwrap();
        assert_eq!(out.size(), 955 * FRAME_BYTES);
        let map = out.map_readable().unwrap();
        let peak = map
            .chunks_exact(4)
            .map(|f| i16::from_le_bytes([f[0], f[1]]).unsigned_abs())
            .max()
            .unwrap();
        assert!((9_900..=10_000).contains(&peak), "{peak}");
    }
}

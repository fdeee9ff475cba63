//! Reads back a recording the way a viewer would: every video frame decoded (how many, and the
//! onsets of the sync reference's white flashes) and the audio decoded (the onsets of its
//! 2 kHz beeps), so a benchmark can say what it wrote, not only how fast.

use crate::pipeline::source::MARKER_BEEP_HZ;
use anyhow::Context;
use gst::prelude::*;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a recording holds.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Video frames decoded.
    pub frames: u64,
    /// When the sync reference's flashes begin (seconds).
    pub flashes: Vec<f64>,
    /// When its beeps begin (seconds).
    pub beeps: Vec<f64>,
}

/// Decoded audio: where each buffer began (index of its first sample, its time) and the
/// samples.
type Pcm = (Vec<(usize, f64)>, Vec<f32>);

/// Audio analysed in windows of this many samples (5 ms at 48 kHz).
const WINDOW: usize = 240;
const RATE: f64 = 48_000.0;

/// Decodes `path` and finds frames, flashes and beeps.
pub fn probe(path: &Path) -> anyhow::Result<Probe> {
    let desc = format!(
        "filesrc location=\"{}\" ! qtdemux name=d \
         d.video_0 ! queue ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 ! \
         appsink name=v sync=false \
         d.audio_0 ! queue ! decodebin ! audioconvert ! audioresample ! \
         audio/x-raw,format=F32LE,channels=1,rate=48000,layout=interleaved ! \
         appsink name=a sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let luma: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let audio: Arc<Mutex<Pcm>> = Arc::default();
    let sink = |name: &str| -> anyhow::Result<gst_app::AppSink> {
        pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .with_context(|| format!("no appsink {name}"))
    };
    let l = luma.clone();
    sink("v")?.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let (Some(b), Some(pts)) =
                    (sample.buffer(), sample.buffer().and_then(|b| b.pts()))
                {
                    if let Ok(map) = b.map_readable() {
                        let sum: u64 = map.iter().map(|&v| v as u64).sum();
                        let mean = sum as f64 / map.len().max(1) as f64;
                        l.lock().unwrap().push((pts.nseconds() as f64 / 1e9, mean));
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let a = audio.clone();
    sink("a")?.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(b) = sample.buffer() {
                    let mut a = a.lock().unwrap();
                    if let Some(t) = running_time(&sample) {
                        let at = a.1.len();
                        a.0.push((at, t));
                    }
                    if let Ok(map) = b.map_readable() {
                        a.1.extend(
                            map.chunks_exact(4)
                                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                        );
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing)?;
    let r = crate::pipeline::bus::wait_eos_blocking(
        &pipeline,
        Duration::from_secs(300),
        "decode the recording",
    );
    pipeline.set_state(gst::State::Null)?;
    r?;
    let luma = std::mem::take(&mut *luma.lock().unwrap());
    let (starts, samples) = std::mem::take(&mut *audio.lock().unwrap());
    Ok(Probe {
        frames: luma.len() as u64,
        flashes: rising_edges(&luma, 0.0),
        beeps: rising_edges(&beep_power(&samples, &starts), 0.2),
    })
}

/// Where a decoded sample sits on the recording's timeline (seconds): its timestamp in its
/// segment, which carries the file's edit lists (the audio encoder's priming).
fn running_time(sample: &gst::Sample) -> Option<f64> {
    let pts = sample.buffer()?.pts()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    Some(segment.to_running_time(pts)?.nseconds() as f64 / 1e9)
}

/// The 2 kHz power of each audio window (Goertzel), with its start time (from the timestamp
/// of the buffer its first sample came in).
fn beep_power(samples: &[f32], starts: &[(usize, f64)]) -> Vec<(f64, f64)> {
    let time_of = |n: usize| {
        let i = starts.partition_point(|(at, _)| *at <= n).saturating_sub(1);
        starts
            .get(i)
            .map_or(n as f64 / RATE, |(at, t)| t + (n - at) as f64 / RATE)
    };
    let k = 2.0 * (2.0 * std::f64::consts::PI * MARKER_BEEP_HZ / RATE).cos();
    samples
        .chunks(WINDOW)
        .enumerate()
        .map(|(i, w)| {
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for &x in w {
                let s0 = x as f64 + k * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - k * s1 * s2;
            (time_of(i * WINDOW), power)
        })
        .collect()
}

/// When `series` rises above halfway between its median and its maximum, after at least
/// `quiet` seconds below it (a flash of a few frames, a beep of many windows, is one onset).
fn rising_edges(series: &[(f64, f64)], quiet: f64) -> Vec<f64> {
    if series.is_empty() {
        return Vec::new();
    }
    let mut values: Vec<f64> = series.iter().map(|(_, v)| *v).collect();
    values.sort_by(f64::total_cmp);
    let (median, max) = (values[values.len() / 2], values[values.len() - 1]);
    if max <= median {
        return Vec::new();
    }
    let threshold = median + (max - median) / 2.0;
    let mut onsets = Vec::new();
    let mut last_above: Option<f64> = None;
    let mut above = false;
    for &(t, v) in series {
        if v >= threshold {
            if !above && last_above.is_none_or(|l| t - l > quiet) {
                onsets.push(t);
            }
            above = true;
            last_above = Some(t);
        } else {
            above = false;
        }
    }
    onsets
}

/// Each flash paired with the nearest beep within half a second: beep − flash, in ms.
pub fn av_offsets_ms(flashes: &[f64], beeps: &[f64]) -> Vec<f64> {
    flashes
        .iter()
        .filter_map(|f| {
            beeps
                .iter()
                .map(|b| b - f)
                .min_by(|x, y| x.abs().total_cmp(&y.abs()))
                .filter(|d| d.abs() < 0.5)
                .map(|d| d * 1000.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_and_offsets() {
        let series: Vec<(f64, f64)> = (0..100)
            .map(|i| {
                let t = i as f64 / 10.0;
                (t, if i % 10 < 2 { 200.0 } else { 20.0 })
            })
            .collect();
        let e = rising_edges(&series, 0.0);
        assert_eq!(e.len(), 10);
        assert!((e[3] - 3.0).abs() < 1e-9);
        let off = av_offsets_ms(&[1.0, 2.0, 9.9], &[1.02, 1.98, 3.0]);
        assert_eq!(off.len(), 2);
        assert!((off[0] - 20.0).abs() < 1e-6 && (off[1] + 20.0).abs() < 1e-6);
    }
}

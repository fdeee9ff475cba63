//! Benchmarks. `roomcast bench composite`: the real composite pipeline, offline, as fast as it
//! goes; reports cores per real-time recording (process CPU seconds ÷ media seconds), the
//! real-time factor (media seconds ÷ wall seconds) and peak RSS. `roomcast bench live`
//! ([`live`]): N real-time recordings at once, each checked for frames written and A/V offset.
//!
//! Owns measuring only; it runs the same pipeline and job code as recordings do.

pub mod live;
mod probe;
pub mod snapshot;

use crate::layout::{parse_color, Layout, Tile, TileId};
use crate::pipeline::composite::Output;
use crate::pipeline::source::{Timing, TrackSource};
use crate::pipeline::{Composite, CompositeOptions, Preset};
use crate::room::synthetic::SyntheticRoom;
use crate::util::{cpu_seconds, peak_rss_mib};
use anyhow::Context;
use gst::prelude::*;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What a bench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CompositeReport {
    /// Participants composited.
    pub participants: usize,
    /// Preset name.
    pub preset: String,
    /// Input picture: "synthetic" (colour + marker) or a videotestsrc pattern.
    pub inputs: String,
    /// Media seconds produced.
    pub media_seconds: f64,
    /// Wall seconds taken.
    pub wall_seconds: f64,
    /// CPU seconds (user + system) used by the process.
    pub cpu_seconds: f64,
    /// CPU seconds per media second: cores one real-time recording needs.
    pub cores_per_recording: f64,
    /// Media seconds per wall second.
    pub realtime_factor: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Output size in bytes.
    pub output_bytes: u64,
    /// With `--layout-url`: what the page cost besides (its overlay's blend is in
    /// `cores_per_recording`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<PageCost>,
}

/// What a custom view page cost while the bench ran.
#[derive(Debug, Clone, Serialize)]
pub struct PageCost {
    /// The page.
    pub url: String,
    /// Drawn under the tiles (`--page-below`) rather than over them.
    pub below: bool,
    /// Changed frames the page sent.
    pub frames: u64,
    /// CPU of the renderer and its WebKit processes per wall second (it renders in real time
    /// whatever the composite's pace).
    pub renderer_cores: f64,
    /// Resident memory of the renderer and its WebKit processes at the end, MiB.
    pub renderer_rss_mib: f64,
}

/// CPU seconds and resident bytes of process `pid` and its direct children.
fn process_tree(pid: u32) -> (f64, u64) {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let read = |dir: &std::path::Path| -> Option<(u32, f64, u64)> {
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ppid = rest.get(1)?.parse().ok()?;
        let cpu = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
        let rss = rest.get(21)?.parse::<u64>().ok()? * 4096;
        Some((ppid, cpu / tick, rss))
    };
    let (mut cpu, mut rss) = (0.0, 0);
    if let Some((_, c, r)) = read(&std::path::Path::new("/proc").join(pid.to_string())) {
        cpu += c;
        rss += r;
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some((ppid, c, r)) = read(&entry.path()) {
            if ppid == pid {
                cpu += c;
                rss += r;
            }
        }
    }
    (cpu, rss)
}

/// Runs the bench.
pub fn composite(
    layout: &Layout,
    preset: &Preset,
    participants: usize,
    seconds: u32,
    pattern: Option<&str>,
    page: Option<(&str, bool)>,
) -> anyhow::Result<CompositeReport> {
    let page_url = page.map(|(url, _)| url);
    let below = page.is_some_and(|(_, below)| below);
    let media = gst::ClockTime::from_seconds(seconds as u64);
    let dir = std::env::temp_dir().join(format!("roomcast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("bench.mp4");
    let def = layout.def().clone();
    let opts = CompositeOptions {
        preset: preset.clone(),
        timing: Timing::Offline { duration: media },
        output: Output::Mp4(out.clone()),
        background: def.background.as_deref().and_then(parse_color).unwrap_or(0),
        background_image: def.background_image.clone(),
        label: def.label.clone(),
        watermark: None,
        page_layer: page_url.is_some(),
    };
    let room = SyntheticRoom::steady(participants);
    let mut comp = Composite::new(&opts)?;
    let mut tiles = Vec::new();
    for (i, p) in room.participants.iter().enumerate() {
        let ctx = comp.source_context(gst::ClockTime::ZERO);
        let mut camera = room.camera(p);
        camera.pattern = pattern.and_then(|p| {
            let list: Vec<&str> = p
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            list.get(i % list.len().max(1)).map(|s| s.to_string())
        });
        comp.add_video(&TileId::camera(&p.id), Box::new(camera))?;
        let mut mic = room.microphone(p);
        mic.beep_only = false;
        comp.add_audio(&p.id, mic.build(&ctx)?)?;
        tiles.push(Tile::new(&p.id, &p.name, i as u64));
    }
    let slots = layout.place(comp.canvas(), &tiles);
    comp.apply(&slots)?;
    let pipeline = comp.pipeline().clone();
    // A page is rendered and shown before the clock starts, as a recording shows it once it
    // is painted.
    let page = match page_url {
        Some(url) => {
            let overlay = comp.page_overlay().context("no page layer")?;
            let (view, generation) =
                crate::pipeline::page::PageView::start_unseen(url, comp.canvas(), &[], &overlay)?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while overlay.frames(generation) == 0 {
                anyhow::ensure!(Instant::now() < deadline, "the page drew nothing in 20 s");
                std::thread::sleep(Duration::from_millis(50));
            }
            // Let it settle (fonts, first layout) before measuring.
            std::thread::sleep(Duration::from_secs(2));
            overlay.set_below(generation, below);
            overlay.activate(generation);
            let (cpu, _) = process_tree(view.pid());
            Some((view, overlay, generation, cpu))
        }
        None => None,
    };
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    let limit = Duration::from_secs(60 + seconds as u64 * 10);
    let r = crate::pipeline::bus::wait_eos_blocking(&pipeline, limit, "finish the bench");
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let page = page.map(|(view, overlay, generation, cpu_before)| {
        let (cpu_after, rss) = process_tree(view.pid());
        PageCost {
            url: page_url.unwrap_or_default().to_string(),
            below,
            frames: overlay.frames(generation),
            renderer_cores: (cpu_after - cpu_before) / wall.max(1e-3),
            renderer_rss_mib: rss as f64 / (1024.0 * 1024.0),
        }
    });
    pipeline.set_state(gst::State::Null)?;
    r.context("bench pipeline failed")?;
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    std::fs::remove_dir_all(&dir).ok();
    let media_s = seconds as f64;
    Ok(CompositeReport {
        participants,
        preset: preset.name.clone(),
        inputs: pattern.unwrap_or("synthetic").to_string(),
        media_seconds: media_s,
        wall_seconds: wall,
        cpu_seconds: cpu,
        cores_per_recording: cpu / media_s,
        realtime_factor: media_s / wall,
        peak_rss_mib: peak_rss_mib(),
        output_bytes: bytes,
        page,
    })
}

//! What each command-line command does, as library calls: `main.rs` only parses arguments
//! and prints. A command-line recording (`demo`, `record`) is a job like any other: a spec run
//! through [`job::execute()`] over an in-memory host, then delivered.

mod record;
mod serve;

pub use record::{record, DemoArgs, OutputArgs, RecordArgs, RecordReport, RecordRequest};
pub use serve::{serve, Role, ServeArgs};

use crate::config::DeliveryConfig;
use crate::delivery::spool::SegmentMeta;
use crate::job::{self, MemoryHost, Outbox};
use crate::layout::Layout;
use crate::model::preset::DEFAULT_PRESET;
use crate::pipeline::{self, Preset};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Delivers what the data folder's spool and webhook queue hold, for up to `wait`.
pub fn deliver(wait: Duration) -> Result<Value> {
    let cfg = DeliveryConfig::from_env()?;
    let outbox = Outbox::open(&cfg)?;
    if outbox.deliverer.is_none() {
        let spooled = cfg.spool()?.list().len();
        if spooled > 0 {
            return Err(Error::Invalid {
                field: "ROOMCAST_STORAGE".into(),
                message: format!("{spooled} recordings are spooled but no storage is set"),
                code: crate::codes::Code::MoveFileFailed2,
            });
        }
    }
    let rt = runtime()?;
    let spool = cfg.spool()?;
    let queued = spool.list().len();
    let (report, hooks) = crate::progress::watch(
        "deliver",
        queued as f64,
        crate::progress::Unit::Files,
        move || queued.saturating_sub(spool.list().len()) as f64,
        || rt.block_on(outbox.run_until_empty(&MemoryHost::new(), wait)),
    );
    Ok(json!({ "delivery": report, "webhooks_pending": hooks }))
}

/// Moves an existing recording into the spool for delivery.
pub fn enqueue(file: &Path, room: &str, conf: &str, app_id: &str) -> Result<Value> {
    let cfg = DeliveryConfig::from_env()?;
    let bytes = std::fs::metadata(file)
        .map_err(|e| Error::io(format!("reading {}", file.display()), e))?
        .len();
    let now = crate::clock::now_ms();
    let file_name = crate::util::file_name(file);
    let segment = job::files::naming::segment_number(&file_name).unwrap_or(1);
    let meta = SegmentMeta {
        job_id: format!("{app_id}-{room}-{conf}-{segment}"),
        app_id: app_id.to_string(),
        room_id: room.to_string(),
        conf_num: conf.to_string(),
        segment,
        file_name,
        started_at_unix_ms: now,
        ended_at_unix_ms: now,
        size: bytes,
        sha256: String::new(),
        hls: None,
        bundle: None,
        chunk: None,
    };
    let entry = cfg
        .spool()?
        .put(file, meta, None)
        .map_err(|e| Error::io("spooling the file", e))?;
    Ok(json!({ "spooled": entry.id, "sha256": entry.meta.sha256 }))
}

/// The custom view renderer's own process (`roomcast page-render`, started by a recording for
/// each page): renders `url` until its input closes.
pub fn page_render(url: &str, width: u32, height: u32) -> Result<()> {
    Ok(pipeline::page::render_main(url, width, height)?)
}

/// Turns a recording left fragmented by a crash into a normal MP4.
pub fn finalize(file: &Path) -> Result<Value> {
    let total = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let name = crate::util::file_name(file);
    // The finalized copy is written beside the file, then renamed over it.
    let copy = file.with_file_name(format!(".{name}.finalizing"));
    let seg = crate::progress::watch(
        "finalize",
        total as f64,
        crate::progress::Unit::Bytes,
        move || std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0) as f64,
        || pipeline::mp4::finalize(file),
    )?;
    Ok(json!({
        "file": seg.path,
        "duration_s": seg.duration.mseconds() as f64 / 1000.0,
        "bytes": seg.bytes,
    }))
}

/// `roomcast layout preview`.
#[derive(Debug, Clone, clap::Args)]
pub struct PreviewArgs {
    /// grid, speaker, presentation, single, or a layout file (with `--url`: the room's layout,
    /// used where the page marks no tiles).
    #[arg(default_value = "grid")]
    pub layout: String,
    /// A custom view page to draw over the tiles, the tiles where it marks them.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Number of participants.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=49))]
    pub participants: u32,
    /// Add a screen share from the first participant.
    #[arg(long)]
    pub screen_share: bool,
    /// Encoder preset (for the canvas size).
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Draws a layout with numbered tiles into a PNG.
pub fn layout_preview(a: &PreviewArgs) -> Result<Value> {
    let layout = Layout::resolve(&a.layout)?;
    let preset = Preset::resolve(&a.preset)?;
    let n = a.participants as usize;
    let show = |overlay: std::sync::Arc<pipeline::page::PageOverlay>,
                canvas: crate::layout::Canvas| match &a.url {
        Some(url) => page_preview(url, n, overlay, canvas),
        None => Ok(None),
    };
    let page: Option<pipeline::preview::PagePreview> = a
        .url
        .as_ref()
        .map(|_| &show as pipeline::preview::PagePreview);
    pipeline::preview::render(&layout, &preset, n, a.screen_share, &a.out, page)?;
    Ok(json!({ "file": a.out }))
}

/// Longest wait for a previewed page to be painted and to mark its tiles.
const PAGE_PREVIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Shows `url` in a preview: renders it into `overlay` with `n` numbered participants as its
/// room, waits until it is painted and has said where its tiles go; the layout they make.
fn page_preview(
    url: &str,
    n: usize,
    overlay: std::sync::Arc<pipeline::page::PageOverlay>,
    canvas: crate::layout::Canvas,
) -> std::result::Result<Option<Layout>, pipeline::PipelineError> {
    use crate::page::channel::{Channel, PageMessage};
    use std::time::{Duration, Instant};
    let failed = |m: String| pipeline::PipelineError::Runtime {
        element: "page".into(),
        message: m,
    };
    let rt = runtime().map_err(|e| failed(e.to_string()))?;
    rt.block_on(async {
        let mut channel = Channel::open().await.map_err(|e| failed(e.to_string()))?;
        let participants: Vec<Value> = (1..=n)
            .map(|i| {
                json!({"id": format!("p{i}"), "name": i.to_string(), "talking": i == 1,
                "video": true, "video_muted": false, "paused": false, "spotlight": false,
                "pinned": false, "screen": false})
            })
            .collect();
        channel.send_state(&json!({"participants": participants, "layout": "grid",
            "recording_started_ms": crate::clock::now_ms(), "chat": []}));
        let reach = [channel.address().to_string()];
        let (mut view, generation) =
            pipeline::page::PageView::start_unseen(url, canvas, &reach, &overlay)?;
        let script = crate::page::bootstrap_script(channel.address(), false);
        let deadline = Instant::now() + PAGE_PREVIEW_TIMEOUT;
        let (mut hello, mut regions) = (None::<Instant>, None);
        let mut injected = Instant::now() - Duration::from_secs(1);
        loop {
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "{url} was not painted within {} s",
                    PAGE_PREVIEW_TIMEOUT.as_secs()
                )));
            }
            let painted = hello.is_some() && overlay.frames(generation) > 0;
            // Marked tiles come with the hello; a page that marks none is an overlay.
            if painted && (regions.is_some() || hello.is_some_and(|t| t.elapsed().as_secs() >= 1)) {
                break;
            }
            if hello.is_none() && injected.elapsed() >= Duration::from_secs(1) {
                injected = Instant::now();
                view.run_javascript(&script);
            }
            match tokio::time::timeout(Duration::from_millis(100), channel.recv()).await {
                Ok(Some(PageMessage::Hello { href, layer }))
                    if href != "about:blank" && !href.is_empty() =>
                {
                    overlay.set_below(generation, layer == crate::page::channel::Layer::Background);
                    hello.get_or_insert_with(Instant::now);
                }
                Ok(Some(PageMessage::Regions {
                    viewport,
                    regions: r,
                    layer,
                })) => {
                    overlay.set_below(generation, layer == crate::page::channel::Layer::Background);
                    regions = Some(
                        crate::page::regions_layout(viewport, &r)
                            .map_err(|e| failed(format!("the page's marked tiles: {e}")))?,
                    );
                }
                _ => {}
            }
        }
        // The last frame is what the preview shows; the renderer is no longer needed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        overlay.activate(generation);
        drop(view);
        Ok(regions.flatten())
    })
}

/// `roomcast bench composite`: the real composite pipeline, as fast as possible, on
/// synthetic inputs.
#[derive(Debug, Clone, clap::Args)]
pub struct CompositeBench {
    /// Number of participants.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub participants: u32,
    /// Encoder preset name or file.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Media seconds to produce.
    #[arg(long, default_value_t = 20)]
    pub seconds: u32,
    /// Layout.
    #[arg(long, default_value = "grid")]
    pub layout: String,
    /// Input pictures: videotestsrc patterns such as smpte or ball, comma-separated and used
    /// in turn (default: the synthetic room's colour + marker).
    #[arg(long)]
    pub pattern: Option<String>,
    /// Override the preset's video bitrate (kbit/s), e.g. to match another pipeline.
    #[arg(long)]
    pub bitrate: Option<u32>,
    /// Also draw this custom view page over the tiles, and report what it cost.
    #[arg(long, value_name = "URL")]
    pub layout_url: Option<String>,
    /// Draw the page under the tiles, as a page marked `data-roomcast-layer="background"`.
    #[arg(long, requires = "layout_url")]
    pub page_below: bool,
}

/// Runs the composite benchmark.
pub fn bench_composite(b: CompositeBench) -> Result<Value> {
    let mut preset = Preset::resolve(&b.preset)?;
    if let (Some(kbps), Some(v)) = (b.bitrate, preset.video.as_mut()) {
        v.bitrate_kbps = kbps;
    }
    let layout = Layout::resolve(&b.layout)?;
    let report = crate::bench::composite(
        &layout,
        &preset,
        b.participants as usize,
        b.seconds,
        b.pattern.as_deref(),
        b.layout_url.as_deref().map(|u| (u, b.page_below)),
    )
    .map_err(|e| Error::Job {
        code: crate::codes::Code::Generic,
        message: format!("{e:#}"),
    })?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

/// `roomcast bench live`: real-time recordings at once, each checked.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveBench {
    /// Recordings to run at once.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Participants in each synthetic room.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub participants: u32,
    /// Seconds each records.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(3..=3600))]
    pub seconds: u32,
    /// Encoder preset name or file.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Layout.
    #[arg(long, default_value = "grid")]
    pub layout: String,
    /// Also stream each recording to this RTMP URL (one destination each, same encode; each
    /// recording's stream key gets `_<index>` appended).
    #[arg(long)]
    pub rtmp: Option<String>,
    /// Also cut each recording into live HLS (default 4 s segments), beside it.
    #[arg(long)]
    pub hls: bool,
    /// Stream each room as a job of its own (as a start-streaming request does) instead of
    /// as the recording's destination; it shares the recording's composite and encode unless
    /// `ROOMCAST_SHARED_COMPOSITE=0`. Needs `--rtmp`.
    #[arg(long, requires = "rtmp")]
    pub stream_job: bool,
}

/// Runs the live benchmark.
pub fn bench_live(b: LiveBench) -> Result<Value> {
    let preset = Preset::resolve(&b.preset)?;
    let layout = Layout::resolve(&b.layout)?;
    let rtmp = b
        .rtmp
        .as_deref()
        .map(crate::model::RtmpUrl::parse)
        .transpose()?;
    let rt = runtime()?;
    let started = std::time::Instant::now();
    let report = crate::progress::watch(
        "bench live",
        b.seconds as f64,
        crate::progress::Unit::Seconds,
        move || started.elapsed().as_secs_f64(),
        || {
            rt.block_on(crate::bench::live::live(
                b.jobs as usize,
                b.participants as usize,
                b.seconds,
                &preset,
                &layout,
                rtmp,
                b.hls.then(crate::model::hls::HlsSpec::default),
                b.stream_job,
            ))
        },
    )
    .map_err(|e| Error::Job {
        code: crate::codes::Code::Generic,
        message: format!("{e:#}"),
    })?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

/// `roomcast transcode`: an individual recording's segment laid out into one MP4.
#[derive(Debug, Clone, clap::Args)]
pub struct TranscodeArgs {
    /// The segment's manifest.json (its track files beside it).
    pub manifest: PathBuf,
    /// Folder for the MP4 (default: the folder holding the segment's folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// grid, speaker, presentation, single, or a layout file (.toml/.json).
    #[arg(long, default_value = "grid")]
    pub layout: String,
    /// Encoder preset name or file.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Watermark PNG (at most 140x140), drawn top right.
    #[arg(long)]
    pub watermark: Option<PathBuf>,
}

/// Runs a transcode: the MP4 `<room>_<conf>_<segment>_transcoded.mp4`, its length, size and
/// speed.
pub fn transcode(a: TranscodeArgs) -> Result<Value> {
    let out_dir = match a.out {
        Some(d) => d,
        None => a
            .manifest
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let spec = job::kinds::transcode::TranscodeSpec {
        manifest: a.manifest,
        out_dir,
        layout: Layout::resolve(&a.layout)?,
        preset: Preset::resolve(&a.preset)?,
        watermark: a.watermark,
    };
    let report = runtime()?.block_on(job::kinds::transcode::transcode(&spec))?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

/// `roomcast bench transcode`: a synthetic room recorded individually in real time, then
/// transcoded as fast as possible.
#[derive(Debug, Clone, clap::Args)]
pub struct TranscodeBench {
    /// Participants (all present, camera and microphone).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub participants: u32,
    /// Seconds recorded.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(3..=3600))]
    pub seconds: u32,
    /// Camera size the synthetic participants send, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720")]
    pub camera: String,
    /// Encoder preset of the transcode.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Layout of the transcode.
    #[arg(long, default_value = "grid")]
    pub layout: String,
}

/// `roomcast bench snapshot`: what a running job's thumbnail costs.
pub fn bench_snapshot(count: u32) -> Result<Value> {
    let report = crate::bench::snapshot::snapshot_cost(count).map_err(|e| Error::Job {
        code: crate::codes::Code::Generic,
        message: format!("{e:#}"),
    })?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

/// Whether long commands show progress as log lines only (servers, JSON logs), not bars.
pub fn progress_lines_only(lines_only: bool) {
    crate::progress::init(lines_only);
}

/// Runs the transcode bench: what recording individually cost (cores, including the synthetic
/// senders' own encoders), then the transcode's speed and cores.
pub fn bench_transcode(b: TranscodeBench) -> Result<Value> {
    let bad = |m: &str| Error::Invalid {
        field: "--camera".into(),
        message: m.into(),
        code: crate::codes::Code::Generic,
    };
    let (w, h) = b
        .camera
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| (16..=3840).contains(w) && (16..=2160).contains(h))
        .ok_or_else(|| bad("WIDTHxHEIGHT, 16x16 to 3840x2160"))?;
    let dir = std::env::temp_dir().join(format!("roomcast-bench-transcode-{}", std::process::id()));
    let mut room = crate::room::synthetic::SyntheticRoom::steady(b.participants as usize);
    room.camera_size = (w, h);
    let spec = job::kinds::individual::IndividualSpec {
        dir: dir.clone(),
        room_id: "bench".into(),
        conf_num: "1".into(),
        segment: 1,
    };
    let rt = runtime()?;
    let cpu0 = crate::util::cpu_seconds();
    let rec = rt.block_on(job::kinds::individual::record_individual(
        &room,
        &spec,
        Some(Duration::from_secs(b.seconds as u64)),
        std::future::pending(),
    ))?;
    let rec_cpu = crate::util::cpu_seconds() - cpu0;
    let bytes: u64 = rec.manifest.files.iter().map(|f| f.bytes).sum();
    let spec = job::kinds::transcode::TranscodeSpec {
        manifest: rec.manifest_path.clone(),
        out_dir: dir.clone(),
        layout: Layout::resolve(&b.layout)?,
        preset: Preset::resolve(&b.preset)?,
        watermark: None,
    };
    let report = rt.block_on(job::kinds::transcode::transcode(&spec));
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    Ok(json!({
        "participants": b.participants,
        "camera": format!("{w}x{h}"),
        "media_seconds": b.seconds,
        "individual": {
            "files": rec.manifest.files.len(),
            "bytes": bytes,
            "cores_with_synthetic_senders": rec_cpu / b.seconds as f64,
        },
        "transcode": {
            "preset": b.preset,
            "wall_seconds": report.wall_s,
            "speed": report.speed,
            "cores": report.cpu_s / report.wall_s.max(1e-3),
            "cpu_seconds": report.cpu_s,
        },
    }))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the runtime", e))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Initializes GStreamer and checks the elements roomcast needs are present.
pub fn init() -> Result<()> {
    Ok(pipeline::init()?)
}

/// Settles how this process allocates memory (call it first in `main`).
///
/// A big room runs thousands of GStreamer streaming threads. GLib's slice allocator keeps
/// per-thread caches that are never given back; with GLib allocating through malloc instead,
/// the memory a 1000-person recording used goes back when it ends (freed memory is trimmed
/// when a job ends). `G_SLICE` is read before `main` runs (GLib sets up its allocator in a
/// library constructor), so the process starts itself again, once, with it in its
/// environment; a setting already given is kept. The C library's arenas are left at their
/// default (eight per core): one per core, tried before, now keeps more after a big room
/// (1000-person room, 5 s after: 184–212 MiB with one per core, 173–186 MiB with the default;
/// 95 MiB before).
pub fn tune_allocator() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("G_SLICE").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env("G_SLICE", "always-malloc");
    if std::env::var_os("LIBGL_ALWAYS_SOFTWARE").is_none() {
        // Custom view pages are drawn by WebKit; without this it looks for a GPU and display.
        cmd.env("LIBGL_ALWAYS_SOFTWARE", "1");
    }
    // Only returns if the exec failed: then run as we are.
    let _ = cmd.exec();
}

/// What a failed command prints, `{"result": 7xxx, "msg": "…"}` (7000 for an error without a
/// code of its own), and its exit status: 2 for bad configuration, as for bad arguments; 1
/// otherwise.
pub fn failure(e: &anyhow::Error) -> (serde_json::Value, u8) {
    let known = e.downcast_ref::<Error>();
    let code = known.map(|e| e.code().as_u16());
    let body = serde_json::json!({ "result": code.unwrap_or(7000), "msg": format!("{e:#}") });
    let status = match known {
        Some(e) if e.is_config() => 2,
        _ => 1,
    };
    (body, status)
}

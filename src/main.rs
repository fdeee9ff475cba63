//! roomcast command line: thin dispatch into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use roomcast::config::DeliveryConfig;
use roomcast::delivery::live_recording_event;
use roomcast::delivery::spool::SegmentMeta;
use roomcast::job::{record_with_events, JobCommand, JobEvent, RecordingSpec};
use roomcast::layout::Layout;
use roomcast::pipeline::mp4::SegmentFile;
use roomcast::pipeline::rtmp::{DestinationState, RtmpUrl};
use roomcast::pipeline::{self, Preset};
use roomcast::room::janus::JanusRoom;
use roomcast::room::synthetic::SyntheticRoom;
use roomcast::room::RoomConnector;
use roomcast::webhook::{status_event, EventContext, WebhookQueue};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Record and stream video rooms with GStreamer"
)]
struct Cli {
    /// Log as JSON lines instead of text (logs go to stderr).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Record a synthetic room (late joiner, leaver, screen share) into an MP4.
    Demo(DemoArgs),
    /// Layout tools.
    Layout {
        #[command(subcommand)]
        cmd: LayoutCmd,
    },
    /// Measure the composite pipeline.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Deliver what is queued in the data folder (spool and webhooks), then exit.
    Deliver {
        /// Keep trying for up to this many seconds.
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
    },
    /// Hand an existing recording to delivery (spool it for `roomcast deliver`).
    Enqueue {
        /// The MP4 file (it is moved into the spool).
        file: PathBuf,
        /// Room id.
        #[arg(long)]
        room: String,
        /// Conference number.
        #[arg(long)]
        conf: String,
        /// Application id.
        #[arg(long, default_value = "roomcast")]
        app_id: String,
    },
    /// Run the control API and a worker in one process, on the embedded queue in the data
    /// folder (or on Redis when ROOMCAST_REDIS_URL is set).
    Serve(ServeArgs),
    /// Run a worker that takes jobs from Redis.
    Worker {
        /// Redis URL (default: ROOMCAST_REDIS_URL).
        #[arg(long)]
        redis: Option<String>,
    },
    /// Run the control API on Redis (no worker).
    Api(ServeArgs),
    /// Record a Janus VideoRoom as a hidden participant until the duration ends, the room is
    /// destroyed, or SIGINT/SIGTERM (which finalize the file).
    Record(RecordArgs),
    /// Turn recordings left fragmented by a crash into normal MP4 files.
    Finalize {
        /// Segment files to finalize.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Number of participants.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    participants: u32,
    /// Recording length in seconds.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Room id used in the file name.
    #[arg(long, default_value = "demo")]
    room: String,
    /// Application id reported in webhooks.
    #[arg(long, default_value = "demo")]
    app_id: String,
    #[command(flatten)]
    output: OutputArgs,
}

/// What a command-line recording produces and where it goes.
#[derive(clap::Args)]
struct OutputArgs {
    /// grid, speaker, presentation, single, or a layout file (.toml/.json).
    #[arg(long, default_value = "grid")]
    layout: String,
    /// Output folder.
    #[arg(long, default_value = "./recordings")]
    out: PathBuf,
    /// Encoder preset name or file.
    #[arg(long, default_value = pipeline::preset::DEFAULT_PRESET)]
    preset: String,
    /// Watermark PNG (at most 140x140), drawn top right.
    #[arg(long)]
    watermark: Option<PathBuf>,
    /// Most tiles in grid regions (more show "+N").
    #[arg(long)]
    max_tiles: Option<u32>,
    /// Conference number used in the file name.
    #[arg(long, default_value = "1")]
    conf: String,
    /// Also stream to this RTMP URL (rtmp:// or rtmps://; up to three).
    #[arg(long = "rtmp", value_name = "URL")]
    rtmp: Vec<String>,
    /// Deliver this job's recording here instead of ROOMCAST_STORAGE (file://, s3://, sftp://).
    #[arg(long)]
    storage: Option<String>,
    /// How long to wait for delivery and webhooks before exiting (what is left stays queued
    /// for `roomcast deliver`).
    #[arg(long, default_value_t = 30.0)]
    deliver_wait: f64,
}

#[derive(clap::Args)]
struct RecordArgs {
    /// Janus WebSocket URL, e.g. ws://127.0.0.1:8188.
    #[arg(long)]
    janus: String,
    /// VideoRoom room number.
    #[arg(long)]
    room: u64,
    /// Room PIN (or ROOMCAST_JANUS_PIN, which keeps it out of process listings).
    #[arg(long)]
    pin: Option<String>,
    /// Text in a stream description or display name that marks a screen share.
    #[arg(long, default_value = "screen")]
    screen_pattern: String,
    /// Local address for ICE (use only this interface).
    #[arg(long)]
    ice_address: Option<String>,
    /// Reconnect attempts in a row (with backoff) before the recording ends with 7026.
    #[arg(long, default_value_t = 6)]
    max_reconnects: u32,
    /// Stop after this many seconds (0: until stopped).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Room id used in file names and webhooks (default: the room number).
    #[arg(long)]
    room_id: Option<String>,
    /// Application id reported in webhooks.
    #[arg(long, default_value = "roomcast")]
    app_id: String,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Redis URL (default: ROOMCAST_REDIS_URL; unset = embedded queue).
    #[arg(long)]
    redis: Option<String>,
    /// API address:port (default: ROOMCAST_LISTEN or 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Run without ROOMCAST_API_TOKEN (the token is then "dev"); for local trials only.
    #[arg(long)]
    insecure_dev: bool,
}

#[derive(Subcommand)]
enum LayoutCmd {
    /// Render a layout with numbered placeholder tiles into a PNG.
    Preview {
        /// grid, speaker, presentation, single, or a layout file.
        layout: String,
        /// Number of participants.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=49))]
        participants: u32,
        /// Add a screen share from the first participant.
        #[arg(long)]
        screen_share: bool,
        /// Encoder preset (for the canvas size).
        #[arg(long, default_value = pipeline::preset::DEFAULT_PRESET)]
        preset: String,
        /// PNG to write.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Run the real composite pipeline as fast as possible on synthetic inputs.
    Composite {
        /// Number of participants.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=25))]
        participants: u32,
        /// Encoder preset name or file.
        #[arg(long, default_value = pipeline::preset::DEFAULT_PRESET)]
        preset: String,
        /// Media seconds to produce.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// Layout.
        #[arg(long, default_value = "grid")]
        layout: String,
        /// Input pictures: videotestsrc patterns such as smpte or ball, comma-separated and
        /// used in turn (default: the synthetic room's colour + marker).
        #[arg(long)]
        pattern: Option<String>,
        /// Override the preset's video bitrate (kbit/s), e.g. to match another pipeline.
        #[arg(long)]
        bitrate: Option<u32>,
    },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e
                .downcast_ref::<roomcast::Error>()
                .map(|e| e.code().as_u16());
            let body =
                serde_json::json!({ "result": code.unwrap_or(7000), "msg": format!("{e:#}") });
            eprintln!("{body}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    pipeline::init().map_err(roomcast::Error::from)?;
    match cli.cmd {
        Cmd::Demo(args) => {
            if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0) {
                anyhow::bail!("--duration must be between 0 and 86400 seconds");
            }
            let room = SyntheticRoom::demo(
                args.participants as usize,
                Duration::from_secs_f64(args.duration),
            );
            demo(
                args.output,
                args.duration,
                args.room,
                args.app_id,
                Source::Synthetic(room),
            )
        }
        Cmd::Record(r) => {
            if !(r.duration.is_finite() && (0.0..=7.0 * 86_400.0).contains(&r.duration)) {
                anyhow::bail!("--duration must be between 0 (until stopped) and 604800 seconds");
            }
            let mut room = JanusRoom::new(r.janus.clone(), r.room);
            room.pin = r
                .pin
                .clone()
                .or_else(|| std::env::var("ROOMCAST_JANUS_PIN").ok());
            room.screen_pattern = r.screen_pattern.clone();
            room.local_ip = r.ice_address.clone();
            room.max_reconnects = r.max_reconnects;
            let room_id = r.room_id.unwrap_or_else(|| r.room.to_string());
            demo(r.output, r.duration, room_id, r.app_id, Source::Janus(room))
        }
        Cmd::Layout {
            cmd:
                LayoutCmd::Preview {
                    layout,
                    participants,
                    screen_share,
                    preset,
                    out,
                },
        } => {
            let layout = Layout::resolve(&layout).map_err(roomcast::Error::from)?;
            let preset = Preset::resolve(&preset).map_err(roomcast::Error::from)?;
            pipeline::preview::render(&layout, &preset, participants as usize, screen_share, &out)
                .map_err(roomcast::Error::from)?;
            println!("{}", serde_json::json!({ "file": out }));
            Ok(())
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Composite {
                    participants,
                    preset,
                    seconds,
                    layout,
                    pattern,
                    bitrate,
                },
        } => {
            let mut preset = Preset::resolve(&preset).map_err(roomcast::Error::from)?;
            if let (Some(kbps), Some(v)) = (bitrate, preset.video.as_mut()) {
                v.bitrate_kbps = kbps;
            }
            let layout = Layout::resolve(&layout).map_err(roomcast::Error::from)?;
            let report = roomcast::bench::composite(
                &layout,
                &preset,
                participants as usize,
                seconds,
                pattern.as_deref(),
            )?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Cmd::Deliver { wait } => {
            let cfg = DeliveryConfig::from_env()?;
            let wait = Duration::from_secs_f64(wait.clamp(0.0, 86_400.0));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let out = rt.block_on(async {
                let (report, hooks) = match cfg.deliverer()? {
                    Some(d) => d.run_until_empty(wait).await,
                    None => {
                        let spooled = cfg.spool()?.list().len();
                        if spooled > 0 {
                            anyhow::bail!(
                                "{spooled} recordings are spooled but ROOMCAST_STORAGE is not set"
                            );
                        }
                        let hooks = match cfg.webhook_queue()? {
                            Some(q) => q.run_until_empty(wait).await,
                            None => 0,
                        };
                        (Default::default(), hooks)
                    }
                };
                Ok(serde_json::json!({ "delivery": report, "webhooks_pending": hooks }))
            })?;
            println!("{out}");
            Ok(())
        }
        Cmd::Enqueue {
            file,
            room,
            conf,
            app_id,
        } => {
            let cfg = DeliveryConfig::from_env()?;
            let bytes = std::fs::metadata(&file)
                .with_context(|| format!("reading {}", file.display()))?
                .len();
            let seg = SegmentFile {
                path: file,
                duration: gst::ClockTime::ZERO,
                bytes,
            };
            let spool = cfg.spool()?;
            let meta = segment_meta(&seg, &room, &conf, &app_id);
            let entry = spool.put(&seg.path, meta)?;
            println!(
                "{}",
                serde_json::json!({ "spooled": entry.id, "sha256": entry.meta.sha256 })
            );
            Ok(())
        }
        Cmd::Serve(args) => serve(args, true, true),
        Cmd::Api(args) => serve(args, true, false),
        Cmd::Worker { redis } => serve(
            ServeArgs {
                redis,
                listen: None,
                insecure_dev: false,
            },
            false,
            true,
        ),
        Cmd::Finalize { files } => {
            for f in files {
                let seg = pipeline::mp4::finalize(&f).map_err(roomcast::Error::from)?;
                println!(
                    "{}",
                    serde_json::json!({ "file": seg.path, "duration_s": seg.duration.mseconds() as f64 / 1000.0, "bytes": seg.bytes })
                );
            }
            Ok(())
        }
    }
}

/// `serve` (API + worker), `api` (API only, Redis) and `worker` (worker only, Redis).
fn serve(args: ServeArgs, with_api: bool, with_worker: bool) -> anyhow::Result<()> {
    use roomcast::config::ServerConfig;
    use roomcast::queue::Store;
    use roomcast::worker::{default_worker_id, Worker, WorkerConfig};
    let mut cfg = ServerConfig::from_env()?;
    if let Some(r) = args.redis {
        cfg.redis_url = Some(r);
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    let delivery = DeliveryConfig::from_env()?;
    if !(with_api && with_worker) && cfg.redis_url.is_none() {
        anyhow::bail!(
            "`roomcast api` and `roomcast worker` share jobs through Redis: set ROOMCAST_REDIS_URL              or --redis (or run `roomcast serve` for one machine)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = match &cfg.redis_url {
            Some(url) => Store::redis(url).await?,
            None => Store::embedded(&cfg.data_dir.join("queue"))?,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let worker = if with_worker {
            let w = Worker::new(
                store.clone(),
                WorkerConfig {
                    id: std::env::var("ROOMCAST_WORKER_ID")
                        .ok()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(default_worker_id),
                    budget: cfg.cpu_budget,
                    recordings_dir: absolute(&cfg.data_dir.join("recordings"))?,
                    delivery: delivery.clone(),
                },
            )?;
            Some(tokio::spawn(w.run(stopped())))
        } else {
            None
        };
        if with_api {
            let hooks = delivery.webhook_queue()?;
            let st = roomcast::api::state(store.clone(), cfg.clone(), hooks, args.insecure_dev)?;
            tokio::spawn(roomcast::api::queue_janitor(st.clone(), !with_worker));
            roomcast::api::serve(st, stopped()).await?;
        }
        if let Some(w) = worker {
            w.await.context("worker task")?;
        }
        anyhow::Ok(())
    })
}

/// `p` made absolute (created first): job records name segment files by absolute path, so a
/// worker taking a job over can find the previous worker's file on a shared or local disk.
fn absolute(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

/// Where a command-line recording gets its room.
enum Source {
    Synthetic(SyntheticRoom),
    Janus(JanusRoom),
}

/// Records one room (synthetic for `demo`, Janus for `record`) until the duration ends (0: until
/// stopped), the room goes away or SIGINT/SIGTERM; then delivers the segment.
fn demo(
    args: OutputArgs,
    duration: f64,
    room: String,
    app_id: String,
    source: Source,
) -> anyhow::Result<()> {
    let mut layout = Layout::resolve(&args.layout).map_err(roomcast::Error::from)?;
    if let Some(n) = args.max_tiles {
        layout = layout.with_max_tiles(n).map_err(roomcast::Error::from)?;
    }
    let preset = Preset::resolve(&args.preset).map_err(roomcast::Error::from)?;
    let mut delivery = DeliveryConfig::from_env()?;
    let storage_override = args.storage.clone();
    if let Some(url) = &storage_override {
        delivery.storage =
            Some(roomcast::delivery::Storage::parse(url).map_err(roomcast::Error::from)?);
    }
    let rtmp = RtmpUrl::parse_all(&args.rtmp).map_err(roomcast::Error::from)?;
    let duration = (duration > 0.0).then(|| Duration::from_secs_f64(duration));
    let (width, height) = preset
        .video
        .as_ref()
        .map(|v| (v.width, v.height))
        .unwrap_or((0, 0));
    let spec = RecordingSpec {
        room_id: room,
        conf_num: args.conf,
        out_dir: args.out,
        preset,
        layout,
        watermark: args.watermark,
        max_duration: duration,
        rtmp,
        record: true,
        first_segment: 1,
    };
    let (room_id, conf_num) = (spec.room_id.clone(), spec.conf_num.clone());
    let deliver_wait = Duration::from_secs_f64(args.deliver_wait.clamp(0.0, 86_400.0));
    let hooks = delivery.webhook_queue()?;
    let ctx = EventContext {
        app_id: app_id.clone(),
        room_id: room_id.clone(),
        conf_num: conf_num.clone(),
        by: "roomcast-demo".into(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rec = rt.block_on(async {
        let handle = match source {
            Source::Synthetic(room) => room.connect().await?,
            Source::Janus(room) => room.connect().await?,
        };
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stop requested, finalizing");
            let _ = tx.send(JobCommand::Stop).await;
        });
        let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
        let job = tokio::spawn(record_with_events(spec, handle, rx, Some(etx)));
        while let Some(ev) = erx.recv().await {
            match ev {
                JobEvent::Started { .. } => status(&hooks, &ctx, "room-live-recording-on", None),
                JobEvent::Progress { .. } => {}
                JobEvent::Streaming(d) => {
                    let (kind, code) = match d.state {
                        DestinationState::Live => ("room-streaming-on", None),
                        DestinationState::Retrying => (
                            "room-streaming-failed",
                            Some(roomcast::codes::Code::StreamFailedToStart),
                        ),
                        DestinationState::Stopped => ("room-streaming-off", None),
                        DestinationState::Connecting => continue,
                    };
                    let id = format!("{kind}-{}-{}", d.id, d.connections);
                    status_with_id(&hooks, &ctx, kind, code, &id);
                }
            }
        }
        let rec = job.await.context("recording task")?;
        match &rec {
            Ok(_) => status(&hooks, &ctx, "room-live-recording-off", None),
            Err(e) => status(&hooks, &ctx, "room-live-recording-failed", Some(e.code())),
        }
        let rec = rec.context("recording failed")?;
        let file = rec.file.clone().context("no segment was written")?;
        anyhow::Ok((rec, file))
    })?;
    let (rec, rec_file) = rec;
    let delivered = rt.block_on(deliver(
        &delivery,
        storage_override,
        &rec_file,
        &room_id,
        &conf_num,
        &app_id,
        deliver_wait,
    ))?;
    // Where the recording is now: its storage location once delivered (a path for folders,
    // the URL otherwise), else where it was recorded (or waits in the spool).
    let file = match delivered.get("url").and_then(|u| u.as_str()) {
        Some(url) => url.strip_prefix("file://").unwrap_or(url).to_string(),
        None => match delivered.get("spool_file").and_then(|p| p.as_str()) {
            Some(p) => p.to_string(),
            None => rec_file.path.display().to_string(),
        },
    };
    println!(
        "{}",
        serde_json::json!({
            "file": file,
            "duration_s": (rec_file.duration.mseconds() as f64 / 1000.0),
            "bytes": rec_file.bytes,
            "width": width,
            "height": height,
            "rtmp": rec.destinations,
            "delivery": delivered,
            "end": format!("{:?}", rec.reason),
        })
    );
    if rec.reason == roomcast::job::runner::EndReason::Disconnected {
        // The file is finalized and delivered; the run still failed.
        return Err(roomcast::Error::Invalid {
            field: "room".into(),
            message: "the room connection was lost and could not be re-established".into(),
            code: roomcast::codes::Code::StateDisconnected,
        }
        .into());
    }
    Ok(())
}

/// Hands a finished segment to delivery: into the spool and on to storage with its webhook,
/// or, without storage, a webhook for the file where it was recorded.
async fn deliver(
    cfg: &DeliveryConfig,
    storage_override: Option<String>,
    file: &SegmentFile,
    room_id: &str,
    conf_num: &str,
    app_id: &str,
    wait: Duration,
) -> anyhow::Result<serde_json::Value> {
    let meta = segment_meta(file, room_id, conf_num, app_id);
    match cfg.deliverer()? {
        Some(d) => {
            let mut entry = d.spool.put(&file.path, meta)?;
            if storage_override.is_some() {
                // Remembered in the sidecar: a later `roomcast deliver` honours it too.
                entry.target = storage_override;
                d.spool.update(&entry)?;
            }
            let (report, hooks) = d.run_until_empty(wait).await;
            // Still waiting for storage: the file is in the spool.
            let spooled = d.spool.media_path(&entry);
            Ok(serde_json::json!({
                "spool_file": spooled.exists().then_some(spooled),
                "url": report.urls.first(),
                "sha256": entry.meta.sha256,
                "pending": report.pending,
                "webhooks_pending": hooks,
            }))
        }
        None => {
            let Some(q) = cfg.webhook_queue()? else {
                return Ok(serde_json::Value::Null);
            };
            let mut meta = meta;
            meta.sha256 = roomcast::delivery::spool::sha256_file(&file.path)?;
            let url = format!("file://{}", std::fs::canonicalize(&file.path)?.display());
            let id = roomcast::delivery::local_recording_id(&meta);
            q.enqueue(&id, &live_recording_event(&meta, &url))?;
            let hooks = q.run_until_empty(wait).await;
            Ok(serde_json::json!({ "url": url, "sha256": meta.sha256, "webhooks_pending": hooks }))
        }
    }
}

/// What the spool records about a finished segment.
fn segment_meta(file: &SegmentFile, room_id: &str, conf_num: &str, app_id: &str) -> SegmentMeta {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let file_name = file
        .path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let segment = roomcast::job::runner::segment_number(&file_name).unwrap_or(1);
    SegmentMeta {
        job_id: format!("{app_id}-{room_id}-{conf_num}-{segment}"),
        app_id: app_id.to_string(),
        room_id: room_id.to_string(),
        conf_num: conf_num.to_string(),
        segment,
        file_name,
        started_at_unix_ms: now.saturating_sub(file.duration.mseconds()),
        ended_at_unix_ms: now,
        size: file.bytes,
        sha256: String::new(),
    }
}

/// Queues a status webhook (sent with the delivery's webhooks, retried like them).
fn status(
    hooks: &Option<WebhookQueue>,
    ctx: &EventContext,
    kind: &str,
    code: Option<roomcast::codes::Code>,
) {
    status_with_id(hooks, ctx, kind, code, kind);
}

/// Queues a status webhook whose id is `tag` plus the job (one per transition).
fn status_with_id(
    hooks: &Option<WebhookQueue>,
    ctx: &EventContext,
    kind: &str,
    code: Option<roomcast::codes::Code>,
    tag: &str,
) {
    if let Some(q) = hooks {
        let id = format!(
            "{tag}-{}-{}-{}",
            ctx.room_id,
            ctx.conf_num,
            std::process::id()
        );
        if let Err(e) = q.enqueue(&id, &status_event(kind, ctx, code)) {
            tracing::warn!(error = %e, "status webhook not queued");
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

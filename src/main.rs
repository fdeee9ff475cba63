//! roomcast command line: thin dispatch into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use roomcast::job::{record, JobCommand, RecordingSpec};
use roomcast::layout::Layout;
use roomcast::pipeline::rtmp::RtmpUrl;
use roomcast::pipeline::{self, Preset};
use roomcast::room::synthetic::SyntheticRoom;
use roomcast::room::RoomConnector;
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
    /// Turn recordings left fragmented by a crash into normal MP4 files.
    Finalize {
        /// Segment files to finalize.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct DemoArgs {
    /// grid, speaker, presentation, single, or a layout file (.toml/.json).
    #[arg(long, default_value = "grid")]
    layout: String,
    /// Number of participants.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    participants: u32,
    /// Recording length in seconds.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
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
    /// Room id used in the file name.
    #[arg(long, default_value = "demo")]
    room: String,
    /// Conference number used in the file name.
    #[arg(long, default_value = "1")]
    conf: String,
    /// Also stream to this RTMP URL (rtmp:// or rtmps://; up to three).
    #[arg(long = "rtmp", value_name = "URL")]
    rtmp: Vec<String>,
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
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        Cmd::Demo(args) => demo(args),
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

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0) {
        anyhow::bail!("--duration must be between 0 and 86400 seconds");
    }
    let mut layout = Layout::resolve(&args.layout).map_err(roomcast::Error::from)?;
    if let Some(n) = args.max_tiles {
        layout = layout.with_max_tiles(n).map_err(roomcast::Error::from)?;
    }
    let preset = Preset::resolve(&args.preset).map_err(roomcast::Error::from)?;
    let rtmp = RtmpUrl::parse_all(&args.rtmp).map_err(roomcast::Error::from)?;
    let duration = Duration::from_secs_f64(args.duration);
    let (width, height) = preset
        .video
        .as_ref()
        .map(|v| (v.width, v.height))
        .unwrap_or((0, 0));
    let spec = RecordingSpec {
        room_id: args.room,
        conf_num: args.conf,
        out_dir: args.out,
        preset,
        layout,
        watermark: args.watermark,
        max_duration: Some(duration),
        rtmp,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rec = rt.block_on(async move {
        let room = SyntheticRoom::demo(args.participants as usize, duration);
        let handle = room.connect().await?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stop requested, finalizing");
            let _ = tx.send(JobCommand::Stop).await;
        });
        record(spec, handle, rx).await.context("recording failed")
    })?;
    println!(
        "{}",
        serde_json::json!({
            "file": rec.file.path,
            "duration_s": (rec.file.duration.mseconds() as f64 / 1000.0),
            "bytes": rec.file.bytes,
            "width": width,
            "height": height,
            "rtmp": rec.destinations,
        })
    );
    Ok(())
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

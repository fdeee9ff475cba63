//! roomcast command line: thin dispatch into the library.

use clap::{Parser, Subcommand};
use roomcast::command::{self, CompositeBench, RecordRequest, ServeOptions};
use roomcast::queue::{ConnectorSpec, SyntheticScript};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The default encoder preset.
const DEFAULT_PRESET: &str = "h264-720p30";

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
    #[arg(long, default_value = DEFAULT_PRESET)]
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
        #[arg(long, default_value = DEFAULT_PRESET)]
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
        #[arg(long, default_value = DEFAULT_PRESET)]
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

fn print(v: serde_json::Value) -> anyhow::Result<()> {
    println!("{v}");
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    roomcast::pipeline::init()?;
    match cli.cmd {
        Cmd::Demo(a) => {
            if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 86_400.0) {
                anyhow::bail!("--duration must be between 0 and 86400 seconds");
            }
            let connector = ConnectorSpec::Synthetic {
                participants: a.participants,
                script: SyntheticScript::Demo,
            };
            recording(a.output, connector, a.room, a.app_id, a.duration)
        }
        Cmd::Record(r) => {
            if !(r.duration.is_finite() && (0.0..=7.0 * 86_400.0).contains(&r.duration)) {
                anyhow::bail!("--duration must be between 0 (until stopped) and 604800 seconds");
            }
            let connector = ConnectorSpec::Janus {
                url: r.janus,
                room: r.room,
                pin: r.pin.or_else(|| std::env::var("ROOMCAST_JANUS_PIN").ok()),
                screen_pattern: Some(r.screen_pattern),
                ice_address: r.ice_address,
                max_reconnects: Some(r.max_reconnects),
            };
            let room_id = r.room_id.unwrap_or_else(|| r.room.to_string());
            recording(r.output, connector, room_id, r.app_id, r.duration)
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
        } => print(command::layout_preview(
            &layout,
            &preset,
            participants as usize,
            screen_share,
            &out,
        )?),
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
        } => print(command::bench_composite(CompositeBench {
            participants: participants as usize,
            preset,
            seconds,
            layout,
            pattern,
            bitrate,
        })?),
        Cmd::Deliver { wait } => print(command::deliver(Duration::from_secs_f64(
            wait.clamp(0.0, 86_400.0),
        ))?),
        Cmd::Enqueue {
            file,
            room,
            conf,
            app_id,
        } => print(command::enqueue(&file, &room, &conf, &app_id)?),
        Cmd::Serve(a) => serve(a, true, true),
        Cmd::Api(a) => serve(a, true, false),
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
                print(command::finalize(&f)?)?;
            }
            Ok(())
        }
    }
}

fn serve(a: ServeArgs, api: bool, worker: bool) -> anyhow::Result<()> {
    Ok(command::serve(ServeOptions {
        redis: a.redis,
        listen: a.listen,
        insecure_dev: a.insecure_dev,
        api,
        worker,
    })?)
}

/// `demo` and `record`: one job, its JSON line, then its failure if it failed.
fn recording(
    o: OutputArgs,
    connector: ConnectorSpec,
    room_id: String,
    app_id: String,
    duration: f64,
) -> anyhow::Result<()> {
    let report = command::record(RecordRequest {
        connector,
        room_id,
        app_id,
        conf_num: o.conf,
        layout: o.layout,
        max_tiles: o.max_tiles,
        preset: o.preset,
        watermark: o.watermark,
        rtmp: o.rtmp,
        storage: o.storage,
        out: o.out,
        duration: (duration > 0.0).then(|| Duration::from_secs_f64(duration)),
        deliver_wait: Duration::from_secs_f64(o.deliver_wait.clamp(0.0, 86_400.0)),
    })?;
    if let Some(line) = report.line {
        println!("{line}");
    }
    match report.failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

//! roomcast command line: parses arguments, calls [`roomcast::command`], prints JSON lines.
//! Errors go to stderr as `{"result": <7xxx>, "msg": …}` with exit code 1 (2 for bad
//! configuration, as clap uses for bad arguments).

use clap::{Parser, Subcommand};
use roomcast::command::{
    self, CompositeBench, DemoArgs, LiveBench, PreviewArgs, RecordArgs, RecordReport, Role,
    ServeArgs, TranscodeArgs, TranscodeBench,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Record a Janus VideoRoom as a hidden participant until the duration ends, the room is
    /// destroyed, or SIGINT/SIGTERM (which finalize the file).
    Record(RecordArgs),
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
    /// Render a custom view page for a recording (run by roomcast itself, one process per
    /// page: frames to stdout, scripts from stdin).
    #[command(hide = true)]
    PageRender {
        /// The page.
        #[arg(long)]
        url: String,
        /// Canvas width.
        #[arg(long)]
        width: u32,
        /// Canvas height.
        #[arg(long)]
        height: u32,
    },
    /// Lay an individual recording's segment (its manifest and track files) out into one MP4,
    /// as fast as the machine allows.
    Transcode(TranscodeArgs),
    /// Turn recordings left fragmented by a crash into normal MP4 files.
    Finalize {
        /// Segment files to finalize.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LayoutCmd {
    /// Render a layout with numbered placeholder tiles into a PNG.
    Preview(PreviewArgs),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Run the real composite pipeline as fast as possible on synthetic inputs.
    Composite(CompositeBench),
    /// Run real-time recordings at once and check what each wrote.
    Live(LiveBench),
    /// Record a synthetic room individually, then transcode it as fast as possible.
    Transcode(TranscodeBench),
    /// What a running job's thumbnail costs (the frame tap and a JPEG every 2 s).
    Snapshot {
        /// Snapshots to encode.
        #[arg(long, default_value_t = 100)]
        count: u32,
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
    command::tune_allocator();
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    // Servers log their jobs' progress as lines; commands run by hand may draw bars.
    let server = matches!(cli.cmd, Cmd::Serve(_) | Cmd::Api(_) | Cmd::Worker { .. });
    command::progress_lines_only(cli.log_json || server);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (body, status) = command::failure(&e);
            eprintln!("{body}");
            ExitCode::from(status)
        }
    }
}

fn print(v: serde_json::Value) -> anyhow::Result<()> {
    println!("{v}");
    Ok(())
}

/// `demo` and `record`: the job's JSON line (when it wrote a file), then its failure.
fn recorded(report: RecordReport) -> anyhow::Result<()> {
    if let Some(line) = report.line {
        println!("{line}");
    }
    match report.failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    roomcast::command::init()?;
    match cli.cmd {
        Cmd::Demo(a) => recorded(command::record(a.request()?)?),
        Cmd::Record(a) => recorded(command::record(a.request()?)?),
        Cmd::Layout {
            cmd: LayoutCmd::Preview(a),
        } => print(command::layout_preview(&a)?),
        Cmd::Bench {
            cmd: BenchCmd::Composite(b),
        } => print(command::bench_composite(b)?),
        Cmd::Bench {
            cmd: BenchCmd::Live(b),
        } => print(command::bench_live(b)?),
        Cmd::Bench {
            cmd: BenchCmd::Transcode(b),
        } => print(command::bench_transcode(b)?),
        Cmd::Bench {
            cmd: BenchCmd::Snapshot { count },
        } => print(command::bench_snapshot(count)?),
        Cmd::Deliver { wait } => print(command::deliver(Duration::from_secs_f64(
            wait.clamp(0.0, 86_400.0),
        ))?),
        Cmd::Enqueue {
            file,
            room,
            conf,
            app_id,
        } => print(command::enqueue(&file, &room, &conf, &app_id)?),
        Cmd::Serve(a) => Ok(command::serve(a, Role::Both)?),
        Cmd::Api(a) => Ok(command::serve(a, Role::Api)?),
        Cmd::Worker { redis } => {
            let a = ServeArgs {
                redis,
                ..Default::default()
            };
            Ok(command::serve(a, Role::Worker)?)
        }
        Cmd::PageRender { url, width, height } => Ok(command::page_render(&url, width, height)?),
        Cmd::Transcode(a) => print(command::transcode(a)?),
        Cmd::Finalize { files } => {
            for f in files {
                print(command::finalize(&f)?)?;
            }
            Ok(())
        }
    }
}

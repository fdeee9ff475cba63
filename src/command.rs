//! What each command-line command does, as library calls: `main.rs` only parses arguments
//! and prints. A command-line recording (`demo`, `record`) is a job like any other: a spec run
//! through [`job::execute`] over an in-memory host, then delivered.

use crate::config::{DeliveryConfig, ServerConfig};
use crate::delivery::spool::SegmentMeta;
use crate::delivery::Storage;
use crate::job::{self, HandOff, JobCommand, JobEnv, MemoryHost, Outbox, Plan};
use crate::layout::Layout;
use crate::pipeline::rtmp::RtmpUrl;
use crate::pipeline::{self, Preset};
use crate::queue::{ConnectorSpec, Job, JobKind, JobSpec, JobState, Store};
use crate::worker::{default_worker_id, Worker, WorkerConfig};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Who a command-line job's status events say started it.
pub const CLI_REQUESTER: &str = "roomcast-cli";

/// A recording run from the command line.
#[derive(Debug, Clone)]
pub struct RecordRequest {
    /// Where the media comes from.
    pub connector: ConnectorSpec,
    /// Room id (file names, webhooks).
    pub room_id: String,
    /// Application id (webhooks).
    pub app_id: String,
    /// Conference number (file names, webhooks).
    pub conf_num: String,
    /// Built-in layout name or a layout file.
    pub layout: String,
    /// Most tiles in grid regions.
    pub max_tiles: Option<u32>,
    /// Preset name or file.
    pub preset: String,
    /// Watermark PNG.
    pub watermark: Option<PathBuf>,
    /// RTMP destinations.
    pub rtmp: Vec<String>,
    /// Storage for this job instead of `ROOMCAST_STORAGE`.
    pub storage: Option<String>,
    /// Output folder.
    pub out: PathBuf,
    /// Stop after this long (none: until stopped).
    pub duration: Option<Duration>,
    /// How long to wait for delivery before returning.
    pub deliver_wait: Duration,
}

/// What a command-line recording printed, and the error it ended with (a job that failed
/// after writing a file still reports the file).
#[derive(Debug)]
pub struct RecordReport {
    /// The JSON line: file, duration, size, canvas, RTMP, delivery, end, the job's segments
    /// and archive entries (none if nothing was written).
    pub line: Option<Value>,
    /// How the job failed, if it did.
    pub failure: Option<Error>,
}

/// Runs a recording job to its end (duration, room end, or SIGINT/SIGTERM), then delivers.
pub fn record(req: RecordRequest) -> Result<RecordReport> {
    let mut layout = Layout::resolve(&req.layout)?;
    if let Some(n) = req.max_tiles {
        layout = layout.with_max_tiles(n)?;
    }
    let preset = Preset::resolve(&req.preset)?;
    let rtmp = RtmpUrl::parse_all(&req.rtmp)?;
    let mut delivery = DeliveryConfig::from_env()?;
    if let Some(url) = &req.storage {
        delivery.storage = Some(Storage::parse(url)?);
    }
    let (width, height) = preset
        .video
        .as_ref()
        .map(|v| (v.width, v.height))
        .unwrap_or((0, 0));
    let spec = JobSpec {
        kind: JobKind::Recording,
        room_id: req.room_id,
        app_id: req.app_id,
        conf_num: req.conf_num,
        connector: req.connector,
        layout: Value::String(req.layout),
        preset: req.preset,
        watermark: req.watermark,
        cost: preset.estimated_cost(rtmp.len(), None),
        rtmp_urls: req.rtmp,
        max_active_talkers: None,
        max_duration_secs: req.duration.map(|d| d.as_secs_f64()),
        started_by: CLI_REQUESTER.into(),
        storage: req.storage,
    };
    let plan = Plan {
        layout,
        preset,
        rtmp,
    };
    let env = JobEnv {
        recordings_dir: req.out,
        outbox: Arc::new(Outbox::open(&delivery)?),
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let host = MemoryHost::new();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stop requested, finalizing");
            let _ = tx.send(JobCommand::Stop).await;
        });
        let job = Job::new(Job::new_id(JobKind::Recording), spec);
        let no_hand_back = Arc::new(AtomicBool::new(false));
        let (job, outcome) = job::execute(&host, &env, job, Some(plan), rx, no_hand_back).await;
        let failure = (job.state == JobState::Failed).then(|| Error::Job {
            code: crate::codes::Code::from_u16(job.result).unwrap_or(crate::codes::Code::Generic),
            message: job.msg.clone(),
        });
        let Some((file, handed)) = outcome.segment else {
            return Ok(RecordReport {
                line: None,
                failure: failure.or(Some(Error::Job {
                    code: crate::codes::Code::RecordError,
                    message: "no segment was written".into(),
                })),
            });
        };
        let (report, hooks) = env.outbox.run_until_empty(&host, req.deliver_wait).await;
        let file_name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let url = report
            .files
            .iter()
            .find(|(m, _)| m.job_id == job.id && m.file_name == file_name)
            .map(|(_, u)| u.clone());
        let (where_now, delivered) = match &handed {
            HandOff::Spooled { spool_file, sha256 } => {
                let waiting = spool_file.exists().then(|| spool_file.clone());
                let now = match (&url, &waiting) {
                    (Some(u), _) => u.strip_prefix("file://").unwrap_or(u).to_string(),
                    (None, Some(p)) => p.display().to_string(),
                    (None, None) => file.path.display().to_string(),
                };
                let d = json!({
                    "spool_file": waiting,
                    "url": url,
                    "sha256": sha256,
                    "pending": report.pending,
                    "webhooks_pending": hooks,
                });
                (now, d)
            }
            HandOff::Local { url, sha256 } => {
                let now = url.strip_prefix("file://").unwrap_or(url).to_string();
                let d = if env.outbox.notifier.is_configured() {
                    json!({ "url": url, "sha256": sha256, "webhooks_pending": hooks })
                } else {
                    Value::Null
                };
                (now, d)
            }
            HandOff::Kept => (file.path.display().to_string(), Value::Null),
        };
        let job = host.job().unwrap_or(job);
        let line = json!({
            "file": where_now,
            "duration_s": file.duration.mseconds() as f64 / 1000.0,
            "bytes": file.bytes,
            "width": width,
            "height": height,
            "rtmp": outcome.destinations,
            "delivery": delivered,
            "end": outcome.reason.map(|r| format!("{r:?}")),
            "job_id": job.id,
            "segments": job.segments,
            "archive": host.entries(),
        });
        Ok(RecordReport {
            line: Some(line),
            failure,
        })
    })
}

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
    let (report, hooks) = rt.block_on(outbox.run_until_empty(&MemoryHost::new(), wait));
    Ok(json!({ "delivery": report, "webhooks_pending": hooks }))
}

/// Moves an existing recording into the spool for delivery.
pub fn enqueue(file: &Path, room: &str, conf: &str, app_id: &str) -> Result<Value> {
    let cfg = DeliveryConfig::from_env()?;
    let bytes = std::fs::metadata(file)
        .map_err(|e| Error::io(format!("reading {}", file.display()), e))?
        .len();
    let now = crate::clock::now_ms();
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let segment = job::runner::segment_number(&file_name).unwrap_or(1);
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
    };
    let entry = cfg
        .spool()?
        .put(file, meta)
        .map_err(|e| Error::io("spooling the file", e))?;
    Ok(json!({ "spooled": entry.id, "sha256": entry.meta.sha256 }))
}

/// Turns a recording left fragmented by a crash into a normal MP4.
pub fn finalize(file: &Path) -> Result<Value> {
    let seg = pipeline::mp4::finalize(file)?;
    Ok(json!({
        "file": seg.path,
        "duration_s": seg.duration.mseconds() as f64 / 1000.0,
        "bytes": seg.bytes,
    }))
}

/// Draws a layout with numbered tiles into a PNG.
pub fn layout_preview(
    layout: &str,
    preset: &str,
    participants: usize,
    screen_share: bool,
    out: &Path,
) -> Result<Value> {
    let layout = Layout::resolve(layout)?;
    let preset = Preset::resolve(preset)?;
    pipeline::preview::render(&layout, &preset, participants, screen_share, out)?;
    Ok(json!({ "file": out }))
}

/// The composite benchmark's options.
#[derive(Debug, Clone)]
pub struct CompositeBench {
    /// Participants.
    pub participants: usize,
    /// Preset name or file.
    pub preset: String,
    /// Media seconds.
    pub seconds: u32,
    /// Layout.
    pub layout: String,
    /// Input patterns.
    pub pattern: Option<String>,
    /// Video bitrate override (kbit/s).
    pub bitrate: Option<u32>,
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
        b.participants,
        b.seconds,
        b.pattern.as_deref(),
    )
    .map_err(|e| Error::Job {
        code: crate::codes::Code::Generic,
        message: format!("{e:#}"),
    })?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

/// Which parts of the service a process runs.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Redis URL (none: ROOMCAST_REDIS_URL, else the embedded queue).
    pub redis: Option<String>,
    /// API address.
    pub listen: Option<String>,
    /// Run the API without a configured token.
    pub insecure_dev: bool,
    /// Run the control API.
    pub api: bool,
    /// Run a worker.
    pub worker: bool,
}

/// `serve` (API + worker), `api` (API only, Redis) and `worker` (worker only, Redis).
pub fn serve(opts: ServeOptions) -> Result<()> {
    let mut cfg = ServerConfig::from_env()?;
    if let Some(r) = opts.redis {
        cfg.redis_url = Some(r);
    }
    if let Some(l) = opts.listen {
        cfg.listen = l;
    }
    let delivery = DeliveryConfig::from_env()?;
    if !(opts.api && opts.worker) && cfg.redis_url.is_none() {
        return Err(Error::Invalid {
            field: "ROOMCAST_REDIS_URL".into(),
            message: "`roomcast api` and `roomcast worker` share jobs through Redis: set \
                      ROOMCAST_REDIS_URL or --redis (or run `roomcast serve` for one machine)"
                .into(),
            code: crate::codes::Code::Generic,
        });
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let store = match &cfg.redis_url {
            Some(url) => Store::redis(url).await,
            None => Store::embedded(&cfg.data_dir.join("queue")),
        }
        .map_err(|e| Error::Invalid {
            field: "queue".into(),
            message: e.to_string(),
            code: crate::codes::Code::Generic,
        })?;
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
        let worker = if opts.worker {
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
        if opts.api {
            let hooks = delivery.webhook_queue()?;
            let st = crate::api::state(store.clone(), cfg.clone(), hooks, opts.insecure_dev)?;
            tokio::spawn(crate::api::queue_janitor(st.clone(), !opts.worker));
            crate::api::serve(st, stopped()).await?;
        }
        if let Some(w) = worker {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "worker task ended abnormally");
            }
        }
        Ok(())
    })
}

/// `p` made absolute (created first): job records name segment files by absolute path, so a
/// worker taking a job over can find the previous worker's file on a shared or local disk.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
    std::fs::canonicalize(p).map_err(|e| Error::io(format!("resolving {}", p.display()), e))
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

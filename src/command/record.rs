//! `roomcast demo` and `roomcast record`: a recording job from command-line arguments, run
//! through the one job path over an in-memory host, then delivered.

use super::{runtime, shutdown_signal};
use crate::config::DeliveryConfig;
use crate::delivery::Storage;
use crate::job::{self, HandOff, JobCommand, JobEnv, MemoryHost, Outbox, Plan};
use crate::layout::Layout;
use crate::model::preset::DEFAULT_PRESET;
use crate::model::Preset;
use crate::model::RtmpUrl;
use crate::queue::{
    ConnectorSpec, Job, JobKind, JobSpec, JobState, SimulcastChoice, SyntheticScript,
};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// `roomcast demo`: a synthetic room with a late joiner, a leaver and a screen share.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of participants.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub participants: u32,
    /// Recording length in seconds.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Room id used in the file name.
    #[arg(long, default_value = "demo")]
    pub room: String,
    /// Application id reported in webhooks.
    #[arg(long, default_value = "demo")]
    pub app_id: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `roomcast record`: a Janus VideoRoom, joined hidden.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Janus WebSocket URL, e.g. ws://127.0.0.1:8188.
    #[arg(long)]
    pub janus: String,
    /// VideoRoom room number.
    #[arg(long)]
    pub room: u64,
    /// Room PIN (or ROOMCAST_JANUS_PIN, which keeps it out of process listings).
    #[arg(long)]
    pub pin: Option<String>,
    /// Text in a stream description or display name that marks a screen share.
    #[arg(long, default_value = "screen")]
    pub screen_pattern: String,
    /// Local address for ICE (use only this interface).
    #[arg(long)]
    pub ice_address: Option<String>,
    /// Reconnect attempts in a row (with backoff) before the recording ends with 7026.
    #[arg(long, default_value_t = 6)]
    pub max_reconnects: u32,
    /// Layer of a simulcast publisher's video to receive: `fit` (the smallest at least as
    /// tall as its tile, following the layout) or `top` (always the largest).
    #[arg(long, value_enum, default_value_t = SimulcastChoice::Fit)]
    pub simulcast: SimulcastChoice,
    /// Stop after this many seconds (0: until stopped).
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// Room id used in file names and webhooks (default: the room number).
    #[arg(long)]
    pub room_id: Option<String>,
    /// Application id reported in webhooks.
    #[arg(long, default_value = "roomcast")]
    pub app_id: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What a command-line recording produces and where it goes.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// grid, speaker, presentation, single, or a layout file (.toml/.json).
    #[arg(long, default_value = "grid")]
    pub layout: String,
    /// Output folder.
    #[arg(long, default_value = "./recordings")]
    pub out: PathBuf,
    /// Encoder preset name or file.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Watermark PNG (at most 140x140), drawn top right.
    #[arg(long)]
    pub watermark: Option<PathBuf>,
    /// Most tiles in grid regions (more show "+N").
    #[arg(long)]
    pub max_tiles: Option<u32>,
    /// Conference number used in the file name.
    #[arg(long, default_value = "1")]
    pub conf: String,
    /// Also stream to this RTMP URL (rtmp:// or rtmps://; up to three).
    #[arg(long = "rtmp", value_name = "URL")]
    pub rtmp: Vec<String>,
    /// Deliver this job's recording here instead of ROOMCAST_STORAGE (file://, s3://, sftp://).
    #[arg(long)]
    pub storage: Option<String>,
    /// How long to wait for delivery and webhooks before exiting (what is left stays queued
    /// for `roomcast deliver`).
    #[arg(long, default_value_t = 30.0)]
    pub deliver_wait: f64,
    /// A web page drawn over the tiles (custom view: http://, https:// or file://); tiles go
    /// where it marks them with `data-roomcast-tile`.
    #[arg(long, value_name = "URL")]
    pub layout_url: Option<String>,
    /// Draw the room's latest chat messages in a panel at the bottom right (over the custom
    /// view, or over the room's layout).
    #[arg(long)]
    pub chat_overlay: bool,
    /// Also cut the encode into live HLS (fMP4 segments and a playlist, in
    /// `<out>/<room>_<conf>_<n>_hls/`, or delivered to the storage).
    #[arg(long)]
    pub hls: bool,
    /// HLS segment length in seconds (a segment ends on the first keyframe at or after it).
    #[arg(long, default_value_t = crate::model::hls::DEFAULT_SEGMENT_SECS)]
    pub hls_segment: f64,
    /// Record every participant's tracks individually, as received (one Matroska file per
    /// track and publication, and a manifest), instead of the composite.
    #[arg(long, conflicts_with_all = ["rtmp", "hls", "layout_url", "chat_overlay"])]
    pub individual: bool,
}

impl DemoArgs {
    /// The recording these arguments ask for.
    pub fn request(self) -> Result<RecordRequest> {
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            return Err(invalid("--duration", "must be between 0 and 86400 seconds"));
        }
        let connector = ConnectorSpec::Synthetic {
            participants: self.participants,
            script: SyntheticScript::Demo,
        };
        Ok(self
            .output
            .request(connector, self.room, self.app_id, self.duration))
    }
}

impl RecordArgs {
    /// The recording these arguments ask for.
    pub fn request(self) -> Result<RecordRequest> {
        if !(self.duration.is_finite() && (0.0..=7.0 * 86_400.0).contains(&self.duration)) {
            return Err(invalid(
                "--duration",
                "must be between 0 (until stopped) and 604800 seconds",
            ));
        }
        let connector = ConnectorSpec::Janus {
            url: self.janus,
            room: self.room,
            pin: self
                .pin
                .or_else(|| std::env::var("ROOMCAST_JANUS_PIN").ok()),
            screen_pattern: Some(self.screen_pattern),
            ice_address: self.ice_address,
            max_reconnects: Some(self.max_reconnects),
            simulcast: Some(self.simulcast),
        };
        let room_id = self.room_id.unwrap_or_else(|| self.room.to_string());
        Ok(self
            .output
            .request(connector, room_id, self.app_id, self.duration))
    }
}

impl OutputArgs {
    fn request(
        self,
        connector: ConnectorSpec,
        room_id: String,
        app_id: String,
        duration: f64,
    ) -> RecordRequest {
        RecordRequest {
            connector,
            room_id,
            app_id,
            conf_num: self.conf,
            layout: self.layout,
            max_tiles: self.max_tiles,
            preset: self.preset,
            watermark: self.watermark,
            rtmp: self.rtmp,
            storage: self.storage,
            out: self.out,
            duration: (duration > 0.0).then(|| Duration::from_secs_f64(duration)),
            deliver_wait: Duration::from_secs_f64(self.deliver_wait.clamp(0.0, 86_400.0)),
            page: self.layout_url,
            chat_overlay: self.chat_overlay,
            hls: self.hls.then(|| crate::model::hls::HlsSpec {
                segment_secs: self.hls_segment,
                ..Default::default()
            }),
            individual: self.individual,
        }
    }
}

fn invalid(field: &str, message: &str) -> Error {
    Error::Invalid {
        field: field.into(),
        message: message.into(),
        code: crate::codes::Code::Generic,
    }
}

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
    /// A web page drawn over the tiles (custom view).
    pub page: Option<String>,
    /// Draw the room's chat over the recording.
    pub chat_overlay: bool,
    /// A live HLS output.
    pub hls: Option<crate::model::hls::HlsSpec>,
    /// Record the tracks individually instead of the composite.
    pub individual: bool,
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
    if req.individual {
        return record_individually(req);
    }
    let mut layout = Layout::resolve(&req.layout)?;
    if let Some(n) = req.max_tiles {
        layout = layout.with_max_tiles(n)?;
    }
    let preset = Preset::resolve(&req.preset)?;
    let rtmp = RtmpUrl::parse_all(&req.rtmp)?;
    if let Some(h) = &req.hls {
        h.validate().map_err(|m| invalid("--hls-segment", &m))?;
    }
    if let Some(url) = &req.page {
        // The command line is the operator's: any web page or local file.
        let ok =
            reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https" | "file"));
        if !ok {
            return Err(Error::Invalid {
                field: "--layout-url".into(),
                message: format!("{url:?} is not an http://, https:// or file:// URL"),
                code: crate::codes::Code::InvalidUrlFormat,
            });
        }
    }
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
        page: match (req.page, req.chat_overlay) {
            (Some(url), chat_overlay) => Some(crate::model::page::PageSpec { url, chat_overlay }),
            (None, true) => Some(crate::model::page::PageSpec::chat_overlay()),
            (None, false) => None,
        },
        hls: req.hls,
        manifest: None,
        fallback_for: None,
        runs_on: None,
    };
    let plan = Plan {
        layout,
        preset,
        rtmp,
    };
    let env = JobEnv {
        recordings_dir: req.out,
        outbox: Arc::new(Outbox::open(&delivery)?),
        min_free_bytes: 0,
        start_timeout: crate::config::DEFAULT_START_TIMEOUT,
        custom_views: false,
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
        let file_name = crate::util::file_name(&file.path);
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
        let mut job = host.job().unwrap_or(job);
        job.apply_deliveries(&host.entries());
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
            "hls": job.hls,
        });
        Ok(RecordReport {
            line: Some(line),
            failure,
        })
    })
}

/// `--individual`: the room's tracks as received, into `<out>/<room>_<conf>_1_tracks/`, until
/// the duration ends, the room ends, or SIGINT/SIGTERM. The line lists the files and manifest.
fn record_individually(req: RecordRequest) -> Result<RecordReport> {
    let target = job::kinds::individual::IndividualSpec {
        dir: req.out,
        room_id: req.room_id,
        conf_num: req.conf_num,
        segment: 1,
    };
    let rt = runtime()?;
    let outcome = rt.block_on(job::kinds::individual::record_spec(
        &req.connector,
        &target,
        req.duration,
        async {
            shutdown_signal().await;
            tracing::info!("stop requested, closing the track files");
        },
    ))?;
    let m = &outcome.manifest;
    let files: Vec<Value> = m
        .files
        .iter()
        .map(|f| {
            json!({
                "file": outcome.folder.join(&f.file),
                "participant_id": f.participant_id,
                "kind": f.kind,
                "codec": f.codec,
                "start_ms": f.start_ms,
                "end_ms": f.end_ms,
                "bytes": f.bytes,
            })
        })
        .collect();
    let line = json!({
        "folder": outcome.folder,
        "manifest": outcome.manifest_path,
        "duration_s": m.duration_ms.unwrap_or(0) as f64 / 1000.0,
        "files": files,
        "end": format!("{:?}", outcome.end),
    });
    let failure = match &outcome.end {
        job::kinds::individual::IndividualEnd::Disconnected(reason) => Some(Error::Job {
            code: crate::codes::Code::RecordError,
            message: format!("the room connection was lost: {reason}"),
        }),
        _ => None,
    };
    Ok(RecordReport {
        line: Some(line),
        failure,
    })
}

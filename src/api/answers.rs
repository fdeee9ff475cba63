//! What the handlers share: answers in the platform's shape (`reply`, `ok`, `coded`), reading
//! a body within its limit, a room and its jobs as the API shows them, the checks before a job
//! starts and submitting it, and what a room's settings ask for (its layout and page).

use super::input::{self, room_id, MAX_BODY_BYTES};
use super::state::{live_job, ApiError, ApiState};
use crate::codes::Code;
use crate::model::page::PageSpec;
use crate::model::preset::DEFAULT_PRESET;
use crate::model::RtmpUrl;
use crate::queue::Enqueued;
use crate::queue::SegmentStatus;
use crate::queue::{now_ms, ConnectorSpec, Job, JobKind, JobSpec, JobState, RoomConfig, RoomMode};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use std::sync::Arc;
use tracing::info;

pub(super) type Reply = Result<Response, ApiError>;
pub(super) type St = State<Arc<ApiState>>;

pub(super) fn reply(status: StatusCode, v: Value) -> Reply {
    Ok((status, Json(v)).into_response())
}

pub(super) fn ok(msg: &str, mut extra: Value) -> Reply {
    extra["result"] = json!(0);
    extra["msg"] = json!(msg);
    reply(StatusCode::OK, extra)
}

pub(super) fn coded(code: Code, extra: Value) -> Reply {
    coded_saying(code, code.message(), extra)
}

/// [`coded`] with a message of its own in place of the code table's.
pub(super) fn coded_saying(code: Code, msg: &str, mut extra: Value) -> Reply {
    let status = StatusCode::from_u16(code.info().http_status).unwrap_or(StatusCode::OK);
    extra["result"] = json!(code.as_u16());
    extra["msg"] = json!(msg);
    reply(status, extra)
}

/// Reads a request body of at most [`MAX_BODY_BYTES`] within the listener's body timeout.
pub(super) async fn read_body(body: Body, code: Code) -> Result<Vec<u8>, ApiError> {
    let limit = super::listen::BODY_READ_TIMEOUT;
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(b)) => Ok(b.to_vec()),
        Ok(Err(_)) => Err(ApiError::with_status(
            code,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_BODY_BYTES} bytes"),
        )),
        Err(_) => Err(ApiError::with_status(
            code,
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {} s", limit.as_secs()),
        )),
    }
}

pub(super) fn not_registered(room: &str) -> ApiError {
    ApiError::with_status(
        Code::Generic,
        StatusCode::NOT_FOUND,
        format!("room {room:?} is not registered (PUT /v1/rooms/{room} first)"),
    )
}

pub(super) async fn room(st: &ApiState, id: &str) -> Result<RoomConfig, ApiError> {
    room_id(id)?;
    st.store
        .get_room(id)
        .await?
        .ok_or_else(|| not_registered(id))
}

/// A job as the API shows it: stream keys hidden.
pub(super) fn view(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    let urls: Vec<String> = job
        .spec
        .rtmp_urls
        .iter()
        .map(|u| {
            RtmpUrl::parse(u)
                .map(|r| r.redacted())
                .unwrap_or_else(|_| "<invalid>".into())
        })
        .collect();
    v["spec"]["rtmp_urls"] = json!(urls);
    redact_connector(&mut v["spec"]["connector"]);
    v
}

/// Jobs as the API shows them, with each segment's delivery as the archive records it (see
/// [`Job::apply_deliveries`]).
pub(super) async fn views(st: &ApiState, jobs: Vec<Job>) -> Result<Vec<Value>, ApiError> {
    let pending = jobs.iter().any(|j| {
        j.segments
            .iter()
            .any(|s| matches!(s.status, SegmentStatus::Spooled | SegmentStatus::HandedOver))
    });
    let archive = if pending {
        st.store.archive().await?
    } else {
        Vec::new()
    };
    Ok(jobs
        .into_iter()
        .map(|mut job| {
            job.apply_deliveries(&archive);
            view(&job)
        })
        .collect())
}

/// A room as the API shows it: the Janus PIN hidden.
pub(super) fn room_view(room: &RoomConfig) -> Value {
    let mut v = serde_json::to_value(room).unwrap_or_default();
    redact_connector(&mut v["connector"]);
    v
}

/// Hides a connector's room PIN (stored, used to join, never shown).
fn redact_connector(connector: &mut Value) {
    if let Some(pin) = connector.get_mut("pin").filter(|p| p.is_string()) {
        *pin = json!("***");
    }
}

/// The last failure of the room's `kind` jobs, if recent (the platform's "try again after
/// 2 minutes"). Waiting-queue timeouts do not count: they say nothing about the room; nor does
/// a live recording that fell back (7014): the room was recorded.
fn recently_failed(st: &ApiState, jobs: &[Job], room: &str, kind: JobKind) -> bool {
    let horizon = now_ms().saturating_sub(st.cfg.retry_after.as_millis() as u64);
    jobs.iter().any(|j| {
        j.spec.room_id == room
            && j.spec.kind == kind
            && j.state == JobState::Failed
            && j.result != Code::RecordQueueFailed.as_u16()
            && j.result != Code::StreamQueueFailed.as_u16()
            && j.result != Code::RecordDelayed.as_u16()
            && j.ended_ms.is_some_and(|t| t >= horizon)
    })
}

/// Whether a `kind` job may start in `room` now: not while one runs (7012/7019, 7002) nor
/// within the retry horizon after a failed start (7015, 7004).
pub(super) async fn may_start(st: &ApiState, room: &str, kind: JobKind) -> Result<(), ApiError> {
    let jobs = st.store.jobs().await?;
    if let Some(job) = live_job(&jobs, room, kind) {
        return Err(busy(&job));
    }
    if recently_failed(st, &jobs, room, kind) {
        let code = match kind {
            JobKind::Streaming => Code::StreamRetryLater,
            _ => Code::RecordRetryLater,
        };
        return Err(ApiError::new(code, "the last start failed"));
    }
    Ok(())
}

/// How many people the room has, as far as the platform's events and the connector tell
/// (None when nothing is known yet).
pub(super) fn known_participants(room: &RoomConfig) -> Option<usize> {
    let generated = match &room.connector {
        ConnectorSpec::Synthetic { participants, .. } => *participants as usize,
        _ => 0,
    };
    let n = generated + room.participants.len();
    (n > 0).then_some(n)
}

/// The answer to a start while the room's job of that kind has not ended: 7012 (7002
/// streaming) while it is being set up, 7019 once it records.
pub(super) fn busy(job: &Job) -> ApiError {
    let code = match (job.spec.kind, job.state) {
        (JobKind::Streaming, _) => Code::StreamStartInProcess,
        (_, JobState::Queued | JobState::Starting) => Code::RecordInProcess,
        (_, _) => Code::RecordAlreadyRunning,
    };
    ApiError::new(code, format!("job {} is {}", job.id, job.state.as_str()))
}

/// Submits a job; answers 0 (a worker has room for it), or 7207/7208 (7104/7105 for
/// streaming) when it waits: 7207 for the first request beyond capacity, 7208 for later ones.
pub(super) async fn submit(
    st: &ApiState,
    room: &RoomConfig,
    kind: JobKind,
    (layout, page, hls): (Value, Option<PageSpec>, Option<crate::model::hls::HlsSpec>),
    rtmp_urls: Vec<String>,
    started_by: &str,
    max_duration_secs: Option<f64>,
) -> Reply {
    let preset_name = room
        .settings
        .preset
        .clone()
        .unwrap_or_else(|| DEFAULT_PRESET.to_string());
    let preset = input::preset(&preset_name)?;
    // The room's running job of the other kind shares its composite and encode with this
    // one when they agree on what is drawn: this job is charged its outputs only (a worker
    // that cannot share it charges the whole job once it runs).
    let jobs = st.store.jobs().await?;
    let shares = jobs.iter().any(|j| {
        j.spec.room_id == room.room_id
            && j.spec.kind != kind
            && j.spec.kind.is_live()
            && kind.is_live()
            && matches!(j.state, JobState::Starting | JobState::Active)
            && j.spec.preset == preset_name
            && j.spec.watermark == room.settings.watermark
            && j.spec.page.is_some() == page.is_some()
    });
    let cost = if kind == JobKind::Individual {
        // Received media is written as it came: a small share per participant.
        crate::job::kinds::legacy::INDIVIDUAL_COST_PER_PARTICIPANT
            * known_participants(room).unwrap_or(1).max(1) as f64
    } else if shares {
        preset.output_cost(rtmp_urls.len())
    } else {
        preset.estimated_cost(rtmp_urls.len(), known_participants(room))
    };
    let spec = JobSpec {
        kind,
        room_id: room.room_id.clone(),
        app_id: room.app_id.clone(),
        conf_num: room.conf_num.clone(),
        connector: room.connector.clone(),
        layout,
        preset: preset_name,
        watermark: room.settings.watermark.clone(),
        rtmp_urls,
        max_active_talkers: room.settings.max_active_talkers,
        max_duration_secs,
        started_by: started_by.to_string(),
        cost,
        storage: None,
        page,
        hls,
        manifest: None,
        fallback_for: None,
        runs_on: None,
    };
    let job = Job::new(Job::new_id(kind), spec);
    let ahead = match st.store.enqueue(&job).await? {
        Enqueued::Waiting(ahead) => ahead,
        // Another request for this room won the race.
        Enqueued::Busy(other) => return Err(busy(&other)),
    };
    let slots: usize = st
        .store
        .workers()
        .await?
        .iter()
        .map(|w| (w.free() / cost + 1e-9).floor() as usize)
        .sum();
    info!(job = %job.id, room = %room.room_id, ?kind, ahead, slots, "job submitted");
    let extra = json!({ "job_id": job.id, "state": "queued", "waiting_ahead": ahead });
    if ahead < slots {
        let mut extra = extra;
        extra["result"] = json!(0);
        extra["msg"] = json!(match kind {
            JobKind::Recording => "live recording is starting",
            JobKind::Streaming => "streaming is starting",
            JobKind::Individual => "recording is starting",
            JobKind::Transcode => "transcode is queued",
        });
        return reply(StatusCode::CREATED, extra);
    }
    let code = match (kind, ahead == slots) {
        (JobKind::Streaming, true) => Code::StreamQueued,
        (JobKind::Streaming, false) => Code::StreamQueuedLast,
        (_, true) => Code::RecordQueued,
        (_, false) => Code::RecordQueuedLast,
    };
    coded(code, extra)
}

pub(super) fn room_layout(r: &RoomConfig) -> Value {
    match r.settings.mode {
        RoomMode::Lecture => json!("speaker"),
        RoomMode::Group => r.settings.layout.clone().unwrap_or_else(|| json!("grid")),
    }
}

/// The page of the room's `settings.live_recording.url`, if it names one.
pub(super) fn room_page(st: &ApiState, room: &RoomConfig) -> Result<Option<PageSpec>, ApiError> {
    match room.settings.live_recording.url.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(u) => {
            let url = crate::page::check_url(u, &st.cfg.page_origins).map_err(|e| {
                ApiError::new(e.code(), format!("settings.live_recording.url: {e}"))
            })?;
            Ok(Some(PageSpec::new(url.to_string())))
        }
    }
}

//! Route handlers.

use super::input::{self, room_id, MAX_BODY_BYTES};
use super::lifecycle::room_layout;
use super::{end_waiting, ApiError, ApiState, OPENAPI};
use crate::codes::Code;
use crate::model::page::PageSpec;
use crate::model::preset::DEFAULT_PRESET;
use crate::model::RtmpUrl;
use crate::queue::Enqueued;
use crate::queue::SegmentStatus;
use crate::queue::{
    now_ms, Command, ConnectorSpec, Job, JobKind, JobSpec, JobState, PlatformEvent, RoomConfig,
};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;

use std::sync::Arc;
use tracing::{info, warn};

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
            .any(|s| s.status == SegmentStatus::Spooled)
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

/// The room's unfinished job of `kind`, if any.
/// Of `jobs` (one read of the store serves every check of a request).
pub(super) fn live_job(jobs: &[Job], room: &str, kind: JobKind) -> Option<Job> {
    jobs.iter()
        .filter(|j| j.spec.room_id == room && j.spec.kind == kind && !j.state.is_terminal())
        .max_by_key(|j| j.created_ms)
        .cloned()
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

pub(super) async fn healthz(State(st): St) -> Reply {
    let workers = st.store.workers().await?;
    let depth = st.store.waiting().await?.len();
    ok(
        "ok",
        json!({
            "store": st.store.kind(),
            "workers": workers.len(),
            "queue_depth": depth,
            "capacity_free": workers.iter().map(|w| w.free()).sum::<f64>(),
        }),
    )
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::with_status(Code::Generic, StatusCode::NOT_FOUND, "no such route")
}

pub(super) async fn put_room(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    room_id(&id)?;
    let bytes = read_body(body, Code::RecordParamsMissing).await?;
    let mut b = input::parse_room_body(&bytes)?;
    if let ConnectorSpec::Janus { url, .. } = &b.connector {
        if !st.cfg.janus_hosts.allows_url(url) {
            return Err(ApiError::new(
                Code::RecordParamsMissing,
                "connector.url: host not allowed",
            ));
        }
    }
    if let Some(u) = b
        .settings
        .live_recording
        .url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        crate::page::check_url(u, &st.cfg.page_origins)
            .map_err(|e| ApiError::new(e.code(), format!("settings.live_recording.url: {e}")))?;
    }
    if b.app_watermark {
        let Some(app) = &st.cfg.watermark else {
            return Err(ApiError::new(
                Code::RecordParamsMissing,
                "settings.watermark: no watermark is configured for the app (ROOMCAST_WATERMARK)",
            ));
        };
        b.settings.watermark = Some(std::path::PathBuf::from(app));
    }
    if let Some(w) = &b.settings.watermark {
        b.settings.watermark = Some(input::watermark(&st.cfg.assets_dir, w)?);
    }
    let room = RoomConfig {
        room_id: id.clone(),
        app_id: b.app_id,
        conf_num: b.conf_num,
        connector: b.connector,
        settings: b.settings,
        participants: Vec::new(),
        disconnecting: false,
    };
    st.store.put_room(&room).await?;
    info!(room = %id, "room registered");
    ok("room registered", json!({ "room": room_view(&room) }))
}

/// `DELETE /v1/rooms/{id}`: forgets a room that has no job running or waiting (those are
/// stopped first: 409 with 7012 while any has not ended).
pub(super) async fn delete_room(State(st): St, Path(id): Path<String>) -> Reply {
    room(&st, &id).await?;
    let jobs = st.store.jobs().await?;
    if let Some(job) = jobs
        .iter()
        .find(|j| j.spec.room_id == id && !j.state.is_terminal())
    {
        return Err(ApiError::with_status(
            Code::RecordInProcess,
            StatusCode::CONFLICT,
            format!("job {} of the room has not ended: stop it first", job.id),
        ));
    }
    st.store.delete_room(&id).await?;
    info!(room = %id, "room deleted");
    ok("room deleted", json!({ "room_id": id }))
}

pub(super) async fn get_room(State(st): St, Path(id): Path<String>) -> Reply {
    let r = room(&st, &id).await?;
    ok("ok", json!({ "room": room_view(&r) }))
}

/// Most participants a room may have (joins beyond it are refused with 409 / 7017).
pub const MAX_ROOM_PARTICIPANTS: usize = 1000;

pub(super) async fn post_events(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let mut r = room(&st, &id).await?;
    let bytes = read_body(body, Code::RecordParamsMissing).await?;
    let events = input::parse_event_body(&bytes)?;
    let mut started = Vec::new();
    let mut forwarded = 0;
    // One read of the jobs and one write of the room per request, not per event: a burst of
    // fifty joins is one request.
    let mut jobs = st.store.jobs().await?;
    let mut refused = None;
    for ev in events {
        let was_empty = r.participants.is_empty();
        match &ev {
            PlatformEvent::ParticipantJoined { user_id, name }
                if !r.participants.iter().any(|(u, _)| u == user_id) =>
            {
                if r.participants.len() >= MAX_ROOM_PARTICIPANTS {
                    refused = Some(ApiError::with_status(
                        Code::RecordParamsMissing,
                        StatusCode::CONFLICT,
                        format!(
                            "the room has {MAX_ROOM_PARTICIPANTS} participants, the most roomcast \
                             tracks; the events before this one were applied"
                        ),
                    ));
                    break;
                }
                r.participants.push((
                    user_id.clone(),
                    name.clone().unwrap_or_else(|| user_id.clone()),
                ));
            }
            PlatformEvent::ParticipantLeft { user_id } => {
                r.participants.retain(|(u, _)| u != user_id);
            }
            PlatformEvent::ModeSwitched { mode } => r.settings.mode = *mode,
            PlatformEvent::RoomDestroyed => {
                r.disconnecting = true;
                r.participants.clear();
            }
            _ => {}
        }
        for mut job in jobs.iter().cloned() {
            if job.spec.room_id != id || job.state.is_terminal() {
                continue;
            }
            if matches!(ev, PlatformEvent::RoomDestroyed)
                && end_waiting(
                    &st,
                    &mut job,
                    JobState::Cancelled,
                    Code::StateDisconnected,
                    "room destroyed before the job started",
                )
                .await?
            {
                continue;
            }
            st.store
                .push_command(&job.id, &Command::Room { event: ev.clone() })
                .await?;
            forwarded += 1;
        }
        let first_join = was_empty
            && !r.participants.is_empty()
            && matches!(ev, PlatformEvent::ParticipantJoined { .. });
        // `settings.live_recording.auto_recording` starts a live recording,
        // `settings.auto_recording` (the platform's legacy key) an individual one.
        let autos = [
            (r.settings.live_recording.auto_recording, JobKind::Recording),
            (r.settings.auto_recording, JobKind::Individual),
        ];
        for (_, kind) in autos.into_iter().filter(|(on, _)| *on) {
            if !first_join || r.disconnecting || live_job(&jobs, &id, kind).is_some() {
                continue;
            }
            // The new job reads the room as it is now.
            st.store.put_room(&r).await?;
            let layout = room_layout(&r);
            let page = match kind {
                JobKind::Recording => super::lifecycle::room_page(&st, &r).unwrap_or_else(|e| {
                    warn!(room = %id, error = ?e, "settings.live_recording.url not used");
                    None
                }),
                _ => None,
            };
            let resp = submit(
                &st,
                &r,
                kind,
                (layout, page, None),
                Vec::new(),
                "auto",
                None,
            )
            .await;
            let resp = match resp {
                Ok(r) => r,
                // A racing join of the same room started it first.
                Err(e) if matches!(e.code, Code::RecordInProcess | Code::RecordAlreadyRunning) => {
                    jobs = st.store.jobs().await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (parts, body) = resp.into_parts();
            let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .unwrap_or_default();
            info!(room = %id, status = %parts.status, "auto recording requested");
            started.push(body);
            jobs = st.store.jobs().await?;
        }
    }
    st.store.put_room(&r).await?;
    if let Some(e) = refused {
        return Err(e);
    }
    ok(
        "events applied",
        json!({ "forwarded": forwarded, "auto_recording": started }),
    )
}

pub(super) async fn room_jobs(State(st): St, Path(id): Path<String>) -> Reply {
    room_id(&id)?;
    let mut jobs: Vec<Job> = st
        .store
        .jobs()
        .await?
        .into_iter()
        .filter(|j| j.spec.room_id == id)
        .collect();
    if jobs.is_empty() {
        // A room nobody registered is unknown here as everywhere (404/7000); a registered
        // room without jobs has an empty list.
        room(&st, &id).await?;
    }
    jobs.sort_by_key(|j| j.created_ms);
    ok("ok", json!({ "jobs": views(&st, jobs).await? }))
}

pub(super) async fn all_jobs(State(st): St) -> Reply {
    let mut jobs = st.store.jobs().await?;
    jobs.sort_by_key(|j| j.created_ms);
    let waiting = st.store.waiting().await?;
    ok(
        "ok",
        json!({ "jobs": views(&st, jobs).await?, "waiting": waiting }),
    )
}

pub(super) async fn get_job(State(st): St, Path(id): Path<String>) -> Reply {
    match st.store.get_job(&id).await? {
        Some(job) => {
            let mut v = views(&st, vec![job]).await?;
            ok("ok", json!({ "job": v.pop().unwrap_or_default() }))
        }
        None => Err(ApiError::with_status(
            Code::Generic,
            StatusCode::NOT_FOUND,
            format!("no job {id:?}"),
        )),
    }
}

pub(super) async fn cancel_job(State(st): St, Path(id): Path<String>) -> Reply {
    let Some(mut job) = st.store.get_job(&id).await? else {
        return Err(ApiError::with_status(
            Code::Generic,
            StatusCode::NOT_FOUND,
            format!("no job {id:?}"),
        ));
    };
    let code = match job.spec.kind {
        JobKind::Streaming => Code::StreamQueueCancelled,
        _ => Code::RecordQueueCancelled,
    };
    if !end_waiting(&st, &mut job, JobState::Cancelled, code, code.message()).await? {
        return Err(ApiError::new(
            Code::StateWrong,
            format!(
                "job is {}, not waiting (stop it through its room)",
                job.state.as_str()
            ),
        ));
    }
    coded(code, json!({ "job_id": id, "state": "cancelled" }))
}

pub(super) async fn recordings(State(st): St, Query(q): Query<HashMap<String, String>>) -> Reply {
    let num = |k: &str| -> Result<Option<u64>, ApiError> {
        q.get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::new(
                        Code::RecordParamsMissing,
                        format!("{k} must be Unix seconds"),
                    )
                })
            })
            .transpose()
    };
    let from = num("from")?.map(|s| s * 1000);
    let to = num("to")?.map(|s| s * 1000);
    // Recordings by default; `kind=chat` lists the segments' chat transcripts, `kind=all` both.
    let (recordings, chats) = match q.get("kind").map(String::as_str) {
        None | Some("recording") => (true, false),
        Some("chat") => (false, true),
        Some("all") => (true, true),
        Some(other) => {
            return Err(ApiError::new(
                Code::RecordParamsMissing,
                format!("kind {other:?} is not one of recording, chat, all"),
            ))
        }
    };
    let mut files: Vec<_> = st
        .store
        .archive()
        .await?
        .into_iter()
        .filter(|e| q.get("room_id").is_none_or(|r| &e.room_id == r))
        .filter(|e| q.get("conf_num").is_none_or(|c| &e.conf_num == c))
        .filter(|e| from.is_none_or(|f| e.ended_ms >= f))
        .filter(|e| to.is_none_or(|t| e.started_ms <= t))
        .filter(|e| {
            if crate::job::files::chat::is_transcript(&e.file_name) {
                chats
            } else {
                recordings
            }
        })
        .collect();
    files.sort_by_key(|e| e.started_ms);
    let total: u64 = files.iter().map(|e| e.size).sum();
    ok(
        "ok",
        json!({ "count": files.len(), "total_bytes": total, "files": files }),
    )
}

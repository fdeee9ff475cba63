//! Route handlers of rooms, room events, jobs, the archive report, health and the OpenAPI
//! document (starting and stopping recordings and streams: [`super::lifecycle`]).

use super::answers::*;
use super::input::{self, room_id, MAX_BODY_BYTES};
use super::janitor::end_waiting;
use super::state::live_job;
use super::state::{ApiError, OPENAPI};
use crate::codes::Code;
use crate::queue::{Command, ConnectorSpec, Job, JobKind, JobState, PlatformEvent, RoomConfig};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;

use tracing::{info, warn};

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
                JobKind::Recording => room_page(&st, &r).unwrap_or_else(|e| {
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

//! Starting, stopping and changing live recordings and streams: the checks every request
//! passes (room, moderator, what already runs) and the job each one submits or commands.

use super::answers::*;
use super::input::{self, json_object, requester};
use super::janitor::{end_waiting, status_hook};
use super::state::live_job;
use super::state::{ApiError, ApiState};
use crate::codes::Code;
use crate::queue::{Command, Job, JobKind, JobState, Requester, RoomConfig};
use axum::body::Body;
use axum::extract::{Path, State};
use serde_json::{json, Value};
use tracing::info;

pub(super) struct Checked {
    room: RoomConfig,
    who: Requester,
    body: serde_json::Map<String, Value>,
}

/// Reads the body and checks the requester: `missing` for bad input, `not_moderator` when
/// the requester is not a moderator, `disconnecting` when the room is going away.
pub(super) async fn checked(
    st: &ApiState,
    id: &str,
    body: Body,
    missing: Code,
    not_moderator: Code,
    disconnecting: Code,
) -> Result<Checked, ApiError> {
    let room = room(st, id).await?;
    let bytes = read_body(body, missing).await?;
    let body = json_object(&bytes, missing)?;
    let who = requester(&body, missing)?;
    if !who.is_moderator() {
        return Err(ApiError::new(
            not_moderator,
            format!("{} is a {}", who.client_id, who.role),
        ));
    }
    if room.disconnecting {
        return Err(ApiError::new(disconnecting, "room destroyed"));
    }
    Ok(Checked { room, who, body })
}

pub(super) async fn start_recording(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let c = checked(
        &st,
        &id,
        body,
        Code::RecordParamsMissing,
        Code::RecordNotModerator,
        Code::RecordRoomDisconnecting,
    )
    .await?;
    let view = input::recording_view(&c.body, &st.cfg.page_origins)?;
    let layout = view.layout.unwrap_or_else(|| room_layout(&c.room));
    let page = match view.page {
        Some(page) => page,
        None => room_page(&st, &c.room)?,
    };
    let max = input::seconds(
        c.body
            .get("config")
            .and_then(|v| v.get("max_duration_secs")),
        "config.max_duration_secs",
        Code::RecordParamsMissing,
    )?;
    let hls = input::hls(&c.body, Code::RecordParamsMissing)?;
    if let Some(j) = live_job(&st.store.jobs().await?, &id, JobKind::Individual)
        .filter(|j| j.spec.fallback_for.is_some())
    {
        return Err(ApiError::new(
            Code::RecordLegacyRunning,
            format!("the fall-back recording {} is running", j.id),
        ));
    }
    may_start(&st, &id, JobKind::Recording).await?;
    submit(
        &st,
        &c.room,
        JobKind::Recording,
        (layout, page, hls),
        Vec::new(),
        &c.who.client_id,
        max,
    )
    .await
}

/// Stops the room's job of `kind`: cancels it if it still waits, else tells its worker.
pub(super) async fn stop(st: &ApiState, c: Checked, kind: JobKind, cancelled: Code) -> Reply {
    let Some(mut job) = live_job(&st.store.jobs().await?, &c.room.room_id, kind) else {
        return Err(ApiError::new(Code::StateNotRequested, "nothing is running"));
    };
    job.stopped_by = Some(c.who.client_id.clone());
    // 7039 speaks of a live recording; an individual recording is cancelled by its own name.
    let msg = match kind {
        JobKind::Individual => {
            "The recording request was in the waiting queue. It is successfully removed from \
             the queue."
        }
        _ => cancelled.message(),
    };
    if job.started_ms.is_some() && st.store.remove_waiting(&job.id).await? {
        // It recorded before and waits to go on on another worker (handed back by a stopping
        // worker, or handed over while that worker still records, which then ends its
        // segment): it ends here, stopped, not cancelled.
        job.end(
            JobState::Completed,
            0,
            "stopped while it waited to go on on another worker",
        );
        st.store.put_job(&job).await?;
        status_hook(st, &job, "off", None);
        info!(job = %job.id, by = %c.who.client_id, "stopped while waiting to go on");
        return ok("stopped", json!({ "job_id": job.id, "state": "completed" }));
    }
    if end_waiting(st, &mut job, JobState::Cancelled, cancelled, msg).await? {
        let body = json!({ "job_id": job.id, "state": "cancelled" });
        return coded_saying(cancelled, msg, body);
    }
    st.store
        .push_command(
            &job.id,
            &Command::Stop {
                by: c.who.client_id.clone(),
            },
        )
        .await?;
    info!(job = %job.id, by = %c.who.client_id, "stop requested");
    ok(
        "stopping",
        json!({ "job_id": job.id, "state": job.state.as_str() }),
    )
}

pub(super) async fn stop_recording(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let c = checked(
        &st,
        &id,
        body,
        Code::RecordParamsMissing,
        Code::RecordStopNotModerator,
        Code::RecordStopDisconnecting,
    )
    .await?;
    // A live recording that fell back is stopped as the recording that replaced it.
    let jobs = st.store.jobs().await?;
    let kind = match (
        live_job(&jobs, &id, JobKind::Recording),
        live_job(&jobs, &id, JobKind::Individual),
    ) {
        (None, Some(j)) if j.spec.fallback_for.is_some() => JobKind::Individual,
        _ => JobKind::Recording,
    };
    stop(&st, c, kind, Code::RecordQueueCancelled).await
}

/// `POST /v1/rooms/{id}/recording`: the platform's (legacy) recording, every participant's
/// tracks into their own files (moderators only).
pub(super) async fn start_individual(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let c = checked(
        &st,
        &id,
        body,
        Code::RecordParamsMissingInternal,
        Code::RecordNotModerator,
        Code::RecordRoomDisconnecting,
    )
    .await?;
    let max = input::seconds(
        c.body
            .get("config")
            .and_then(|v| v.get("max_duration_secs")),
        "config.max_duration_secs",
        Code::RecordParamsMissingInternal,
    )?;
    may_start(&st, &id, JobKind::Individual).await?;
    let layout = room_layout(&c.room);
    submit(
        &st,
        &c.room,
        JobKind::Individual,
        (layout, None, None),
        Vec::new(),
        &c.who.client_id,
        max,
    )
    .await
}

/// `DELETE /v1/rooms/{id}/recording`.
pub(super) async fn stop_individual(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let c = checked(
        &st,
        &id,
        body,
        Code::RecordParamsMissingInternal,
        Code::RecordStopNotModerator,
        Code::RecordStopDisconnecting,
    )
    .await?;
    stop(&st, c, JobKind::Individual, Code::RecordQueueCancelled).await
}

pub(super) async fn change_recording(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let c = checked(
        &st,
        &id,
        body,
        Code::RecordParamsMissing,
        Code::RecordChangeNotModerator,
        Code::RecordChangeDisconnecting,
    )
    .await?;
    let view = input::recording_view(&c.body, &st.cfg.page_origins)?;
    if view.is_empty() {
        return Err(ApiError::new(
            Code::LayoutMissing,
            "config.url_details (a layout or a url) is missing",
        ));
    }
    let job = match live_job(&st.store.jobs().await?, &id, JobKind::Recording) {
        Some(j) if matches!(j.state, JobState::Starting | JobState::Active) => j,
        _ => {
            return Err(ApiError::new(
                Code::NotRunning,
                "no live recording is running",
            ))
        }
    };
    if let Some(layout) = &view.layout {
        st.store
            .push_command(
                &job.id,
                &Command::SetLayout {
                    layout: layout.clone(),
                },
            )
            .await?;
    }
    if let Some(page) = &view.page {
        st.store
            .push_command(&job.id, &Command::SetPage { page: page.clone() })
            .await?;
    }
    let shown = view
        .page
        .as_ref()
        .map(|p| p.as_ref().map(|p| p.shown_url()));
    ok(
        "layout change sent",
        json!({ "job_id": job.id, "layout": view.layout, "url": shown }),
    )
}

pub(super) async fn start_streaming(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let c = checked(
        &st,
        &id,
        body,
        Code::StreamParamsMissing,
        Code::StreamNotModerator,
        Code::StreamRoomDisconnecting,
    )
    .await?;
    let urls = input::rtmp_urls(&c.body)?;
    allowed_rtmp(&st, &urls)?;
    let layout = match c.body.get("layout") {
        None | Some(Value::Null) => room_layout(&c.room),
        Some(l) => input::layout(l)?,
    };
    let max = input::seconds(
        c.body.get("max_duration_secs"),
        "max_duration_secs",
        Code::StreamParamsMissing,
    )?;
    let hls = input::hls(&c.body, Code::StreamParamsMissing)?;
    may_start(&st, &id, JobKind::Streaming).await?;
    submit(
        &st,
        &c.room,
        JobKind::Streaming,
        (layout, None, hls),
        urls,
        &c.who.client_id,
        max,
    )
    .await
}

pub(super) async fn stop_streaming(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let c = checked(
        &st,
        &id,
        body,
        Code::StreamParamsMissing,
        Code::StreamStopNotModerator,
        Code::StreamStopDisconnecting,
    )
    .await?;
    stop(&st, c, JobKind::Streaming, Code::StreamQueueCancelled).await
}

pub(super) async fn change_streaming(State(st): St, Path(id): Path<String>, body: Body) -> Reply {
    let c = checked(
        &st,
        &id,
        body,
        Code::StreamParamsMissing,
        Code::StreamChangeNotModerator,
        Code::StreamChangeDisconnecting,
    )
    .await?;
    let urls = match c.body.get("rtmp_urls") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let urls = input::rtmp_urls(&c.body)?;
            allowed_rtmp(&st, &urls)?;
            Some(urls)
        }
    };
    let layout = match c.body.get("layout") {
        None | Some(Value::Null) => None,
        Some(l) => Some(input::layout(l)?),
    };
    let edit = rtmp_edit(&c.body)?;
    if urls.is_some() && edit.is_some() {
        return Err(ApiError::new(
            Code::StreamParamsMissing,
            "rtmp_urls replaces the list: give it, or add_rtmp_urls/remove_destinations, not both",
        ));
    }
    if urls.is_none() && layout.is_none() && edit.is_none() {
        return Err(ApiError::new(
            Code::StreamParamsMissing,
            "give rtmp_urls (or add_rtmp_urls/remove_destinations) and/or layout",
        ));
    }
    let job = match live_job(&st.store.jobs().await?, &id, JobKind::Streaming) {
        Some(j) if matches!(j.state, JobState::Starting | JobState::Active) => j,
        _ => return Err(ApiError::new(Code::NotRunning, "no streaming is running")),
    };
    if let Some((add, remove)) = edit {
        allowed_rtmp(&st, &add)?;
        check_edit(&job, &add, &remove)?;
        for id in remove {
            st.store
                .push_command(&job.id, &Command::RemoveRtmp { id })
                .await?;
        }
        for url in add {
            st.store
                .push_command(&job.id, &Command::AddRtmp { url })
                .await?;
        }
    }
    if let Some(urls) = urls {
        st.store
            .push_command(&job.id, &Command::SetRtmp { urls })
            .await?;
    }
    if let Some(layout) = layout {
        st.store
            .push_command(&job.id, &Command::SetLayout { layout })
            .await?;
    }
    ok("streaming change sent", json!({ "job_id": job.id }))
}

/// URLs to add and destination ids (of the job record) to remove.
type RtmpEdit = (Vec<String>, Vec<u32>);

/// `add_rtmp_urls` (URLs) and `remove_destinations` (destination ids of the job record) of a
/// streaming change, if given.
fn rtmp_edit(body: &serde_json::Map<String, Value>) -> Result<Option<RtmpEdit>, ApiError> {
    let add = match body.get("add_rtmp_urls") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let mut only = serde_json::Map::new();
            only.insert("rtmp_urls".into(), body["add_rtmp_urls"].clone());
            Some(input::rtmp_urls(&only)?)
        }
    };
    let remove = match body.get("remove_destinations") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => Some(
            ids.iter()
                .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| {
                    ApiError::new(
                        Code::StreamParamsMissing,
                        "remove_destinations must be destination ids (numbers)",
                    )
                })?,
        ),
        Some(_) => {
            return Err(ApiError::new(
                Code::StreamParamsMissing,
                "remove_destinations must be an array of destination ids",
            ))
        }
    };
    Ok((add.is_some() || remove.is_some())
        .then(|| (add.unwrap_or_default(), remove.unwrap_or_default())))
}

/// Whether removing `remove` (ids of the job record's destinations) and adding `add` leaves
/// one to three destinations (7006, 7101).
fn check_edit(job: &Job, add: &[String], remove: &[u32]) -> Result<(), ApiError> {
    let active: Vec<&crate::model::DestinationStatus> = job
        .destinations
        .iter()
        .filter(|d| d.state != crate::model::DestinationState::Stopped)
        .collect();
    if let Some(id) = remove
        .iter()
        .find(|id| !active.iter().any(|d| d.id == **id))
    {
        return Err(ApiError::new(
            Code::StreamParamsMissing,
            format!("the stream has no destination {id}"),
        ));
    }
    // (Each URL of `add` was checked when the request was read.)
    let after = active.iter().filter(|d| !remove.contains(&d.id)).count() + add.len();
    if after == 0 {
        return Err(ApiError::new(
            Code::StreamUrlMissing,
            "a stream keeps at least one destination (stop it instead)",
        ));
    }
    if after > crate::model::rtmp::MAX_DESTINATIONS {
        let e = crate::model::RtmpUrlError::TooMany(after);
        return Err(ApiError::new(e.code(), e.to_string()));
    }
    Ok(())
}

/// RTMP destinations must name hosts of `ROOMCAST_RTMP_HOSTS` when it is set (7102).
fn allowed_rtmp(st: &ApiState, urls: &[String]) -> Result<(), ApiError> {
    match urls.iter().find(|u| !st.cfg.rtmp_hosts.allows_url(u)) {
        Some(_) => Err(ApiError::new(
            Code::InvalidRtmpUrl,
            "rtmp_urls: host not allowed",
        )),
        None => Ok(()),
    }
}

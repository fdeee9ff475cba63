//! The control API (axum): rooms, room events, start/stop/change of recording and streaming,
//! jobs, the archive report, health and Prometheus metrics. It validates with `model` and talks
//! to running jobs only through the queue store (commands); it never touches media.
//!
//! Every route requires `Authorization: Bearer <token>`. Every answer has the platform's shape
//! `{"result": 0 | 7xxx, "msg": "…", …}`; the HTTP status comes from the code table. Bodies are
//! read with a size limit and parsed here (not by an extractor), so malformed JSON, wrong types
//! and oversized bodies get a coded 4xx like every other bad input.

mod handlers;
pub mod input;
mod lifecycle;
pub mod listen;
mod metrics;
mod strict_json;
mod text;

use crate::codes::{Code, ResultBody};
use crate::config::ServerConfig;
use crate::queue::{now_ms, Job, JobState, Store};
use crate::webhook::{status_event, EventContext, WebhookQueue};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub use input::{parse_event_body, parse_room_body, MAX_BODY_BYTES};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Shared state of the API server.
pub struct ApiState {
    store: Store,
    token_hash: [u8; 32],
    cfg: ServerConfig,
    hooks: Option<WebhookQueue>,
    /// The in-process worker's loop clock (see `Worker::liveness`), when this process runs one.
    worker_alive: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// An API failure: a code, an optional HTTP status override and a detail for the message.
#[derive(Debug)]
pub struct ApiError {
    pub(super) code: Code,
    status: Option<StatusCode>,
    detail: String,
}

impl ApiError {
    /// An error with the table's status for `code`.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            status: None,
            detail: detail.into(),
        }
    }

    /// An error with an explicit HTTP status.
    pub fn with_status(code: Code, status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            status: Some(status),
            detail: detail.into(),
        }
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }
}

impl From<crate::queue::StoreError> for ApiError {
    fn from(e: crate::queue::StoreError) -> Self {
        warn!(error = %e, "store unavailable");
        ApiError::with_status(
            Code::Generic,
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.info().http_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let body = ResultBody::from_code(self.code, Some(&self.detail));
        (status, axum::Json(body)).into_response()
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares in time independent of where the inputs differ (both are hashes: equal length).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(&token_hash(t), &st.token_hash) => next.run(req).await,
        _ => {
            let mut r = ApiError::with_status(
                Code::Generic,
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

/// The router with every route behind the token check.
pub fn router(st: Arc<ApiState>) -> Router {
    use handlers::*;
    use lifecycle::*;
    // Probes answer without the token (an orchestrator's liveness and readiness checks);
    // everything else is behind it. Every answer, the framework's own refusals included
    // (wrong method, undecodable path), is `{"result": …, "msg": …}`.
    let probes = Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready));
    let guarded = Router::new()
        .route("/v1/health", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi))
        .route(
            "/v1/rooms/{room_id}",
            put(put_room).get(get_room).delete(delete_room),
        )
        .route(
            "/v1/rooms/{room_id}/events",
            axum::routing::post(post_events),
        )
        .route(
            "/v1/rooms/{room_id}/live-recording",
            axum::routing::post(start_recording)
                .delete(stop_recording)
                .patch(change_recording),
        )
        .route(
            "/v1/rooms/{room_id}/recording",
            axum::routing::post(start_individual).delete(stop_individual),
        )
        .route(
            "/v1/rooms/{room_id}/streaming",
            axum::routing::post(start_streaming)
                .delete(stop_streaming)
                .patch(change_streaming),
        )
        .route("/v1/rooms/{room_id}/jobs", get(room_jobs))
        .route("/v1/jobs", get(all_jobs))
        .route("/v1/jobs/{job_id}", get(get_job).delete(cancel_job))
        .route("/v1/recordings", get(recordings))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(st.clone(), auth));
    probes
        .merge(guarded)
        .layer(axum::middleware::from_fn(coded_answers))
        .with_state(st)
}

/// The routes of the scrape address (`ROOMCAST_METRICS_LISTEN`): metrics and probes only,
/// without the token, for a Prometheus or an orchestrator on a network of its own.
pub fn scrape_router(st: Arc<ApiState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn(coded_answers))
        .with_state(st)
}

/// Turns any error answer that is not already coded JSON (axum's own rejections: a path
/// that does not decode, a wrong method) into `{"result": 7000, "msg": …}` with its status.
async fn coded_answers(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail: String = String::from_utf8_lossy(&text)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let detail = if detail.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        detail
    };
    let mut coded = ApiError::with_status(Code::Generic, status, detail).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            coded.headers_mut().insert(k.clone(), v.clone());
        }
    }
    coded
}

async fn method_not_allowed() -> ApiError {
    ApiError::with_status(
        Code::Generic,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Liveness: the process answers.
async fn alive() -> Response {
    handlers::ok("alive", json!({})).into_response()
}

/// Readiness: the queue store answers and, where this process runs a worker, its loop went
/// round within the last five seconds. 503 (7000) otherwise.
async fn ready(State(st): State<Arc<ApiState>>) -> Response {
    let store = st.store.workers().await.is_ok();
    let worker = st.worker_alive.as_ref().map(|t| {
        let last = t.load(std::sync::atomic::Ordering::Relaxed);
        last > 0 && crate::queue::now_ms().saturating_sub(last) < 5_000
    });
    let body = json!({
        "store": if store { "reachable" } else { "unreachable" },
        "worker": match worker { Some(true) => "running", Some(false) => "stopped", None => "none" },
    });
    if store && worker != Some(false) {
        handlers::ok("ready", body).into_response()
    } else {
        let mut body = body;
        body["result"] = json!(Code::Generic.as_u16());
        body["msg"] = json!("not ready");
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// Builds the API state; refuses to run without a token unless `insecure_dev` is set.
pub fn state(
    store: Store,
    cfg: ServerConfig,
    hooks: Option<WebhookQueue>,
    worker_alive: Option<Arc<std::sync::atomic::AtomicU64>>,
    insecure_dev: bool,
) -> crate::Result<Arc<ApiState>> {
    let token = match (&cfg.api_token, insecure_dev) {
        (Some(t), _) => t.expose().to_string(),
        (None, true) => {
            warn!("no ROOMCAST_API_TOKEN: development mode, the token is \"dev\"");
            "dev".to_string()
        }
        (None, false) => {
            return Err(crate::Error::Config {
                setting: "ROOMCAST_API_TOKEN".into(),
                message: "the API needs a token (or --insecure-dev for a local trial)".into(),
                code: Code::Generic,
            })
        }
    };
    Ok(Arc::new(ApiState {
        store,
        token_hash: token_hash(&token),
        cfg,
        hooks,
        worker_alive,
    }))
}

/// How often (at most) ended jobs older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Fails requests that waited longer than the configured wait (7080 recording, 7081
/// streaming). Runs in every API process; the waiting set decides who wins a race.
pub async fn queue_janitor(st: Arc<ApiState>, drain_hooks: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_prune: Option<tokio::time::Instant> = None;
    let prune_every = (st.cfg.job_retention / 2).clamp(Duration::from_secs(1), PRUNE_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = expire_waiting(&st).await {
            warn!(error = %e, "queue janitor");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            last_prune = Some(tokio::time::Instant::now());
            let cutoff = now_ms().saturating_sub(st.cfg.job_retention.as_millis() as u64);
            match st.store.prune_jobs(cutoff).await {
                Ok(0) => {}
                Ok(n) => info!(
                    jobs = n,
                    retention_s = st.cfg.job_retention.as_secs(),
                    "old job records deleted"
                ),
                Err(e) => warn!(error = %e, "deleting old job records"),
            }
        }
        if drain_hooks {
            if let Some(q) = &st.hooks {
                q.drain_once().await;
            }
        }
    }
}

async fn expire_waiting(st: &ApiState) -> Result<(), crate::queue::StoreError> {
    let limit = st.cfg.queue_wait.as_millis() as u64;
    for id in st.store.waiting().await? {
        let Some(mut job) = st.store.get_job(&id).await? else {
            continue;
        };
        if now_ms().saturating_sub(job.created_ms) < limit || job.attempts > 0 {
            continue;
        }
        if job.spec.kind == crate::queue::JobKind::Transcode {
            // Post-session work waits for its worker however long that takes.
            continue;
        }
        let code = match job.spec.kind {
            crate::queue::JobKind::Streaming => Code::StreamQueueFailed,
            _ => Code::RecordQueueFailed,
        };
        let waited = st.cfg.queue_wait.as_secs();
        let msg = format!("no worker could start it within {waited} s");
        if job.spec.kind == crate::queue::JobKind::Recording {
            fall_back_waiting(st, &mut job, msg).await?;
            continue;
        }
        if end_waiting(st, &mut job, JobState::Failed, code, msg).await? {
            info!(job = %id, waited_s = waited, "request waited too long");
        }
    }
    Ok(())
}

/// A live recording that waited too long for a worker: the room is recorded individually
/// instead (a worker has room for that long before it has room for a composite) and the
/// request ends with 7014; with 7205 when the room already records individually.
async fn fall_back_waiting(
    st: &ApiState,
    job: &mut Job,
    msg: String,
) -> Result<(), crate::queue::StoreError> {
    use crate::queue::{Enqueued, JobKind};
    let jobs = st.store.jobs().await?;
    if let Some(other) = handlers::live_job(&jobs, &job.spec.room_id, JobKind::Individual) {
        let msg = format!(
            "{msg}; the room already records individually ({})",
            other.id
        );
        end_waiting(st, job, JobState::Failed, Code::RecordLegacyRunning, msg).await?;
        return Ok(());
    }
    let fallback = crate::job::kinds::legacy::fallback_job(job);
    let msg = format!(
        "{msg}; recording the room individually instead (job {}): the recording will be made \
         available post-session",
        fallback.id
    );
    if !end_waiting(st, job, JobState::Failed, Code::RecordDelayed, msg).await? {
        return Ok(());
    }
    match st.store.enqueue(&fallback).await? {
        Enqueued::Waiting(_) => info!(job = %job.id, fallback = %fallback.id,
            "live recording waited too long: recording individually instead"),
        Enqueued::Busy(other) => info!(job = %job.id, other = %other.id,
            "live recording waited too long; the room records individually already"),
    }
    Ok(())
}

/// Ends a request that is still waiting — unless a worker claimed it first (the waiting set
/// decides): records the outcome and sends the `…-failed` status webhook. Every way a waiting
/// request ends without running (cancel, stop, room destroyed, waited too long) goes here.
async fn end_waiting(
    st: &ApiState,
    job: &mut Job,
    state: JobState,
    code: Code,
    msg: impl Into<String>,
) -> Result<bool, crate::queue::StoreError> {
    if !st.store.remove_waiting(&job.id).await? {
        return Ok(false);
    }
    job.end(state, code.as_u16(), msg);
    st.store.put_job(job).await?;
    status_hook(st, job, "failed", Some(code));
    Ok(true)
}

fn status_hook(st: &ApiState, job: &Job, suffix: &str, code: Option<Code>) {
    let Some(q) = &st.hooks else { return };
    let kind = format!("{}-{suffix}", job.spec.kind.status_prefix());
    let ctx = EventContext {
        app_id: job.spec.app_id.clone(),
        room_id: job.spec.room_id.clone(),
        conf_num: job.spec.conf_num.clone(),
        by: job.spec.started_by.clone(),
    };
    let id = format!("{kind}-{}-api", job.id);
    if let Err(e) = q.enqueue(&id, &status_event(&kind, &ctx, code)) {
        warn!(error = %e, "status webhook not queued");
    }
}

/// Serves the API on `cfg.listen` until `shutdown` resolves.
pub async fn serve(
    st: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let listener = tokio::net::TcpListener::bind(&st.cfg.listen)
        .await
        .map_err(|e| crate::Error::io(format!("listening on {}", st.cfg.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::Error::io("listener address", e))?;
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    // Bound before the API's address is announced: whoever reads that line may scrape at once.
    let scrape = match &st.cfg.metrics_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| crate::Error::io(format!("listening on {at}"), e))?;
            let addr = l
                .local_addr()
                .map_err(|e| crate::Error::io("listener address", e))?;
            info!(%addr, "metrics and probes listening (no token)");
            println!(
                "{}",
                serde_json::json!({ "metrics_listening": addr.to_string() })
            );
            Some(tokio::spawn(listen::run(
                l,
                scrape_router(st.clone()),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    info!(%addr, store = st.store.kind(), "control API listening");
    // The address line is for scripts that start the server on port 0.
    println!("{}", serde_json::json!({ "listening": addr.to_string() }));
    listen::run(listener, router(st), shutdown).await;
    if let Some(s) = scrape {
        let _ = s.await;
    }
    Ok(())
}

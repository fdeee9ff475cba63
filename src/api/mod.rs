//! The control API (axum): rooms, room events, start/stop/change of recording and streaming,
//! jobs, the archive report, health and Prometheus metrics. It validates with `model` and talks
//! to running jobs only through the queue store (commands); it never touches media.
//!
//! Every route requires `Authorization: Bearer <token>`. Every answer has the platform's shape
//! `{"result": 0 | 7xxx, "msg": "…", …}`; the HTTP status comes from the code table. Bodies are
//! read with a size limit and parsed here (not by an extractor), so malformed JSON, wrong types
//! and oversized bodies get a coded 4xx like every other bad input.

mod access;
mod answers;
mod console;
mod handlers;
pub mod input;
mod janitor;
mod lifecycle;
pub mod listen;
mod media;
mod metrics;
mod state;
mod strict_json;
mod text;

use crate::codes::Code;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::json;
use std::sync::Arc;
use tracing::info;

pub use input::{parse_event_body, parse_room_body, MAX_BODY_BYTES};
pub use janitor::queue_janitor;
pub use state::{probe_state, state, ApiError, ApiState, OPENAPI};

/// The router with every route behind the token check.
pub fn router(st: Arc<ApiState>) -> Router {
    use handlers::*;
    use lifecycle::*;
    // Probes answer without the token (an orchestrator's liveness and readiness checks);
    // everything else is behind it. Every answer, the framework's own refusals included
    // (wrong method, undecodable path), is `{"result": …, "msg": …}`.
    let probes = Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        // The console's own files and its sign-in answer without a token (the page asks for
        // one); everything it shows comes through the routes behind it.
        .route("/console", get(console::page))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/console/hls.light.min.js", get(console::hls_js))
        .route("/console/LICENSE-hls.js", get(console::hls_js_license))
        .route("/console/sign-in", axum::routing::post(console::sign_in));
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
        .route(
            "/v1/recordings/{job_id}/{file_name}/media",
            get(media::media),
        )
        .route("/v1/jobs/{job_id}/hls/{file}", get(media::hls))
        .route("/v1/workers", get(console::workers))
        .route("/v1/webhooks", get(console::webhooks))
        .route(
            "/v1/layouts/{name}/preview.png",
            get(console::layout_preview),
        )
        .route("/v1/jobs/{job_id}/thumbnail", get(console::thumbnail))
        .route(
            "/console/session",
            get(console::whoami).delete(console::sign_out),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            st.clone(),
            access::auth,
        ));
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

/// Binds the scrape address (`ROOMCAST_METRICS_LISTEN`) and announces it: a log line and
/// `{"metrics_listening": …}` on standard output, for scripts that bind port 0.
pub async fn bind_scrape(at: &str) -> crate::Result<tokio::net::TcpListener> {
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
    Ok(l)
}

/// Serves [`scrape_router`] alone on `listener` (a worker's probes) until `shutdown` resolves.
pub async fn serve_probes(
    st: Arc<ApiState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    listen::run(listener, scrape_router(st), shutdown).await;
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
    answers::ok("alive", json!({})).into_response()
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
        answers::ok("ready", body).into_response()
    } else {
        let mut body = body;
        body["result"] = json!(Code::Generic.as_u16());
        body["msg"] = json!("not ready");
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
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
            let l = bind_scrape(at).await?;
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

//! The operator console: one page (HTML, script and style built into the binary, nothing
//! loaded from elsewhere) that reads and acts through the same API as every other client, on
//! the strength of a session cookie (see [`super::access`]); and the few reads only it needs:
//! the fleet's workers and a running job's thumbnail.

use super::access::{
    same_origin, session_value, token_access, Access, SESSION_COOKIE, SESSION_SECS,
};
use super::answers::{ok, Reply};
use super::state::{ApiError, ApiState};
use crate::codes::Code;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;
use std::sync::Arc;

type St = State<Arc<ApiState>>;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");
/// hls.js 1.6.15 (Apache-2.0, `console/vendor/`), for the live HLS preview.
const HLS_JS: &str = include_str!("console/vendor/hls.light.min.js");
const HLS_JS_LICENSE: &str = include_str!("console/vendor/LICENSE-hls.js");

/// What the page may load and where it may send: only this origin; no frames around it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; \
                      worker-src 'self' blob:; form-action 'self'; frame-ancestors 'none'; \
                      base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub(super) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

pub(super) async fn hls_js() -> Response {
    asset("text/javascript; charset=utf-8", HLS_JS)
}

pub(super) async fn hls_js_license() -> Response {
    asset("text/plain; charset=utf-8", HLS_JS_LICENSE)
}

/// Whether the session cookie may carry `Secure` (the request reached a proxy over HTTPS).
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /console/sign-in` `{"token": "…"}`: signs in (a session cookie with the token's
/// access). From another origin, or with a wrong token, nothing is set.
pub(super) async fn sign_in(State(st): St, headers: HeaderMap, body: Body) -> Response {
    let answer = async {
        if headers.contains_key(header::ORIGIN) && !same_origin(&headers) {
            return Err(ApiError::with_status(
                Code::Generic,
                StatusCode::FORBIDDEN,
                "signing in from another site is refused",
            ));
        }
        let bytes = axum::body::to_bytes(body, 4096).await.map_err(|_| {
            ApiError::with_status(Code::Generic, StatusCode::BAD_REQUEST, "body too large")
        })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::with_status(
                Code::Generic,
                StatusCode::BAD_REQUEST,
                format!("expected {{\"token\": \"…\"}}: {e}"),
            )
        })?;
        let token = v.get("token").and_then(|t| t.as_str()).unwrap_or_default();
        let access = token_access(&st, token).ok_or_else(|| {
            ApiError::with_status(Code::Generic, StatusCode::UNAUTHORIZED, "wrong token")
        })?;
        let expires = crate::clock::now_ms() / 1000 + SESSION_SECS;
        Ok((
            access,
            session_value(&st.session_key, access, expires),
            expires,
        ))
    }
    .await;
    match answer {
        Ok((access, value, expires)) => {
            tracing::info!(access = access.as_str(), "console session opened");
            let mut r = ok(
                "signed in",
                json!({ "access": access.as_str(), "expires": expires }),
            )
            .into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&value, SESSION_SECS, over_https(&headers)),
            );
            r
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /console/session`: what this session (or token) may do.
pub(super) async fn whoami(Extension(access): Extension<Access>) -> Reply {
    ok("ok", json!({ "access": access.as_str() }))
}

/// `DELETE /console/session`: signs out (the cookie is cleared).
pub(super) async fn sign_out(headers: HeaderMap) -> Response {
    let mut r = ok("signed out", json!({})).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, over_https(&headers)),
    );
    r
}

/// `GET /v1/workers`: the fleet's workers (those that heart-beat lately), their budget, use
/// and jobs.
pub(super) async fn workers(State(st): St) -> Reply {
    let mut workers = st.store.workers().await?;
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    let list: Vec<_> = workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "budget": w.budget,
                "used": w.used,
                "free": w.free(),
                "jobs": w.jobs,
                "heartbeat_ms": w.heartbeat_ms,
                "draining": w.draining,
                "disk_low": w.disk_low,
            })
        })
        .collect();
    ok("ok", json!({ "workers": list }))
}

/// Rendered layout previews (PNG), by layout, participants and screen share.
type Previews = std::sync::Mutex<std::collections::HashMap<(String, usize, bool), Vec<u8>>>;
static PREVIEWS: std::sync::OnceLock<Previews> = std::sync::OnceLock::new();

/// `GET /v1/layouts/{name}/preview.png?participants=N&screen_share=1`: a built-in layout
/// drawn by the real compositor with numbered, coloured tiles (the console shows it before a
/// layout change is sent). Rendered once per shape, then kept.
pub(super) async fn layout_preview(
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let answer = async {
        if !crate::layout::BUILTINS.contains(&name.as_str()) {
            return Err(ApiError::new(
                Code::UnsupportedLayout,
                format!(
                    "unknown layout {name:?}: expected one of {}",
                    crate::layout::BUILTINS.join(", ")
                ),
            ));
        }
        let n = match q.get("participants").map(|v| v.parse::<usize>()) {
            None => 4,
            Some(Ok(n)) if (1..=49).contains(&n) => n,
            Some(_) => {
                return Err(ApiError::new(
                    Code::RecordParamsMissing,
                    "participants must be 1 to 49",
                ))
            }
        };
        let share = q
            .get("screen_share")
            .is_some_and(|v| v == "1" || v == "true");
        let key = (name.clone(), n, share);
        let cache = PREVIEWS.get_or_init(Default::default);
        if let Some(png) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(png.clone());
        }
        let png = tokio::task::spawn_blocking(move || render_preview(&name, n, share))
            .await
            .map_err(|e| ApiError::new(Code::Generic, e.to_string()))??;
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, png.clone());
        Ok(png)
    }
    .await;
    match answer {
        Ok(png) => {
            let mut r = png.into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            );
            r
        }
        Err(e) => e.into_response(),
    }
}

fn render_preview(name: &str, n: usize, share: bool) -> Result<Vec<u8>, ApiError> {
    let failed = |e: String| ApiError::new(Code::Generic, format!("preview: {e}"));
    let layout = crate::layout::Layout::resolve(name).map_err(|e| failed(e.to_string()))?;
    let preset = crate::model::Preset::resolve(crate::model::preset::DEFAULT_PRESET)
        .map_err(|e| failed(e.to_string()))?;
    let out = std::env::temp_dir().join(format!(
        "roomcast-preview-{}-{name}-{n}-{share}.png",
        std::process::id()
    ));
    let r = crate::pipeline::preview::render(&layout, &preset, n, share, &out, None)
        .map_err(|e| failed(e.to_string()))
        .and_then(|_| std::fs::read(&out).map_err(|e| failed(e.to_string())));
    let _ = std::fs::remove_file(&out);
    r
}

/// `GET /v1/webhooks`: this process's webhook queue — events waiting for their receiver
/// (attempts, next try, last error) and those given up after the retry horizon.
pub(super) async fn webhooks(State(st): St) -> Reply {
    let hooks = match &st.hooks {
        Some(q) => tokio::task::block_in_place(|| q.states()),
        None => Vec::new(),
    };
    ok(
        "ok",
        json!({ "configured": st.hooks.is_some(), "webhooks": hooks }),
    )
}

/// `GET /v1/jobs/{id}/thumbnail`: a small JPEG of what a running job records now (taken
/// every 2 s); 404 when the job shows nothing (ended, audio only, not started).
pub(super) async fn thumbnail(State(st): St, Path(id): Path<String>) -> Response {
    match st.store.thumbnail(&id).await {
        Ok(Some(jpeg)) => {
            let mut r = jpeg.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(None) => ApiError::with_status(
            Code::Generic,
            StatusCode::NOT_FOUND,
            format!("no picture of job {id:?} (not running, or nothing to show)"),
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

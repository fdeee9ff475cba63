//! What every handler shares: the API's state ([`ApiState`]: the store, the webhook queue,
//! the configuration) and its error ([`ApiError`]: a 7xxx code and a message), and the
//! OpenAPI document it serves.

use crate::codes::{Code, ResultBody};
use crate::config::ServerConfig;
use crate::queue::{Job, JobKind, Store};
use crate::webhook::WebhookQueue;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::warn;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Shared state of the API server.
pub struct ApiState {
    pub(super) store: Store,
    pub(super) token_hash: [u8; 32],
    /// The read-only token's hash, when there is one.
    pub(super) read_token_hash: Option<[u8; 32]>,
    /// What console sessions are signed with (see `access::session_key`).
    pub(super) session_key: [u8; 32],
    pub(super) cfg: ServerConfig,
    pub(super) hooks: Option<WebhookQueue>,
    /// Where recordings are stored (primary, backup): the archive's files are read back from
    /// there for a player.
    pub(super) storage: Vec<crate::delivery::Storage>,
    /// The in-process worker's loop clock (see `Worker::liveness`), when this process runs one.
    pub(super) worker_alive: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// An API failure: a code, an optional HTTP status override and a detail for the message.
#[derive(Debug)]
pub struct ApiError {
    pub(super) code: Code,
    status: Option<StatusCode>,
    pub(super) detail: String,
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

/// Builds the API state; refuses to run without a token unless `insecure_dev` is set.
pub fn state(
    store: Store,
    cfg: ServerConfig,
    hooks: Option<WebhookQueue>,
    storage: Vec<crate::delivery::Storage>,
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
    let read_token_hash = cfg.read_token.as_ref().map(|t| token_hash(t.expose()));
    if read_token_hash == Some(token_hash(&token)) {
        return Err(crate::Error::Config {
            setting: "ROOMCAST_READ_TOKEN".into(),
            message: "the read-only token must differ from the API token".into(),
            code: Code::Generic,
        });
    }
    Ok(Arc::new(ApiState {
        store,
        token_hash: token_hash(&token),
        read_token_hash,
        session_key: session_key(&token_hash(&token)),
        cfg,
        hooks,
        storage,
        worker_alive,
    }))
}

/// The state of a worker's probe address (`roomcast worker` with
/// `ROOMCAST_METRICS_LISTEN`): metrics and probes only, so no token is taken.
pub fn probe_state(
    store: Store,
    cfg: ServerConfig,
    worker_alive: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> Arc<ApiState> {
    Arc::new(ApiState {
        store,
        // No token's SHA-256 (and no route behind the token is served here).
        token_hash: [0; 32],
        read_token_hash: None,
        session_key: [0; 32],
        cfg,
        hooks: None,
        storage: Vec::new(),
        worker_alive,
    })
}

/// The key console sessions are signed with: derived from the API token, so that every API
/// process of a fleet accepts the sessions of the others, and a new token ends every session.
pub(super) fn session_key(token_hash: &[u8; 32]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(token_hash).expect("any key length");
    mac.update(b"roomcast console session v1");
    mac.finalize().into_bytes().into()
}

pub(super) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares in time independent of where the inputs differ (both are hashes: equal length).
pub(super) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The room's unfinished job of `kind`, if any.
/// Of `jobs` (one read of the store serves every check of a request).
pub(super) fn live_job(jobs: &[Job], room: &str, kind: JobKind) -> Option<Job> {
    jobs.iter()
        .filter(|j| j.spec.room_id == room && j.spec.kind == kind && !j.state.is_terminal())
        .max_by_key(|j| j.created_ms)
        .cloned()
}

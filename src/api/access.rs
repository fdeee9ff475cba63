//! Who may do what. The API token may do everything; the read token (`ROOMCAST_READ_TOKEN`)
//! sees everything and changes nothing. A browser holds neither: the console trades the token
//! the operator types once for a session cookie (HttpOnly, SameSite=Strict, signed, expiring)
//! that carries the same access, and a request that changes something on a session's
//! strength must come from the API's own origin.

use super::state::{constant_time_eq, token_hash, ApiError, ApiState};
use crate::codes::Code;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "roomcast_session";
/// How long a console session lasts.
pub const SESSION_SECS: u64 = 12 * 3600;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and act.
    Full,
    /// Read only.
    Read,
}

impl Access {
    /// The name the console shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Full => "full",
            Access::Read => "read",
        }
    }

    fn from_str(s: &str) -> Option<Access> {
        match s {
            "full" => Some(Access::Full),
            "read" => Some(Access::Read),
            _ => None,
        }
    }
}

/// What a token gives (None: no such token).
pub(super) fn token_access(st: &ApiState, token: &str) -> Option<Access> {
    let h = token_hash(token);
    if constant_time_eq(&h, &st.token_hash) {
        Some(Access::Full)
    } else if st.read_token_hash.is_some_and(|r| constant_time_eq(&h, &r)) {
        Some(Access::Read)
    } else {
        None
    }
}

fn sign(key: &[u8; 32], payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(payload.as_bytes());
    crate::util::hex(&mac.finalize().into_bytes())
}

/// A session cookie's value: `<access>.<expiry, Unix seconds>.<signature>`.
pub(super) fn session_value(key: &[u8; 32], access: Access, expires: u64) -> String {
    let payload = format!("{}.{expires}", access.as_str());
    let sig = sign(key, &payload);
    format!("{payload}.{sig}")
}

/// The access a session cookie's value carries, if it is signed with `key` and not expired
/// at `now` (Unix seconds).
pub(super) fn session_access(key: &[u8; 32], value: &str, now: u64) -> Option<Access> {
    let (payload, sig) = value.rsplit_once('.')?;
    let (access, expires) = payload.split_once('.')?;
    let good = sign(key, payload);
    let same = good.len() == sig.len()
        && good
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    let expires: u64 = expires.parse().ok()?;
    (same && expires > now).then_some(())?;
    Access::from_str(access)
}

/// The value of cookie `name` in a request.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a browser's request comes from the API's own origin: its `Origin` names the host
/// the request was sent to (or, without `Origin`, the browser says `Sec-Fetch-Site:
/// same-origin`).
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => {
            let authority = origin.split_once("://").map(|(_, a)| a);
            authority.is_some() && authority == host
        }
        None => headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "same-origin"),
    }
}

fn changes_something(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    let mut r = ApiError::with_status(Code::Generic, status, msg).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// The check in front of every route but the probes and the console's own files: a bearer
/// token or a session; the request's [`Access`] goes into its extensions.
pub(super) async fn auth(
    State(st): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let (access, by_session) = match bearer {
        Some(t) => match token_access(&st, t) {
            Some(a) => (a, false),
            None => return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
        },
        None => match cookie(req.headers(), SESSION_COOKIE) {
            Some(v) => match session_access(&st.session_key, v, crate::clock::now_ms() / 1000) {
                Some(a) => (a, true),
                None => {
                    return refuse(
                        StatusCode::UNAUTHORIZED,
                        "the console session expired or is not valid: sign in again",
                    )
                }
            },
            None => return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
        },
    };
    if changes_something(req.method()) {
        if by_session && !same_origin(req.headers()) {
            return refuse(
                StatusCode::FORBIDDEN,
                "a request from another site is refused (a session acts only from the console)",
            );
        }
        if access == Access::Read {
            return refuse(
                StatusCode::FORBIDDEN,
                "read-only access: this token sees but cannot act",
            );
        }
    }
    req.extensions_mut().insert(access);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::state::session_key;

    #[test]
    fn a_session_holds_its_access_until_it_expires_and_only_with_its_signature() {
        let key = session_key(&token_hash("secret"));
        let v = session_value(&key, Access::Read, 1000);
        assert_eq!(session_access(&key, &v, 999), Some(Access::Read));
        assert_eq!(session_access(&key, &v, 1000), None);
        let forged = v.replacen("read", "full", 1);
        assert_eq!(session_access(&key, &forged, 999), None);
        let longer = v.replacen(".1000.", ".9999.", 1);
        assert_eq!(session_access(&key, &longer, 999), None);
        let other = session_key(&token_hash("another"));
        assert_eq!(session_access(&other, &v, 999), None);
        assert_eq!(session_access(&key, "garbage", 0), None);
    }

    #[test]
    fn same_origin_compares_the_origin_with_the_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example:8080".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h));
    }
}

//! A Janus WebSocket API client: one session, request/response matched by transaction, async
//! events forwarded in order, keepalives.
//!
//! Janus answers a plugin `message` with an `ack` and, later, an `event` carrying the same
//! transaction — and the event may arrive first. A request waiting for an event therefore skips
//! `ack`s, and whichever answer is final completes it; a late `ack` finds nothing waiting.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

/// How long a request waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Keepalive period (Janus drops sessions idle for 60 s).
pub const KEEPALIVE: Duration = Duration::from_secs(25);

/// A Janus failure: transport, timeout, or an error answer (`code` is Janus's own).
#[derive(Debug, Clone, thiserror::Error)]
#[error("janus: {message}")]
pub struct JanusError {
    /// Janus error code (0 for transport problems).
    pub code: i64,
    /// What happened.
    pub message: String,
}

impl JanusError {
    fn transport(m: impl Into<String>) -> Self {
        JanusError {
            code: 0,
            message: m.into(),
        }
    }
}

struct Pending {
    wants_event: bool,
    tx: oneshot::Sender<Value>,
}

type PendingMap = Arc<Mutex<HashMap<String, Pending>>>;

/// A connected session.
#[derive(Clone)]
pub struct Session {
    out: mpsc::UnboundedSender<String>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    pending: PendingMap,
    next: Arc<AtomicU64>,
    /// Session id.
    pub id: u64,
}

/// An async message from Janus (not an answer to a request): plugin events, `webrtcup`,
/// `hangup`, `media`, `detached`, `timeout`; and a final `{"janus":"closed"}` when the
/// connection ends.
pub type JanusEvent = Value;

/// Names a PEM file of extra certificate authorities trusted for `wss://` (besides the
/// system's).
pub const EXTRA_CA_ENV: &str = "ROOMCAST_EXTRA_CA_FILE";

/// The TLS settings for `wss://`: the system's roots, plus the authorities in
/// [`EXTRA_CA_ENV`] when set.
fn tls_connector() -> Result<Option<tokio_tungstenite::Connector>, JanusError> {
    let Some(file) = std::env::var_os(EXTRA_CA_ENV).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let pem = std::fs::read(&file).map_err(|e| {
        JanusError::transport(format!("{EXTRA_CA_ENV} {}: {e}", file.to_string_lossy()))
    })?;
    let certs = native_tls::Certificate::stack_from_pem(&pem)
        .map_err(|e| JanusError::transport(format!("{EXTRA_CA_ENV}: {e}")))?;
    if certs.is_empty() {
        return Err(JanusError::transport(format!(
            "{EXTRA_CA_ENV}: no PEM certificate in {}",
            file.to_string_lossy()
        )));
    }
    let mut builder = native_tls::TlsConnector::builder();
    for cert in certs {
        builder.add_root_certificate(cert);
    }
    let tls = builder
        .build()
        .map_err(|e| JanusError::transport(format!("TLS setup: {e}")))?;
    Ok(Some(tokio_tungstenite::Connector::NativeTls(tls)))
}

impl Session {
    /// Connects to `url` (subprotocol `janus-protocol`), creates a session and starts the
    /// keepalive. Async events arrive on the returned receiver.
    pub async fn connect(
        url: &str,
    ) -> Result<(Session, mpsc::UnboundedReceiver<JanusEvent>), JanusError> {
        let mut req = url
            .into_client_request()
            .map_err(|e| JanusError::transport(format!("bad URL {url}: {e}")))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "janus-protocol".parse().expect("static header"),
        );
        let connector = tls_connector()?;
        let connect = tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector);
        let (ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| JanusError::transport(format!("connecting to {url}: timed out")))?
            .map_err(|e| JanusError::transport(format!("connecting to {url}: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let pending: PendingMap = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if text.is_empty() {
                    break;
                }
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let text = match msg {
                    Ok(Message::Text(t)) => t.to_string(),
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    warn!("unreadable message from janus");
                    continue;
                };
                let kind = v["janus"].as_str().unwrap_or("");
                let waiting = v["transaction"].as_str().and_then(|t| {
                    let mut map = p.lock().unwrap();
                    let wants_event = map.get(t).map(|x| x.wants_event)?;
                    if kind == "ack" && wants_event {
                        return None;
                    }
                    map.remove(t)
                });
                match waiting {
                    Some(w) => {
                        let _ = w.tx.send(v);
                    }
                    None if kind == "ack" => {}
                    None => {
                        if ev_tx.send(v).is_err() {
                            break;
                        }
                    }
                }
            }
            // Wake everything still waiting, then tell the owner.
            p.lock().unwrap().clear();
            let _ = ev_tx.send(json!({ "janus": "closed" }));
        });
        let mut s = Session {
            out: out_tx,
            closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            pending,
            next: Arc::new(AtomicU64::new(1)),
            id: 0,
        };
        let r = s.request(json!({ "janus": "create" }), false).await?;
        s.id = r["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::transport("create: no session id"))?;
        let ka = s.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                if ka.out.is_closed() || ka.closed.load(Ordering::SeqCst) {
                    break;
                }
                if let Err(e) = ka.request(json!({ "janus": "keepalive" }), false).await {
                    debug!(error = %e, "keepalive failed");
                    break;
                }
            }
        });
        Ok((s, ev_rx))
    }

    /// Sends `body` (session id and transaction added) and waits for its answer: the `event`
    /// when `wants_event`, else the first answer.
    pub async fn request(&self, mut body: Value, wants_event: bool) -> Result<Value, JanusError> {
        let t = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        body["transaction"] = json!(t);
        if self.id != 0 {
            body["session_id"] = json!(self.id);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap()
            .insert(t.clone(), Pending { wants_event, tx });
        if self.out.send(body.to_string()).is_err() {
            self.pending.lock().unwrap().remove(&t);
            return Err(JanusError::transport("connection closed"));
        }
        let v = match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => return Err(JanusError::transport("connection closed")),
            Err(_) => {
                self.pending.lock().unwrap().remove(&t);
                return Err(JanusError::transport("request timed out"));
            }
        };
        if v["janus"] == "error" {
            return Err(JanusError {
                code: v["error"]["code"].as_i64().unwrap_or(0),
                message: v["error"]["reason"].as_str().unwrap_or("error").to_string(),
            });
        }
        // Plugin-level errors ride in a successful event.
        let data = &v["plugindata"]["data"];
        if let Some(code) = data["error_code"].as_i64() {
            return Err(JanusError {
                code,
                message: data["error"].as_str().unwrap_or("plugin error").to_string(),
            });
        }
        Ok(v)
    }

    /// Attaches a handle to `plugin`.
    pub async fn attach(&self, plugin: &str) -> Result<u64, JanusError> {
        let r = self
            .request(json!({ "janus": "attach", "plugin": plugin }), false)
            .await?;
        r["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::transport("attach: no handle id"))
    }

    /// A plugin message on `handle`, with an optional JSEP; waits for the plugin's event.
    pub async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, JanusError> {
        let mut m = json!({ "janus": "message", "handle_id": handle, "body": body });
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        let wants_event = !matches!(
            body_request(&m),
            Some("create" | "destroy" | "listparticipants" | "exists" | "list" | "edit" | "kick")
        );
        self.request(m, wants_event).await
    }

    /// Detaches a handle (best effort).
    pub async fn detach(&self, handle: u64) {
        let _ = self
            .request(json!({ "janus": "detach", "handle_id": handle }), false)
            .await;
    }

    /// Closes the connection without waiting (Janus drops the session and its handles when
    /// its WebSocket closes).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.out.send(String::new());
    }

    /// Destroys the session and closes the connection (best effort).
    pub async fn destroy(&self) {
        let _ = self.request(json!({ "janus": "destroy" }), false).await;
    }
}

fn body_request(m: &Value) -> Option<&str> {
    m["body"]["request"].as_str()
}

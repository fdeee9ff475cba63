//! The HTTP listener under the API: how long a client may take and how many may connect.
//!
//! A client that opens a connection and never finishes its request headers is closed after
//! [`HEADER_READ_TIMEOUT`] (the same limit holds for an idle kept-alive connection between two
//! requests); a body that does not arrive within [`BODY_READ_TIMEOUT`] is answered 408 by the
//! handler that reads it. At most [`MAX_CONNECTIONS`] connections are served at once: one more
//! is closed as soon as it is accepted, so slow or hostile clients cannot use up the process's
//! file descriptors or memory. Owns sockets and connections only; routes are the router's.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Longest a client may take to send a request's headers (or stay idle between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request body may take to arrive once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once by one listener.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a stopping listener lets requests in progress finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and gives the
/// connections in progress [`SHUTDOWN_GRACE`] to finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refused = AtomicU64::new(0);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait a moment rather than spin.
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let n = refused.fetch_add(1, Ordering::Relaxed);
            // Logged for the first refusal and every 100th after it, not per connection.
            if n.is_multiple_of(100) {
                warn!(
                    %peer,
                    limit = MAX_CONNECTIONS,
                    refused = n + 1,
                    "connection limit reached; connection closed"
                );
            }
            drop(stream);
            continue;
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("connections still open at shutdown were closed");
    }
}

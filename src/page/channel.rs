//! The page's line to roomcast: a WebSocket on loopback, at a path holding a random token, that
//! the page's bootstrap script connects to. roomcast sends the room's state (on connect and on
//! every change); the page sends `hello`, `alive` (four a second) and the boxes of its marked
//! tiles whenever they change.

use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

/// Largest message accepted from a page.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What a page says.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PageMessage {
    /// The script is running in the page at `href`.
    Hello {
        /// The page's address.
        #[serde(default)]
        href: String,
        /// Where the page is drawn.
        #[serde(default)]
        layer: Layer,
    },
    /// The page is alive.
    Alive,
    /// The page's marked tiles.
    Regions {
        /// Viewport size in CSS pixels.
        viewport: (f64, f64),
        /// Where the page is drawn.
        #[serde(default)]
        layer: Layer,
        /// The marked boxes.
        regions: Vec<super::PageRegion>,
    },
}

/// Where a page is drawn: over the tiles (the default) or under them, as the canvas's
/// background (`data-roomcast-layer="background"` on `<html>` or `<body>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Over the tiles.
    #[default]
    Overlay,
    /// Under the tiles.
    Background,
}

/// The server end of a page's channel. Ends (and closes the page's connection) when dropped.
pub struct Channel {
    address: String,
    state: watch::Sender<String>,
    incoming: mpsc::UnboundedReceiver<PageMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl Channel {
    /// Listens on a free loopback port.
    pub async fn open() -> std::io::Result<Channel> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let token = crate::util::random_hex(16);
        let address = format!("ws://127.0.0.1:{port}/{token}");
        debug!(port, "custom view channel listening");
        let (state, state_rx) = watch::channel(String::new());
        let (tx, incoming) = mpsc::unbounded_channel();
        let path = format!("/{token}");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                debug!(%peer, "custom view connected");
                let path = path.clone();
                let tx = tx.clone();
                let state_rx = state_rx.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &path, tx, state_rx).await {
                        debug!(error = %e, "page connection ended");
                    }
                });
            }
        });
        Ok(Channel {
            address,
            state,
            incoming,
            task,
        })
    }

    /// The address the page connects to (holds the token: not for logs).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends the room's state to the page (now, and to a page that connects later).
    pub fn send_state(&self, state: &Value) {
        let msg = serde_json::json!({"type": "state", "state": state}).to_string();
        self.state.send_replace(msg);
    }

    /// The next message from the page.
    pub async fn recv(&mut self) -> Option<PageMessage> {
        self.incoming.recv().await
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    path: &str,
    tx: mpsc::UnboundedSender<PageMessage>,
    mut state: watch::Receiver<String>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    use futures::{SinkExt, StreamExt};
    // The handshake callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == path {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(Some("not found".into()));
            *e.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(e)
        }
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await?;
    let (mut out, mut inc) = ws.split();
    let first = state.borrow_and_update().clone();
    if !first.is_empty() {
        out.send(Message::text(first)).await?;
    }
    loop {
        tokio::select! {
            msg = inc.next() => match msg {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<PageMessage>(&text) {
                    Ok(m) => {
                        if tx.send(m).is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => debug!(error = %e, "unreadable page message"),
                },
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let text = state.borrow_and_update().clone();
                out.send(Message::text(text)).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_messages_parse() {
        let m: PageMessage = serde_json::from_str(
            r#"{"type":"regions","viewport":[1280,720],"regions":[{"fill":"speaker","fit":null,"x":1,"y":2,"w":3,"h":4,"z":null}]}"#,
        )
        .unwrap();
        let PageMessage::Regions {
            viewport,
            regions,
            layer,
        } = m
        else {
            panic!("not regions")
        };
        assert_eq!((viewport, layer), ((1280.0, 720.0), Layer::Overlay));
        assert_eq!(regions[0].fill, "speaker");
        let m: PageMessage =
            serde_json::from_str(r#"{"type":"hello","href":"http://x/","layer":"background"}"#)
                .unwrap();
        assert!(matches!(
            m,
            PageMessage::Hello {
                layer: Layer::Background,
                ..
            }
        ));
        let m: PageMessage = serde_json::from_str(r#"{"type":"alive"}"#).unwrap();
        assert_eq!(m, PageMessage::Alive);
    }
}

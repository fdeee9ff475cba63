//! The custom view's network guard: a forward proxy on loopback through which the page's
//! renderer sends every request it makes (WebKit follows `http_proxy`/`https_proxy`, loopback
//! addresses included). A request — the page itself, a redirect it is sent on, an image, a
//! script, a WebSocket — goes out only to an allowed origin; anything else is answered 403
//! and reported, so a page from an allowed origin cannot lead the worker to another host
//! (a redirect to a local service, an image from anywhere). `data:` resources never reach
//! the network and stay allowed.
//!
//! Owns sockets only: which origins are allowed is the caller's, and what a refused
//! navigation means for the recording is the renderer's.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Longest a client may take to send a request's head, and a connection to a server.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// The origins a page may reach: `scheme://host:port` with the port always written, `ws`
/// counted as `http` and `wss` as `https`; or any (`*` in the configured list).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allowed {
    any: bool,
    origins: Vec<String>,
}

impl Allowed {
    /// The page's own origin, every origin in `extra` (`*` for any).
    pub fn new(page_url: &str, extra: &[String]) -> Allowed {
        let mut allowed = Allowed::default();
        for o in std::iter::once(page_url).chain(extra.iter().map(String::as_str)) {
            let o = o.trim();
            if o == "*" {
                allowed.any = true;
            } else if let Some(origin) = origin_of(o) {
                if !allowed.origins.contains(&origin) {
                    allowed.origins.push(origin);
                }
            }
        }
        allowed
    }

    /// Whether `scheme://host:port` may be reached.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme = match scheme {
            "ws" => "http",
            "wss" => "https",
            s => s,
        };
        if self.any {
            return matches!(scheme, "http" | "https");
        }
        let origin = format!("{scheme}://{}:{port}", host.to_ascii_lowercase());
        self.origins.contains(&origin)
    }

    /// Whether a tunnel to `host:port` may be opened (for `https`, `wss`, or `ws`).
    fn allows_tunnel(&self, host: &str, port: u16) -> bool {
        self.allows("https", host, port) || self.allows("http", host, port)
    }
}

/// `scheme://host:port` of a URL, the port always written (`None`: not a web URL).
fn origin_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let scheme = match u.scheme() {
        "ws" => "http",
        "wss" => "https",
        s @ ("http" | "https") => s,
        _ => return None,
    };
    let host = u.host_str()?.trim_matches(['[', ']']).to_ascii_lowercase();
    Some(format!("{scheme}://{host}:{}", u.port_or_known_default()?))
}

/// A request the guard refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Its origin (`scheme://host:port`), no path or query.
    pub origin: String,
    /// Whether it asked for a document (a navigation or a frame) rather than a resource.
    pub document: bool,
}

/// A running guard; it stops accepting when dropped (connections in progress finish).
pub struct Guard {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Guard {
    /// Starts a guard on a free loopback port. Every refused request goes to `on_refused` (on
    /// a thread of the guard's own).
    pub fn start(
        allowed: Allowed,
        on_refused: impl Fn(Refusal) + Send + Sync + 'static,
    ) -> std::io::Result<Guard> {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let allowed = Arc::new(allowed);
        let on_refused: Arc<dyn Fn(Refusal) + Send + Sync> = Arc::new(on_refused);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("page-guard".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (allowed, on_refused) = (allowed.clone(), on_refused.clone());
                    let _ = std::thread::Builder::new()
                        .name("page-guard-conn".into())
                        .spawn(move || {
                            if let Err(e) = serve(stream, &allowed, on_refused.as_ref()) {
                                tracing::debug!(error = %e, "page guard connection");
                            }
                        });
                }
            })?;
        Ok(Guard { port, stop })
    }

    /// The proxy variables that send every request of a child process through the guard.
    pub fn proxy_env(&self) -> Vec<(&'static str, String)> {
        let at = format!("http://127.0.0.1:{}", self.port);
        vec![
            ("http_proxy", at.clone()),
            ("https_proxy", at.clone()),
            ("HTTP_PROXY", at.clone()),
            ("HTTPS_PROXY", at.clone()),
            ("all_proxy", at),
            ("no_proxy", String::new()),
            ("NO_PROXY", String::new()),
        ]
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The origins configured for custom view pages (`ROOMCAST_PAGE_ORIGINS`, comma-separated).
pub fn configured_origins() -> Vec<String> {
    std::env::var("ROOMCAST_PAGE_ORIGINS")
        .unwrap_or_default()
        .split(',')
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect()
}

/// A request's head: its first line and header lines.
struct Head {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn wants_document(&self) -> bool {
        match self.header("sec-fetch-dest") {
            Some(d) => matches!(d, "document" | "iframe" | "frame"),
            None => self
                .header("accept")
                .is_some_and(|a| a.starts_with("text/html")),
        }
    }
}

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if total > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let Some(first) = lines.first() else {
        return Ok(None);
    };
    let mut parts = first.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(std::io::Error::other("malformed request line"));
    };
    let headers = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
    }))
}

fn refuse(mut client: TcpStream, origin: String, document: bool, on_refused: &dyn Fn(Refusal)) {
    let body = "This address is not an allowed origin for the custom view.\n";
    let _ = write!(
        client,
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Both);
    on_refused(Refusal { origin, document });
}

fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, HEAD_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn serve(
    client: TcpStream,
    allowed: &Allowed,
    on_refused: &dyn Fn(Refusal),
) -> std::io::Result<()> {
    client.set_read_timeout(Some(HEAD_TIMEOUT))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let document = head.wants_document();
    if head.method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(&head.target)
            .ok_or_else(|| std::io::Error::other("malformed CONNECT target"))?;
        if !allowed.allows_tunnel(&host, port) {
            refuse(
                client,
                format!("https://{host}:{port}"),
                document,
                on_refused,
            );
            return Ok(());
        }
        let upstream = connect(&host, port)?;
        let mut c = client.try_clone()?;
        c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        client.set_read_timeout(None)?;
        return pipe(reader, client, upstream, &[]);
    }
    let url = reqwest::Url::parse(&head.target)
        .map_err(|_| std::io::Error::other("not an absolute URL"))?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    if !allowed.allows(url.scheme(), &host, port) {
        refuse(
            client,
            format!("{}://{host}:{port}", url.scheme()),
            document,
            on_refused,
        );
        return Ok(());
    }
    let upstream = connect(&host, port)?;
    // One request per connection: the next one, to whichever origin, comes through the guard
    // again. An upgrade (a WebSocket) keeps its connection.
    let upgrade = head.header("upgrade").is_some();
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut out = format!("{} {path} {}\r\n", head.method, head.version);
    for (k, v) in &head.headers {
        let k_lower = k.to_ascii_lowercase();
        if k_lower == "proxy-connection" || k_lower == "proxy-authorization" {
            continue;
        }
        if k_lower == "connection" && !upgrade {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !upgrade {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    client.set_read_timeout(None)?;
    pipe(reader, client, upstream, out.as_bytes())
}

/// `host:port` (IPv6 in brackets).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_matches(['[', ']']).to_string();
    Some((host, port.parse().ok()?))
}

/// Sends `first` upstream, then copies both ways until both sides are done.
fn pipe(
    mut from_client: BufReader<TcpStream>,
    client: TcpStream,
    mut upstream: TcpStream,
    first: &[u8],
) -> std::io::Result<()> {
    upstream.write_all(first)?;
    // What the client already sent past the head (a body) is in the reader's buffer.
    let buffered = from_client.buffer().to_vec();
    from_client.consume(buffered.len());
    upstream.write_all(&buffered)?;
    let mut up_write = upstream.try_clone()?;
    let forward = std::thread::Builder::new()
        .name("page-guard-up".into())
        .spawn(move || {
            let mut inner = from_client.into_inner();
            let _ = std::io::copy(&mut inner, &mut up_write);
            let _ = up_write.shutdown(Shutdown::Write);
        })?;
    let mut down = client;
    let _ = std::io::copy(&mut upstream, &mut down);
    let _ = down.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = forward.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_matched_with_their_ports() {
        let a = Allowed::new(
            "http://127.0.0.1:8000/view?x=1",
            &[
                "https://views.example.com".into(),
                "ws://127.0.0.1:4000/tok".into(),
            ],
        );
        assert!(a.allows("http", "127.0.0.1", 8000));
        assert!(!a.allows("http", "127.0.0.1", 8001));
        assert!(!a.allows("https", "127.0.0.1", 8000));
        assert!(a.allows("https", "views.example.com", 443));
        assert!(a.allows("wss", "views.example.com", 443));
        assert!(!a.allows("http", "views.example.com", 80));
        assert!(a.allows("ws", "127.0.0.1", 4000));
        assert!(a.allows_tunnel("views.example.com", 443));
        assert!(!a.allows_tunnel("127.0.0.1", 6379));
        let any = Allowed::new("http://a.example/", &["*".into()]);
        assert!(any.allows("https", "anything.example", 8443));
        assert!(!any.allows("ftp", "anything.example", 21));
    }
}

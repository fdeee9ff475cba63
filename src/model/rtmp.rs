//! RTMP destinations as data: validated URLs whose stream keys never reach logs or status,
//! and the status a destination reports. No media here (see `pipeline::rtmp`).

use crate::codes::Code;
use serde::{Deserialize, Serialize};

/// Most RTMP destinations per job.
pub const MAX_DESTINATIONS: usize = 3;
/// Longest accepted URL.
const MAX_URL_LEN: usize = 2048;

/// Why an RTMP URL list was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpUrlError {
    /// More than [`MAX_DESTINATIONS`].
    #[error("at most {MAX_DESTINATIONS} RTMP destinations, got {0}")]
    TooMany(usize),
    /// Not an rtmp:// or rtmps:// URL with a host, an application and a stream name.
    #[error("invalid RTMP URL {url}: {reason}")]
    Invalid {
        /// The URL with its stream key hidden.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl RtmpUrlError {
    /// 7101 for too many, 7102 for a malformed URL.
    pub fn code(&self) -> Code {
        match self {
            RtmpUrlError::TooMany(_) => Code::TooManyRtmpUrls,
            RtmpUrlError::Invalid { .. } => Code::InvalidRtmpUrl,
        }
    }
}

/// A validated RTMP URL. The stream key (everything after the application) is a secret:
/// `Debug` and [`RtmpUrl::redacted`] hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl(String);

impl std::fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtmpUrl({})", self.redacted())
    }
}

fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let mut parts = rest.splitn(3, '/');
    let host = parts.next().unwrap_or("");
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    match parts.next() {
        Some(app) => format!("{scheme}://{host}/{app}/***"),
        None => format!("{scheme}://{host}/***"),
    }
}

impl RtmpUrl {
    /// Validates one URL: `rtmp://` or `rtmps://`, a host (optional port), an application and
    /// a stream name, no whitespace or control characters.
    pub fn parse(url: &str) -> Result<RtmpUrl, RtmpUrlError> {
        let bad = |reason| RtmpUrlError::Invalid {
            url: redact(url),
            reason,
        };
        if url.len() > MAX_URL_LEN {
            return Err(bad("longer than 2048 characters"));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("no scheme"));
        };
        if !scheme.eq_ignore_ascii_case("rtmp") && !scheme.eq_ignore_ascii_case("rtmps") {
            return Err(bad("the scheme must be rtmp or rtmps"));
        }
        let mut parts = rest.splitn(2, '/');
        let authority = parts.next().unwrap_or("");
        let hostport = authority
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(authority);
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (h, Some(p)),
            _ => (hostport, None),
        };
        if host.is_empty() || host.chars().any(|c| "/?#\\".contains(c)) {
            return Err(bad("no host"));
        }
        if let Some(p) = port {
            if p.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad("the port is not a number from 1 to 65535"));
            }
        }
        let path = parts.next().unwrap_or("");
        let mut segs = path.splitn(2, '/');
        let app = segs.next().unwrap_or("");
        let stream = segs.next().unwrap_or("");
        if app.is_empty() || stream.is_empty() {
            return Err(bad("expected rtmp://host[:port]/application/stream"));
        }
        Ok(RtmpUrl(url.to_string()))
    }

    /// Validates a destination list: at most [`MAX_DESTINATIONS`], each well formed.
    pub fn parse_all<S: AsRef<str>>(urls: &[S]) -> Result<Vec<RtmpUrl>, RtmpUrlError> {
        if urls.len() > MAX_DESTINATIONS {
            return Err(RtmpUrlError::TooMany(urls.len()));
        }
        urls.iter().map(|u| RtmpUrl::parse(u.as_ref())).collect()
    }

    /// The URL with the stream key hidden, for logs and status.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// The full URL, stream key included: only for the element that connects.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

/// Where a destination stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationState {
    /// Opening the connection.
    Connecting,
    /// Streaming.
    Live,
    /// The connection failed; waiting to try again.
    Retrying,
    /// Removed or the job ended.
    Stopped,
}

/// A destination's state as the job status reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// Destination id within the job.
    pub id: u32,
    /// URL with the stream key hidden.
    pub url: String,
    /// Current state.
    pub state: DestinationState,
    /// Connections opened so far.
    pub connections: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated_and_redacted() {
        let u = RtmpUrl::parse("rtmp://live.example.com:1935/app/sk_secret").unwrap();
        assert_eq!(u.redacted(), "rtmp://live.example.com:1935/app/***");
        assert!(!format!("{u:?}").contains("secret"));
        RtmpUrl::parse("rtmps://a.b/live/key?x=1").unwrap();
        for bad in [
            "http://a/b/c",
            "rtmp://",
            "rtmp://host",
            "rtmp://host/app",
            "rtmp://host/app/",
            "rtmp://host:0/app/k",
            "rtmp://host:99999/app/k",
            "rtmp://ho st/app/k",
            "rtmp:///app/k",
        ] {
            let e = RtmpUrl::parse(bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidRtmpUrl, "{bad}");
        }
        let four = ["rtmp://a/b/c"; 4];
        assert_eq!(
            RtmpUrl::parse_all(&four).unwrap_err().code(),
            Code::TooManyRtmpUrls
        );
        assert_eq!(RtmpUrl::parse_all(&four[..3]).unwrap().len(), 3);
        let e = RtmpUrl::parse("rtmp://user:pw@h/app/topsecret x").unwrap_err();
        assert!(!e.to_string().contains("topsecret") && !e.to_string().contains("pw"));
    }
}

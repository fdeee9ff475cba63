//! Web layouts (the platform's "custom view"): a page drawn over the recording (or under its
//! tiles, when it asks to be the backdrop) while the video tiles stay native.
//!
//! - [`PageSpec`]: which page a job shows, checked against the configured origins
//!   ([`check_url`]); the request's custom keys go into its query string ([`page_url`]).
//! - [`channel`]: the local WebSocket through which the page learns the room and tells where
//!   its tiles go; the script that connects it is run in the page ([`bootstrap_script`]).
//! - [`regions_layout`]: the boxes a page marked (`data-roomcast-tile`) as a layout.
//!
//! The rendering is the pipeline's ([`crate::pipeline::page`]); keeping the page shown, its
//! fallback and retries are the job's (`job::page`).

pub mod channel;
pub mod guard;

use crate::codes::Code;
use crate::layout::{Layout, LayoutError};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use crate::model::page::PageSpec;

/// A page address that may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PageUrlError {
    /// Why.
    pub message: String,
}

impl PageUrlError {
    /// The platform's code: 7202 (invalid format of the URL).
    pub fn code(&self) -> Code {
        Code::InvalidUrlFormat
    }
}

fn url_error(message: impl Into<String>) -> PageUrlError {
    PageUrlError {
        message: message.into(),
    }
}

/// Checks `url` for a page requested through the API: http(s) only, from one of `origins`
/// (`scheme://host[:port]`, or `*` for any http(s) origin).
pub fn check_url(url: &str, origins: &[String]) -> Result<reqwest::Url, PageUrlError> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| url_error(format!("url {url:?} is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(url_error(format!(
            "url must be an http or https address, not {:?}",
            parsed.scheme()
        )));
    }
    let origin = parsed.origin().ascii_serialization();
    let allowed = origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(&origin));
    if !allowed {
        return Err(url_error(if origins.is_empty() {
            "custom view pages are not enabled on this worker (set ROOMCAST_PAGE_ORIGINS)"
                .to_string()
        } else {
            format!("the origin {origin} is not in ROOMCAST_PAGE_ORIGINS")
        }));
    }
    Ok(parsed)
}

/// Keys of a request's `urlDetails` that roomcast reads itself; every other key is passed to the
/// page in its query string.
pub const OWN_KEYS: &[&str] = &["url", "layout", "layOut", "chatOverlay", "chat_overlay"];

/// `url` with the request's custom keys (`details` minus [`OWN_KEYS`]) added to its query
/// string: strings as they are, other values as JSON.
pub fn page_url(mut url: reqwest::Url, details: &Map<String, Value>) -> String {
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in details {
            if OWN_KEYS.contains(&k.as_str()) || v.is_null() {
                continue;
            }
            match v {
                Value::String(s) => q.append_pair(k, s),
                other => q.append_pair(k, &other.to_string()),
            };
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    url.to_string()
}

/// One box a page marked with `data-roomcast-tile`, in CSS pixels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PageRegion {
    /// `speaker`, `others`, `screen` or `participant:<id>`.
    pub fill: String,
    /// `crop` or `letterbox` (`data-roomcast-fit`).
    #[serde(default)]
    pub fit: Option<String>,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// Stacking order (`z-index`).
    #[serde(default)]
    pub z: Option<i64>,
}

/// The layout a page's marked boxes make, scaled from its `viewport` (CSS pixels) to fractions
/// of the canvas; `None` when it marked nothing (the room's own layout stays, under the page).
pub fn regions_layout(
    viewport: (f64, f64),
    regions: &[PageRegion],
) -> Result<Option<Layout>, LayoutError> {
    let (vw, vh) = viewport;
    if regions.is_empty() {
        return Ok(None);
    }
    if vw < 1.0 || vh < 1.0 {
        return Err(LayoutError::unsupported(
            "page",
            "the page reported no viewport",
        ));
    }
    let clamp = |v: f64| (v.clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0;
    let mut list = Vec::new();
    for r in regions {
        let x0 = clamp(r.x / vw);
        let y0 = clamp(r.y / vh);
        let x1 = clamp((r.x + r.w) / vw);
        let y1 = clamp((r.y + r.h) / vh);
        if x1 - x0 <= 0.0 || y1 - y0 <= 0.0 {
            continue;
        }
        let mut region = serde_json::json!({
            "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0,
            "fill": r.fill.trim(),
            "z": r.z.unwrap_or(1).clamp(1, 1000),
        });
        if let Some(fit) = &r.fit {
            region["fit"] = Value::String(fit.trim().to_ascii_lowercase());
        }
        list.push(region);
    }
    if list.is_empty() {
        return Ok(None);
    }
    let def = serde_json::json!({ "name": "page", "region": list });
    Layout::from_request(&def).map(Some)
}

/// The script run in the page: it connects to roomcast's channel at `address`, keeps
/// `window.roomcast.state` current, fires a `roomcast` event on `window` for every change,
/// reports the boxes of elements marked `data-roomcast-tile` whenever they move, and with
/// `chat_overlay` draws the room's latest chat messages in a panel at the bottom right.
pub fn bootstrap_script(address: &str, chat_overlay: bool) -> String {
    include_str!("bootstrap.js")
        .replace("__ROOMCAST_CHANNEL__", address)
        .replace(
            "__ROOMCAST_CHAT_OVERLAY__",
            if chat_overlay { "true" } else { "false" },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_web_addresses_from_allowed_origins() {
        let origins = vec!["https://views.example.com".to_string()];
        assert!(check_url("https://views.example.com/a?b=1", &origins).is_ok());
        let e = check_url("https://evil.example.com/a", &origins).unwrap_err();
        assert_eq!(e.code(), Code::InvalidUrlFormat);
        assert!(e.message.contains("not in ROOMCAST_PAGE_ORIGINS"));
        assert!(check_url("file:///etc/passwd", &["*".into()]).is_err());
        assert!(check_url("not a url", &["*".into()]).is_err());
        assert!(check_url("http://127.0.0.1:8080/x", &["*".into()]).is_ok());
        let e = check_url("http://127.0.0.1:8080/x", &[]).unwrap_err();
        assert!(e.message.contains("not enabled"));
    }

    #[test]
    fn custom_keys_go_into_the_query_string() {
        let url = reqwest::Url::parse("https://v.example.com/view?theme=dark").unwrap();
        let details: Map<String, Value> = serde_json::from_str(
            r#"{"url":"x","layOut":{},"chatOverlay":true,"title":"Town hall","opts":{"a":1}}"#,
        )
        .unwrap();
        let u = page_url(url, &details);
        assert!(u.starts_with("https://v.example.com/view?theme=dark&"));
        assert!(u.contains("title=Town+hall"));
        assert!(u.contains("opts=%7B%22a%22%3A1%7D"));
        assert!(!u.contains("chatOverlay"));
        let spec = PageSpec::new(u);
        assert_eq!(spec.shown_url(), "https://v.example.com/view");
    }

    #[test]
    fn marked_boxes_become_regions() {
        let regions: Vec<PageRegion> = serde_json::from_str(
            r#"[{"fill":"speaker","x":640,"y":0,"w":640,"h":360,"fit":"letterbox","z":2},
                {"fill":"others","x":0,"y":360,"w":1280,"h":360},
                {"fill":"speaker","x":0,"y":0,"w":0,"h":10}]"#,
        )
        .unwrap();
        let layout = regions_layout((1280.0, 720.0), &regions).unwrap().unwrap();
        let def = layout.def();
        assert_eq!(def.regions.len(), 2);
        assert_eq!(def.regions[0].x, 0.5);
        assert_eq!(def.regions[0].w, 0.5);
        assert_eq!(def.regions[0].z, 2);
        assert_eq!(def.regions[1].y, 0.5);
        assert!(regions_layout((1280.0, 720.0), &[]).unwrap().is_none());
        let bad: Vec<PageRegion> =
            serde_json::from_str(r#"[{"fill":"nobody","x":0,"y":0,"w":10,"h":10}]"#).unwrap();
        assert!(regions_layout((1280.0, 720.0), &bad).is_err());
    }
}

//! A job's web page (custom view): which page, and how showing it goes.

use serde::{Deserialize, Serialize};

/// The page a job shows over its tiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageSpec {
    /// The page's address, the request's custom keys already in its query string.
    pub url: String,
    /// Draw roomcast's chat overlay (the room's latest chat messages) in the page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chat_overlay: bool,
}

/// The page shown for a chat overlay without a custom view: empty and transparent.
pub const BLANK_PAGE: &str =
    "data:text/html,<!doctype html><html><head><style>html,body{margin:0;background:transparent}</style></head><body></body></html>";

impl PageSpec {
    /// A page at `url`.
    pub fn new(url: impl Into<String>) -> PageSpec {
        PageSpec {
            url: url.into(),
            chat_overlay: false,
        }
    }

    /// roomcast's chat overlay alone (over the room's own layout).
    pub fn chat_overlay() -> PageSpec {
        PageSpec {
            url: BLANK_PAGE.into(),
            chat_overlay: true,
        }
    }

    /// Whether this is roomcast's own page (nothing to fetch).
    pub fn is_builtin(&self) -> bool {
        self.url.starts_with("data:")
    }

    /// The address without its query string or fragment (custom keys may carry tokens): what
    /// logs, records and webhooks show.
    pub fn shown_url(&self) -> String {
        if self.is_builtin() {
            return "(chat overlay)".into();
        }
        match self.url.split_once(['?', '#']) {
            Some((base, _)) => base.to_string(),
            None => self.url.clone(),
        }
    }
}

/// One chat message, as the page is told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    /// Sender's user id.
    pub user_id: String,
    /// Sender's display name.
    pub name: String,
    /// The message.
    pub text: String,
    /// When it was sent, ms since the epoch.
    pub time_ms: u64,
}

/// Where showing the page stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PagePhase {
    /// Being checked and rendered.
    Loading,
    /// Shown over the tiles.
    Shown,
    /// Failed: the room's own layout is shown and the page is tried again later.
    Fallback,
}

/// The page's status, in the job record and the `custom-view` webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageStatus {
    /// The page (without its query string).
    pub url: String,
    /// Where it stands.
    pub phase: PagePhase,
    /// Why it fell back, while it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failures since it was last shown.
    #[serde(default)]
    pub failures: u32,
}

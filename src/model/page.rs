//! A job's web page (custom view): which page, and how showing it goes.

use serde::{Deserialize, Serialize};

/// The page a job shows over its tiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageSpec {
    /// The page's address, the request's custom keys already in its query string.
    pub url: String,
}

impl PageSpec {
    /// The address without its query string or fragment (custom keys may carry tokens): what
    /// logs, records and webhooks show.
    pub fn shown_url(&self) -> String {
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

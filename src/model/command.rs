//! What the queue stores beside rooms and jobs: commands to a running job ([`Command`]) and the
//! workers ([`WorkerInfo`]).
//!
//! Plain serde data, held the same by the embedded store and Redis.

use super::event::PlatformEvent;
use serde::{Deserialize, Serialize};

/// A command to a running job, delivered to the worker that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Stop and finalize.
    Stop {
        /// Who asked.
        by: String,
    },
    /// Change the layout live.
    SetLayout {
        /// Validated layout (name or inline definition).
        layout: serde_json::Value,
    },
    /// Show another custom view page (None: none).
    SetPage {
        /// Checked page.
        page: Option<crate::model::page::PageSpec>,
    },
    /// Replace the RTMP destinations.
    SetRtmp {
        /// New destination list.
        urls: Vec<String>,
    },
    /// Add one RTMP destination; the others go on untouched.
    AddRtmp {
        /// Checked URL.
        url: String,
    },
    /// Take one RTMP destination out; the others go on untouched.
    RemoveRtmp {
        /// The destination's id in the job record.
        id: u32,
    },
    /// A room event from the platform.
    Room {
        /// The event.
        event: PlatformEvent,
    },
}

/// A worker's advertisement, refreshed by its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Worker id.
    pub id: String,
    /// CPU budget in cores.
    pub budget: f64,
    /// Cores in use by its jobs (estimated).
    pub used: f64,
    /// Jobs it holds.
    pub jobs: Vec<String>,
    /// Last heartbeat, ms since the epoch.
    pub heartbeat_ms: u64,
    /// Stopping: takes no more jobs.
    #[serde(default)]
    pub draining: bool,
    /// Free disk space below the floor: takes no new jobs.
    #[serde(default)]
    pub disk_low: bool,
}

impl WorkerInfo {
    /// Cores free for new jobs (none while draining or short of disk space).
    pub fn free(&self) -> f64 {
        if self.draining || self.disk_low {
            0.0
        } else {
            (self.budget - self.used).max(0.0)
        }
    }
}

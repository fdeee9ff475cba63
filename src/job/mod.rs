//! Jobs: a recording of one room, from joining to a finished MP4 segment.
//!
//! [`RoomState`] folds room events into the tiles a layout needs; [`runner::record`] owns one
//! pipeline and one room connection and is driven by [`JobCommand`]s.

pub mod execute;
pub mod host;
pub mod notify;
pub mod outbox;
pub mod plan;
pub mod platform;
pub mod runner;
pub mod state;

pub use execute::{execute, JobEnv, Outcome, MAX_ATTEMPTS};
pub use host::{JobHost, MemoryHost, Poll};
pub use outbox::{HandOff, Outbox};
pub use plan::Plan;
pub use runner::{record, record_with_events, JobCommand, JobEvent, RecordingSpec};
pub use state::RoomState;

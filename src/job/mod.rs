//! Jobs: one recording or stream of a room, from its spec to delivered segments.
//!
//! [`execute()`] is the one path every job takes, whoever runs it: the worker over the queue
//! store, `roomcast demo`/`record` over a [`MemoryHost`]. [`runner::record`] owns one pipeline
//! and one room connection and is driven by [`JobCommand`]s; [`RoomState`] folds room events
//! into the tiles a layout needs; the [`Outbox`] hands finished segments to delivery and
//! [`notify`] sends every webhook a job causes.
//!
//! Owns a job's lifecycle and record. Does not claim jobs or keep capacity (the worker's), parse
//! requests (the API's) or build GStreamer elements itself (the pipeline's).

pub mod chat;
pub mod execute;
pub mod host;
pub mod individual;
pub mod legacy;
mod live;
pub mod notify;
pub mod outbox;
mod page;
pub mod plan;
pub mod platform;
pub mod runner;
pub mod segments;
pub mod session;
pub mod state;
pub mod transcode;

pub use execute::{execute, JobEnv, Outcome, MAX_ATTEMPTS};
pub use host::{JobHost, MemoryHost, Poll};
pub use outbox::{HandOff, Outbox};
pub use plan::Plan;
pub use runner::{record, record_with_events, JobCommand, JobEvent, RecordingSpec};
pub use state::RoomState;

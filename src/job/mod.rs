//! Jobs: one recording or stream of a room, from its spec to delivered segments.
//!
//! In layers, each a folder that uses only the ones before it:
//!
//! 1. [`spec`]: what a job is, is told and reports; its plan; the room as it knows it; the
//!    host contract ([`JobHost`], [`MemoryHost`]). Plain data, no I/O.
//! 2. [`files`]: a segment's files — names, records, the chat journal — and where they go:
//!    the [`Outbox`] (spool and storage) and [`notify`](files::notify) (every webhook).
//! 3. [`media`]: the running media — [`record`] runs one job's outputs in its room's session
//!    (one composite shared by the room's jobs), the live media side and the page layer.
//! 4. [`run`]: a job being run ([`run::context::Run`]) and the live kinds' run, reports and
//!    hand-off.
//! 5. [`kinds`]: [`execute()`], the one path every job takes, and the individual, legacy and
//!    transcode kinds.
//!
//! Owns a job's lifecycle and record. Does not claim jobs or keep capacity (the worker's), parse
//! requests (the API's) or build GStreamer elements itself (the pipeline's).

pub mod files;
pub mod kinds;
pub mod media;
pub mod run;
pub mod spec;

pub use files::outbox::{HandOff, Outbox};
pub use kinds::execute::execute;
pub use media::{record, record_with_events};
pub use run::context::{JobEnv, Outcome, MAX_ATTEMPTS};
pub use spec::host::{JobHost, MemoryHost, Poll};
pub use spec::plan::Plan;
pub use spec::state::RoomState;
pub use spec::{JobCommand, JobEvent, RecordingSpec};

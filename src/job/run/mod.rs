//! A job being run: its record, host and environment ([`context`]), and the live kinds'
//! run — a recording or stream in the room's session ([`live_run`]), what its media side
//! reports ([`reports`]), how its segments are handed off ([`handoff`]) and how a recording
//! segment reaches storage in chunks while it records ([`chunking`]).
//!
//! Fourth layer of `job/`: builds on `spec`, `files` and `media`. The other kinds and the
//! choice between kinds (`kinds`) sit above it; nothing here names them.

pub mod chunking;
pub mod context;
pub mod handoff;
pub mod live_run;
pub mod reports;

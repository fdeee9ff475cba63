//! A segment's files and where they go, without any media: how they are named
//! ([`naming`]), what the spool and archive say about them ([`records`]), the chat journal
//! kept beside a recording ([`chat`]), the hand-off to the spool and storage ([`outbox`]) and
//! every webhook a job causes ([`notify`]).
//!
//! Second layer of `job/`: builds on `spec` only (the host a hand-off reports to). Nothing
//! here runs a pipeline or a job.

pub mod chat;
pub mod naming;
pub mod notify;
pub mod outbox;
pub mod records;

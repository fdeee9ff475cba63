//! The top of `job/`: [`execute`], the one path every job takes, and the kinds beside the
//! live one — individual recording ([`individual`]: every track in its own file), the
//! platform's legacy recording built on it ([`legacy`]: hand-off of a segment folder, the
//! fall-back from live recording; [`folder_chunks`]: its folder in storage while it records)
//! and the [`transcode`] of such a folder into one MP4.
//!
//! Fifth layer: may use every layer below (`spec`, `files`, `media`, `run`); nothing below
//! imports from here.

pub mod execute;
pub mod folder_chunks;
pub mod individual;
pub mod legacy;
pub mod transcode;

//! The data every layer shares, with no GStreamer and no I/O beyond reading a preset file:
//! jobs, rooms, commands and the archive ([`job`]), encoder presets and the cost estimate
//! ([`preset`]), RTMP destinations ([`rtmp`]), the health of received WebRTC tracks
//! ([`feed`]). The API validates requests with these types, the queue stores them, the worker
//! and the pipeline consume them.

pub mod command;
pub mod event;
pub mod feed;
pub mod hls;
pub mod job;
pub mod manifest;
pub mod page;
pub mod preset;
pub mod room;
pub mod rtmp;
pub mod watermark;

pub use preset::{Preset, PresetError};
pub use rtmp::{DestinationState, DestinationStatus, RtmpUrl, RtmpUrlError};

//! roomcast: record and stream video rooms natively with GStreamer.
//!
//! A job joins a room through a [`room::RoomConnector`], composites every participant into a
//! [`layout::Layout`] with the [`pipeline`] and writes crash-safe MP4 segments.

pub mod api;
pub mod bench;
pub mod clock;
pub mod codes;
pub mod command;
pub mod config;
pub mod delivery;
pub mod error;
pub mod job;
pub mod layout;
pub mod model;
pub mod page;
pub mod pipeline;
pub mod progress;
pub mod queue;
pub mod room;
pub mod util;
pub mod webhook;
pub mod worker;

pub use error::{Error, Result};

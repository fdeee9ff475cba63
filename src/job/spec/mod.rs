//! What a job is, is told and reports, before anything runs: the media run's spec
//! ([`RecordingSpec`]), commands ([`JobCommand`]), events ([`JobEvent`]) and end
//! ([`Recording`]); the validated [`plan`]; the room as the job knows it ([`state`]); the
//! platform's room events turned into commands ([`platform`]); what a job needs from whoever
//! runs it ([`host`]).
//!
//! The bottom layer of `job/`: plain data and pure translation. It touches no media, no files
//! and no storage, and imports nothing from the layers above (`files`, `media`, `run`,
//! `kinds`).

pub mod host;
pub mod plan;
pub mod platform;
pub mod state;

use crate::layout::Layout;
use crate::pipeline::mp4::SegmentFile;
use crate::pipeline::rtmp::{DestinationStatus, RtmpUrl};
use crate::pipeline::Preset;
use crate::room::RoomEvent;
use std::path::PathBuf;
use std::time::Duration;

/// Longest wait for the pipeline to drain after a stop.
pub const EOS_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated recording job.
#[derive(Debug, Clone)]
pub struct RecordingSpec {
    /// Room identifier (used in file names).
    pub room_id: String,
    /// Conference number (used in file names).
    pub conf_num: String,
    /// Folder the segment is written to.
    pub out_dir: PathBuf,
    /// Encoder preset.
    pub preset: Preset,
    /// Layout.
    pub layout: Layout,
    /// Watermark PNG.
    pub watermark: Option<PathBuf>,
    /// Stop by itself after this long.
    pub max_duration: Option<Duration>,
    /// RTMP destinations streamed from the same encode (at most three).
    pub rtmp: Vec<RtmpUrl>,
    /// Write an MP4 segment (false: the encode only feeds the RTMP destinations).
    pub record: bool,
    /// Lowest segment number to use (a job continued elsewhere keeps counting up, so its
    /// segments never share a name).
    pub first_segment: u64,
    /// End the segment when free space in `out_dir` falls below this (0: never).
    pub min_free_bytes: u64,
    /// Fail when the encoders have produced nothing this long after the start (7013), or a
    /// stream-only job has no RTMP destination live by then (7001). None: wait forever.
    pub start_timeout: Option<Duration>,
    /// A web page drawn over the tiles (custom view).
    pub page: Option<crate::model::page::PageSpec>,
    /// Whether the composite can draw a page set later (one given in `page` always can).
    pub page_layer: bool,
    /// A live HLS output cut from the same encode, beside the segment.
    pub hls: Option<crate::model::hls::HlsSpec>,
}

/// Commands to a running job.
#[derive(Debug)]
pub enum JobCommand {
    /// Stop and finalize.
    Stop,
    /// Switch layout without restarting the file.
    SetLayout(Box<Layout>),
    /// Start streaming to another RTMP destination.
    AddRtmp(RtmpUrl),
    /// Stop streaming to destination `id`.
    RemoveRtmp(u32),
    /// Replace every RTMP destination with these.
    SetRtmp(Vec<RtmpUrl>),
    /// Room events from outside the room connection (the platform's own view of the room).
    Room(Vec<RoomEvent>),
    /// Show this web page over the tiles instead (None: no page).
    SetPage(Option<crate::model::page::PageSpec>),
    /// A chat message in the room (the custom view page is told).
    Chat(crate::model::page::ChatLine),
    /// The worker is stopping: hand the job to another worker and go on recording until that
    /// one records (taken by the job's run; the media run ignores it).
    HandOver,
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A stop command.
    Stopped,
    /// `max_duration` reached.
    DurationReached,
    /// The room was destroyed.
    RoomDestroyed,
    /// The room connection ended.
    Disconnected,
    /// Free disk space fell below the floor: the segment was ended while it could still be
    /// finalized.
    DiskLow,
    /// The mixers produced nothing for [`STALL_TIMEOUT`] (a wedged element, a feed holding a
    /// lock): the segment was ended with what reached the file.
    Stalled,
}

/// A finished recording.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The segment file (none when not recording).
    pub file: Option<SegmentFile>,
    /// Why it ended.
    pub reason: EndReason,
    /// What became of each RTMP destination.
    pub destinations: Vec<DestinationStatus>,
}

/// What a running job reports while it runs (its end is the return value of [`record`]).
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// The pipeline is recording into this file.
    Started {
        /// The segment file (none when only streaming).
        file: Option<PathBuf>,
    },
    /// An RTMP destination changed state (connecting, live, retrying, stopped).
    Streaming(DestinationStatus),
    /// Media time produced against wall-clock time since the start (every few seconds).
    Progress {
        /// Media running time reached by the output.
        media: Duration,
        /// Wall-clock time since the pipeline started.
        wall: Duration,
        /// Participants in the room now.
        participants: usize,
        /// Health of the tracks received over the network.
        feeds: Vec<crate::model::feed::FeedHealth>,
        /// Another job of the room pays for the composite and encode this job's outputs are
        /// fed from (it costs only its outputs).
        shared: bool,
        /// A small JPEG of the composed picture now (None: no video, or no new frame).
        thumbnail: Option<std::sync::Arc<Vec<u8>>>,
        /// Who is in the room now.
        people: Vec<crate::model::feed::Person>,
    },
    /// The custom view page was shown, fell back or is loading again.
    Page(crate::model::page::PageStatus),
    /// The HLS output finished a file (a segment, a playlist).
    Hls(crate::pipeline::hls::HlsFile),
}

/// How often [`JobEvent::Progress`] is reported.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// The mixers producing nothing for this long ends the segment ([`EndReason::Stalled`]).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

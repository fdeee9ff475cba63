//! What an individual recording is given ([`IndividualSpec`]) and how it ends
//! ([`IndividualEnd`], [`IndividualOutcome`]), and the limits it keeps.

use crate::model::manifest::Manifest;
use crate::util::path_component;
use std::path::PathBuf;
use std::time::Duration;

/// Name of the manifest in a segment's folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Longest a track file may take to close.
pub(super) const CLOSE_LIMIT: Duration = Duration::from_secs(10);
/// How often the manifest is brought up to date while recording.
pub(super) const MANIFEST_EVERY: Duration = Duration::from_secs(1);

/// Which segment to record where.
#[derive(Debug, Clone)]
pub struct IndividualSpec {
    /// Folder the segment's own folder goes in.
    pub dir: PathBuf,
    /// Room id.
    pub room_id: String,
    /// Conference number.
    pub conf_num: String,
    /// Segment number.
    pub segment: u32,
}

impl IndividualSpec {
    /// The segment's folder: `<dir>/<room>_<conf>_<segment>_tracks`.
    pub fn folder(&self) -> PathBuf {
        self.dir.join(format!(
            "{}_{}_{}_tracks",
            path_component(&self.room_id),
            path_component(&self.conf_num),
            self.segment
        ))
    }
}

/// Why an individual recording ended.
#[derive(Debug, Clone, PartialEq)]
pub enum IndividualEnd {
    /// Told to stop.
    Stopped,
    /// Its duration ran out.
    Duration,
    /// The room was destroyed.
    RoomDestroyed,
    /// The room connection was lost.
    Disconnected(String),
}

/// A finished segment.
#[derive(Debug, Clone)]
pub struct IndividualOutcome {
    /// The segment's folder.
    pub folder: PathBuf,
    /// Its manifest file.
    pub manifest_path: PathBuf,
    /// The manifest as written last.
    pub manifest: Manifest,
    /// Why it ended.
    pub end: IndividualEnd,
}

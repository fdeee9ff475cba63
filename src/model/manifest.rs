//! The manifest of an individual recording's segment: every track file with whose it is and
//! where it sits on the segment's timeline, and what happened in the room meanwhile. It is what
//! a transcode lays out again, and what a user's own post-production reads.
//!
//! Times are milliseconds from the segment's start. Files are placed by their senders' clocks
//! (RTP timestamps mapped through RTCP), events by when the room reported them.

use serde::{Deserialize, Serialize};

/// Version written in every manifest.
pub const MANIFEST_VERSION: u32 = 1;

/// One segment of an individual recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Room id.
    pub room_id: String,
    /// Conference number.
    pub conf_num: String,
    /// Segment number (1 for the first).
    pub segment: u32,
    /// Wall-clock start of the segment (ms since the epoch).
    pub started_at_unix_ms: u64,
    /// Wall-clock end, once it ended.
    #[serde(default)]
    pub ended_at_unix_ms: Option<u64>,
    /// Segment length, once it ended (ms).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Written as the segment ended (false: the recording was cut short, e.g. by a crash; the
    /// files are readable up to their last second).
    pub complete: bool,
    /// Everyone who was in the room during the segment.
    pub participants: Vec<ManifestParticipant>,
    /// Every track file.
    pub files: Vec<ManifestFile>,
    /// What happened in the room, in order.
    pub events: Vec<ManifestEvent>,
}

/// A participant of the segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestParticipant {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// When they were first seen in the segment.
    pub joined_ms: u64,
    /// When they left, if they did.
    #[serde(default)]
    pub left_ms: Option<u64>,
}

/// What a track file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Microphone.
    Audio,
    /// Camera.
    Video,
    /// Screen share.
    Screen,
}

impl FileKind {
    /// The name the manifest and the file names use.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Audio => "audio",
            FileKind::Video => "video",
            FileKind::Screen => "screen",
        }
    }
}

/// One track file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name, in the manifest's folder.
    pub file: String,
    /// Whose track.
    pub participant_id: String,
    /// Their display name.
    pub participant_name: String,
    /// Audio, camera or screen.
    pub kind: FileKind,
    /// `VP8`, `VP9`, `H264`, `OPUS`.
    #[serde(default)]
    pub codec: Option<String>,
    /// Its first frame on the timeline (none: nothing written yet).
    #[serde(default)]
    pub start_ms: Option<u64>,
    /// The end of its last frame on the timeline (while recording: so far).
    #[serde(default)]
    pub end_ms: Option<u64>,
    /// Frames (video) or packets (audio) written.
    pub frames: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Still being written (false once closed).
    pub open: bool,
    /// Why writing stopped before the track ended (the file holds what came before), if it
    /// did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something that happened in the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEvent {
    /// When (ms from the segment's start).
    pub t_ms: u64,
    /// What.
    #[serde(flatten)]
    pub what: EventKind,
}

/// The events a layout follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// Someone joined.
    Joined {
        /// Who.
        participant_id: String,
        /// Their display name.
        name: String,
    },
    /// Someone left.
    Left {
        /// Who.
        participant_id: String,
    },
    /// A track was published (its file starts near here).
    Published {
        /// Whose.
        participant_id: String,
        /// Which.
        kind: FileKind,
    },
    /// A track was unpublished.
    Unpublished {
        /// Whose.
        participant_id: String,
        /// Which.
        kind: FileKind,
    },
    /// Someone started or stopped talking.
    Talking {
        /// Who.
        participant_id: String,
        /// Talking now.
        talking: bool,
    },
    /// The spotlight list changed.
    Spotlight {
        /// Spotlighted now.
        participant_ids: Vec<String>,
    },
    /// The pinned list changed.
    Pinned {
        /// Pinned now.
        participant_ids: Vec<String>,
    },
    /// A moderator hard-muted or un-muted a track.
    HardMute {
        /// Whose.
        participant_id: String,
        /// Audio or video.
        kind: FileKind,
        /// Muted now.
        muted: bool,
    },
    /// A participant moved to a break-out room or came back.
    Paused {
        /// Who.
        participant_id: String,
        /// Paused now.
        paused: bool,
    },
}

impl Manifest {
    /// How long the segment is (ms): its duration, or the end of its last file when it did
    /// not end (a killed recording).
    pub fn span_ms(&self) -> u64 {
        self.duration_ms.unwrap_or_else(|| {
            self.files
                .iter()
                .filter_map(|f| f.end_ms)
                .max()
                .unwrap_or(0)
        })
    }

    /// Reads a manifest, naming what is wrong with it.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if m.version != MANIFEST_VERSION {
            return Err(format!(
                "manifest version {} (this roomcast reads {MANIFEST_VERSION})",
                m.version
            ));
        }
        for f in &m.files {
            let name = std::path::Path::new(&f.file);
            if name.file_name().map(|n| n.to_os_string()) != Some(f.file.clone().into()) {
                return Err(format!("file {:?} is not a plain file name", f.file));
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_written() {
        let e = ManifestEvent {
            t_ms: 1500,
            what: EventKind::Talking {
                participant_id: "p1".into(),
                talking: true,
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"t_ms":1500,"type":"talking","participant_id":"p1","talking":true}"#
        );
        assert_eq!(serde_json::from_str::<ManifestEvent>(&text).unwrap(), e);
    }

    #[test]
    fn a_kinds_name_is_the_one_serialized() {
        for k in [FileKind::Audio, FileKind::Video, FileKind::Screen] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn a_file_outside_the_folder_is_refused() {
        let m = Manifest {
            version: MANIFEST_VERSION,
            room_id: "r".into(),
            conf_num: "1".into(),
            segment: 1,
            started_at_unix_ms: 0,
            ended_at_unix_ms: None,
            duration_ms: None,
            complete: false,
            participants: vec![],
            files: vec![ManifestFile {
                file: "../etc/passwd".into(),
                participant_id: "p".into(),
                participant_name: "P".into(),
                kind: FileKind::Audio,
                codec: None,
                start_ms: None,
                end_ms: None,
                frames: 0,
                bytes: 0,
                open: false,
                error: None,
            }],
            events: vec![],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(Manifest::parse(&text)
            .unwrap_err()
            .contains("plain file name"));
    }
}

//! The recorder of one individual segment ([`Recorder`]): a track file opened per
//! publication, closed when it ends, and the manifest kept up to date with every file and
//! event.

use super::spec::*;
use crate::model::manifest::{
    EventKind, FileKind, Manifest, ManifestEvent, ManifestFile, ManifestParticipant,
};
use crate::pipeline::individual::{timeline_now, TrackFile, TrackFileSummary};
use crate::room::{ParticipantId, RoomEvent, TrackKind, TrackSource};
use crate::util::path_component;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

pub(super) struct OpenTrack {
    pub(super) file: TrackFile,
    pub(super) source: Box<dyn TrackSource>,
    pub(super) index: usize,
}

/// The segment being recorded.
pub(super) struct Recorder {
    pub(super) folder: PathBuf,
    pub(super) base: gst::ClockTime,
    pub(super) manifest: Manifest,
    pub(super) open: HashMap<(String, FileKind), OpenTrack>,
    pub(super) publications: HashMap<(String, FileKind), u32>,
    /// Files closing in the background, by their entry.
    pub(super) closing: Vec<(usize, tokio::task::JoinHandle<TrackFileSummary>)>,
    /// The last manifest write failed.
    pub(super) write_failing: bool,
}

impl Recorder {
    pub(super) fn now_ms(&self) -> u64 {
        timeline_now(self.base).mseconds()
    }

    pub(super) fn event(&mut self, what: EventKind) {
        let t_ms = self.now_ms();
        self.manifest.events.push(ManifestEvent { t_ms, what });
    }

    pub(super) fn name_of(&self, id: &str) -> String {
        self.manifest
            .participants
            .iter()
            .rev()
            .find(|p| p.id == id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    pub(super) fn update(file: &mut ManifestFile, s: &TrackFileSummary, open: bool) {
        file.codec = s.codec.clone().or(file.codec.take());
        file.start_ms = s.start.map(|t| t.mseconds());
        file.end_ms = s.end.map(|t| t.mseconds());
        file.frames = s.frames;
        file.bytes = s.bytes;
        file.open = open;
        if s.error.is_some() {
            file.error = s.error.clone();
        }
    }

    /// Brings the open files' entries up to date and writes the manifest.
    pub(super) fn write(&mut self) -> Result<()> {
        for t in self.open.values() {
            let s = t.file.summary();
            if let (Some(e), None) = (&s.error, &self.manifest.files[t.index].error) {
                warn!(file = %s.path.display(), error = %e, "track file stopped being written");
            }
            Self::update(&mut self.manifest.files[t.index], &s, true);
        }
        write_manifest(&self.folder, &self.manifest)
    }

    /// [`Recorder::write`] while recording: a manifest that cannot be written now (a full
    /// disk) is written again at the next change; the tracks go on meanwhile.
    pub(super) fn write_now(&mut self) {
        match self.write() {
            Ok(()) => self.write_failing = false,
            Err(e) => {
                if !self.write_failing {
                    warn!(error = %e, "manifest not written; trying again");
                }
                self.write_failing = true;
            }
        }
    }

    pub(super) fn publish(
        &mut self,
        id: &ParticipantId,
        kind: TrackKind,
        source: Box<dyn TrackSource>,
    ) {
        let fk = FileKind::from(kind);
        let key = (id.0.clone(), fk);
        if let Some(t) = self.open.remove(&key) {
            self.close_later(t);
        }
        // An individual recording shows nothing: the track need not be decoded.
        source.release();
        let n = {
            let c = self.publications.entry(key.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let name = format!("{}_{}_{n}.mkv", path_component(&id.0), fk.as_str());
        let path = self.folder.join(&name);
        let ctx = TrackFile::context(self.base);
        let built = match source.build_encoded(&ctx) {
            Ok(Some(element)) => tokio::task::block_in_place(|| {
                TrackFile::start(
                    &format!("{}_{}_{n}", id.0, fk.as_str()),
                    element,
                    fk == FileKind::Audio,
                    &path,
                    self.base,
                )
            }),
            Ok(None) => {
                warn!(participant = %id, ?kind, "track has no encoded form; not recorded");
                return;
            }
            Err(e) => Err(e),
        };
        match built {
            Ok(file) => {
                info!(participant = %id, ?kind, file = %name, "track file started");
                self.manifest.files.push(ManifestFile {
                    file: name,
                    participant_id: id.0.clone(),
                    participant_name: self.name_of(&id.0),
                    kind: fk,
                    codec: None,
                    start_ms: None,
                    end_ms: None,
                    frames: 0,
                    bytes: 0,
                    open: true,
                    error: None,
                });
                let index = self.manifest.files.len() - 1;
                self.open.insert(
                    key,
                    OpenTrack {
                        file,
                        source,
                        index,
                    },
                );
            }
            Err(e) => {
                warn!(participant = %id, ?kind, error = %e, "track file could not start");
                source.release_encoded();
            }
        }
    }

    /// Closes a file in the background; its entry is brought up to date when it has closed.
    pub(super) fn close_later(&mut self, t: OpenTrack) {
        let s = t.file.summary();
        Self::update(&mut self.manifest.files[t.index], &s, false);
        t.source.release_encoded();
        let index = t.index;
        let file = t.file;
        self.closing.push((
            index,
            tokio::task::spawn_blocking(move || file.finish(CLOSE_LIMIT)),
        ));
    }

    pub(super) fn unpublish(&mut self, id: &str, kind: FileKind) {
        if let Some(t) = self.open.remove(&(id.to_string(), kind)) {
            info!(participant = %id, ?kind, "track file ended");
            self.close_later(t);
        }
    }

    /// Takes what closed files finally hold into the manifest.
    pub(super) async fn collect_closed(&mut self, all: bool) {
        let mut keep = Vec::new();
        for (index, handle) in std::mem::take(&mut self.closing) {
            if all || handle.is_finished() {
                if let Ok(s) = handle.await {
                    if let Some(e) = &s.error {
                        warn!(file = %s.path.display(), error = %e, "track file closed with an error");
                    }
                    Self::update(&mut self.manifest.files[index], &s, false);
                }
            } else {
                keep.push((index, handle));
            }
        }
        self.closing = keep;
    }

    pub(super) fn on_event(&mut self, ev: RoomEvent) -> Option<IndividualEnd> {
        let joined_ms = self.now_ms();
        match ev {
            RoomEvent::ParticipantJoined { id, display_name } => {
                self.manifest.participants.push(ManifestParticipant {
                    id: id.0.clone(),
                    name: display_name.clone(),
                    joined_ms,
                    left_ms: None,
                });
                self.event(EventKind::Joined {
                    participant_id: id.0,
                    name: display_name,
                });
            }
            RoomEvent::ParticipantLeft { id } => {
                for kind in [FileKind::Audio, FileKind::Video, FileKind::Screen] {
                    self.unpublish(&id.0, kind);
                }
                if let Some(p) = self
                    .manifest
                    .participants
                    .iter_mut()
                    .rev()
                    .find(|p| p.id == id.0 && p.left_ms.is_none())
                {
                    p.left_ms = Some(joined_ms);
                }
                self.event(EventKind::Left {
                    participant_id: id.0,
                });
            }
            RoomEvent::TrackPublished { id, kind, source } => {
                self.event(EventKind::Published {
                    participant_id: id.0.clone(),
                    kind: FileKind::from(kind),
                });
                self.publish(&id, kind, source);
            }
            RoomEvent::TrackUnpublished { id, kind } => {
                self.unpublish(&id.0, FileKind::from(kind));
                self.event(EventKind::Unpublished {
                    participant_id: id.0,
                    kind: FileKind::from(kind),
                });
            }
            RoomEvent::Talking { id, talking } => self.event(EventKind::Talking {
                participant_id: id.0,
                talking,
            }),
            RoomEvent::Spotlight { ids } => self.event(EventKind::Spotlight {
                participant_ids: ids.into_iter().map(|p| p.0).collect(),
            }),
            RoomEvent::Pinned { ids } => self.event(EventKind::Pinned {
                participant_ids: ids.into_iter().map(|p| p.0).collect(),
            }),
            RoomEvent::HardMute { id, kind, muted } => self.event(EventKind::HardMute {
                participant_id: id.0,
                kind: FileKind::from(kind),
                muted,
            }),
            RoomEvent::Paused { id, paused } => self.event(EventKind::Paused {
                participant_id: id.0,
                paused,
            }),
            RoomEvent::RoomDestroyed => return Some(IndividualEnd::RoomDestroyed),
            RoomEvent::Disconnected { reason } => return Some(IndividualEnd::Disconnected(reason)),
        }
        None
    }
}

/// Writes `manifest` into `folder` atomically (a reader sees the old one or the new one).
pub fn write_manifest(folder: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Invalid {
        field: "manifest".into(),
        message: e.to_string(),
        code: crate::codes::Code::RecordError,
    })?;
    crate::util::write_atomic(&folder.join(MANIFEST_FILE), &text)
        .map_err(|e| Error::io(format!("writing the manifest in {}", folder.display()), e))
}

//! Individual recording: every participant's tracks as they were received, one Matroska file
//! per track and publication (a re-publish or a new screen share starts a new file), and the
//! segment's [`Manifest`] beside them.
//!
//! Nothing is decoded or encoded: a received track is depayloaded into its file
//! ([`crate::pipeline::individual`]). The manifest is rewritten (atomically) whenever a file
//! opens or closes, an event arrives, and once a second, so a recording whose process is killed
//! still has a manifest that names every file and where it starts.
//!
//! Owns the segment's folder and manifest. Joins the room through the same [`RoomConnector`]
//! as live recording; delivery and webhooks are the caller's.

use crate::model::manifest::{
    EventKind, FileKind, Manifest, ManifestEvent, ManifestFile, ManifestParticipant,
    MANIFEST_VERSION,
};
use crate::pipeline::individual::{timeline_now, TrackFile, TrackFileSummary};
use crate::room::{ParticipantId, RoomConnector, RoomEvent, TrackKind, TrackSource};
use crate::util::path_component;
use crate::{Error, Result};
use gst::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// Name of the manifest in a segment's folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Longest a track file may take to close.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);
/// How often the manifest is brought up to date while recording.
const MANIFEST_EVERY: Duration = Duration::from_secs(1);

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

struct OpenTrack {
    file: TrackFile,
    source: Box<dyn TrackSource>,
    index: usize,
}

/// The segment being recorded.
struct Recorder {
    folder: PathBuf,
    base: gst::ClockTime,
    manifest: Manifest,
    open: HashMap<(String, FileKind), OpenTrack>,
    publications: HashMap<(String, FileKind), u32>,
    /// Files closing in the background, by their entry.
    closing: Vec<(usize, tokio::task::JoinHandle<TrackFileSummary>)>,
    /// The last manifest write failed.
    write_failing: bool,
}

impl Recorder {
    fn now_ms(&self) -> u64 {
        timeline_now(self.base).mseconds()
    }

    fn event(&mut self, what: EventKind) {
        let t_ms = self.now_ms();
        self.manifest.events.push(ManifestEvent { t_ms, what });
    }

    fn name_of(&self, id: &str) -> String {
        self.manifest
            .participants
            .iter()
            .rev()
            .find(|p| p.id == id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    fn update(file: &mut ManifestFile, s: &TrackFileSummary, open: bool) {
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
    fn write(&mut self) -> Result<()> {
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
    fn write_now(&mut self) {
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

    fn publish(&mut self, id: &ParticipantId, kind: TrackKind, source: Box<dyn TrackSource>) {
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
    fn close_later(&mut self, t: OpenTrack) {
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

    fn unpublish(&mut self, id: &str, kind: FileKind) {
        if let Some(t) = self.open.remove(&(id.to_string(), kind)) {
            info!(participant = %id, ?kind, "track file ended");
            self.close_later(t);
        }
    }

    /// Takes what closed files finally hold into the manifest.
    async fn collect_closed(&mut self, all: bool) {
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

    fn on_event(&mut self, ev: RoomEvent) -> Option<IndividualEnd> {
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

/// Records `room` individually into `spec`'s folder until `stop` resolves, `limit` runs out or
/// the room ends.
pub async fn record_individual<R: RoomConnector>(
    room: &R,
    spec: &IndividualSpec,
    limit: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<IndividualOutcome> {
    let handle = room.connect().await?;
    record_joined(handle, spec, limit, stop).await
}

/// Records the room `connector` names individually (see [`record_individual`]); `limit` is
/// also the length of a synthetic room's script.
pub async fn record_spec(
    connector: &crate::queue::ConnectorSpec,
    spec: &IndividualSpec,
    limit: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<IndividualOutcome> {
    let (handle, _) = crate::job::spec::plan::connect(connector, limit).await?;
    record_joined(handle, spec, limit, stop).await
}

pub(crate) async fn record_joined(
    mut handle: crate::room::RoomHandle,
    spec: &IndividualSpec,
    limit: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<IndividualOutcome> {
    let folder = spec.folder();
    if let Err(e) = std::fs::create_dir_all(&folder) {
        (handle.leave)();
        return Err(Error::io(format!("creating {}", folder.display()), e));
    }
    let base = gst::SystemClock::obtain().time();
    let started = std::time::Instant::now();
    let mut rec = Recorder {
        folder: folder.clone(),
        base,
        manifest: Manifest {
            version: MANIFEST_VERSION,
            room_id: spec.room_id.clone(),
            conf_num: spec.conf_num.clone(),
            segment: spec.segment,
            started_at_unix_ms: crate::clock::now_ms(),
            ended_at_unix_ms: None,
            duration_ms: None,
            complete: false,
            participants: Vec::new(),
            files: Vec::new(),
            events: Vec::new(),
        },
        open: HashMap::new(),
        publications: HashMap::new(),
        closing: Vec::new(),
        write_failing: false,
    };
    rec.write()?;
    info!(folder = %folder.display(), "individual recording started");
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop, until);
    let mut tick = tokio::time::interval(MANIFEST_EVERY);
    let end = loop {
        tokio::select! {
            biased;
            _ = &mut stop => break IndividualEnd::Stopped,
            _ = &mut until => break IndividualEnd::Duration,
            ev = handle.events.recv() => {
                let Some(ev) = ev else {
                    break IndividualEnd::Disconnected("the room connection ended".into());
                };
                let mut batch = vec![ev];
                while let Ok(more) = handle.events.try_recv() {
                    batch.push(more);
                }
                let mut ended = None;
                for ev in batch {
                    if let Some(e) = rec.on_event(ev) {
                        ended = Some(e);
                        break;
                    }
                }
                if let Some(e) = ended {
                    break e;
                }
                rec.collect_closed(false).await;
                rec.write_now();
            }
            _ = tick.tick() => {
                rec.collect_closed(false).await;
                rec.write_now();
            }
        }
    };
    (handle.leave)();
    let duration_ms = rec.now_ms();
    for (_, t) in std::mem::take(&mut rec.open) {
        rec.close_later(t);
    }
    rec.collect_closed(true).await;
    rec.manifest.ended_at_unix_ms = Some(crate::clock::now_ms());
    rec.manifest.duration_ms = Some(duration_ms);
    rec.manifest.complete = true;
    // Files that never got a frame were removed: they are not listed.
    rec.manifest.files.retain(|f| f.frames > 0);
    if std::env::var_os("ROOMCAST_FAULT_FINALIZE_FAILS").is_some() {
        // A test of a failed stop: the file system refuses the final manifest.
        return Err(Error::io(
            format!("writing the manifest in {}", folder.display()),
            std::io::Error::other("refused (ROOMCAST_FAULT_FINALIZE_FAILS)"),
        ));
    }
    rec.write()?;
    info!(folder = %folder.display(), files = rec.manifest.files.len(),
        seconds = started.elapsed().as_secs_f64(), ?end, "individual recording ended");
    Ok(IndividualOutcome {
        manifest_path: folder.join(MANIFEST_FILE),
        folder,
        manifest: rec.manifest,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::source::{TestAudio, TestVideo};
    use crate::room::RoomHandle;
    use std::sync::Mutex;

    /// A room that says what it is given, each event at its time.
    struct Scripted(Mutex<Vec<(Duration, RoomEvent)>>);

    impl RoomConnector for Scripted {
        async fn connect(&self) -> std::result::Result<RoomHandle, Error> {
            let steps = std::mem::take(&mut *self.0.lock().unwrap());
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let task = tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                for (at, ev) in steps {
                    tokio::time::sleep_until(start + at).await;
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            });
            Ok(RoomHandle {
                events: rx,
                feeds: Default::default(),
                shown: Default::default(),
                leave: Box::new(move || task.abort()),
            })
        }
    }

    fn camera(name: &str, color: u32) -> Box<dyn TrackSource> {
        Box::new(TestVideo {
            name: name.into(),
            color,
            moving_marker: false,
            flash: false,
            width: 320,
            height: 180,
            fps: 30,
            pattern: None,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_republished_camera_and_a_screen_share_start_files_of_their_own() {
        crate::pipeline::init().unwrap();
        let id = || ParticipantId("p1".into());
        let ms = Duration::from_millis;
        let script = vec![
            (
                ms(0),
                RoomEvent::ParticipantJoined {
                    id: id(),
                    display_name: "Ann".into(),
                },
            ),
            (
                ms(0),
                RoomEvent::TrackPublished {
                    id: id(),
                    kind: TrackKind::Video,
                    source: camera("cam1", 0xd02020),
                },
            ),
            (
                ms(0),
                RoomEvent::TrackPublished {
                    id: id(),
                    kind: TrackKind::Audio,
                    source: Box::new(TestAudio {
                        name: "mic".into(),
                        freq: 440.0,
                        volume: 0.2,
                        beep_only: false,
                        silent: false,
                    }),
                },
            ),
            (
                ms(1000),
                RoomEvent::TrackUnpublished {
                    id: id(),
                    kind: TrackKind::Video,
                },
            ),
            (
                ms(1500),
                RoomEvent::TrackPublished {
                    id: id(),
                    kind: TrackKind::Video,
                    source: camera("cam2", 0x20a040),
                },
            ),
            (
                ms(2000),
                RoomEvent::TrackPublished {
                    id: id(),
                    kind: TrackKind::Screen,
                    source: camera("screen", 0x90e0f0),
                },
            ),
            (
                ms(2200),
                RoomEvent::HardMute {
                    id: id(),
                    kind: TrackKind::Audio,
                    muted: true,
                },
            ),
        ];
        let dir = std::env::temp_dir().join(format!(
            "roomcast-individual-unit-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        let spec = IndividualSpec {
            dir: dir.clone(),
            room_id: "r".into(),
            conf_num: "1".into(),
            segment: 3,
        };
        let room = Scripted(Mutex::new(script));
        let out = record_individual(&room, &spec, Some(ms(3000)), std::future::pending())
            .await
            .unwrap();
        assert_eq!(out.end, IndividualEnd::Duration);
        assert_eq!(out.folder, dir.join("r_1_3_tracks"));
        let m = &out.manifest;
        let names: Vec<&str> = m.files.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(
            names,
            [
                "p1_video_1.mkv",
                "p1_audio_1.mkv",
                "p1_video_2.mkv",
                "p1_screen_1.mkv"
            ]
        );
        let span = |i: usize| {
            let f = &m.files[i];
            (f.start_ms.unwrap() as i64, f.end_ms.unwrap() as i64)
        };
        let near = |a: i64, b: i64| (a - b).abs() <= 150;
        let (s, e) = span(0);
        assert!(near(s, 0) && near(e, 1000), "first camera {s}..{e}");
        let (s, e) = span(2);
        assert!(near(s, 1500) && near(e, 3000), "second camera {s}..{e}");
        let (s, e) = span(3);
        assert!(near(s, 2000) && near(e, 3000), "screen {s}..{e}");
        for f in &m.files {
            assert!(
                !f.open && f.frames > 0 && f.bytes > 0 && f.error.is_none(),
                "{f:?}"
            );
            let on_disk = std::fs::metadata(out.folder.join(&f.file)).unwrap().len();
            assert_eq!(on_disk, f.bytes, "{}", f.file);
        }
        assert!(m.files[0].codec.as_deref() == Some("VP8"));
        assert!(m.files[1].codec.as_deref() == Some("OPUS"));
        assert!(m.complete && m.participants.len() == 1);
        assert!(m.events.iter().any(|e| matches!(
            &e.what,
            EventKind::HardMute {
                kind: FileKind::Audio,
                muted: true,
                ..
            }
        ) && (2100..2400).contains(&e.t_ms)));
        // The manifest on disk is the one returned.
        let text = std::fs::read_to_string(&out.manifest_path).unwrap();
        assert_eq!(&Manifest::parse(&text).unwrap(), m);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

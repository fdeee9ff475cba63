//! Transcode: an individual recording's segment laid out again into one MP4, with the same
//! composite, layouts, labels and watermark as live recording, as fast as the machine allows.
//!
//! The manifest becomes the room events a live recording would have seen, each at its time:
//! a participant joins and leaves at the events' times, a track is published when its file
//! starts and unpublished when it ends, talking / spotlight / pin / mute / pause as they came.
//! Track files are decoded from disk ([`FileTrack`]) and placed on the segment's timeline. The
//! composite runs offline; both mixers' outputs are held at the time of the next events while
//! they are applied ([`Gate`]), so a layout change lands on the frame it would have live.

use crate::job::media::live::Job;
use crate::job::spec::state::RoomState;
use crate::layout::{parse_color, Layout};
use crate::model::manifest::{EventKind, FileKind, Manifest};
use crate::model::Preset;
use crate::pipeline::composite::Output;
use crate::pipeline::composite::{ErrorOrigin, InputKey, InputRef};
use crate::pipeline::gate::OutputGate;
use crate::pipeline::source::file::FileTrack;
use crate::pipeline::source::Timing;
use crate::pipeline::{self, Composite, CompositeOptions, PipelineError};
use crate::room::{ParticipantId, RoomEvent, TrackKind};
use crate::{Error, Result};
use futures::StreamExt;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What to transcode and how.
#[derive(Debug, Clone)]
pub struct TranscodeSpec {
    /// The segment's manifest (its track files are beside it).
    pub manifest: PathBuf,
    /// Folder the MP4 goes in (`<room>_<conf>_<segment>_transcoded.mp4`).
    pub out_dir: PathBuf,
    /// Layout.
    pub layout: Layout,
    /// Encoder preset.
    pub preset: Preset,
    /// Watermark PNG.
    pub watermark: Option<PathBuf>,
}

/// A finished transcode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TranscodeReport {
    /// The MP4.
    pub file: PathBuf,
    /// Its length (s).
    pub duration_s: f64,
    /// Its size.
    pub bytes: u64,
    /// Wall-clock time it took (s).
    pub wall_s: f64,
    /// Media seconds per wall-clock second.
    pub speed: f64,
    /// CPU time used (s).
    pub cpu_s: f64,
}

/// The room events a manifest stands for, in order, with their times (ms).
pub fn timeline(folder: &Path, m: &Manifest) -> Vec<(u64, RoomEvent)> {
    let pid = |s: &str| ParticipantId(s.to_string());
    // (time, order at one time, event): joins first, then publications, changes,
    // unpublications, leaves.
    let mut out: Vec<(u64, u8, RoomEvent)> = Vec::new();
    for e in &m.events {
        let ev = match &e.what {
            EventKind::Joined {
                participant_id,
                name,
            } => (
                0,
                RoomEvent::ParticipantJoined {
                    id: pid(participant_id),
                    display_name: name.clone(),
                },
            ),
            EventKind::Left { participant_id } => (
                4,
                RoomEvent::ParticipantLeft {
                    id: pid(participant_id),
                },
            ),
            EventKind::Talking {
                participant_id,
                talking,
            } => (
                2,
                RoomEvent::Talking {
                    id: pid(participant_id),
                    talking: *talking,
                },
            ),
            EventKind::Spotlight { participant_ids } => (
                2,
                RoomEvent::Spotlight {
                    ids: participant_ids.iter().map(|p| pid(p)).collect(),
                },
            ),
            EventKind::Pinned { participant_ids } => (
                2,
                RoomEvent::Pinned {
                    ids: participant_ids.iter().map(|p| pid(p)).collect(),
                },
            ),
            EventKind::HardMute {
                participant_id,
                kind,
                muted,
            } => (
                2,
                RoomEvent::HardMute {
                    id: pid(participant_id),
                    kind: TrackKind::from(*kind),
                    muted: *muted,
                },
            ),
            EventKind::Paused {
                participant_id,
                paused,
            } => (
                2,
                RoomEvent::Paused {
                    id: pid(participant_id),
                    paused: *paused,
                },
            ),
            // Tracks follow their files (below), not the signalling.
            EventKind::Published { .. } | EventKind::Unpublished { .. } => continue,
        };
        out.push((e.t_ms, ev.0, ev.1));
    }
    for f in &m.files {
        let (Some(start), Some(end)) = (f.start_ms, f.end_ms) else {
            continue;
        };
        let source = FileTrack {
            path: folder.join(&f.file),
            audio: f.kind == FileKind::Audio,
            start: gst::ClockTime::from_mseconds(start),
        };
        let kind = TrackKind::from(f.kind);
        out.push((
            start,
            1,
            RoomEvent::TrackPublished {
                id: pid(&f.participant_id),
                kind,
                source: Box::new(source),
            },
        ));
        out.push((
            end,
            3,
            RoomEvent::TrackUnpublished {
                id: pid(&f.participant_id),
                kind,
            },
        ));
    }
    out.sort_by_key(|(t, order, _)| (*t, *order));
    // A file may end a moment after its participant left: nothing is said of someone who is
    // not in the room.
    let mut present = std::collections::HashSet::new();
    out.into_iter()
        .filter_map(|(t, _, e)| {
            let keep = match &e {
                RoomEvent::ParticipantJoined { id, .. } => {
                    present.insert(id.clone());
                    true
                }
                RoomEvent::ParticipantLeft { id } => present.remove(id),
                RoomEvent::TrackPublished { id, .. }
                | RoomEvent::TrackUnpublished { id, .. }
                | RoomEvent::Talking { id, .. }
                | RoomEvent::HardMute { id, .. }
                | RoomEvent::Paused { id, .. } => present.contains(id),
                _ => true,
            };
            keep.then_some((t, e))
        })
        .collect()
}

/// The room the transcode opens on (every join, publication and change of the first
/// [`OPENING_MS`]) and the steps after it (what ended in those moments kept at its time).
fn split_opening(
    steps: Vec<(u64, Vec<RoomEvent>)>,
) -> (Vec<RoomEvent>, Vec<(u64, Vec<RoomEvent>)>) {
    let ends = |e: &RoomEvent| {
        matches!(
            e,
            RoomEvent::TrackUnpublished { .. } | RoomEvent::ParticipantLeft { .. }
        )
    };
    let mut opening = Vec::new();
    let mut rest = Vec::new();
    for (t, batch) in steps {
        if t >= OPENING_MS {
            rest.push((t, batch));
            continue;
        }
        let (ended, begun): (Vec<_>, Vec<_>) = batch.into_iter().partition(ends);
        opening.extend(begun);
        if !ended.is_empty() {
            rest.push((t, ended));
        }
    }
    (opening, rest)
}

/// Events before this (ms) make the room the transcode opens on.
const OPENING_MS: u64 = 250;
/// Longest the mixers may take to reach the next events.
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// How often the pipeline's errors are looked at while the mixers are on their way.
const STEP_POLL: Duration = Duration::from_millis(200);

/// Transcodes a manifest's segment into one MP4 (blocking; call on a runtime's blocking-capable
/// thread: applying room events uses `block_in_place`).
pub async fn transcode(spec: &TranscodeSpec) -> Result<TranscodeReport> {
    let text = std::fs::read_to_string(&spec.manifest)
        .map_err(|e| Error::io(format!("reading {}", spec.manifest.display()), e))?;
    let manifest = Manifest::parse(&text).map_err(|m| Error::Invalid {
        field: "manifest".into(),
        message: m,
        code: crate::codes::Code::RecordParamsMissing,
    })?;
    let folder = spec
        .manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for f in &manifest.files {
        if !folder.join(&f.file).is_file() {
            return Err(Error::Invalid {
                field: "manifest".into(),
                message: format!("{} is listed but not in {}", f.file, folder.display()),
                code: crate::codes::Code::RecordParamsMissing,
            });
        }
    }
    std::fs::create_dir_all(&spec.out_dir)
        .map_err(|e| Error::io(format!("creating {}", spec.out_dir.display()), e))?;
    let out = spec.out_dir.join(format!(
        "{}_{}_{}_transcoded.mp4",
        crate::util::path_component(&manifest.room_id),
        crate::util::path_component(&manifest.conf_num),
        manifest.segment
    ));
    let duration_ms = manifest.span_ms();
    if duration_ms == 0 {
        return Err(Error::Invalid {
            field: "manifest".into(),
            message: "the segment holds no media".into(),
            code: crate::codes::Code::RecordParamsMissing,
        });
    }
    let def = spec.layout.def().clone();
    let opts = CompositeOptions {
        preset: spec.preset.clone(),
        timing: Timing::Offline {
            duration: gst::ClockTime::from_mseconds(duration_ms),
        },
        output: Output::Mp4(out.clone()),
        background: def.background.as_deref().and_then(parse_color).unwrap_or(0),
        background_image: def.background_image.clone(),
        label: def.label.clone(),
        watermark: spec.watermark.clone(),
        page_layer: false,
    };
    let composite = tokio::task::block_in_place(|| Composite::new(&opts))?;
    let pipeline = composite.pipeline().clone();
    let mut outputs = Vec::new();
    for name in ["video_mixer", "audio_mixer"] {
        if let Some(pad) = pipeline.by_name(name).and_then(|m| m.static_pad("src")) {
            outputs.push(pad);
        }
    }
    let gate = OutputGate::install(&outputs);
    let mut job = Job {
        composite,
        destinations: Vec::new(),
        next_destination: 0,
        events: None,
        state: RoomState::new(),
        layout: spec.layout.clone(),
        page: None,
        next_page: None,
        chat: std::collections::VecDeque::new(),
        started_ms: manifest.started_at_unix_ms,
        shown: Default::default(),
    };
    let mut steps: Vec<(u64, Vec<RoomEvent>)> = Vec::new();
    for (t, ev) in timeline(&folder, &manifest) {
        // Events closer than a frame apart are applied together.
        match steps.last_mut() {
            Some((at, batch)) if t < *at + 20 => batch.push(ev),
            _ => steps.push((t, vec![ev])),
        }
    }
    // What happened in the first moments (everyone present from the start, their tracks a
    // few frames later) is the room the file opens on. Ends (a track or a participant gone)
    // stay steps of their own: a segment shorter than the opening would otherwise open on a
    // room whose tracks were already taken out, and nothing would ever be mixed.
    let (opening, steps) = split_opening(steps);
    let mut steps = steps.into_iter().peekable();
    if !opening.is_empty() {
        job.on_events(opening)?;
    }
    let cpu0 = crate::util::cpu_seconds();
    let t0 = Instant::now();
    let bus = pipeline
        .bus()
        .ok_or_else(|| PipelineError::setup("no bus"))?;
    let at_ms = gst::ClockTime::from_mseconds;
    if let Some((t, _)) = steps.peek() {
        gate.set(at_ms(*t));
    }
    tokio::task::block_in_place(|| pipeline.set_state(gst::State::Playing))
        .map_err(|_| PipelineError::setup("the transcode pipeline did not start"))?;
    let progress = crate::progress::Progress::start(
        "transcode",
        duration_ms as f64 / 1000.0,
        crate::progress::Unit::Seconds,
    );
    let report = || {
        if let Some(pos) = pipeline.query_position::<gst::ClockTime>() {
            progress.set(pos.mseconds() as f64 / 1000.0);
        }
    };
    while let Some((_, batch)) = steps.next() {
        // Until both outputs are at the gate; a pipeline error (an unreadable file) or the
        // limit ends the transcode.
        let waited = Instant::now();
        let failed = loop {
            if tokio::task::block_in_place(|| gate.reached(outputs.len(), STEP_POLL)) {
                break None;
            }
            report();
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                match absorb_input_error(&mut job, &msg) {
                    Ok(()) => continue,
                    Err(e) => break Some(e),
                }
            }
            if waited.elapsed() > STEP_LIMIT {
                break Some(PipelineError::Timeout {
                    what: "reach the next room events",
                    secs: STEP_LIMIT.as_secs(),
                });
            }
        };
        if let Some(e) = failed {
            gate.open();
            let _ = tokio::task::block_in_place(|| pipeline.set_state(gst::State::Null));
            return Err(e.into());
        }
        job.on_events(batch)?;
        match steps.peek() {
            Some((t, _)) => gate.set(at_ms(*t)),
            None => gate.open(),
        }
    }
    gate.open();
    // From here the bus is read as a stream; what it posted before is still in its queue.
    let mut stream = bus.stream();
    let limit = Duration::from_secs(120 + duration_ms / 1000 * 2);
    let ended = finish(&mut job, &bus, &mut stream, limit, &report).await;
    progress.finish();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = crate::util::cpu_seconds() - cpu0;
    let delay = job.composite.mp4_audio_delay();
    let seg = tokio::task::block_in_place(|| {
        job.composite.wait_retired(Duration::from_secs(10));
        let _ = pipeline.set_state(gst::State::Null);
        ended?;
        pipeline::mp4::finalize_with_audio_delay(&out, delay)
    })?;
    let media = seg.duration.mseconds() as f64 / 1000.0;
    info!(file = %out.display(), media_s = media, wall_s = wall, "transcoded");
    Ok(TranscodeReport {
        file: out,
        duration_s: media,
        bytes: seg.bytes,
        wall_s: wall,
        speed: media / wall.max(1e-3),
        cpu_s: cpu,
    })
}

/// Handles an error message during a transcode. A generated tile (a placeholder or the "+N"
/// tile) that could not start is made again, as the live session does; an element already
/// taken out does not matter; anything else (a track file that cannot be read, the mixers,
/// encoders or muxer) ends the transcode with the error.
fn absorb_input_error(job: &mut Job, msg: &gst::Message) -> Result<(), PipelineError> {
    let Err(e) = pipeline::bus::check(msg) else {
        return Ok(());
    };
    match msg.src().map(|s| job.composite.classify_error(s)) {
        Some(ErrorOrigin::Detached) => Ok(()),
        Some(ErrorOrigin::Input(
            input @ InputRef::Tile(InputKey::Placeholder(_) | InputKey::Overflow),
        )) => {
            warn!(error = %e, ?input, "input failed, dropping it");
            tokio::task::block_in_place(|| job.composite.drop_input(&input))?;
            job.relayout()
        }
        _ => Err(e),
    }
}

/// Waits for the end of the transcode's stream, making again generated tiles that fail on the
/// way (see [`absorb_input_error`]).
async fn finish(
    job: &mut Job,
    bus: &gst::Bus,
    stream: &mut gst::bus::BusStream,
    limit: Duration,
    report: &(dyn Fn() + Sync),
) -> Result<(), PipelineError> {
    // What the bus posted before it was read as a stream comes first.
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Eos, gst::MessageType::Error]) {
        if msg.type_() == gst::MessageType::Eos {
            return Ok(());
        }
        absorb_input_error(job, &msg)?;
    }
    let wait = async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let msg = tokio::select! {
                msg = stream.next() => msg,
                _ = tick.tick() => {
                    report();
                    continue;
                }
            };
            let Some(msg) = msg else {
                return Err(PipelineError::setup("bus closed before EOS"));
            };
            match msg.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(_) => absorb_input_error(job, &msg)?,
                _ => {}
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or(Err(PipelineError::Timeout {
            what: "finish the transcode",
            secs: limit.as_secs(),
        }))
}

//! The recording runner: one task owns one composite pipeline and one room connection.
//!
//! Room events and [`JobCommand`]s arrive on channels; the runner hands them to the running
//! recording ([`super::live`]), which folds them into [`RoomState`] and applies the layout.
//! Stop sends EOS, waits for the muxer to finish under [`EOS_TIMEOUT`], then finalizes the MP4
//! segment.

use super::live::Job;
use super::segments::reserve_segment;
use super::RoomState;
use crate::codes::Code;
use crate::layout::{parse_color, Layout};
use crate::pipeline::composite::{ErrorOrigin, Output};
use crate::pipeline::mp4::{finalize, SegmentFile};
use crate::pipeline::rtmp::{DestinationState, DestinationStatus, RtmpUrl};
use crate::pipeline::source::Timing;
use crate::pipeline::{bus, Composite, CompositeOptions, PipelineError, Preset};
use crate::room::{RoomEvent, RoomHandle};
use crate::Error;
use futures::StreamExt;
use gst::prelude::*;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

/// Longest wait for the pipeline to drain after a stop.
pub const EOS_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the drained pipeline to shut down (the Null state change).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

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
/// How long a stalled segment's pipeline gets to drain before its file is finalized as it is.
const STALLED_DRAIN: Duration = Duration::from_secs(1);

/// `ROOMCAST_FAULT_STALL_AFTER_SECS`: a test of the stall watchdog wedges a segment this long
/// after it starts, in the first `ROOMCAST_FAULT_STALL_SEGMENTS` (default 1) segments of the
/// process. Asked once per segment: when to wedge this one, if at all.
fn stall_fault() -> Option<Duration> {
    static WEDGED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let setting = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let after = setting("ROOMCAST_FAULT_STALL_AFTER_SECS")?;
    let segments = setting("ROOMCAST_FAULT_STALL_SEGMENTS").unwrap_or(1.0) as u32;
    WEDGED
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| (n < segments).then_some(n + 1),
        )
        .ok()
        .map(|_| Duration::from_secs_f64(after.max(0.0)))
}

/// `ROOMCAST_FAULT_FINALIZE_FAILS` (any value): a test of 7033 makes every segment's final
/// rewrite fail, as a file system refusing it would (checked where the rewrite happens).
///
/// `ROOMCAST_FAULT_SHUTDOWN_HANG_SECS`: a test of the shutdown limit holds every pipeline's
/// shutdown this long, as a wedged element would.
fn shutdown_fault() -> Option<Duration> {
    std::env::var("ROOMCAST_FAULT_SHUTDOWN_HANG_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// The error a start that took too long ends with, if it did: nothing encoded within
/// `spec.start_timeout` (7013; 7001 for a stream), or a stream-only job with no destination
/// live by then (7001).
fn start_timed_out(
    spec: &RecordingSpec,
    job: &Job,
    went_live: bool,
    elapsed: Duration,
) -> Option<Error> {
    let limit = spec.start_timeout.filter(|t| elapsed >= *t)?;
    let secs = limit.as_secs_f64();
    let (code, message) = if !job.composite.has_encoded() {
        let code = if spec.record {
            Code::RecordStartTimedOut2
        } else {
            Code::StreamStartTimedOut
        };
        (
            code,
            format!("no frame was encoded within {secs} s of the start"),
        )
    } else if !spec.record && !spec.rtmp.is_empty() && !went_live {
        (
            Code::StreamStartTimedOut,
            format!("no RTMP destination was live within {secs} s of the start"),
        )
    } else {
        return None;
    };
    warn!(code = %code, "{message}");
    Some(Error::Job { code, message })
}

/// Records the room until stopped, the duration ends or the room goes away; returns the
/// finalized segment.
pub async fn record(
    spec: RecordingSpec,
    room: RoomHandle,
    commands: mpsc::Receiver<JobCommand>,
) -> Result<Recording, Error> {
    record_with_events(spec, room, commands, None).await
}

/// [`record`], reporting [`JobEvent`]s as they happen.
pub async fn record_with_events(
    spec: RecordingSpec,
    room: RoomHandle,
    commands: mpsc::Receiver<JobCommand>,
    events: Option<mpsc::UnboundedSender<JobEvent>>,
) -> Result<Recording, Error> {
    let path = if spec.record {
        Some(reserve_segment(
            &spec.out_dir,
            &spec.room_id,
            &spec.conf_num,
            spec.first_segment,
        )?)
    } else {
        None
    };
    let shown = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let span = info_span!("recording", room = %spec.room_id, conf = %spec.conf_num, file = %shown);
    let result = run(spec, path.clone(), room, commands, events)
        .instrument(span)
        .await;
    if let Some(path) = path {
        if result.is_err() && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            // Nothing was recorded: give the segment name back.
            let _ = std::fs::remove_file(&path);
        }
    }
    result
}

async fn run(
    spec: RecordingSpec,
    path: Option<PathBuf>,
    mut room: RoomHandle,
    mut commands: mpsc::Receiver<JobCommand>,
    events: Option<mpsc::UnboundedSender<JobEvent>>,
) -> Result<Recording, Error> {
    let def = spec.layout.def().clone();
    let opts = CompositeOptions {
        preset: spec.preset.clone(),
        timing: Timing::Live,
        output: match &path {
            Some(p) => Output::Mp4(p.clone()),
            None => Output::Discard,
        },
        background: def.background.as_deref().and_then(parse_color).unwrap_or(0),
        background_image: def.background_image.clone(),
        label: def.label.clone(),
        watermark: spec.watermark.clone(),
        page_layer: spec.page_layer || spec.page.is_some(),
    };
    let composite = tokio::task::block_in_place(|| Composite::new(&opts))?;
    let pipeline = composite.pipeline().clone();
    let mut bus = pipeline
        .bus()
        .ok_or_else(|| PipelineError::setup("no bus"))?
        .stream();
    let mut job = Job {
        composite,
        destinations: Vec::new(),
        next_destination: 0,
        events: events.clone(),
        state: RoomState::new(),
        layout: spec.layout.clone(),
        page: None,
        next_page: None,
        chat: std::collections::VecDeque::new(),
        started_ms: crate::clock::now_ms(),
    };
    if let Some(page) = spec.page.clone() {
        job.set_page(Some(page)).await;
    }
    // Whoever is already in the room is built before the clock starts, so the recording opens
    // on them (sound and picture from its first frame) rather than on an empty canvas.
    let mut ended_early = match waiting(&mut room) {
        Some(present) => job.on_room(present)?,
        None => {
            job.relayout()?;
            None
        }
    };
    let mut wedge_at = stall_fault();
    if wedge_at.is_some_and(|at| at.is_zero()) {
        wedge_at = None;
        warn!("fault injection: the video encoder's input is wedged from the start");
        job.composite.wedge();
    }
    tokio::task::block_in_place(|| pipeline.set_state(gst::State::Playing))
        .map_err(PipelineError::setup)?;
    info!(preset = %spec.preset.name, layout = %def.name, "recording started");
    if let Some(tx) = &events {
        let _ = tx.send(JobEvent::Started { file: path.clone() });
    }
    for url in spec.rtmp.clone() {
        job.add_destination(url)?;
    }
    let hls = match &spec.hls {
        Some(h) => Some(start_hls(&spec, h, path.as_deref(), &pipeline, &events)?),
        None => None,
    };
    // The segment's chat, kept beside it as it arrives (see `super::chat`).
    let journal = path.as_deref().map(super::chat::journal_path);
    let started = tokio::time::Instant::now();
    let deadline = spec.max_duration.map(|d| started + d);
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commands_open = true;
    let mut went_live = false;
    let outcome: Result<EndReason, Error> = loop {
        if let Some(reason) = ended_early.take() {
            break Ok(reason);
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = room.events.recv() => match ev {
                Some(first) => {
                    let mut events = vec![first];
                    events.extend(waiting(&mut room).unwrap_or_default());
                    match job.on_room(events) {
                        Ok(Some(reason)) => break Ok(reason),
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    }
                }
                None => break Ok(EndReason::Disconnected),
            },
            cmd = commands.recv(), if commands_open => match cmd {
                Some(JobCommand::Stop) => break Ok(EndReason::Stopped),
                Some(JobCommand::SetLayout(layout)) => {
                    info!(layout = %layout.def().name, "layout changed");
                    job.layout = *layout;
                    if let Err(e) = job.relayout() {
                        break Err(e.into());
                    }
                }
                Some(JobCommand::AddRtmp(url)) => {
                    if let Err(e) = job.add_destination(url) {
                        warn!(error = %e, code = %e.code(), "RTMP destination not added");
                    }
                }
                Some(JobCommand::RemoveRtmp(id)) => job.remove_destination(id).await,
                Some(JobCommand::SetRtmp(urls)) => {
                    let ids: Vec<u32> = job.destinations.iter().map(|d| d.id).collect();
                    for id in ids {
                        job.remove_destination(id).await;
                    }
                    for url in urls {
                        if let Err(e) = job.add_destination(url) {
                            warn!(error = %e, code = %e.code(), "RTMP destination not added");
                        }
                    }
                }
                Some(JobCommand::SetPage(page)) => {
                    job.set_page(page).await;
                    if let Err(e) = job.relayout() {
                        break Err(e.into());
                    }
                }
                Some(JobCommand::Chat(line)) => {
                    journal_chat(journal.as_deref(), &line);
                    job.on_chat(line);
                }
                Some(JobCommand::Room(events)) => match job.on_room(events) {
                    Ok(Some(reason)) => break Ok(reason),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                },
                None => commands_open = false,
            },
            update = job.page_update() => {
                if let Err(e) = job.on_page(update) {
                    break Err(e.into());
                }
            }
            _ = progress.tick() => {
                if wedge_at.is_some_and(|at| started.elapsed() >= at) {
                    wedge_at = None;
                    warn!("fault injection: wedging the video encoder's input");
                    job.composite.wedge();
                }
                went_live |= job.destinations.iter().any(|d| d.status().state == DestinationState::Live);
                if let Some(e) = start_timed_out(&spec, &job, went_live, started.elapsed()) {
                    break Err(e);
                }
                if job.composite.has_encoded()
                    && job.composite.output_idle().is_some_and(|idle| idle >= STALL_TIMEOUT)
                {
                    warn!(secs = STALL_TIMEOUT.as_secs(), "the mixers produced nothing: ending the segment");
                    break Ok(EndReason::Stalled);
                }
                if spec.record && spec.min_free_bytes > 0 {
                    let free = crate::util::free_bytes(&spec.out_dir);
                    if free.is_some_and(|f| f < spec.min_free_bytes) {
                        warn!(free_bytes = free.unwrap_or(0), floor = spec.min_free_bytes,
                            "free disk space below the floor: ending the segment");
                        break Ok(EndReason::DiskLow);
                    }
                }
                if let (Some(tx), Some(pos)) = (&events, pipeline.query_position::<gst::ClockTime>()) {
                    let _ = tx.send(JobEvent::Progress {
                        media: Duration::from_nanos(pos.nseconds()),
                        wall: started.elapsed(),
                        participants: job.state.len(),
                        feeds: room.feeds.lock().unwrap().clone(),
                    });
                }
            },
            msg = bus.next() => {
                let Some(msg) = msg else { continue };
                if let Err(e) = bus::check(&msg) {
                    let origin = msg.src().map(|s| job.composite.classify_error(s));
                    match origin {
                        Some(ErrorOrigin::Detached) => debug!(error = %e, "error from a removed input"),
                        Some(ErrorOrigin::Input(input)) => {
                            warn!(error = %e, ?input, "input failed, dropping it");
                            let r = tokio::task::block_in_place(|| job.composite.drop_input(&input));
                            if let Err(e) = r.and_then(|_| job.relayout()) {
                                break Err(e.into());
                            }
                        }
                        _ => break Err(e.into()),
                    }
                }
            }
            _ = sleep => break Ok(EndReason::DurationReached),
        }
    };
    (room.leave)();
    job.composite.end_of_stream();
    // A stalled pipeline, or one that never encoded anything, will not drain: it gets a
    // moment, not the full wait, and what reached the file is what there is.
    let hopeless = match &outcome {
        Ok(EndReason::Stalled) => true,
        Err(Error::Job { code, .. }) => {
            matches!(code, Code::RecordStartTimedOut2 | Code::StreamStartTimedOut)
        }
        _ => false,
    };
    let drained = if hopeless {
        if let Err(e) = drain(&job.composite, &mut bus, STALLED_DRAIN).await {
            warn!(error = %e, "the stalled pipeline did not drain");
        }
        Ok(())
    } else {
        // A stop that cannot drain in time: 7031 (7041 streaming); the file is still
        // finalized from what was written.
        drain(&job.composite, &mut bus, EOS_TIMEOUT)
            .await
            .map_err(|e| match e {
                PipelineError::Timeout { .. } => Error::Job {
                    code: if spec.record {
                        Code::RecordStopTimedOut
                    } else {
                        Code::StreamStopTimedOut
                    },
                    message: format!(
                        "the pipeline did not drain within {} s of the stop",
                        EOS_TIMEOUT.as_secs()
                    ),
                },
                e => e.into(),
            })
    };
    // The HLS writer cuts its last segment and writes the VOD playlist on the end of stream.
    if let Some(hls) = hls {
        hls.finish(&pipeline, HLS_FINISH_TIMEOUT).await;
    }
    let mut destinations = Vec::new();
    for d in std::mem::take(&mut job.destinations) {
        destinations.push(d.finish(&pipeline).await);
    }
    // A wedged element can keep the Null transition from returning: the file is finalized
    // regardless, and the stuck thread is left behind rather than the job.
    let p = pipeline.clone();
    let hang = shutdown_fault();
    let shutdown = tokio::task::spawn_blocking(move || {
        if let Some(hang) = hang {
            warn!(
                secs = hang.as_secs_f64(),
                "fault injection: the pipeline's shutdown hangs"
            );
            std::thread::sleep(hang);
        }
        let _ = p.set_state(gst::State::Null);
        drop(job);
        drop(p);
        // However long the teardown took, what it freed goes back to the system.
        crate::util::release_free_memory();
    });
    // A pipeline that does not stop in time: 7032 (7042 streaming), once the file is kept.
    let stuck = tokio::time::timeout(SHUTDOWN_TIMEOUT, shutdown)
        .await
        .is_err();
    if stuck {
        warn!(
            secs = SHUTDOWN_TIMEOUT.as_secs(),
            "the pipeline did not shut down in time; finalizing the file anyway"
        );
    }
    let stuck = stuck.then(|| Error::Job {
        code: if spec.record {
            Code::RecordStopTimedOut2
        } else {
            Code::StreamStopTimedOut2
        },
        message: format!(
            "the pipeline did not shut down within {} s of the stop",
            SHUTDOWN_TIMEOUT.as_secs()
        ),
    });
    // Chat that arrived while the segment drained still belongs to it.
    while let Ok(cmd) = commands.try_recv() {
        if let JobCommand::Chat(line) = cmd {
            journal_chat(journal.as_deref(), &line);
        }
    }
    // Whatever went wrong, what reached the file is kept: finalize it, then report.
    let finalized = match path.clone() {
        // Stopped within its first fragment: only the header reached the file, there is
        // nothing to finalize (the caller records the segment as empty).
        Some(p) if !crate::pipeline::mp4::holds_media(&p) => {
            info!(file = %p.display(), "the segment holds no media fragment");
            Ok(None)
        }
        Some(_) if std::env::var_os("ROOMCAST_FAULT_FINALIZE_FAILS").is_some() => {
            warn!("fault injection: the segment's rewrite fails");
            Err(PipelineError::setup("rewrite failed (fault injection)"))
        }
        Some(p) => tokio::task::spawn_blocking(move || finalize(&p).map(Some))
            .await
            .map_err(|e| PipelineError::setup(format!("finalize task: {e}")))?,
        None => Ok(None),
    };
    let ended = outcome
        .and_then(|r| drained.map(|_| r))
        .and_then(|r| stuck.map_or(Ok(r), Err));
    let reason = match ended {
        Ok(reason) => reason,
        Err(e) => {
            match &finalized {
                Ok(Some(f)) => warn!(file = %f.path.display(), error = %e,
                    "recording failed; what was recorded is kept"),
                Ok(None) => warn!(error = %e, "the job failed; no media file to keep"),
                Err(fe) => warn!(file = %shown_path(&path), error = %e, finalize = %fe,
                    "recording failed; the fragmented file is kept as it is"),
            }
            return Err(e);
        }
    };
    // A segment that could not be rewritten stays fragmented (playable): 7033, or 7204 when
    // the disk has no room for the rewrite (a full disk fails the recording, as it does while
    // recording).
    let file = finalized.map_err(|e| {
        let bytes = path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let free = crate::util::free_bytes(&spec.out_dir).unwrap_or(u64::MAX);
        let code = if free <= bytes {
            Code::RecordError
        } else {
            Code::RecordStopTimedOut3
        };
        Error::Job {
            code,
            message: format!("the segment could not be finalized: {e}"),
        }
    })?;
    if let Some(file) = &file {
        info!(
            duration_s = file.duration.mseconds() as f64 / 1000.0,
            bytes = file.bytes,
            ?reason,
            "recording finalized"
        );
    }
    Ok(Recording {
        file,
        reason,
        destinations,
    })
}

/// Longest wait for the HLS writer to finish after the pipeline drained.
const HLS_FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the job's HLS output: files named after the segment (`<room>_<conf>_<n>.m3u8`, …)
/// in a folder beside it, or after the room and the start time for a stream-only job.
fn start_hls(
    spec: &RecordingSpec,
    hls: &crate::model::hls::HlsSpec,
    segment: Option<&std::path::Path>,
    pipeline: &gst::Pipeline,
    events: &Option<mpsc::UnboundedSender<JobEvent>>,
) -> Result<crate::pipeline::hls::HlsOutput, Error> {
    let stem = match segment.and_then(|p| p.file_stem()) {
        Some(s) => s.to_string_lossy().to_string(),
        None => format!(
            "{}_{}_live{}",
            super::segments::file_safe(&spec.room_id),
            super::segments::file_safe(&spec.conf_num),
            crate::clock::now_ms()
        ),
    };
    let dir = crate::pipeline::hls::folder(&spec.out_dir, &stem);
    let tx = events.clone();
    let out = tokio::task::block_in_place(|| {
        crate::pipeline::hls::HlsOutput::start(pipeline, &dir, &stem, hls, move |f| {
            if let Some(tx) = &tx {
                let _ = tx.send(JobEvent::Hls(f));
            }
        })
    })?;
    Ok(out)
}

/// Appends a chat message to the segment's journal, when the job records one.
fn journal_chat(journal: Option<&std::path::Path>, line: &crate::model::page::ChatLine) {
    let Some(journal) = journal else { return };
    if let Err(e) = tokio::task::block_in_place(|| super::chat::append(journal, line)) {
        warn!(error = %e, "chat message not written to the segment's journal");
    }
}

fn shown_path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Every event already waiting, so a burst (a join and its tracks) is laid out once rather than
/// once per event; `None` when nothing is waiting.
fn waiting(room: &mut RoomHandle) -> Option<Vec<RoomEvent>> {
    let mut events = Vec::new();
    while let Ok(ev) = room.events.try_recv() {
        events.push(ev);
    }
    (!events.is_empty()).then_some(events)
}

/// Waits for EOS to reach the sink after [`Composite::end_of_stream`]. Errors from inputs
/// while they wind down do not matter any more; errors from the encoders and muxer do.
async fn drain(
    composite: &Composite,
    bus: &mut gst::bus::BusStream,
    limit: Duration,
) -> Result<(), PipelineError> {
    bus::wait_eos(bus, limit, "drain after stop", |msg| {
        let origin = msg.src().map(|s| composite.classify_error(s));
        matches!(origin, Some(ErrorOrigin::Core) | None)
    })
    .await
}

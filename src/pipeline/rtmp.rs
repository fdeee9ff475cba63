//! RTMP streaming: up to [`MAX_DESTINATIONS`] destinations fed from the one encode.
//!
//! ```text
//!  main pipeline:  video_tee ─ queue (leaky) ─ appsink ┐      ┌ appsrc ─ queue ┐
//!                  audio_tee ─ queue (leaky) ─ appsink ┴ tap ─┴ appsrc ─ queue ┴ flvmux ─ rtmp2sink
//!                                                             destination pipeline (one each)
//! ```
//!
//! Each destination is its own pipeline behind a tap, so a refused, dropped or stalled
//! connection can only end that destination: its errors never reach the recording's bus, and
//! the leaky queues keep a slow server from holding the encoders back. A destination that fails
//! is rebuilt with exponential backoff (and jitter) until it is removed or the job ends; each
//! new connection starts on a keyframe with timestamps rebased to zero.

use super::tap::{force_key_unit_at, priming, rebase, tap_encoders, TapBranch};
use super::{bridge, make, PipelineError};
pub use crate::model::rtmp::{
    DestinationState, DestinationStatus, RtmpUrl, RtmpUrlError, MAX_DESTINATIONS,
};
use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// First reconnect delay; doubles per failed attempt.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a destination may take to flush when the job stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes an appsrc holds before it drops the oldest buffers.
const APPSRC_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Where a tap forwards to: the current destination pipeline's sources.
#[derive(Default)]
struct Forward {
    branch: Option<Branch>,
    /// The video appsink's sink pad: where a keyframe is requested from the encoder.
    video_pad: Option<gst::Pad>,
    /// The AAC encoder's priming delay. The MP4 trims it with an edit list; FLV has none and
    /// players do not trim it, so the picture goes out this much later instead.
    shift: gst::ClockTime,
}

struct Branch {
    video: Option<gst_app::AppSrc>,
    audio: gst_app::AppSrc,
    /// Timestamp of the first keyframe sent on this connection (becomes zero).
    base: Option<gst::ClockTime>,
}

impl Forward {
    fn video(&mut self, sample: &gst::Sample) {
        let Some(branch) = self.branch.as_mut() else {
            return;
        };
        let (Some(buffer), Some(src)) = (sample.buffer(), branch.video.as_ref()) else {
            return;
        };
        if branch.base.is_none() {
            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                return;
            }
            branch.base = buffer.pts().map(|t| bridge::running_time(sample, t));
        }
        let Some(base) = branch.base else { return };
        bridge::follow_caps(src, sample.caps());
        if let Some(b) = rebase(sample, base, self.shift) {
            let _ = src.push_buffer(b);
        }
    }

    fn audio(&mut self, sample: &gst::Sample) {
        let Some(branch) = self.branch.as_mut() else {
            return;
        };
        let Some(buffer) = sample.buffer() else {
            return;
        };
        // Audio waits for the first video keyframe (or starts at once without video).
        let base = match (branch.base, &branch.video) {
            (Some(b), _) => b,
            (None, None) => {
                branch.base = buffer.pts().map(|t| bridge::running_time(sample, t));
                match branch.base {
                    Some(b) => b,
                    None => return,
                }
            }
            (None, Some(_)) => return,
        };
        bridge::follow_caps(&branch.audio, sample.caps());
        if let Some(b) = rebase(sample, base, gst::ClockTime::ZERO) {
            let _ = branch.audio.push_buffer(b);
        }
    }

    /// Connects a new destination branch and returns the pad to ask for a keyframe on, so
    /// the connection starts at once rather than at the encoder's next scheduled keyframe.
    fn connect(&mut self, branch: Branch) -> Option<gst::Pad> {
        let wants_keyframe = branch.video.is_some();
        self.branch = Some(branch);
        self.video_pad.clone().filter(|_| wants_keyframe)
    }

    fn eos(&mut self) {
        if let Some(b) = &self.branch {
            if let Some(v) = &b.video {
                let _ = v.end_of_stream();
            }
            let _ = b.audio.end_of_stream();
        }
    }
}

/// The main-pipeline side of a destination: a tap forwarding to its current connection.
pub struct Tap {
    forward: Arc<Mutex<Forward>>,
    branches: Vec<TapBranch>,
    has_video: bool,
}

fn lock(f: &Mutex<Forward>) -> std::sync::MutexGuard<'_, Forward> {
    f.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tap {
    /// Adds a tap for destination `id` to `pipeline`'s `video_tee` / `audio_tee`.
    pub fn attach(pipeline: &gst::Pipeline, id: u32) -> Result<Tap, PipelineError> {
        let forward = Arc::new(Mutex::new(Forward {
            branch: None,
            video_pad: None,
            shift: priming(pipeline),
        }));
        let (fv, fa, fe) = (forward.clone(), forward.clone(), forward.clone());
        let (branches, video_pad) = tap_encoders(
            pipeline,
            &format!("rtmp_tap_{id}"),
            move |s| lock(&fv).video(&s),
            move |s| lock(&fa).audio(&s),
            move || lock(&fe).eos(),
        )?;
        let has_video = video_pad.is_some();
        lock(&forward).video_pad = video_pad;
        Ok(Tap {
            forward,
            branches,
            has_video,
        })
    }

    /// Removes the tap from the main pipeline (call off the async runtime).
    pub fn detach(self, pipeline: &gst::Pipeline) {
        lock(&self.forward).branch = None;
        for b in self.branches {
            b.detach(pipeline);
        }
    }
}

/// A running destination: its tap and the task that keeps it connected.
pub struct Destination {
    /// Id within the job.
    pub id: u32,
    status: Arc<StatusCell>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    tap: Option<Tap>,
}

impl Destination {
    /// Starts streaming to `url` from `pipeline`'s encoders.
    pub fn start(
        pipeline: &gst::Pipeline,
        id: u32,
        url: RtmpUrl,
        listener: Option<StatusListener>,
    ) -> Result<Destination, PipelineError> {
        let tap = Tap::attach(pipeline, id)?;
        let status = Arc::new(StatusCell {
            status: Mutex::new(DestinationStatus {
                id,
                url: url.redacted(),
                state: DestinationState::Connecting,
                connections: 0,
                last_error: None,
            }),
            listener,
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(keep_connected(
            id,
            url,
            tap.forward.clone(),
            tap.has_video,
            status.clone(),
            stop_rx,
        ));
        Ok(Destination {
            id,
            status,
            stop,
            task,
            tap: Some(tap),
        })
    }

    /// Current status.
    pub fn status(&self) -> DestinationStatus {
        self.status.get()
    }

    /// Waits (bounded) for the destination to flush after the main pipeline sent EOS, then
    /// stops it and removes its tap.
    pub async fn finish(mut self, pipeline: &gst::Pipeline) -> DestinationStatus {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
        if let Some(tap) = self.tap.take() {
            let p = pipeline.clone();
            let _ = tokio::task::spawn_blocking(move || tap.detach(&p)).await;
        }
        set_status(&self.status, |s| s.state = DestinationState::Stopped);
        self.status()
    }
}

/// Called with a destination's status whenever its state changes.
pub type StatusListener = Arc<dyn Fn(&DestinationStatus) + Send + Sync>;

/// A destination's status and who hears about its changes.
struct StatusCell {
    status: Mutex<DestinationStatus>,
    listener: Option<StatusListener>,
}

impl StatusCell {
    fn get(&self) -> DestinationStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn set_status(cell: &StatusCell, f: impl FnOnce(&mut DestinationStatus)) {
    let changed = {
        let mut s = cell.status.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.state;
        f(&mut s);
        (s.state != before).then(|| s.clone())
    };
    if let (Some(status), Some(listener)) = (changed, &cell.listener) {
        listener(&status);
    }
}

fn build_branch(
    id: u32,
    url: &RtmpUrl,
    has_video: bool,
) -> Result<(gst::Pipeline, Branch), PipelineError> {
    let p = gst::Pipeline::with_name(&format!("rtmp_{id}"));
    let mux = make("flvmux", &format!("rtmp_mux_{id}"))?;
    mux.set_property("streamable", true);
    let sink = make("rtmp2sink", &format!("rtmp_sink_{id}"))?;
    sink.set_property("location", url.secret());
    sink.set_property("sync", false);
    sink.set_property("async", false);
    p.add_many([&mux, &sink]).map_err(PipelineError::setup)?;
    mux.link(&sink).map_err(PipelineError::setup)?;
    let appsrc = |kind: &str| -> Result<gst_app::AppSrc, PipelineError> {
        let src = bridge::source(&format!("rtmp_src_{kind}_{id}"), APPSRC_MAX_BYTES);
        // Not live: the muxer then waits for both streams and interleaves them by their
        // timestamps. Live, it would take the connection's timestamps (zero at the first
        // keyframe) for late against its own clock and write whatever had arrived, so sound
        // that reached it after the picture went out with the picture's later time (FLV
        // timestamps must not go back): audio snapped to the video's frame grid.
        src.set_is_live(false);
        let q = make("queue", &format!("rtmp_queue_{kind}_{id}"))?;
        p.add_many([src.upcast_ref(), &q])
            .map_err(PipelineError::setup)?;
        src.link(&q).map_err(PipelineError::setup)?;
        let mux_pad = mux
            .request_pad_simple(kind)
            .ok_or_else(|| PipelineError::setup("flvmux pad"))?;
        let qsrc = q
            .static_pad("src")
            .ok_or_else(|| PipelineError::setup("queue src"))?;
        qsrc.link(&mux_pad)
            .map_err(|e| PipelineError::Setup(format!("link flvmux: {e:?}")))?;
        Ok(src)
    };
    let video = if has_video {
        Some(appsrc("video")?)
    } else {
        None
    };
    let audio = appsrc("audio")?;
    Ok((
        p,
        Branch {
            video,
            audio,
            base: None,
        },
    ))
}

/// An upstream force-key-unit request (the event `GstVideoEncoder` and `h264parse` act on):
/// the next frame is encoded as a keyframe with its headers.
fn force_key_unit() -> gst::Event {
    force_key_unit_at(None)
}

/// Connects, watches, and reconnects with backoff until told to stop.
async fn keep_connected(
    id: u32,
    url: RtmpUrl,
    forward: Arc<Mutex<Forward>>,
    has_video: bool,
    status: Arc<StatusCell>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        set_status(&status, |s| {
            s.state = DestinationState::Connecting;
            s.connections += 1;
        });
        info!(destination = id, url = %url.redacted(), "connecting RTMP destination");
        let started = Instant::now();
        let result = run_connection(id, &url, &forward, has_video, &status, &mut stop).await;
        match result {
            Ok(()) => break,
            Err(e) => {
                warn!(destination = id, url = %url.redacted(), error = %e, "RTMP destination failed");
                if started.elapsed() >= STABLE_AFTER {
                    attempt = 0;
                }
                let delay = crate::util::backoff(attempt, BACKOFF_START, BACKOFF_MAX);
                attempt += 1;
                set_status(&status, |s| {
                    s.state = DestinationState::Retrying;
                    // What answered at the address stays in the log: the status that the
                    // API shows says only that the destination failed.
                    s.last_error = Some(
                        "the destination could not be reached or refused the \
                                         stream (details in the worker log)"
                            .into(),
                    );
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    set_status(&status, |s| s.state = DestinationState::Stopped);
}

/// One connection: Ok when it ended because the job stopped, Err when it failed.
async fn run_connection(
    id: u32,
    url: &RtmpUrl,
    forward: &Arc<Mutex<Forward>>,
    has_video: bool,
    status: &Arc<StatusCell>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    use futures::StreamExt;
    let (pipeline, branch) = build_branch(id, url, has_video)?;
    let mut bus = pipeline
        .bus()
        .ok_or_else(|| PipelineError::setup("no bus"))?
        .stream();
    let p = pipeline.clone();
    tokio::task::spawn_blocking(move || p.set_state(gst::State::Playing))
        .await
        .map_err(PipelineError::setup)?
        .map_err(PipelineError::setup)?;
    let keyframe_pad = lock(forward).connect(branch);
    if let Some(pad) = keyframe_pad {
        // Travels up the tee to the encoder (outside the forward lock: the encoder's
        // streaming thread takes that lock to hand over samples).
        pad.push_event(force_key_unit());
    }
    let mut stopping = false;
    // Live once the server has answered: the sink's connection counts bytes received (the
    // pipeline reaching PLAYING only means the connection attempt began).
    let sink = pipeline.by_name(&format!("rtmp_sink_{id}"));
    let mut live = false;
    let mut check = tokio::time::interval(LIVE_CHECK);
    let result = loop {
        let deadline = async {
            if stopping {
                tokio::time::sleep(DRAIN_TIMEOUT).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = check.tick(), if !live => {
                if sink.as_ref().is_some_and(server_answered) {
                    live = true;
                    set_status(status, |s| s.state = DestinationState::Live);
                    info!(destination = id, url = %url.redacted(), "RTMP destination live");
                }
            }
            msg = bus.next() => {
                let Some(msg) = msg else { break Ok(()) };
                match msg.view() {
                    gst::MessageView::Error(_) => {
                        if let Err(e) = super::bus::check(&msg) {
                            break Err(e);
                        }
                    }
                    gst::MessageView::Eos(_) => break Ok(()),
                    _ => {}
                }
            }
            _ = stop.changed(), if !stopping => {
                // The job is ending: the main pipeline's EOS reaches the appsrcs through the
                // tap; make sure it does even if this connection started late.
                stopping = true;
                lock(forward).eos();
            }
            _ = deadline => break Ok(()),
        }
    };
    lock(forward).branch = None;
    let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    result
}

/// How often a connecting destination is checked for the server's answer.
const LIVE_CHECK: Duration = Duration::from_millis(100);

/// Whether the server at the other end of `sink` (an `rtmp2sink`) has sent anything: its
/// handshake answer at least.
fn server_answered(sink: &gst::Element) -> bool {
    sink.property::<Option<gst::Structure>>("stats")
        .and_then(|s| s.get::<u64>("in-bytes-total").ok())
        .is_some_and(|n| n > 0)
}

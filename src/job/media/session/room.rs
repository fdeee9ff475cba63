//! A running session ([`Session`]): its composite, room connection and members, and how
//! members leave it — each member's limits checked, one member's outputs ended while the
//! others go on ([`Session::detach`]), the whole session ended ([`Session::teardown`]).

use super::conclude::{conclude, share};
use super::limits::{
    drain, shutdown_fault, start_timed_out, HLS_FINISH_TIMEOUT, SHUTDOWN_TIMEOUT, STALLED_DRAIN,
    TAP_FINISH_TIMEOUT,
};
use super::member::{route, Member, Mp4Out};
use super::registry::{journal_late_chat, unregister, Key, Msg};
use crate::codes::Code;
use crate::job::media::live::Job;
use crate::job::spec::{EndReason, JobEvent, EOS_TIMEOUT};
use crate::pipeline::rtmp::{DestinationState, DestinationStatus};
use crate::pipeline::PipelineError;
use crate::Error;
use gst::prelude::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

pub(super) struct Session {
    pub(super) key: Key,
    pub(super) me: mpsc::UnboundedSender<Msg>,
    pub(super) job: Job,
    pub(super) pipeline: gst::Pipeline,
    pub(super) bus: gst::bus::BusStream,
    pub(super) room_events: mpsc::Receiver<crate::room::RoomEvent>,
    pub(super) feeds: crate::model::feed::FeedBoard,
    pub(super) leave: Option<Box<dyn FnOnce() + Send>>,
    pub(super) rx: mpsc::UnboundedReceiver<Msg>,
    /// What the media side reports (destination states, the page): routed to members.
    pub(super) internal: mpsc::UnboundedReceiver<JobEvent>,
    pub(super) members: Vec<Member>,
    pub(super) started: Instant,
    pub(super) wedge_at: Option<Duration>,
    pub(super) ended_early: Option<EndReason>,
}

/// Width of the thumbnail of what a job records (the console's picture of each job).
pub const THUMBNAIL_WIDTH: u32 = 320;

impl Session {
    /// A destination's or the page's news, to whom it concerns.
    pub(super) fn route(&self, ev: JobEvent) {
        route(&self.members, ev);
    }

    /// Each member's own limits (start timeout, disk floor, its file's writer), and its
    /// progress report; the members that must end.
    pub(super) fn check_members(&mut self) -> Vec<(u64, Result<EndReason, Error>)> {
        let mut ends = Vec::new();
        let pos = self.pipeline.query_position::<gst::ClockTime>();
        let feeds = self.feeds.lock().map(|f| f.clone()).unwrap_or_default();
        let thumbnail = self.job.composite.take_frame().and_then(|frame| {
            tokio::task::block_in_place(|| {
                crate::pipeline::snapshot::jpeg(&frame, THUMBNAIL_WIDTH)
                    .map_err(|e| tracing::debug!(error = %e, "no thumbnail"))
                    .ok()
            })
            .map(std::sync::Arc::new)
        });
        let people = self.job.state.people();
        for (i, m) in self.members.iter_mut().enumerate() {
            m.went_live |= self.job.destinations.iter().any(|d| {
                m.destinations.contains(&d.id) && d.status().state == DestinationState::Live
            });
            if let Some(e) = start_timed_out(&m.spec, &self.job, m.went_live, m.started.elapsed()) {
                ends.push((m.id, Err(e)));
                continue;
            }
            if m.spec.record && m.spec.min_free_bytes > 0 {
                let free = crate::util::free_bytes(&m.spec.out_dir);
                if free.is_some_and(|f| f < m.spec.min_free_bytes) {
                    warn!(
                        free_bytes = free.unwrap_or(0),
                        floor = m.spec.min_free_bytes,
                        "free disk space below the floor: ending the segment"
                    );
                    ends.push((m.id, Ok(EndReason::DiskLow)));
                    continue;
                }
            }
            if let Mp4Out::Tapped(t) = &m.mp4 {
                if let Some(e) = t.failed() {
                    warn!(error = %e, "the segment's file could not be written");
                    ends.push((
                        m.id,
                        Err(Error::Job {
                            code: Code::RecordError,
                            message: format!("the segment could not be written: {e}"),
                        }),
                    ));
                    continue;
                }
            }
            if let Some(pos) = pos {
                m.send(JobEvent::Progress {
                    media: Duration::from_nanos(pos.nseconds()),
                    wall: self.started.elapsed(),
                    participants: self.job.state.len(),
                    feeds: feeds.clone(),
                    shared: i > 0,
                    thumbnail: thumbnail.clone(),
                    people: people.clone(),
                });
            }
        }
        ends
    }

    /// Ends member `i`'s outputs while the others go on; its result is sent once its file
    /// is finalized.
    pub(super) fn detach(&mut self, i: usize, end: Result<EndReason, Error>) {
        let mut m = self.members.remove(i);
        info!(members = self.members.len(), reason = ?end.as_ref().ok(),
            "a job left the room's composite");
        let mut destinations = Vec::new();
        let mut k = 0;
        while k < self.job.destinations.len() {
            if m.destinations.contains(&self.job.destinations[k].id) {
                destinations.push(self.job.destinations.remove(k));
            } else {
                k += 1;
            }
        }
        let main_done = match m.mp4 {
            Mp4Out::Main => tokio::task::block_in_place(|| self.job.composite.end_recording()),
            _ => None,
        };
        let mp4 = std::mem::replace(&mut m.mp4, Mp4Out::None);
        let audio_delay = match &mp4 {
            Mp4Out::Tapped(t) => t.audio_delay().as_nanos() as i64,
            Mp4Out::Main => self.job.composite.mp4_audio_delay(),
            Mp4Out::None => 0,
        };
        let hls = m.hls.take();
        let pipeline = self.pipeline.clone();
        tokio::spawn(
            async move {
                let drain_error = |secs: u64| Error::Job {
                    code: Code::RecordStopTimedOut,
                    message: format!(
                        "the segment's file did not drain within {secs} s of the stop"
                    ),
                };
                let drained: Result<(), Error> = match mp4 {
                    Mp4Out::Main => match main_done {
                        Some(rx) => match tokio::time::timeout(EOS_TIMEOUT, rx).await {
                            Ok(_) => Ok(()),
                            Err(_) => Err(drain_error(EOS_TIMEOUT.as_secs())),
                        },
                        None => Ok(()),
                    },
                    Mp4Out::Tapped(tap) => match tap.finish(&pipeline, EOS_TIMEOUT).await {
                        Ok(()) => Ok(()),
                        Err(PipelineError::Timeout { secs, .. }) => Err(drain_error(secs)),
                        Err(e) => Err(Error::Job {
                            code: Code::RecordError,
                            message: format!("the segment could not be written: {e}"),
                        }),
                    },
                    Mp4Out::None => Ok(()),
                };
                if let Some(h) = hls {
                    h.end(&pipeline, HLS_FINISH_TIMEOUT).await;
                }
                let mut statuses = Vec::new();
                for d in destinations {
                    let status = d.finish(&pipeline).await;
                    // The session no longer routes this member's news: its last state.
                    m.send(JobEvent::Streaming(status.clone()));
                    statuses.push(status);
                }
                let ended = end.and_then(|r| drained.map(|_| r));
                let result = conclude(&m.spec, m.path.clone(), ended, statuses, audio_delay).await;
                let _ = m.done.send(result);
            }
            .in_current_span(),
        );
    }

    /// Ends the session: the pipeline drains and stops, every member's file is finalized and
    /// every member gets `outcome` (with its own codes for a drain or shutdown that failed).
    pub(super) async fn teardown(mut self, outcome: Result<EndReason, Error>) {
        unregister(&self.key, &self.me);
        // Joins that arrived too late start sessions of their own; chat for the members'
        // segments is still journaled.
        journal_late_chat(&mut self.rx, &self.members);
        if let Some(leave) = self.leave.take() {
            leave();
        }
        self.job.composite.end_of_stream();
        // A stalled pipeline, or one that never encoded anything, will not drain: it gets a
        // moment, not the full wait, and what reached the file is what there is.
        let hopeless = match &outcome {
            Ok(EndReason::Stalled) => true,
            Err(Error::Job { code, .. }) => {
                matches!(code, Code::RecordStartTimedOut2 | Code::StreamStartTimedOut)
            }
            _ => false,
        };
        // Err(None): the drain timed out (each member's code says so); Err(Some): an error.
        let drained: Result<(), PipelineError> = if hopeless {
            if let Err(e) = drain(&self.job.composite, &mut self.bus, STALLED_DRAIN).await {
                warn!(error = %e, "the stalled pipeline did not drain");
            }
            Ok(())
        } else {
            drain(&self.job.composite, &mut self.bus, EOS_TIMEOUT).await
        };
        let drained: Result<(), Option<Error>> = drained.map_err(|e| match e {
            PipelineError::Timeout { .. } => None,
            e => Some(e.into()),
        });
        // The HLS writers cut their last segments and write the VOD playlists on the end of
        // stream; the taps' files end with it.
        let mut members = std::mem::take(&mut self.members);
        for m in &mut members {
            if let Some(hls) = m.hls.take() {
                hls.finish(&self.pipeline, HLS_FINISH_TIMEOUT).await;
            }
        }
        let mut taps: Vec<(Result<(), PipelineError>, i64)> = Vec::new();
        for m in &mut members {
            taps.push(match std::mem::replace(&mut m.mp4, Mp4Out::None) {
                Mp4Out::Tapped(t) => {
                    let delay = t.audio_delay().as_nanos() as i64;
                    (t.finish(&self.pipeline, TAP_FINISH_TIMEOUT).await, delay)
                }
                Mp4Out::Main => (Ok(()), self.job.composite.mp4_audio_delay()),
                Mp4Out::None => (Ok(()), 0),
            });
        }
        let mut statuses: HashMap<u32, DestinationStatus> = HashMap::new();
        for d in std::mem::take(&mut self.job.destinations) {
            let s = d.finish(&self.pipeline).await;
            statuses.insert(s.id, s);
        }
        // What the destinations reported up to their end (their last state: stopped).
        while let Ok(ev) = self.internal.try_recv() {
            route(&members, ev);
        }
        // Said while the segments drained: still theirs.
        journal_late_chat(&mut self.rx, &members);
        // A wedged element can keep the Null transition from returning: the files are
        // finalized regardless, and the stuck thread is left behind rather than the jobs.
        let p = self.pipeline.clone();
        let hang = shutdown_fault();
        let job = self.job;
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
        let stuck = tokio::time::timeout(SHUTDOWN_TIMEOUT, shutdown)
            .await
            .is_err();
        if stuck {
            warn!(
                secs = SHUTDOWN_TIMEOUT.as_secs(),
                "the pipeline did not shut down in time; finalizing the files anyway"
            );
        }
        let shared = |o: &Result<EndReason, Error>| match o {
            Ok(r) => Ok(*r),
            Err(e) => Err(share(e)),
        };
        for (m, (tap, audio_delay)) in members.into_iter().zip(taps) {
            let record = m.spec.record;
            // A stop that cannot drain in time: 7031 (7041 streaming); the file is still
            // finalized from what was written.
            let drained = match &drained {
                Ok(()) => Ok(()),
                Err(None) => Err(Error::Job {
                    code: if record {
                        Code::RecordStopTimedOut
                    } else {
                        Code::StreamStopTimedOut
                    },
                    message: format!(
                        "the pipeline did not drain within {} s of the stop",
                        EOS_TIMEOUT.as_secs()
                    ),
                }),
                Err(Some(e)) => Err(share(e)),
            };
            let tapped = tap.map_err(|e| Error::Job {
                code: Code::RecordError,
                message: format!("the segment could not be written: {e}"),
            });
            // A pipeline that does not stop in time: 7032 (7042 streaming), once the file is
            // kept.
            let stuck = stuck.then(|| Error::Job {
                code: if record {
                    Code::RecordStopTimedOut2
                } else {
                    Code::StreamStopTimedOut2
                },
                message: format!(
                    "the pipeline did not shut down within {} s of the stop",
                    SHUTDOWN_TIMEOUT.as_secs()
                ),
            });
            let ended = shared(&outcome)
                .and_then(|r| drained.map(|_| r))
                .and_then(|r| tapped.map(|_| r))
                .and_then(|r| stuck.map_or(Ok(r), Err));
            let destinations = m
                .destinations
                .iter()
                .filter_map(|d| statuses.remove(d))
                .collect();
            let result = conclude(&m.spec, m.path.clone(), ended, destinations, audio_delay).await;
            let _ = m.done.send(result);
        }
    }
}

//! What a live run's media side reports, into the job record, the archive and the status
//! webhooks ([`Run::on_event`]), and the files of its HLS output ([`Run::on_hls`]).

use super::context::*;
use crate::codes::Code;
use crate::job::files::notify::{Subject, Transition};
use crate::job::files::outbox::HandOff;
use crate::job::spec::host::JobHost;
use crate::job::spec::JobEvent;
use crate::model::DestinationState;
use crate::model::Preset;
use crate::queue::{now_ms, JobKind, JobState, SegmentRecord};
use tracing::{info, warn};

impl<H: JobHost> Run<'_, H> {
    /// A file of the HLS output: into the job record, and into the spool when storage is
    /// configured (otherwise it stays where it was written, and so does the playlist).
    pub(crate) async fn on_hls(&mut self, file: crate::pipeline::hls::HlsFile) {
        use crate::model::hls::{HlsPart, HlsState, HlsStatus};
        let now = now_ms();
        let spec = &self.job.spec;
        let meta = crate::delivery::spool::SegmentMeta {
            job_id: self.job.id.clone(),
            app_id: spec.app_id.clone(),
            room_id: spec.room_id.clone(),
            conf_num: spec.conf_num.clone(),
            segment: u64::from(file.segments),
            file_name: file.name.clone(),
            started_at_unix_ms: self.job.started_ms.unwrap_or(now),
            // The spool delivers oldest first: the init segment before the first media
            // segment, every segment before the playlist that lists it.
            ended_at_unix_ms: match file.part {
                HlsPart::Init => now.saturating_sub(1),
                HlsPart::Segment => now,
                HlsPart::Live | HlsPart::Ended => now + 1,
            },
            size: 0,
            sha256: String::new(),
            hls: Some(file.part),
            bundle: None,
            chunk: None,
        };
        let target = spec.storage.clone();
        let storage = self
            .env
            .outbox
            .deliverer
            .as_ref()
            .and_then(|d| d.storage_for(target.as_deref()).ok());
        let playlist = file.part == HlsPart::Live || file.part == HlsPart::Ended;
        let url = match &storage {
            Some(s) => s.url_for(&meta),
            None if playlist => {
                // Kept where written: the writer's own playlist is the one to read, the
                // copy made for delivery is not needed.
                let _ = std::fs::remove_file(&file.path);
                crate::util::file_url(&file.path.with_file_name(&file.name))
            }
            None => crate::util::file_url(&file.path),
        };
        let status = self.job.hls.get_or_insert_with(|| HlsStatus {
            state: HlsState::Starting,
            playlist: String::new(),
            playlist_url: None,
            latest_segment: None,
            latest_segment_url: None,
            segments: 0,
            duration_s: 0.0,
            latency_ms: 0,
            max_latency_ms: 0,
        });
        status.segments = file.segments;
        status.duration_s = file.duration_s;
        match file.part {
            HlsPart::Init => {}
            HlsPart::Segment => {
                status.latest_segment = Some(file.name.clone());
                status.latest_segment_url = Some(url);
            }
            HlsPart::Live | HlsPart::Ended => {
                status.state = if file.part == HlsPart::Ended {
                    HlsState::Ended
                } else {
                    HlsState::Live
                };
                status.playlist = file.name.clone();
                status.playlist_url = Some(url);
                if file.part == HlsPart::Live {
                    status.latency_ms = file.latency_ms;
                    status.max_latency_ms = status.max_latency_ms.max(file.latency_ms);
                }
            }
        }
        if storage.is_some() {
            if let HandOff::Kept = self.env.outbox.hand_off(meta, &file.path, target).await {
                warn!(file = %file.name, "HLS file not spooled; it stays in the output folder");
            }
        }
        if playlist {
            info!(segments = file.segments, duration_s = file.duration_s,
                latency_ms = file.latency_ms, part = ?file.part, "HLS playlist written");
            self.save().await;
        }
    }

    /// Applies a job event; `cost_model` is the job's preset, for re-estimating its cost.
    pub(crate) async fn on_event(&mut self, cost_model: &Preset, ev: JobEvent) {
        match ev {
            JobEvent::Started { file } => {
                // A new segment numbers its destinations afresh.
                self.told.clear();
                if let Some(path) = file {
                    self.job.segments.push(SegmentRecord::recording(path));
                }
                if self.job.state == JobState::Starting {
                    self.job.state = JobState::Active;
                    self.job.msg = "active".into();
                }
                self.job.started_ms.get_or_insert(now_ms());
                self.save().await;
                info!("job active");
                if self.job.spec.kind == JobKind::Recording {
                    self.status(Subject::Job, Transition::On, None);
                }
            }
            JobEvent::Streaming(d) => {
                self.job.update_destination(&d);
                self.save().await;
                // A streaming job's own end is its `-off`; a recording job's streams report
                // each destination's end.
                let subject = match self.job.spec.kind {
                    JobKind::Streaming => Subject::Job,
                    _ => Subject::Streaming,
                };
                let told = match d.state {
                    DestinationState::Live => Some((Transition::On, None)),
                    DestinationState::Retrying => {
                        Some((Transition::Failed, Some(Code::StreamFailedToStart)))
                    }
                    DestinationState::Stopped if subject == Subject::Streaming => {
                        Some((Transition::Off, None))
                    }
                    DestinationState::Connecting | DestinationState::Stopped => None,
                };
                if let Some((t, code)) = told {
                    // Once per change: a destination retrying every few seconds while its
                    // server is down is one failure, not one per attempt.
                    if self.told.insert(d.id, t) != Some(t) {
                        self.status(subject, t, code);
                    }
                }
            }
            JobEvent::Hls(file) => self.on_hls(file).await,
            JobEvent::Page(status) => {
                self.env.outbox.notifier.page(&self.job, &status);
                self.job.page = Some(status);
                self.save().await;
            }
            JobEvent::Progress {
                media,
                wall,
                participants,
                feeds,
                shared,
                thumbnail,
                people,
            } => {
                self.job.feeds = feeds;
                self.job.people = people;
                if let Some(jpeg) = thumbnail {
                    self.host.thumbnail(&self.job.id, &jpeg).await;
                }
                let rtmp = self.job.spec.rtmp_urls.len();
                // A job fed from another job's composite pays only for its own outputs.
                let cost = if shared {
                    cost_model.output_cost(rtmp)
                } else {
                    cost_model.estimated_cost(rtmp, Some(participants))
                };
                self.host.set_cost(&self.job.id, cost);
                if wall >= STABLE_RUN {
                    self.job.worker_deaths = 0;
                    self.job.stall_restarts = 0;
                }
                if wall.as_secs_f64() > 0.5 {
                    self.job.realtime_factor = Some(media.as_secs_f64() / wall.as_secs_f64());
                    self.save().await;
                }
            }
        }
    }
}

//! `GET /metrics`: Prometheus text exposition, computed from the shared store so every API
//! process reports the whole fleet.

use super::state::{ApiError, ApiState};
use crate::queue::{JobState, WorkerInfo};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

pub(super) async fn metrics(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let jobs = st.store.jobs().await?;
    let waiting = st.store.waiting().await?.len();
    let workers: Vec<WorkerInfo> = st.store.workers().await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP roomcast_jobs Jobs on record (within the retention), by state.\n# TYPE roomcast_jobs gauge"
    );
    for s in JobState::ALL {
        let n = jobs.iter().filter(|j| j.state == s).count();
        let _ = writeln!(out, "roomcast_jobs{{state=\"{}\"}} {n}", s.as_str());
    }
    let _ = writeln!(
        out,
        "# HELP roomcast_queue_depth Requests waiting for a worker.\n# TYPE roomcast_queue_depth gauge\nroomcast_queue_depth {waiting}"
    );
    // (+ 0.0: an empty sum of floats is -0.)
    let budget: f64 = workers.iter().map(|w| w.budget).sum::<f64>() + 0.0;
    let used: f64 = workers.iter().map(|w| w.used).sum::<f64>() + 0.0;
    let free: f64 = workers.iter().map(|w| w.free()).sum::<f64>() + 0.0;
    let _ = writeln!(
        out,
        "# HELP roomcast_workers Workers heart-beating.\n# TYPE roomcast_workers gauge\nroomcast_workers {}",
        workers.len()
    );
    let _ = writeln!(
        out,
        "# HELP roomcast_capacity_cores Fleet CPU budget in cores.\n# TYPE roomcast_capacity_cores gauge\n\
         roomcast_capacity_cores{{kind=\"budget\"}} {budget}\n\
         roomcast_capacity_cores{{kind=\"used\"}} {used}\n\
         roomcast_capacity_cores{{kind=\"free\"}} {free}"
    );
    let _ = writeln!(
        out,
        "# HELP roomcast_job_realtime_factor Media seconds produced per wall-clock second.\n# TYPE roomcast_job_realtime_factor gauge"
    );
    for j in jobs.iter().filter(|j| j.state == JobState::Active) {
        if let Some(r) = j.realtime_factor {
            let _ = writeln!(
                out,
                "roomcast_job_realtime_factor{{job=\"{}\",room=\"{}\"}} {r:.3}",
                label(&j.id),
                label(&j.spec.room_id)
            );
        }
    }
    feed_metrics(&mut out, &jobs);
    hls_metrics(&mut out, &jobs);
    let mut failures: BTreeMap<u16, usize> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.state == JobState::Failed) {
        *failures.entry(j.result).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "# HELP roomcast_job_failures Failed jobs on record (within the retention), by code.\n# TYPE roomcast_job_failures gauge"
    );
    for (code, n) in failures {
        let _ = writeln!(out, "roomcast_job_failures{{code=\"{code}\"}} {n}");
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// `roomcast_hls_*`: the live HLS output of every running job that has one.
fn hls_metrics(out: &mut String, jobs: &[crate::queue::Job]) {
    let running = || {
        jobs.iter()
            .filter(|j| j.state == JobState::Active)
            .filter_map(|j| j.hls.as_ref().map(|h| (j, h)))
    };
    type Value = fn(&crate::model::hls::HlsStatus) -> f64;
    let series: [(&str, &str, Value); 4] = [
        ("segments", "Segments the job's HLS output has cut.", |h| {
            f64::from(h.segments)
        }),
        ("duration_seconds", "Seconds of media in them.", |h| {
            h.duration_s
        }),
        (
            "latency_seconds",
            "How long the newest segment's first frame waited to be listed in the playlist.",
            |h| h.latency_ms as f64 / 1000.0,
        ),
        (
            "max_latency_seconds",
            "The longest such wait of the output so far.",
            |h| h.max_latency_ms as f64 / 1000.0,
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP roomcast_hls_{name} {help}\n# TYPE roomcast_hls_{name} gauge"
        );
        for (j, h) in running() {
            let _ = writeln!(
                out,
                "roomcast_hls_{name}{{job=\"{}\",room=\"{}\"}} {}",
                label(&j.id),
                label(&j.spec.room_id),
                value(h)
            );
        }
    }
}

/// `roomcast_feed_*`: the health of every track running jobs receive over the network, as
/// their records last say.
fn feed_metrics(out: &mut String, jobs: &[crate::model::job::Job]) {
    use crate::model::feed::FeedHealth;
    type Value = fn(&FeedHealth) -> f64;
    let series: [(&str, &str, &str, Value); 9] = [
        (
            "packets_received_total",
            "counter",
            "RTP packets received.",
            |f| f.packets_received as f64,
        ),
        ("packets_lost_total", "counter", "RTP packets lost.", |f| {
            f.packets_lost as f64
        }),
        ("jitter_seconds", "gauge", "Interarrival jitter.", |f| {
            f.jitter_ms / 1000.0
        }),
        (
            "nacks_sent_total",
            "counter",
            "Retransmission requests (NACK) sent.",
            |f| f.nacks_sent as f64,
        ),
        (
            "plis_sent_total",
            "counter",
            "Keyframe requests (PLI) sent.",
            |f| f.plis_sent as f64,
        ),
        (
            "fps",
            "gauge",
            "Decoded frames (audio: buffers) per second while shown.",
            |f| f.fps,
        ),
        ("bitrate_bps", "gauge", "Received bitrate.", |f| {
            f.bitrate_kbps * 1000.0
        }),
        (
            "freezes_total",
            "counter",
            "Video stalls longer than 500 ms while shown.",
            |f| f.freezes as f64,
        ),
        (
            "degraded",
            "gauge",
            "1 while frozen or losing more than 5 % of packets.",
            |f| f64::from(u8::from(f.degraded)),
        ),
    ];
    let active: Vec<_> = jobs
        .iter()
        .filter(|j| j.state == JobState::Active && !j.feeds.is_empty())
        .collect();
    for (name, kind, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP roomcast_feed_{name} {help}\n# TYPE roomcast_feed_{name} {kind}"
        );
        for j in &active {
            for f in &j.feeds {
                let _ = writeln!(
                    out,
                    "roomcast_feed_{name}{{job=\"{}\",room=\"{}\",participant=\"{}\",kind=\"{}\"}} {}",
                    label(&j.id),
                    label(&j.spec.room_id),
                    label(&f.participant),
                    label(&f.kind),
                    value(f)
                );
            }
        }
    }
}

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
//!
//! Files: [`spec`] (what it is given and how it ends), [`recorder`] (track files and the
//! manifest); this file runs a recording in a joined room.

mod recorder;
mod spec;

pub use recorder::write_manifest;
pub use spec::{IndividualEnd, IndividualOutcome, IndividualSpec, MANIFEST_FILE};

use crate::model::manifest::{Manifest, MANIFEST_VERSION};
use crate::room::RoomConnector;
use crate::{Error, Result};
use gst::prelude::*;
use recorder::*;
use spec::*;
use std::collections::HashMap;
use std::time::Duration;
use tracing::info;

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
mod tests;

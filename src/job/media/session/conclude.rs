//! A member's result once its outputs have ended ([`conclude`]): its file finalized —
//! whatever went wrong, what reached it is kept — then the error or the recording.

use crate::codes::Code;
use crate::job::spec::{EndReason, Recording, RecordingSpec};
use crate::pipeline::mp4::finalize_with_audio_delay;
use crate::pipeline::rtmp::DestinationStatus;
use crate::pipeline::PipelineError;
use crate::Error;
use std::path::PathBuf;
use tracing::{info, warn};

/// A member's result once its outputs have ended: its file finalized (whatever went wrong,
/// what reached it is kept), then the error or the recording.
pub(super) async fn conclude(
    spec: &RecordingSpec,
    path: Option<PathBuf>,
    ended: Result<EndReason, Error>,
    destinations: Vec<DestinationStatus>,
    audio_delay: i64,
) -> Result<Recording, Error> {
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
        Some(p) => tokio::task::spawn_blocking(move || {
            finalize_with_audio_delay(&p, audio_delay).map(Some)
        })
        .await
        .map_err(|e| PipelineError::setup(format!("finalize task: {e}")))?,
        None => Ok(None),
    };
    let reason = match ended {
        Ok(reason) => reason,
        Err(e) => {
            match &finalized {
                Ok(Some(f)) => warn!(file = %f.path.display(), error = %e,
                    "recording failed; what was recorded is kept"),
                Ok(None) => warn!(error = %e, "the job failed; no media file to keep"),
                Err(fe) => warn!(file = %shown(&path), error = %e, finalize = %fe,
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

pub(super) fn shown(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A copy of `e` for another member ending for the same cause.
pub(super) fn share(e: &Error) -> Error {
    Error::Job {
        code: e.code(),
        message: e.to_string(),
    }
}

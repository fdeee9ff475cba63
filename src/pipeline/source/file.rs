//! A track file read back (an individual recording's Matroska file): decoded from disk and
//! placed on its segment's timeline, for a transcode's composite.

use super::{raw_audio_caps, SourceContext, TrackSource};
use crate::pipeline::{make_unnamed as make, PipelineError};
use gst::prelude::*;
use std::path::PathBuf;

/// A track file decoded from disk, its first frame at `start` on the composite's timeline.
#[derive(Debug, Clone)]
pub struct FileTrack {
    /// The file.
    pub path: PathBuf,
    /// Audio (else video).
    pub audio: bool,
    /// Where its first frame belongs in the composite's running time.
    pub start: gst::ClockTime,
}

impl TrackSource for FileTrack {
    /// `filesrc ! decodebin ! convert ! caps`, the bin's pad offset by the file's start.
    fn build(&self, _ctx: &SourceContext) -> Result<gst::Element, PipelineError> {
        let bin = gst::Bin::new();
        let src = make("filesrc")?;
        src.set_property("location", self.path.to_string_lossy().to_string());
        let decode = make("decodebin")?;
        let (tail, caps) = if self.audio {
            (
                vec![make("audioconvert")?, make("audioresample")?],
                raw_audio_caps(),
            )
        } else {
            (
                vec![make("videoconvert")?],
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .build(),
            )
        };
        let filter = make("capsfilter")?;
        filter.set_property("caps", caps);
        bin.add_many([&src, &decode])
            .map_err(PipelineError::setup)?;
        bin.add_many(&tail).map_err(PipelineError::setup)?;
        bin.add(&filter).map_err(PipelineError::setup)?;
        src.link(&decode).map_err(PipelineError::setup)?;
        let mut chain: Vec<&gst::Element> = tail.iter().collect();
        chain.push(&filter);
        gst::Element::link_many(chain.iter().copied()).map_err(PipelineError::setup)?;
        let first = tail[0].downgrade();
        decode.connect_pad_added(move |_, pad| {
            let Some(first) = first.upgrade() else { return };
            if let Some(sink) = first.static_pad("sink") {
                if !sink.is_linked() {
                    let _ = pad.link(&sink);
                }
            }
        });
        let target = filter
            .static_pad("src")
            .ok_or_else(|| PipelineError::setup("capsfilter src"))?;
        let ghost = gst::GhostPad::builder_with_target(&target)
            .map_err(PipelineError::setup)?
            .name("src")
            .build();
        ghost.set_offset(i64::try_from(self.start.nseconds()).unwrap_or(i64::MAX));
        bin.add_pad(&ghost).map_err(PipelineError::setup)?;
        Ok(bin.upcast())
    }
}

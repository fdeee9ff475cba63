//! A track source that counts what it delivers: the frames (video) or buffers (audio) a
//! generated participant's track gave the recording, for the same health figures a received
//! track reports.

use super::{SourceContext, TrackSource};
use crate::pipeline::PipelineError;
use gst::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Wraps `inner`; every buffer leaving an element it builds adds one to `count`.
#[derive(Debug)]
pub struct CountedSource {
    inner: Box<dyn TrackSource>,
    count: Arc<AtomicU64>,
}

impl CountedSource {
    /// `inner`, counted into `count`.
    pub fn new(inner: Box<dyn TrackSource>, count: Arc<AtomicU64>) -> CountedSource {
        CountedSource { inner, count }
    }

    fn counted(&self, element: gst::Element) -> gst::Element {
        if let Some(pad) = element.static_pad("src") {
            let count = self.count.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                count.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        element
    }
}

impl TrackSource for CountedSource {
    fn build(&self, ctx: &SourceContext) -> Result<gst::Element, PipelineError> {
        self.inner.build(ctx).map(|e| self.counted(e))
    }

    fn release(&self) {
        self.inner.release()
    }

    fn build_encoded(&self, ctx: &SourceContext) -> Result<Option<gst::Element>, PipelineError> {
        Ok(self.inner.build_encoded(ctx)?.map(|e| self.counted(e)))
    }

    fn release_encoded(&self) {
        self.inner.release_encoded()
    }
}

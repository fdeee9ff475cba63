//! A web page drawn over the composite: WPE WebKit renders it in a pipeline of its own
//! ([`PageView`]), and what it draws reaches the recording as an overlay ([`PageOverlay`])
//! blended onto the composited frames before they are encoded.
//!
//! The page's pipeline is apart from the recording's so a page that crashes, hangs or errors
//! cannot stop or blank the recording: its frames stop arriving, and the overlay keeps the last
//! one until the owner clears it. Only the part of a frame the page actually draws on (its
//! bounding box of non-transparent pixels) is blended, and only a frame that differs from the
//! previous one is prepared again, so a static overlay costs a small blend per output frame.

use super::{bridge, make, PipelineError};
use gst::prelude::*;
use std::sync::{Arc, Mutex};

/// Frames per second the page is rendered at.
pub const PAGE_FPS: u32 = 15;

/// The page's latest drawing, ready to blend onto every composited frame.
#[derive(Default)]
pub struct PageOverlay {
    inner: Mutex<OverlayState>,
}

#[derive(Default)]
struct OverlayState {
    composition: Option<gst_video::VideoOverlayComposition>,
    /// The last frame's bytes, to skip frames that did not change.
    last: Vec<u8>,
    frames: u64,
}

impl PageOverlay {
    /// What to draw now (None: nothing).
    pub fn composition(&self) -> Option<gst_video::VideoOverlayComposition> {
        self.lock().composition.clone()
    }

    /// Frames received from the page so far.
    pub fn frames(&self) -> u64 {
        self.lock().frames
    }

    /// Draws nothing from now on.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.composition = None;
        s.last.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OverlayState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a BGRA frame of `width`×`height` (premultiplied alpha, as WebKit draws).
    fn set_frame(&self, buffer: &gst::BufferRef, width: u32, height: u32) {
        let Ok(map) = buffer.map_readable() else {
            return;
        };
        let data = map.as_slice();
        let stride = width as usize * 4;
        if data.len() < stride * height as usize {
            return;
        }
        let mut s = self.lock();
        s.frames += 1;
        if s.last.as_slice() == data {
            return;
        }
        s.last.clear();
        s.last.extend_from_slice(data);
        s.composition = overlay_of(data, width, height);
    }
}

/// The smallest rectangle holding every pixel with alpha, as an overlay composition.
fn overlay_of(data: &[u8], width: u32, height: u32) -> Option<gst_video::VideoOverlayComposition> {
    let (w, h) = (width as usize, height as usize);
    let stride = w * 4;
    let row_drawn = |y: usize| {
        data[y * stride..(y + 1) * stride]
            .chunks_exact(4)
            .any(|p| p[3] != 0)
    };
    let top = (0..h).find(|&y| row_drawn(y))?;
    let bottom = (top..h).rev().find(|&y| row_drawn(y))?;
    let mut left = w;
    let mut right = 0;
    for y in top..=bottom {
        let row = &data[y * stride..(y + 1) * stride];
        if let Some(x) = row.chunks_exact(4).position(|p| p[3] != 0) {
            left = left.min(x);
        }
        if let Some(x) = row.chunks_exact(4).rposition(|p| p[3] != 0) {
            right = right.max(x);
        }
    }
    // Even edges keep the blend aligned with 4:2:0 chroma.
    let left = left & !1;
    let top = top & !1;
    let right = ((right + 2) & !1).min(w);
    let bottom = ((bottom + 2) & !1).min(h);
    let (cw, ch) = (right - left, bottom - top);
    let mut out = Vec::with_capacity(cw * ch * 4);
    for y in top..bottom {
        out.extend_from_slice(&data[y * stride + left * 4..y * stride + right * 4]);
    }
    let mut buffer = gst::Buffer::from_mut_slice(out);
    {
        let b = buffer.get_mut()?;
        gst_video::VideoMeta::add(
            b,
            gst_video::VideoFrameFlags::empty(),
            gst_video::VideoFormat::Bgra,
            cw as u32,
            ch as u32,
        )
        .ok()?;
    }
    let rect = gst_video::VideoOverlayRectangle::new_raw(
        &buffer,
        left as i32,
        top as i32,
        cw as u32,
        ch as u32,
        gst_video::VideoOverlayFormatFlags::PREMULTIPLIED_ALPHA,
    );
    gst_video::VideoOverlayComposition::new(Some(&rect)).ok()
}

/// The element that blends `overlay` onto every frame passing through it.
pub(crate) fn overlay_element(overlay: Arc<PageOverlay>) -> Result<gst::Element, PipelineError> {
    let element = make("overlaycomposition", "page_overlay")?;
    element.connect("draw", false, move |_| {
        Some(overlay.composition().to_value())
    });
    Ok(element)
}

/// What a page pipeline reports besides frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageViewEvent {
    /// It failed (load error, renderer crash): the message.
    Failed(String),
}

/// A page rendered by WPE WebKit in a pipeline of its own, its frames going to a
/// [`PageOverlay`]. Stopped (and its renderer ended) when dropped.
pub struct PageView {
    pipeline: gst::Pipeline,
    source: gst::Element,
    watch: Option<std::thread::JoinHandle<()>>,
}

impl PageView {
    /// Starts rendering `url` at `width`×`height`; frames go to `overlay`, failures to
    /// `on_event` (called from a thread of the view's own).
    pub fn start(
        url: &str,
        width: u32,
        height: u32,
        overlay: Arc<PageOverlay>,
        on_event: impl Fn(PageViewEvent) + Send + 'static,
    ) -> Result<PageView, PipelineError> {
        let pipeline = gst::Pipeline::with_name("page");
        let source = make("wpesrc", "page_source")?;
        source.set_property("location", url);
        source.set_property("draw-background", false);
        let caps = make("capsfilter", "page_caps")?;
        // System memory (not GL) is what a machine without a GPU can give; BGRA keeps alpha.
        caps.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "BGRA")
                .field("width", width as i32)
                .field("height", height as i32)
                .field("framerate", gst::Fraction::new(PAGE_FPS as i32, 1))
                .build(),
        );
        let sink = bridge::sink(
            Some("page_sink"),
            None,
            1,
            move |sample| {
                if let Some(buffer) = sample.buffer() {
                    overlay.set_frame(buffer, width, height);
                }
            },
            || {},
        );
        pipeline
            .add_many([&source, &caps, sink.upcast_ref()])
            .map_err(PipelineError::setup)?;
        source.link(&caps).map_err(PipelineError::setup)?;
        caps.link(&sink).map_err(PipelineError::setup)?;
        let bus = pipeline
            .bus()
            .ok_or_else(|| PipelineError::setup("no bus"))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(PipelineError::setup)?;
        let watch = std::thread::Builder::new()
            .name("page-bus".into())
            .spawn(move || {
                for msg in bus.iter_timed(gst::ClockTime::NONE) {
                    match msg.view() {
                        gst::MessageView::Error(e) => {
                            on_event(PageViewEvent::Failed(format!(
                                "{} ({})",
                                e.error(),
                                e.debug().map(|d| d.to_string()).unwrap_or_default()
                            )));
                            break;
                        }
                        gst::MessageView::Eos(_) => {
                            on_event(PageViewEvent::Failed("the page stopped rendering".into()));
                            break;
                        }
                        gst::MessageView::Application(_) => break,
                        _ => {}
                    }
                }
            })
            .map_err(|e| PipelineError::setup(format!("page bus thread: {e}")))?;
        Ok(PageView {
            pipeline,
            source,
            watch: Some(watch),
        })
    }

    /// Runs `script` in the page (no result comes back).
    pub fn run_javascript(&self, script: &str) {
        self.source.emit_by_name::<()>("run-javascript", &[&script]);
    }
}

impl Drop for PageView {
    fn drop(&mut self) {
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.post(gst::message::Application::new(gst::Structure::new_empty(
                "roomcast-page-stop",
            )));
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(w) = self.watch.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_covers_only_what_the_page_draws() {
        gst::init().unwrap();
        let (w, h) = (64u32, 32u32);
        let mut data = vec![0u8; (w * h * 4) as usize];
        assert!(overlay_of(&data, w, h).is_none());
        for y in 10..20 {
            for x in 5..30 {
                let i = ((y * w + x) * 4) as usize;
                data[i..i + 4].copy_from_slice(&[0, 0, 255, 255]);
            }
        }
        let c = overlay_of(&data, w, h).unwrap();
        let r = c.rectangle(0).unwrap();
        let (x, y, rw, rh) = r.render_rectangle();
        assert_eq!((x, y), (4, 10));
        assert_eq!((rw, rh), (26, 10));
    }
}

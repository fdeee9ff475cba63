//! Sizes and shapes: caps of the canvas and of a tile, how a tile's picture is cropped to its
//! slot ([`CropTarget`]), a PNG's size, linking two pads.

use crate::layout::{Canvas, Fit};
use crate::pipeline::{raw_video_caps, PipelineError};
use gst::prelude::*;
use std::path::Path;

pub(super) fn link_pads(src: &gst::Pad, sink: &gst::Pad) -> Result<(), PipelineError> {
    src.link(sink)
        .map(|_| ())
        .map_err(|e| PipelineError::Setup(format!("link: {e:?}")))
}

pub(super) fn caps_video(canvas: Canvas, fps: u32) -> gst::Caps {
    raw_video_caps(canvas.width, canvas.height, Some(fps))
}

pub(super) fn tile_caps(w: u32, h: u32) -> gst::Caps {
    raw_video_caps(w, h, None)
}

/// What a tile's crop needs: the input's size and the slot's shape.
///
/// The crop is only ever applied on the tile's streaming thread (from a probe in front of the
/// `videobox`), never from the thread that lays out tiles: changing a running `videobox`'s
/// borders from another thread while it transforms a frame writes outside the frame (heap
/// corruption, seen with twenty tiles resized at once).
#[derive(Debug, Default)]
pub(super) struct CropTarget {
    pub(super) source: Option<(u32, u32)>,
    pub(super) slot: Option<(u32, u32, Fit)>,
    pub(super) applied: Option<(i32, i32, i32, i32)>,
}

impl CropTarget {
    /// Pixels to cut (left, right, top, bottom) so the input has the slot's aspect ratio.
    pub(super) fn crop(&self) -> (i32, i32, i32, i32) {
        let (Some((sw, sh)), Some((w, h, Fit::Crop))) = (self.source, self.slot) else {
            return (0, 0, 0, 0);
        };
        let (sw, sh, w, h) = (sw as u64, sh as u64, w as u64, h as u64);
        if sw * h > w * sh {
            // Input wider than the slot: cut the sides.
            let keep = (sh * w / h).max(2) & !1;
            let cut = sw.saturating_sub(keep) as i32;
            (cut / 2, cut - cut / 2, 0, 0)
        } else {
            let keep = (sw * h / w).max(2) & !1;
            let cut = sh.saturating_sub(keep) as i32;
            (0, 0, cut / 2, cut - cut / 2)
        }
    }

    /// Sets the borders that changed since the last call (streaming thread only).
    pub(super) fn apply(&mut self, videobox: &gst::Element) {
        let want = self.crop();
        if self.applied == Some(want) {
            return;
        }
        let (l, r, t, b) = want;
        for (name, v) in [("left", l), ("right", r), ("top", t), ("bottom", b)] {
            if videobox.property::<i32>(name) != v {
                videobox.set_property(name, v);
            }
        }
        self.applied = Some(want);
    }
}

/// Reads a PNG's size from its header (the first 24 bytes; the file is not read whole).
pub fn png_size(path: &Path) -> Result<(u32, u32), PipelineError> {
    use std::io::Read;
    let bad = |m: String| PipelineError::Invalid {
        field: "watermark".into(),
        message: m,
    };
    let mut head = [0u8; 24];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    crate::util::png_header_size(&head)
        .ok_or_else(|| bad(format!("{} is not a PNG file", path.display())))
}

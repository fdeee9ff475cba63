//! Layout previews: the real compositor draws numbered, coloured placeholder tiles into a PNG.

use super::composite::Output;
use super::source::TestVideo;
use super::source::{Timing, PALETTE, SCREEN_COLOR};
use super::{Composite, CompositeOptions, PipelineError, Preset};
use crate::layout::{parse_color, Layout, SlotContent, Tile, TileId};
use gst::prelude::*;
use std::path::Path;
use std::time::Duration;

/// Longest a preview render may take.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(30);

/// What a custom view page makes of a preview: given the composite's page overlay and canvas,
/// it shows the page there and answers the layout its marked tiles make (None: the layout).
pub type PagePreview<'a> = &'a dyn Fn(
    std::sync::Arc<super::page::PageOverlay>,
    crate::layout::Canvas,
) -> Result<Option<Layout>, PipelineError>;

/// Renders `layout` with `participants` tiles (and a screen share if asked) into `out`, under
/// a custom view page if `page` is given.
pub fn render(
    layout: &Layout,
    preset: &Preset,
    participants: usize,
    screen_share: bool,
    out: &Path,
    page: Option<PagePreview>,
) -> Result<(), PipelineError> {
    if preset.video.is_none() {
        return Err(PipelineError::Invalid {
            field: "preset".into(),
            message: "an audio-only preset has no canvas to preview".into(),
        });
    }
    let mut tiles: Vec<Tile> = (0..participants)
        .map(|i| Tile::new(&format!("p{}", i + 1), &format!("{}", i + 1), i as u64))
        .collect();
    if screen_share && participants > 0 {
        let mut t = Tile::new("p1", "1", 0);
        t.id = TileId::screen("p1");
        tiles.push(t);
    }
    let def = layout.active_def(&tiles).clone();
    let opts = CompositeOptions {
        preset: preset.clone(),
        timing: Timing::Offline {
            duration: gst::ClockTime::from_mseconds(1),
        },
        output: Output::Png(out.to_path_buf()),
        background: def.background.as_deref().and_then(parse_color).unwrap_or(0),
        background_image: def.background_image.clone(),
        label: def.label.clone(),
        watermark: None,
        page_layer: page.is_some(),
    };
    let mut comp = Composite::new(&opts)?;
    let placed = match (page, comp.page_overlay()) {
        (Some(show), Some(overlay)) => show(overlay, comp.canvas())?,
        _ => None,
    };
    let layout = placed.as_ref().unwrap_or(layout);
    let slots = layout.place(comp.canvas(), &tiles);
    for s in &slots {
        if let SlotContent::Tile { id, .. } = &s.content {
            let idx: usize = id.participant.trim_start_matches('p').parse().unwrap_or(1);
            let color = if id.screen {
                SCREEN_COLOR
            } else {
                PALETTE[(idx - 1) % PALETTE.len()]
            };
            let src = Box::new(TestVideo {
                name: format!("preview_{id}"),
                color,
                moving_marker: false,
                flash: false,
                width: 640,
                height: 360,
                fps: 30,
                pattern: None,
            });
            comp.add_video(id, src)?;
        }
    }
    comp.apply(&slots)?;
    let pipeline = comp.pipeline().clone();
    pipeline
        .set_state(gst::State::Playing)
        .map_err(PipelineError::setup)?;
    let r = super::bus::wait_eos_blocking(&pipeline, PREVIEW_TIMEOUT, "render the preview");
    let _ = pipeline.set_state(gst::State::Null);
    r
}

//! What lies under the tiles: a colour or an image, swapped while playing.

use super::*;

impl Composite {
    pub(super) fn build_background(
        &mut self,
        opts: &CompositeOptions,
    ) -> Result<(), PipelineError> {
        if self.compositor.is_none() {
            return Ok(());
        }
        let ctx = self.source_context(gst::ClockTime::ZERO);
        match &opts.background_image {
            Some(img) => {
                let bin = self.background_image(img, &ctx)?;
                self.attach_background(bin, None)
            }
            None => self.attach_color_background(opts.background, &ctx),
        }
    }

    pub(super) fn attach_color_background(
        &mut self,
        color: u32,
        ctx: &SourceContext,
    ) -> Result<(), PipelineError> {
        self.background_seq += 1;
        let bin = test_video(
            &TestVideo {
                name: format!("background{}", self.background_seq),
                color,
                moving_marker: false,
                flash: false,
                width: self.canvas.width,
                height: self.canvas.height,
                fps: self.fps,
                pattern: None,
            },
            ctx,
        )?;
        self.attach_background(bin, Some(color))
    }

    /// Links a new background below every tile, then removes the previous one. With a page
    /// layer, a page that asks to be the background replaces its picture.
    pub(super) fn attach_background(
        &mut self,
        element: gst::Element,
        color: Option<u32>,
    ) -> Result<(), PipelineError> {
        let Some(comp) = self.compositor.clone() else {
            return Ok(());
        };
        if let Some(overlay) = &self.page {
            let src = element
                .static_pad("src")
                .ok_or_else(|| PipelineError::setup("background src"))?;
            crate::pipeline::page::draw_below(overlay.clone(), &src, self.canvas_info()?);
        }
        self.add(&[&element])?;
        let pad = comp
            .request_pad_simple("sink_%u")
            .ok_or_else(|| PipelineError::setup("pad"))?;
        pad.set_property("zorder", 0u32);
        let src = element
            .static_pad("src")
            .ok_or_else(|| PipelineError::setup("background src"))?;
        link_pads(&src, &pad)?;
        element
            .sync_state_with_parent()
            .map_err(PipelineError::setup)?;
        let old = self.background.replace(Background {
            element,
            pad,
            color,
        });
        if let Some(old) = old {
            let bin = old
                .element
                .downcast::<gst::Bin>()
                .map_err(|_| PipelineError::setup("bin"))?;
            self.detach(&bin, &old.pad, &self.video_releases)?;
        }
        Ok(())
    }

    pub(super) fn background_image(
        &self,
        img: &Path,
        ctx: &SourceContext,
    ) -> Result<gst::Element, PipelineError> {
        let ext = img
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let dec = match ext.as_str() {
            "png" => "pngdec",
            "jpg" | "jpeg" => "jpegdec",
            _ => {
                return Err(PipelineError::Invalid {
                    field: "background_image".into(),
                    message: "must be a .png or .jpg file".into(),
                })
            }
        };
        let src = make("filesrc", "bg_file")?;
        src.set_property("location", img.to_string_lossy().to_string());
        let dec = make(dec, "bg_dec")?;
        let conv = make("videoconvert", "bg_convert")?;
        let scale = make("videoscale", "bg_scale")?;
        let caps = make("capsfilter", "bg_caps")?;
        caps.set_property("caps", tile_caps(self.canvas.width, self.canvas.height));
        let freeze = make("imagefreeze", "bg_freeze")?;
        freeze.set_property("is-live", ctx.timing == Timing::Live);
        if let Timing::Offline { duration } = ctx.timing {
            let n = (duration.nseconds() as f64 / 1e9 * self.fps as f64)
                .round()
                .max(1.0);
            freeze.set_property("num-buffers", n as i32);
        }
        let rate = make("capsfilter", "bg_rate")?;
        rate.set_property("caps", caps_video(self.canvas, self.fps));
        let bin = gst::Bin::builder().name("background_image").build();
        let els = [&src, &dec, &conv, &scale, &caps, &freeze, &rate];
        bin.add_many(els).map_err(PipelineError::setup)?;
        gst::Element::link_many(els).map_err(PipelineError::setup)?;
        expose(&bin, &rate, "src")?;
        Ok(bin.upcast())
    }

    /// Sets the background colour (0xRRGGBB). A colour source is replaced, never changed in
    /// place: `videotestsrc` renders from a cached frame that a property change races with.
    /// An image background stays.
    pub fn set_background(&mut self, color: u32) -> Result<(), PipelineError> {
        match &self.background {
            Some(bg) if bg.color.is_none_or(|c| c == color) => Ok(()),
            _ => {
                let ctx = self.source_context(LIVE_START_MARGIN);
                self.attach_color_background(color, &ctx)
            }
        }
    }
}

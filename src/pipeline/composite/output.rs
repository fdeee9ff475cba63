//! Encoders and outputs: the compositor and mixer feed the preset's encoders; the encoded
//! streams fan out to the MP4 sink and to the taps RTMP destinations read from.

use super::*;

impl Composite {
    /// One encode, many outputs: a tee after the parser feeding the MP4 muxer (through a queue)
    /// and any streaming taps added later ([`Composite::add_tap`]).
    pub(super) fn fan_out(
        &self,
        parse: &gst::Element,
        mux: Option<&gst::Element>,
        kind: &str,
    ) -> Result<(), PipelineError> {
        let tee = make("tee", &format!("{kind}_tee"))?;
        tee.set_property("allow-not-linked", true);
        self.add(&[&tee])?;
        parse.link(&tee).map_err(PipelineError::setup)?;
        if let Some(mux) = mux {
            let q = make("queue", &format!("mp4_{kind}_queue"))?;
            self.add(&[&q])?;
            gst::Element::link_many([&tee, &q, mux]).map_err(PipelineError::setup)?;
            // The running time of the first buffer each track gives the muxer.
            let slot = usize::from(kind != "video");
            let starts = self.mp4_starts.clone();
            q.static_pad("src")
                .ok_or_else(|| PipelineError::setup("mp4 queue src"))?
                .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                    let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let running = pad.sticky_event::<gst::event::Segment>(0).and_then(|e| {
                        e.segment()
                            .downcast_ref::<gst::ClockTime>()
                            .and_then(|s| s.to_running_time(pts))
                    });
                    if let Some(t) = running {
                        starts.lock().unwrap_or_else(|e| e.into_inner())[slot] = Some(t.nseconds());
                    }
                    gst::PadProbeReturn::Remove
                });
        }
        Ok(())
    }

    /// The muxer and its file (or, without a path, a sink that drops what it gets: the muxer
    /// stays so that end-of-stream and timing behave exactly as when recording).
    pub(super) fn build_mp4_sink(
        &self,
        path: Option<&Path>,
    ) -> Result<gst::Element, PipelineError> {
        let mux = make("mp4mux", "mp4_mux")?;
        mux.set_property("fragment-duration", FRAGMENT_MS);
        // The muxer is an aggregator: in a live pipeline it would start on a timeout with only
        // the (faster) audio branch and write a header whose video track has no format. Give
        // the encoders time to deliver their first buffers.
        mux.set_property("latency", MUXER_LATENCY.nseconds());
        mux.set_property_from_str("start-time-selection", "first");
        let sink = match path {
            Some(path) => {
                let sink = make("filesink", "mp4_sink")?;
                sink.set_property("location", path.to_string_lossy().to_string());
                // Each fragment goes to the kernel as it is written: a killed process loses
                // nothing that the muxer finished.
                sink.set_property_from_str("buffer-mode", "unbuffered");
                sink
            }
            None => make("fakesink", "mp4_sink")?,
        };
        sink.set_property("sync", false);
        sink.set_property("async", false);
        self.add(&[&mux, &sink])?;
        mux.link(&sink).map_err(PipelineError::setup)?;
        Ok(mux)
    }

    pub(super) fn build_video(
        &mut self,
        opts: &CompositeOptions,
        mux: Option<&gst::Element>,
    ) -> Result<(), PipelineError> {
        let comp = make("compositor", "video_mixer")?;
        comp.set_property_from_str("background", "black");
        comp.set_property("ignore-inactive-pads", true);
        // Start from the first buffer, not from running time zero: while the pipeline goes to
        // PLAYING an aggregator can see the clock before its base time and, counting from
        // zero, would time out at once and produce garbage or EOS.
        comp.set_property_from_str("start-time-selection", "first");
        if self.timing == Timing::Live {
            comp.set_property("latency", AGGREGATOR_LATENCY.nseconds());
        }
        let caps = make("capsfilter", "video_mixer_caps")?;
        caps.set_property("caps", caps_video(self.canvas, self.fps));
        self.add(&[&comp, &caps])?;
        comp.link(&caps).map_err(PipelineError::setup)?;
        // A web page's drawing goes over the tiles and under the watermark (nothing is drawn
        // while no page is shown).
        let mut last = caps;
        if let Some(overlay) = &self.page {
            let src = last
                .static_pad("src")
                .ok_or_else(|| PipelineError::setup("video_mixer_caps src"))?;
            crate::pipeline::page::draw_over(overlay.clone(), &src, self.canvas_info()?);
        }
        if let Some(wm) = &opts.watermark {
            let (w, h) = png_size(wm)?;
            if w > WATERMARK_MAX_PX || h > WATERMARK_MAX_PX {
                return Err(PipelineError::Invalid {
                    field: "watermark".into(),
                    message: format!(
                        "{w}x{h} is larger than {WATERMARK_MAX_PX}x{WATERMARK_MAX_PX} pixels"
                    ),
                });
            }
            let overlay = make("gdkpixbufoverlay", "watermark")?;
            overlay.set_property("location", wm.to_string_lossy().to_string());
            overlay.set_property(
                "offset-x",
                self.canvas.width as i32 - w as i32 - WATERMARK_MARGIN,
            );
            overlay.set_property("offset-y", WATERMARK_MARGIN);
            self.add(&[&overlay])?;
            last.link(&overlay).map_err(PipelineError::setup)?;
            last = overlay;
        }
        match (&opts.output, &opts.preset.video) {
            (Output::Png(path), _) => {
                let conv = make("videoconvert", "png_convert")?;
                let enc = make("pngenc", "png_enc")?;
                enc.set_property("snapshot", true);
                let sink = make("filesink", "png_sink")?;
                sink.set_property("location", path.to_string_lossy().to_string());
                self.add(&[&conv, &enc, &sink])?;
                gst::Element::link_many([&last, &conv, &enc, &sink])
                    .map_err(PipelineError::setup)?;
            }
            (Output::Mp4(_) | Output::Discard, Some(v)) => {
                let q = make("queue", "video_enc_queue")?;
                let enc = make("x264enc", "video_enc")?;
                enc.set_property_from_str("speed-preset", &v.speed_preset);
                enc.set_property_from_str("tune", "zerolatency");
                enc.set_property("bitrate", v.bitrate_kbps);
                enc.set_property("key-int-max", v.keyframe_interval);
                let enc_caps = make("capsfilter", "video_enc_caps")?;
                enc_caps.set_property(
                    "caps",
                    gst::Caps::builder("video/x-h264")
                        .field("profile", v.profile.as_str())
                        .build(),
                );
                let parse = make("h264parse", "video_parse")?;
                self.add(&[&q, &enc, &enc_caps, &parse])?;
                gst::Element::link_many([&last, &q, &enc, &enc_caps, &parse])
                    .map_err(PipelineError::setup)?;
                if let Some(pad) = q.static_pad("sink") {
                    self.frames = Some(crate::pipeline::snapshot::FrameTap::install(&pad));
                }
                self.fan_out(&parse, mux, "video")?;
            }
            (Output::Mp4(_) | Output::Discard, None) => {}
        }
        self.video_releases.install(&comp)?;
        self.compositor = Some(comp);
        self.build_background(opts)?;
        Ok(())
    }
}

//! Video inputs: live tiles, placeholders and the "+N" tile; their crop, scale, label and
//! place in the compositor, applied from a layout's slots.

use super::*;

impl Composite {
    /// Sets the label style used from the next [`Composite::apply`].
    pub fn set_label_style(&mut self, label: LabelStyle) {
        self.label = label;
    }

    /// Registers the video track of tile `id`. Nothing is built yet: the track is received,
    /// decoded and scaled only while a slot shows it (see [`Composite::apply`]), so a room of a
    /// hundred costs what its visible tiles cost.
    pub fn add_video(
        &mut self,
        id: &TileId,
        source: Box<dyn TrackSource>,
    ) -> Result<(), PipelineError> {
        self.remove_video(id)?;
        self.failures.remove(id);
        self.video_sources.insert(id.clone(), source);
        Ok(())
    }

    /// Forgets the video track of `id` (and takes it off screen).
    pub fn remove_video(&mut self, id: &TileId) -> Result<(), PipelineError> {
        self.detach_video(id)?;
        self.video_sources.remove(id);
        Ok(())
    }

    /// Takes the video of `id` out of the pipeline; the track stays registered.
    fn detach_video(&mut self, id: &TileId) -> Result<(), PipelineError> {
        let key = InputKey::Video(id.clone());
        if self.tiles.contains_key(&key) {
            self.remove_input(&key)?;
            if let Some(source) = self.video_sources.get(id) {
                source.release();
            }
        }
        Ok(())
    }

    /// Whether a tile's video is in the pipeline now (it is on screen).
    pub fn video_attached(&self, id: &TileId) -> bool {
        self.tiles.contains_key(&InputKey::Video(id.clone()))
    }

    pub(super) fn attach_tile(
        &mut self,
        key: InputKey,
        source: gst::Element,
    ) -> Result<(), PipelineError> {
        let Some(comp) = self.compositor.clone() else {
            return Ok(());
        };
        let n = key.element_name(self.seq());
        let bin = gst::Bin::builder().name(&n).build();
        let q = make("queue", &format!("{n}_queue"))?;
        let conv = make("videoconvert", &format!("{n}_convert"))?;
        let crop = make("videobox", &format!("{n}_crop"))?;
        let target: Arc<Mutex<CropTarget>> = Arc::default();
        let crop_weak = crop.downgrade();
        let probe_target = target.clone();
        let crop_sink = crop
            .static_pad("sink")
            .ok_or_else(|| PipelineError::setup("crop sink"))?;
        // The input's size (caps) and the slot's shape (set by `place`) decide the crop; it is
        // applied here, on the streaming thread, before the next frame enters the videobox.
        crop_sink.add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |_, info| {
                let Some(crop) = crop_weak.upgrade() else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut t = probe_target.lock().unwrap_or_else(|e| e.into_inner());
                match info.data {
                    Some(gst::PadProbeData::Event(ref ev)) => {
                        if let gst::EventView::Caps(c) = ev.view() {
                            let size = c.caps().structure(0).and_then(|s| {
                                Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
                            });
                            if let Some((w, h)) = size {
                                t.source = Some((w.max(1) as u32, h.max(1) as u32));
                                t.apply(&crop);
                            }
                        }
                    }
                    Some(gst::PadProbeData::Buffer(_)) => t.apply(&crop),
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        let scale = make("videoscale", &format!("{n}_scale"))?;
        let caps = make("capsfilter", &format!("{n}_caps"))?;
        caps.set_property("caps", tile_caps(320, 180));
        // On a layout change, frames already on their way at the old size stay acceptable
        // until the new size is negotiated.
        caps.set_property_from_str("caps-change-mode", "delayed");
        let label = make("textoverlay", &format!("{n}_label"))?;
        label.set_property("silent", true);
        label.set_property("auto-resize", false);
        label.set_property("shaded-background", true);
        label.set_property("wait-text", false);
        let els = [&source, &q, &conv, &crop, &scale, &caps, &label];
        bin.add_many(els).map_err(PipelineError::setup)?;
        gst::Element::link_many(els).map_err(PipelineError::setup)?;
        let ghost = expose(&bin, &label, "src")?;
        self.pipeline.add(&bin).map_err(PipelineError::setup)?;
        let pad = comp
            .request_pad_simple("sink_%u")
            .ok_or_else(|| PipelineError::setup("pad"))?;
        pad.set_property("alpha", 0.0f64);
        link_pads(ghost.upcast_ref(), &pad)?;
        // Started by `apply` once its geometry is set, so the first negotiation already has
        // the slot's size (changing caps while the first caps are in flight fails it).
        self.tiles.insert(
            key,
            TileInput {
                bin,
                pad,
                caps,
                target,
                label,
                placed: None,
                started: false,
            },
        );
        Ok(())
    }

    pub(super) fn remove_input(&mut self, key: &InputKey) -> Result<(), PipelineError> {
        let Some(input) = self.tiles.remove(key) else {
            return Ok(());
        };
        self.detach(&input.bin, &input.pad, &self.video_releases)
    }

    /// Takes an input out: hidden (or muted) at once, then stopped and removed on the
    /// composite's teardown thread ([`Teardowns`]), its mixer pad released by the mixer itself
    /// ([`PadReleases`]). Stopping waits for the input's streaming thread, which may sit in the
    /// mixer until the next output period; a hundred leaves in one burst must not hold the
    /// layout for that long each.
    pub(super) fn detach(
        &self,
        bin: &gst::Bin,
        pad: &gst::Pad,
        releases: &PadReleases,
    ) -> Result<(), PipelineError> {
        if pad.has_property("alpha") {
            pad.set_property("alpha", 0.0f64);
        }
        if pad.has_property("mute") {
            pad.set_property("mute", true);
        }
        let (bin, pad, releases) = (bin.clone(), pad.clone(), releases.clone());
        let pipeline = self.pipeline.clone();
        let retiring = self.retiring.clone();
        // From here on the input's state is its own. Its streaming thread may wait inside the
        // mixer pad for the mixer to take a frame, and stopping the input waits for that
        // thread; a pipeline stopping meanwhile would otherwise wait for the input's state
        // while the input waits for the paused mixer (each holding what the other needs), or
        // bring a half-stopped input back up. Locked, the pipeline passes it by, stops the
        // mixer, and the mixer's stopping pads let the thread go.
        bin.set_locked_state(true);
        retiring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bin.clone());
        let teardown = move || {
            // Stop the input's threads first so nothing pushes into a released pad.
            let _ = bin.set_state(gst::State::Null);
            let _ = pipeline.remove(&bin);
            // Ended, the mixer waits for it no more (an offline mix would otherwise wait for
            // its data forever, and never reach the release).
            let _ = pad.send_event(gst::event::Eos::new());
            releases.release(pad);
            retiring
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|b| b != &bin);
        };
        self.teardowns.run(Box::new(teardown))
    }

    pub(super) fn placeholder_source(&self, key: &InputKey) -> Result<gst::Element, PipelineError> {
        test_video(
            &TestVideo {
                name: key.element_name(0),
                color: PLACEHOLDER_COLOR,
                moving_marker: false,
                flash: false,
                width: 320,
                height: 180,
                fps: PLACEHOLDER_FPS,
                pattern: None,
            },
            &self.source_context(LIVE_START_MARGIN),
        )
    }

    /// Shows `slots`: every input not named by a slot is hidden (live video) or removed.
    pub fn apply(&mut self, slots: &[Slot]) -> Result<(), PipelineError> {
        if self.compositor.is_none() {
            return Ok(());
        }
        // Video leaves the pipeline when its tile leaves the screen, and is built when it
        // comes on: first out, then in, so a burst of joins never holds more than the screen.
        let shown: HashSet<TileId> = slots
            .iter()
            .filter_map(|s| match &s.content {
                SlotContent::Tile {
                    id,
                    show_video: true,
                    ..
                } => Some(id.clone()),
                _ => None,
            })
            .collect();
        let off_screen: Vec<TileId> = self
            .tiles
            .keys()
            .filter_map(|k| match k {
                InputKey::Video(id) if !shown.contains(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        for id in off_screen {
            self.detach_video(&id)?;
        }
        // Tracks that no slot shows spend nothing (a feed starts out decoding until this
        // says otherwise).
        for (id, source) in &self.video_sources {
            if !shown.contains(id) {
                source.release();
            }
        }
        for id in &shown {
            if self.video_attached(id) {
                continue;
            }
            let Some(source) = self.video_sources.get(id) else {
                continue;
            };
            let element = source.build(&self.next_source_context())?;
            self.attach_tile(InputKey::Video(id.clone()), element)?;
        }
        let mut used = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let (key, text, centered) = match &slot.content {
                SlotContent::Tile {
                    id,
                    show_video,
                    name,
                } => {
                    let video = InputKey::Video(id.clone());
                    if *show_video && self.tiles.contains_key(&video) {
                        (video, slot.label.clone(), false)
                    } else {
                        (InputKey::Placeholder(id.clone()), Some(name.clone()), true)
                    }
                }
                SlotContent::Overflow(n) => (InputKey::Overflow, Some(format!("+{n}")), true),
            };
            if !self.tiles.contains_key(&key) {
                let src = self.placeholder_source(&key)?;
                self.attach_tile(key.clone(), src)?;
            }
            let z = slot.z * 100 + i as u32 + 1;
            self.place(&key, slot, z, text.as_deref(), centered);
            used.push(key);
        }
        let unused: Vec<InputKey> = self
            .tiles
            .keys()
            .filter(|k| !used.contains(k))
            .cloned()
            .collect();
        for key in unused {
            match key {
                InputKey::Video(id) => self.detach_video(&id)?,
                _ => self.remove_input(&key)?,
            }
        }
        for t in self.tiles.values_mut().filter(|t| !t.started) {
            t.bin
                .sync_state_with_parent()
                .map_err(PipelineError::setup)?;
            t.started = true;
        }
        Ok(())
    }

    pub(super) fn place(
        &mut self,
        key: &InputKey,
        slot: &Slot,
        z: u32,
        text: Option<&str>,
        centered: bool,
    ) {
        let canvas_h = self.canvas.height;
        let style = self.label.clone();
        let Some(t) = self.tiles.get_mut(key) else {
            return;
        };
        let (w, h) = (slot.rect.w, slot.rect.h);
        let same_geometry = t
            .placed
            .as_ref()
            .is_some_and(|(s, _)| s.rect == slot.rect && s.fit == slot.fit);
        if !same_geometry {
            {
                let mut target = t.target.lock().unwrap_or_else(|e| e.into_inner());
                target.slot = Some((w, h, slot.fit));
            }
            t.caps.set_property("caps", tile_caps(w, h));
        }
        t.pad.set_property("xpos", slot.rect.x);
        t.pad.set_property("ypos", slot.rect.y);
        t.pad.set_property("width", w as i32);
        t.pad.set_property("height", h as i32);
        t.pad.set_property("zorder", z);
        t.pad.set_property("alpha", 1.0f64);
        match text {
            Some(text) if !text.is_empty() => {
                let px = if centered {
                    (h as f64 * 0.16).max(10.0)
                } else {
                    (canvas_h as f64 * style.size).max(8.0)
                };
                // Keep labels inside small tiles.
                let px = px.min(h as f64 * 0.3).round() as u32;
                t.label
                    .set_property("font-desc", format!("Sans Bold {px}px"));
                // The overlay reads Pango markup: a display name is text, never markup.
                t.label
                    .set_property("text", gst::glib::markup_escape_text(text).as_str());
                let color = parse_color(&style.color).unwrap_or(0xffffff);
                t.label.set_property("color", 0xff00_0000 | color);
                let (h_al, v_al) = if centered {
                    ("center", "center")
                } else {
                    match style.position {
                        LabelPosition::TopLeft => ("left", "top"),
                        LabelPosition::TopRight => ("right", "top"),
                        LabelPosition::BottomLeft => ("left", "bottom"),
                        LabelPosition::BottomRight => ("right", "bottom"),
                    }
                };
                t.label.set_property_from_str("halignment", h_al);
                t.label.set_property_from_str("valignment", v_al);
                let pad = (px / 2).max(4) as i32;
                t.label.set_property("xpad", pad);
                t.label.set_property("ypad", pad);
                t.label.set_property("silent", false);
            }
            _ => t.label.set_property("silent", true),
        }
        t.placed = Some((slot.clone(), z));
    }

    /// Removes an input that failed (see [`Composite::classify_error`]).
    ///
    /// A failed video input is rebuilt by the next [`Composite::apply`] that shows it, up to
    /// [`MAX_INPUT_FAILURES`] times; then its track is given up.
    pub fn drop_input(&mut self, input: &InputRef) -> Result<(), PipelineError> {
        match input {
            InputRef::Tile(InputKey::Video(id)) => {
                let failures = self.failures.entry(id.clone()).or_default();
                *failures += 1;
                if *failures >= MAX_INPUT_FAILURES {
                    tracing::warn!(tile = %id, "video input failed too often: shown as a placeholder");
                    self.remove_video(id)
                } else {
                    self.detach_video(id)
                }
            }
            InputRef::Tile(key) => self.remove_input(key),
            InputRef::Audio(id) => self.remove_audio(id),
        }
    }

    /// Number of live video inputs, placeholders included.
    pub fn tile_inputs(&self) -> usize {
        self.tiles.len()
    }
}

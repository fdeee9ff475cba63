//! The audio mix: one input per participant who may be heard, muted in place.

use super::*;

impl Composite {
    pub(super) fn build_audio(
        &mut self,
        opts: &CompositeOptions,
        mux: Option<&gst::Element>,
    ) -> Result<(), PipelineError> {
        let a = &opts.preset.audio;
        let mixer = make("audiomixer", "audio_mixer")?;
        if self.timing == Timing::Live {
            mixer.set_property("latency", AGGREGATOR_LATENCY.nseconds());
        }
        mixer.set_property("ignore-inactive-pads", true);
        mixer.set_property_from_str("start-time-selection", "first");
        let caps = make("capsfilter", "audio_mixer_caps")?;
        caps.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("format", "S16LE")
                .field("rate", a.rate as i32)
                .field("channels", a.channels as i32)
                .build(),
        );
        let conv = make("audioconvert", "audio_enc_convert")?;
        let q = make("queue", "audio_enc_queue")?;
        let enc = make("avenc_aac", "audio_enc")?;
        enc.set_property("bitrate", a.bitrate as i32);
        let parse = make("aacparse", "audio_parse")?;
        self.add(&[&mixer, &caps, &conv, &q, &enc, &parse])?;
        gst::Element::link_many([&mixer, &caps, &conv, &q, &enc, &parse])
            .map_err(PipelineError::setup)?;
        self.fan_out(&parse, mux, "audio")?;
        self.audio_releases.install(&mixer)?;
        self.audiomixer = Some(mixer);
        // A silent input keeps the mix running when nobody is publishing audio.
        let ctx = self.source_context(gst::ClockTime::ZERO);
        let silence = test_audio(
            &TestAudio {
                name: "silence".into(),
                freq: 0.0,
                volume: 0.0,
                beep_only: false,
                silent: true,
            },
            &ctx,
        )?;
        self.attach_audio("silence", silence)
    }

    /// Adds an audio input for participant `id`.
    pub fn add_audio(&mut self, id: &str, source: gst::Element) -> Result<(), PipelineError> {
        self.remove_audio(id)?;
        self.attach_audio(id, source)
    }

    pub(super) fn attach_audio(
        &mut self,
        id: &str,
        source: gst::Element,
    ) -> Result<(), PipelineError> {
        let Some(mixer) = self.audiomixer.clone() else {
            return Ok(());
        };
        let n = format!("audio_{}_{}", element_safe(id), self.seq());
        let bin = gst::Bin::builder().name(&n).build();
        let q = make("queue", &format!("{n}_queue"))?;
        let conv = make("audioconvert", &format!("{n}_convert"))?;
        let res = make("audioresample", &format!("{n}_resample"))?;
        let els = [&source, &q, &conv, &res];
        bin.add_many(els).map_err(PipelineError::setup)?;
        gst::Element::link_many(els).map_err(PipelineError::setup)?;
        let ghost = expose(&bin, &res, "src")?;
        self.pipeline.add(&bin).map_err(PipelineError::setup)?;
        let pad = mixer
            .request_pad_simple("sink_%u")
            .ok_or_else(|| PipelineError::setup("pad"))?;
        link_pads(ghost.upcast_ref(), &pad)?;
        bin.sync_state_with_parent().map_err(PipelineError::setup)?;
        self.audio.insert(id.to_string(), AudioInput { bin, pad });
        Ok(())
    }

    /// Removes the audio input of participant `id`, if any.
    pub fn remove_audio(&mut self, id: &str) -> Result<(), PipelineError> {
        let Some(input) = self.audio.remove(id) else {
            return Ok(());
        };
        self.detach(&input.bin, &input.pad, &self.audio_releases)
    }

    /// Mutes or un-mutes participant `id` in the mix.
    pub fn set_audio_muted(&self, id: &str, muted: bool) {
        if let Some(input) = self.audio.get(id) {
            input.pad.set_property("mute", muted);
        }
    }
}

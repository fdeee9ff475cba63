//! Test publishers: GStreamer webrtcbin pipelines that join a Janus VideoRoom through the same
//! WebSocket API as a browser, sending a solid colour and a tone, or a sync reference.

use super::janus::ICE_ADDRESS;
use gst::prelude::*;
use roomcast::room::janus::session::Session;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// Volume of a publisher's tone (the audio-level extension carries about 13 dBov for it).
const TONE_VOLUME: f64 = 0.3;

/// Video codec of a test publisher.
#[derive(Clone, Copy, Debug)]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
}

/// What a test publisher sends.
struct Media<'a> {
    /// Solid colour 0xRRGGBB (ignored with `markers`).
    rgb: u32,
    tone_hz: f64,
    codec: Codec,
    /// Width, height, frames per second.
    size: (u32, u32, u32),
    /// A `description` on the video stream.
    description: Option<&'a str>,
    /// A flash and a beep on the same timestamps instead of colour and tone.
    markers: bool,
    /// Each packet held back 0 to this many milliseconds on its way out (GStreamer's
    /// `netsim`): network jitter, packets reordered.
    jitter_ms: u32,
    /// Join with this feed id (a participant publishing again) instead of one Janus picks.
    feed_id: Option<u64>,
    /// With `markers`: the microphone's clock runs this many parts per million fast (it takes
    /// that many more samples per second than it claims, and stamps them by its count).
    audio_clock_ppm: u32,
    /// Simulcast (VP8): three encodings of the camera at [`SIMULCAST_SIZES`], the lowest
    /// first; each layer is its own picture (a solid colour, or a moving test card).
    simulcast: Option<[Layer; 3]>,
}

/// What one simulcast layer shows.
#[derive(Clone, Copy, Debug)]
pub enum Layer {
    /// A solid colour 0xRRGGBB: which layer reached the recording is visible in it.
    Solid(u32),
    /// A moving test card (bars sliding sideways): a picture that costs what a camera costs
    /// to encode and decode, for measurements.
    Moving,
}

/// Width and height of the simulcast layers, lowest first (a 720p camera's three layers in a
/// browser: each half the size of the next).
pub const SIMULCAST_SIZES: [(u32, u32); 3] = [(320, 180), (640, 360), (1280, 720)];

/// Bits per second of each simulcast layer, lowest first (a browser's defaults for 720p).
const SIMULCAST_BITRATES: [u32; 3] = [150_000, 500_000, 1_500_000];

impl Media<'_> {
    fn tone(rgb: u32, tone_hz: f64, codec: Codec) -> Self {
        Media {
            rgb,
            tone_hz,
            codec,
            size: (320, 180, 15),
            description: None,
            markers: false,
            jitter_ms: 0,
            feed_id: None,
            audio_clock_ppm: 0,
            simulcast: None,
        }
    }
}

/// A publisher: a solid colour and a tone, sent with webrtcbin.
pub struct Publisher {
    pub pipeline: gst::Pipeline,
    pub session: Session,
    pub handle: u64,
    pub id: u64,
    /// Everything Janus sent this participant's session.
    pub events: Arc<Mutex<Vec<Value>>>,
    pub joined: Value,
    pub offer: String,
}

impl Publisher {
    pub async fn publish(
        url: &str,
        room: u64,
        display: &str,
        rgb: u32,
        tone_hz: f64,
        codec: Codec,
    ) -> Publisher {
        Self::publish_with(url, room, display, Media::tone(rgb, tone_hz, codec)).await
    }

    /// A silent publisher with a `description` on its video stream (what a client sets to
    /// mark a screen share without saying so in its display name).
    pub async fn publish_described(
        url: &str,
        room: u64,
        display: &str,
        rgb: u32,
        tone_hz: f64,
        description: &str,
    ) -> Publisher {
        let media = Media {
            description: Some(description),
            ..Media::tone(rgb, tone_hz, Codec::Vp8)
        };
        Self::publish_with(url, room, display, media).await
    }

    /// [`Publisher::publish`] as the participant with feed id `id`: someone who left
    /// publishing again.
    pub async fn publish_as(
        url: &str,
        room: u64,
        display: &str,
        (rgb, tone_hz, codec): (u32, f64, Codec),
        id: u64,
    ) -> Publisher {
        let media = Media {
            feed_id: Some(id),
            ..Media::tone(rgb, tone_hz, codec)
        };
        Self::publish_with(url, room, display, media).await
    }

    /// [`Publisher::publish`] at `(width, height, fps)`.
    pub async fn publish_sized(
        url: &str,
        room: u64,
        display: &str,
        rgb: u32,
        tone_hz: f64,
        codec: Codec,
        size: (u32, u32, u32),
    ) -> Publisher {
        let media = Media {
            size,
            ..Media::tone(rgb, tone_hz, codec)
        };
        Self::publish_with(url, room, display, media).await
    }

    /// A sync reference: the picture flashes white and a 2 kHz tone beeps for the first
    /// 100 ms of every second of the publisher's clock, both drawn from the same buffer
    /// timestamps; its packets leave with up to `jitter_ms` of random delay.
    pub async fn publish_markers(
        url: &str,
        room: u64,
        display: &str,
        rgb: u32,
        jitter_ms: u32,
    ) -> Publisher {
        let media = Media {
            size: (320, 180, 30),
            markers: true,
            jitter_ms,
            ..Media::tone(rgb, 2000.0, Codec::Vp8)
        };
        Self::publish_with(url, room, display, media).await
    }

    /// [`Publisher::publish_markers`] whose microphone clock runs `ppm` parts per million
    /// fast: the beep sounds on the second of real time (with the flash) but sits at the
    /// sample its fast clock counted, so its RTP timestamps run ahead of real time.
    pub async fn publish_markers_fast_audio(
        url: &str,
        room: u64,
        display: &str,
        rgb: u32,
        ppm: u32,
    ) -> Publisher {
        let media = Media {
            size: (320, 180, 30),
            markers: true,
            audio_clock_ppm: ppm,
            ..Media::tone(rgb, 2000.0, Codec::Vp8)
        };
        Self::publish_with(url, room, display, media).await
    }

    /// A camera sent as simulcast (VP8, three layers at [`SIMULCAST_SIZES`], `fps` frames per
    /// second), with a tone. Janus relays one layer to each subscriber, the one it asks for.
    pub async fn publish_simulcast(
        url: &str,
        room: u64,
        display: &str,
        layers: [Layer; 3],
        tone_hz: f64,
        fps: u32,
    ) -> Publisher {
        let media = Media {
            size: (1280, 720, fps),
            simulcast: Some(layers),
            ..Media::tone(0, tone_hz, Codec::Vp8)
        };
        Self::publish_with(url, room, display, media).await
    }

    /// One silent simulcast camera (moving test cards, [`SIMULCAST_SIZES`] at `fps`) published
    /// by each of `names`: the layers are encoded once and every participant sends them, so a
    /// room of many simulcast publishers costs this machine one publisher's encoding.
    pub async fn publish_simulcast_room(
        url: &str,
        room: u64,
        names: &[&str],
        fps: u32,
    ) -> Vec<Publisher> {
        let ssrcs = [0x51_0001, 0x51_0003, 0x51_0005];
        let assrc = 0x51_0007u32;
        let mut desc = simulcast_layers(&[Layer::Moving; 3], fps, &ssrcs, |i| {
            format!("tee name=layer_out{i}")
        });
        desc.push_str(&format!(
            " audiotestsrc is-live=true wave=silence ! audio/x-raw,rate=48000,channels=2 ! \
             opusenc ! rtpopuspay pt=111 ssrc={assrc} ! \
             application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,\
             encoding-params=(string)2,ssrc=(uint){assrc} ! tee name=audio_out"
        ));
        for k in 0..names.len() {
            desc.push_str(&format!(
                " webrtcbin name=w{k} bundle-policy=max-bundle \
                 funnel name=video{k} ! {SIMULCAST_RTP_CAPS} ! w{k}. \
                 layer_out0. ! queue ! video{k}. layer_out1. ! queue ! video{k}. \
                 layer_out2. ! queue ! video{k}. audio_out. ! queue ! w{k}."
            ));
        }
        let pipeline = gst::parse::launch(&desc)
            .expect("simulcast room pipeline")
            .downcast::<gst::Pipeline>()
            .unwrap();
        stamp_layer_ssrcs(&pipeline, &ssrcs);
        let mut out = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let joined = Joined::join(url, room, name, None).await;
            let webrtc = pipeline.by_name(&format!("w{k}")).unwrap();
            out.push(signal(joined, pipeline.clone(), webrtc, name, None, Some(ssrcs)).await);
        }
        out
    }

    async fn publish_with(url: &str, room: u64, display: &str, media: Media<'_>) -> Publisher {
        let Media {
            rgb,
            tone_hz,
            codec,
            size,
            description: video_description,
            markers,
            jitter_ms,
            feed_id,
            audio_clock_ppm,
            simulcast,
        } = media;
        let net = if jitter_ms > 0 {
            format!("netsim min-delay=0 max-delay={jitter_ms} delay-probability=1.0 ! ")
        } else {
            String::new()
        };
        let joined = Joined::join(url, room, display, feed_id).await;
        // Explicit SSRCs, so the offer carries `a=ssrc` lines: Janus drops packets whose SSRC
        // it cannot match to a stream.
        let vssrc = (rgb ^ 0x5a5a5a) | 1;
        let assrc = vssrc + 1;
        let video = match codec {
            Codec::Vp8 => "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=15 target-bitrate=300000 ! rtpvp8pay pt=96 ssrc={vssrc} ! \
                 application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000,ssrc=(uint){vssrc}"
                .replace("{vssrc}", &vssrc.to_string()),
            Codec::Vp9 => "vp9enc deadline=1 cpu-used=8 keyframe-max-dist=15 target-bitrate=300000 ! rtpvp9pay pt=98 ssrc={vssrc} ! \
                 application/x-rtp,media=video,encoding-name=VP9,payload=98,clock-rate=90000,ssrc=(uint){vssrc}"
                .replace("{vssrc}", &vssrc.to_string()),
            Codec::H264 => "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=300 ! \
                 video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 ssrc={vssrc} config-interval=-1 aggregate-mode=zero-latency ! \
                 application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,ssrc=(uint){vssrc}"
                .replace("{vssrc}", &vssrc.to_string()),
        };
        let layer_ssrcs = [vssrc, vssrc + 2, vssrc + 4];
        let video = match simulcast {
            None => video,
            // Each layer encoded and packetized on its own; one funnel puts the three on the
            // video m-line, and the offer names them as one simulcast group (below). The
            // layers' caps are made identical (one SSRC named for all, which the payloaders
            // adopt), so the stream's caps do not change as the funnel passes from one layer's
            // packets to the next; each layer's packets then get its own SSRC (below).
            Some(layers) => {
                let branches = simulcast_layers(&layers, size.2, &layer_ssrcs, |_| {
                    "queue ! simulcast.".to_string()
                });
                format!("{branches} funnel name=simulcast ! {SIMULCAST_RTP_CAPS}")
            }
        };
        let (video_in, audio_in) =
            match (markers, simulcast.is_some()) {
                // Inputs linked below to the flashing picture and the beeping tone.
                (true, _) => (
                    "videoconvert name=vin".to_string(),
                    "identity name=ain".to_string(),
                ),
                (false, true) => (
                    String::new(),
                    format!("audiotestsrc name=tone is-live=true wave=sine freq={tone_hz} volume={TONE_VOLUME}"),
                ),
                (false, false) => (
                    format!(
                        "videotestsrc is-live=true pattern=solid-color foreground-color={fg} ! \
                     video/x-raw,width={w},height={h},framerate={fps}/1 ! videoconvert",
                        fg = 0xff00_0000u32 | rgb,
                        w = size.0,
                        h = size.1,
                        fps = size.2,
                    ),
                    format!(
                    "audiotestsrc name=tone is-live=true wave=sine freq={tone_hz} volume={volume}",
                    volume = if video_description.is_some() { 0.0 } else { TONE_VOLUME },
                ),
                ),
            };
        let link = if video_in.is_empty() { "" } else { " ! " };
        let desc = format!(
            "webrtcbin name=w bundle-policy=max-bundle \
             {video_in}{link}{video} ! {net}w. \
             {audio_in} ! audioconvert ! audioresample ! \
             audio/x-raw,rate=48000,channels=2 ! level audio-level-meta=true post-messages=false ! opusenc ! \
             rtpopuspay name=apay pt=111 ssrc={assrc} ! \
             application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2,ssrc=(uint){assrc},\
             extmap-1=<(string)\"\",(string)\"urn:ietf:params:rtp-hdrext:ssrc-audio-level\",(string)\"vad=on\"> ! {net}w.",
        );
        let pipeline = gst::parse::launch(&desc)
            .expect("publisher pipeline")
            .downcast::<gst::Pipeline>()
            .unwrap();
        if markers {
            add_markers(&pipeline, display, rgb, size, audio_clock_ppm);
        }
        if simulcast.is_some() {
            stamp_layer_ssrcs(&pipeline, &layer_ssrcs);
        }
        if audio_clock_ppm > 0 {
            fast_rtp_timestamps(&pipeline.by_name("apay").unwrap(), audio_clock_ppm);
        }
        let webrtc = pipeline.by_name("w").unwrap();
        let ssrcs = simulcast.is_some().then_some(layer_ssrcs);
        signal(joined, pipeline, webrtc, display, video_description, ssrcs).await
    }

    /// Leaves the room (unpublish + leave) and stops sending.
    pub async fn leave(&self) {
        let _ = self
            .session
            .message(self.handle, json!({ "request": "leave" }), None)
            .await;
        let _ = self.pipeline.set_state(gst::State::Null);
    }

    /// Waits (up to 10 s) until Janus reports the upstream connection up.
    pub async fn wait_connected(&self) {
        for _ in 0..100 {
            if self.connected() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "publisher {} did not connect; offer:\n{}\nevents: {:?}",
            self.id,
            self.offer,
            self.events.lock().unwrap()
        );
    }

    /// Starts or stops the publisher's tone (silence is digital zero: Janus's audio-level
    /// detection then reports it not talking).
    pub fn set_tone(&self, on: bool) {
        let tone = self.pipeline.by_name("tone").expect("tone source");
        tone.set_property("volume", if on { TONE_VOLUME } else { 0.0 });
    }

    /// Whether Janus reports the upstream connection up.
    pub fn connected(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["janus"] == "webrtcup")
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        self.session.close();
    }
}

/// Feeds `vin` and `ain` of `pipeline` with roomcast's own sync reference sources (a flash
/// and a beep on the same timestamps).
fn add_markers(
    pipeline: &gst::Pipeline,
    name: &str,
    rgb: u32,
    size: (u32, u32, u32),
    audio_clock_ppm: u32,
) {
    use roomcast::pipeline::source::{test_audio, test_video, SourceContext, Timing};
    use roomcast::pipeline::source::{TestAudio, TestVideo, MARKER_BEEP_HZ};
    let ctx = SourceContext {
        timing: Timing::Live,
        start: gst::ClockTime::ZERO,
    };
    let video = test_video(
        &TestVideo {
            name: format!("{name}_v"),
            color: rgb,
            moving_marker: false,
            flash: true,
            width: size.0,
            height: size.1,
            fps: size.2,
            pattern: None,
        },
        &ctx,
    )
    .expect("marker video");
    let audio = if audio_clock_ppm > 0 {
        fast_clock_beeps(name, audio_clock_ppm)
    } else {
        test_audio(
            &TestAudio {
                name: format!("{name}_a"),
                freq: MARKER_BEEP_HZ,
                volume: TONE_VOLUME,
                beep_only: true,
                silent: false,
            },
            &ctx,
        )
        .expect("marker audio")
    };
    pipeline.add_many([&video, &audio]).unwrap();
    video.link(&pipeline.by_name("vin").unwrap()).unwrap();
    audio.link(&pipeline.by_name("ain").unwrap()).unwrap();
}

/// A microphone whose clock runs `ppm` parts per million fast, beeping (2 kHz) for the first
/// 100 ms of every second of real time: it takes 48000 × (1 + ppm/10⁶) samples per real second
/// and passes them on as 48 kHz ([`fast_rtp_timestamps`] makes its RTP timestamps count them),
/// so by minute 10 at 1000 ppm its timestamps are 600 ms ahead of the picture's while the
/// beeps still sound with the flashes.
fn fast_clock_beeps(name: &str, ppm: u32) -> gst::Element {
    use roomcast::pipeline::source::{MARKER_BEEP_HZ, MARKER_LENGTH, MARKER_PERIOD};
    let true_rate = 48_000 + 48 * ppm / 1000;
    let bin = gst::parse::bin_from_description(
        &format!(
            "audiotestsrc name={name}_fast is-live=true wave=sine freq={MARKER_BEEP_HZ} \
             volume={TONE_VOLUME} samplesperbuffer=480 ! \
             audio/x-raw,format=S16LE,layout=interleaved,channels=2,rate={true_rate} ! \
             capssetter name={name}_claim caps=audio/x-raw,rate=48000"
        ),
        true,
    )
    .expect("fast microphone");
    let src = bin.by_name(&format!("{name}_fast")).unwrap();
    // Silence outside the beeps, placed by real time (the source runs at its true rate).
    src.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(ref mut buffer)) = info.data {
                let pts = buffer.pts().map(|t| t.nseconds()).unwrap_or(0);
                let b = buffer.make_mut();
                let mut map = b.map_writable().unwrap();
                for (i, frame) in map.chunks_exact_mut(4).enumerate() {
                    let t = pts + i as u64 * 1_000_000_000 / true_rate as u64;
                    if t % MARKER_PERIOD.nseconds() >= MARKER_LENGTH.nseconds() {
                        frame.fill(0);
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
    bin.upcast()
}

/// A fast microphone's RTP timestamps: the payloader stamps its packets by real time (each
/// packet's 960 samples took 19.98 ms to capture); a sound card running `ppm` fast counts them
/// as 960 ticks, so the timestamps are stretched by that much from the first packet on. The
/// packets still leave when they are captured.
/// A participant joined to a room, not yet publishing.
pub struct Joined {
    session: Session,
    handle: u64,
    id: u64,
    events: Arc<Mutex<Vec<Value>>>,
    joined: Value,
}

impl Joined {
    async fn join(url: &str, room: u64, display: &str, feed_id: Option<u64>) -> Joined {
        let (session, mut rx) = Session::connect(url).await.expect("publisher session");
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        tokio::spawn(async move {
            while let Some(v) = rx.recv().await {
                ev.lock().unwrap().push(v);
            }
        });
        let handle = session.attach("janus.plugin.videoroom").await.unwrap();
        let mut join =
            json!({ "request": "join", "ptype": "publisher", "room": room, "display": display });
        if let Some(id) = feed_id {
            join["id"] = json!(id);
        }
        let joined = session
            .message(handle, join, None)
            .await
            .expect("publisher join");
        let id = joined["plugindata"]["data"]["id"].as_u64().unwrap();
        Joined {
            session,
            handle,
            id,
            events,
            joined,
        }
    }
}

/// Publishes `webrtc` (of `pipeline`) for `joined`: starts the pipeline, offers (the video's
/// SSRCs as one simulcast group with `simulcast`), and takes Janus's answer.
async fn signal(
    joined: Joined,
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    display: &str,
    video_description: Option<&str>,
    simulcast: Option<[u32; 3]>,
) -> Publisher {
    let Joined {
        session,
        handle,
        id,
        events,
        joined,
    } = joined;
    // Like a browser, it answers NACKs by sending lost packets again.
    for i in 0..2i32 {
        if let Some(t) = webrtc
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&i])
        {
            t.set_property("do-nack", true);
        }
    }
    let agent = webrtc.property::<gst::glib::Object>("ice-agent");
    agent.set_property("ice-tcp", false);
    let _ = agent.emit_by_name::<bool>("add-local-ip-address", &[&ICE_ADDRESS]);
    pipeline.set_state(gst::State::Playing).unwrap();
    // The offer describes the codecs from the negotiated caps: wait for them.
    for _ in 0..250 {
        let ready = webrtc
            .sink_pads()
            .iter()
            .all(|p| p.current_caps().is_some());
        if ready && webrtc.sink_pads().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut offer = create_offer(&webrtc).await;
    if let Some(ssrcs) = simulcast {
        offer = simulcast_offer(&offer, &ssrcs);
    }
    let mut publish = json!({ "request": "publish", "display": display });
    if let Some(d) = video_description {
        // The video m-line's mid, from the offer.
        let mid = offer
            .split("m=")
            .find(|m| m.starts_with("video"))
            .and_then(|m| m.lines().find_map(|l| l.strip_prefix("a=mid:")))
            .expect("video mid")
            .trim()
            .to_string();
        publish["descriptions"] = json!([{ "mid": mid, "description": d }]);
    }
    let r = session
        .message(
            handle,
            publish,
            Some(json!({ "type": "offer", "sdp": offer })),
        )
        .await
        .expect("publish");
    let answer = r["jsep"]["sdp"].as_str().expect("answer").to_string();
    let sdp = gst_sdp::SDPMessage::parse_buffer(answer.as_bytes()).unwrap();
    let desc = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
    webrtc.emit_by_name::<()>("set-remote-description", &[&desc, &None::<gst::Promise>]);
    Publisher {
        pipeline,
        session,
        handle,
        id,
        events,
        joined,
        offer,
    }
}

/// Caps of a simulcast camera's funnelled layers, as they reach webrtcbin.
const SIMULCAST_RTP_CAPS: &str =
    "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000";

/// The three layers of a simulcast camera (`layers`, smallest first, at `fps`), encoded and
/// packetized, each ending in `capssetter name=layer{i}` — whose packets
/// [`stamp_layer_ssrcs`] must then give `ssrcs[i]` — and `to(i)`. The caps name `ssrcs[2]`
/// for all three, and the payloaders adopt it from them.
fn simulcast_layers(
    layers: &[Layer; 3],
    fps: u32,
    ssrcs: &[u32; 3],
    to: impl Fn(usize) -> String,
) -> String {
    let mut branches = String::new();
    for (i, layer) in layers.iter().enumerate() {
        let (w, h) = SIMULCAST_SIZES[i];
        let picture = match layer {
            Layer::Solid(rgb) => format!(
                "videotestsrc is-live=true pattern=solid-color foreground-color={}",
                0xff00_0000u32 | rgb
            ),
            Layer::Moving => {
                "videotestsrc is-live=true pattern=smpte horizontal-speed=4".to_string()
            }
        };
        branches.push_str(&format!(
            "{picture} ! video/x-raw,width={w},height={h},framerate={fps}/1 ! \
             videoconvert ! vp8enc deadline=1 cpu-used=8 keyframe-max-dist={fps} \
             target-bitrate={rate} threads=1 ! \
             rtpvp8pay pt=96 picture-id-mode=15-bit ! \
             capssetter name=layer{i} join=true replace=false caps=\"application/x-rtp,\
             ssrc=(uint){top},timestamp-offset=(uint)0,seqnum-offset=(uint)0\" ! {to} ",
            top = ssrcs[2],
            rate = SIMULCAST_BITRATES[i],
            to = to(i),
        ));
    }
    branches
}

/// Writes `ssrcs[i]` into the header of every RTP packet leaving `layer{i}` of `pipeline`
/// (see [`simulcast_layers`]).
fn stamp_layer_ssrcs(pipeline: &gst::Pipeline, ssrcs: &[u32; 3]) {
    for (i, &ssrc) in ssrcs.iter().enumerate() {
        pipeline
            .by_name(&format!("layer{i}"))
            .unwrap()
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(ref mut buffer)) = info.data {
                    let mut map = buffer.make_mut().map_writable().unwrap();
                    if map.len() >= 12 {
                        map[8..12].copy_from_slice(&ssrc.to_be_bytes());
                    }
                }
                gst::PadProbeReturn::Ok
            });
    }
}

fn fast_rtp_timestamps(payloader: &gst::Element, ppm: u32) {
    let first = std::sync::Mutex::new(None::<u32>);
    payloader
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(ref mut buffer)) = info.data {
                let b = buffer.make_mut();
                let mut map = b.map_writable().unwrap();
                if map.len() >= 12 {
                    let ts = u32::from_be_bytes([map[4], map[5], map[6], map[7]]);
                    let f = *first.lock().unwrap().get_or_insert(ts);
                    let since = ts.wrapping_sub(f) as u64;
                    let fast =
                        f.wrapping_add((since * (1_000_000 + ppm as u64) / 1_000_000) as u32);
                    map[4..8].copy_from_slice(&fast.to_be_bytes());
                }
            }
            gst::PadProbeReturn::Ok
        });
}

/// `offer` with its video m-line's SSRCs replaced by the simulcast layers' (lowest first) in
/// one `SIM` group, as a browser's offer names them.
fn simulcast_offer(offer: &str, ssrcs: &[u32; 3]) -> String {
    let mut out = String::new();
    let mut in_video = false;
    for line in offer.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            in_video = line.starts_with("m=video");
        }
        if in_video && (line.starts_with("a=ssrc:") || line.starts_with("a=ssrc-group:")) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
        if in_video && line.starts_with("a=mid:") {
            out.push_str(&format!(
                "a=ssrc-group:SIM {} {} {}\r\n",
                ssrcs[0], ssrcs[1], ssrcs[2]
            ));
            for ssrc in ssrcs {
                out.push_str(&format!("a=ssrc:{ssrc} cname:simulcast-publisher\r\n"));
            }
        }
    }
    out
}

async fn create_offer(webrtc: &gst::Element) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let promise = gst::Promise::with_change_func(move |reply| {
        let offer = reply.ok().flatten().and_then(|s| {
            s.value("offer")
                .ok()
                .and_then(|v| v.get::<gst_webrtc::WebRTCSessionDescription>().ok())
        });
        let _ = tx.send(offer);
    });
    webrtc.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
    let offer = rx.await.unwrap().expect("offer");
    webrtc.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
    for _ in 0..500 {
        let st = webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
        if st == gst_webrtc::WebRTCICEGatheringState::Complete {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .unwrap();
    local.sdp().as_text().unwrap()
}

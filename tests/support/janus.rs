//! Janus for the tests: a private network namespace, a Janus server from a generated config
//! folder, and GStreamer webrtcbin publishers that join through the same WebSocket API.
//!
//! Janus never gathers loopback ICE candidates, so WebRTC tests run inside a network namespace
//! of their own with a veth pair (address [`ICE_ADDRESS`]); nothing leaves the namespace.

use super::{free_port, wait_for};
use gst::prelude::*;
use roomcast::room::janus::session::Session;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The test interface's address inside the namespace.
pub const ICE_ADDRESS: &str = "10.99.0.1";
/// Set in the re-executed test process.
const IN_NETNS: &str = "ROOMCAST_TEST_IN_NETNS";

/// Runs the calling test inside a new network namespace: returns true in the inner run (go
/// on with the test); in the outer run re-executes the test binary for `test` there, asserts
/// it passed and returns false.
pub fn in_network_namespace(test: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary");
    let setup = format!(
        "set -e; ip link set lo up; ip link add va type veth peer name vb; \
         ip addr add {ICE_ADDRESS}/24 dev va; ip link set va up; ip link set vb up; \
         exec \"$0\" \"$@\""
    );
    let status = Command::new("unshare")
        .args(["--net", "--", "bash", "-c", &setup])
        .arg(&exe)
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(IN_NETNS, "1")
        .status()
        .expect("unshare (util-linux) and ip (iproute2); run as root");
    assert!(
        status.success(),
        "{test} failed inside its network namespace"
    );
    false
}

/// A Janus server with only the WebSocket transport and the VideoRoom plugin.
pub struct Janus {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    pub wss_port: Option<u16>,
}

impl Janus {
    pub fn start(dir: &Path) -> Janus {
        Self::start_with(dir, false)
    }

    /// Also listens for `wss://` on [`Janus::wss_url`], with a certificate for 127.0.0.1 signed
    /// by a test authority (its PEM at [`Janus::ca_file`]).
    pub fn start_tls(dir: &Path) -> Janus {
        Self::start_with(dir, true)
    }

    pub fn wss_url(&self) -> String {
        format!(
            "wss://127.0.0.1:{}",
            self.wss_port.expect("started with TLS")
        )
    }

    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    fn start_with(dir: &Path, tls: bool) -> Janus {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let wss_port = tls.then(free_port);
        if tls {
            make_certificates(dir);
        }
        let wss = match wss_port {
            Some(p) => format!(
                "wss = true\n wss_port = {p}\n wss_ip = \"127.0.0.1\" }}\n\
                 certificates: {{ cert_pem = \"{d}/server.pem\"\n cert_key = \"{d}/server.key\" }}\n",
                d = dir.display()
            ),
            None => "wss = false }\n".to_string(),
        };
        let lib = "/usr/lib/x86_64-linux-gnu/janus";
        let skip_plugins = [
            "audiobridge",
            "duktape",
            "echotest",
            "lua",
            "nosip",
            "recordplay",
            "sip",
            "streaming",
            "textroom",
            "videocall",
            "voicemail",
        ]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
        let skip_transports = ["http", "mqtt", "nanomsg", "pfunix", "rabbitmq"]
            .map(|p| format!("libjanus_{p}.so"))
            .join(",");
        let skip_events = [
            "gelfevh",
            "mqttevh",
            "nanomsgevh",
            "rabbitmqevh",
            "sampleevh",
            "wsevh",
        ]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
        let rtp = 20000 + (port % 2000) * 10;
        std::fs::write(
            dir.join("janus.jcfg"),
            format!(
                "general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{lib}/plugins\"\n \
                 transports_folder = \"{lib}/transports\"\n events_folder = \"{lib}/events\"\n \
                 loggers_folder = \"{lib}/loggers\"\n debug_level = 4\n }}\n\
                 plugins: {{ disable = \"{skip_plugins}\" }}\n\
                 transports: {{ disable = \"{skip_transports}\" }}\n\
                 events: {{ disable = \"{skip_events}\" }}\n\
                 loggers: {{ disable = \"libjanus_jsonlog.so\" }}\n\
                 media: {{ rtp_port_range = \"{rtp}-{}\" }}\n\
                 nat: {{ ice_enforce_list = \"va\"\n ice_tcp = false }}\n",
                rtp + 199,
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("janus.transport.websockets.jcfg"),
            format!(
                "general: {{ json = \"compact\"\n ws = true\n ws_port = {port}\n ws_ip = \"127.0.0.1\"\n {wss}\
                 admin: {{ admin_ws = false }}\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n").unwrap();
        let mut j = Janus {
            child: None,
            dir: dir.to_path_buf(),
            port,
            wss_port,
        };
        j.spawn();
        j
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("janus.log"))
            .unwrap();
        let child = Command::new("/usr/bin/janus")
            .args(["-F", &self.dir.to_string_lossy(), "-C"])
            .arg(self.dir.join("janus.jcfg"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start janus (apt package janus)");
        self.child = Some(child);
        let port = self.port;
        let up = wait_for(15.0, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        assert!(up.is_some(), "janus did not listen: {}", self.log());
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("janus.log")).unwrap_or_default()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and configuration.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

/// A test certificate authority and a server certificate for 127.0.0.1 it signed, in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (apt package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=roomcast test authority",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An admin connection: creates and destroys rooms, lists participants.
pub struct Admin {
    pub session: Session,
    pub handle: u64,
}

impl Admin {
    pub async fn connect(url: &str) -> Admin {
        // Janus listens a moment before its WebSocket transport answers: a reset connection
        // right after start is retried.
        let t0 = std::time::Instant::now();
        let (session, _events) = loop {
            match Session::connect(url).await {
                Ok(s) => break s,
                Err(e) if t0.elapsed() < std::time::Duration::from_secs(10) => {
                    eprintln!("janus not ready yet: {e:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => panic!("janus session: {e:?}"),
            }
        };
        let handle = session.attach("janus.plugin.videoroom").await.unwrap();
        Admin { session, handle }
    }

    pub async fn create_room(&self, room: u64) {
        self.create_room_with_pin(room, None).await
    }

    pub async fn create_room_with_pin(&self, room: u64, pin: Option<&str>) {
        let mut create = json!({
            "request": "create", "room": room, "publishers": 10,
            "audiolevel_event": true, "audio_active_packets": 25,
            "audio_level_average": 40, "videocodec": "vp8,h264,vp9",
        });
        if let Some(pin) = pin {
            create["pin"] = json!(pin);
        }
        self.session
            .message(self.handle, create, None)
            .await
            .expect("create room");
    }

    pub async fn destroy_room(&self, room: u64) {
        self.session
            .message(
                self.handle,
                json!({ "request": "destroy", "room": room }),
                None,
            )
            .await
            .expect("destroy room");
    }

    pub async fn participants(&self, room: u64) -> Vec<Value> {
        let r = self
            .session
            .message(
                self.handle,
                json!({ "request": "listparticipants", "room": room }),
                None,
            )
            .await
            .expect("listparticipants");
        r["plugindata"]["data"]["participants"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Volume of a publisher's tone (the audio-level extension carries about 13 dBov for it).
const TONE_VOLUME: f64 = 0.3;

/// Video codec of a test publisher.
#[derive(Clone, Copy, Debug)]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
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
        Self::publish_sized(url, room, display, rgb, tone_hz, codec, (320, 180, 15)).await
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
        let size = (320, 180, 15);
        Self::publish_with(
            url,
            room,
            display,
            rgb,
            tone_hz,
            Codec::Vp8,
            size,
            Some(description),
        )
        .await
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
        Self::publish_with(url, room, display, rgb, tone_hz, codec, size, None).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_with(
        url: &str,
        room: u64,
        display: &str,
        rgb: u32,
        tone_hz: f64,
        codec: Codec,
        size: (u32, u32, u32),
        video_description: Option<&str>,
    ) -> Publisher {
        let (session, mut rx) = Session::connect(url).await.expect("publisher session");
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        tokio::spawn(async move {
            while let Some(v) = rx.recv().await {
                ev.lock().unwrap().push(v);
            }
        });
        let handle = session.attach("janus.plugin.videoroom").await.unwrap();
        let joined = session
            .message(
                handle,
                json!({ "request": "join", "ptype": "publisher", "room": room, "display": display }),
                None,
            )
            .await
            .expect("publisher join");
        let id = joined["plugindata"]["data"]["id"].as_u64().unwrap();
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
        let desc = format!(
            "webrtcbin name=w bundle-policy=max-bundle \
             videotestsrc is-live=true pattern=solid-color foreground-color={fg} ! \
             video/x-raw,width={w},height={h},framerate={fps}/1 ! videoconvert ! {video} ! w. \
             audiotestsrc name=tone is-live=true wave=sine freq={tone_hz} volume={volume} ! audioconvert ! audioresample ! \
             audio/x-raw,rate=48000,channels=2 ! level audio-level-meta=true post-messages=false ! opusenc ! \
             rtpopuspay pt=111 ssrc={assrc} ! \
             application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2,ssrc=(uint){assrc},\
             extmap-1=<(string)\"\",(string)\"urn:ietf:params:rtp-hdrext:ssrc-audio-level\",(string)\"vad=on\"> ! w.",
            fg = 0xff00_0000u32 | rgb,
            volume = if video_description.is_some() { 0.0 } else { TONE_VOLUME },
            w = size.0,
            h = size.1,
            fps = size.2,
        );
        let pipeline = gst::parse::launch(&desc)
            .expect("publisher pipeline")
            .downcast::<gst::Pipeline>()
            .unwrap();
        let webrtc = pipeline.by_name("w").unwrap();
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
        let offer = create_offer(&webrtc).await;
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
        let desc =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
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

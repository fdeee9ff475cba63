//! Janus for the tests: a private network namespace, a Janus server from a generated config
//! folder, the recorder started on it; GStreamer webrtcbin publishers are in [`super::publisher`].
//!
//! Janus never gathers loopback ICE candidates, so WebRTC tests run inside a network namespace
//! of their own with a veth pair (address [`ICE_ADDRESS`]); nothing leaves the namespace.

pub use super::publisher::*;
use super::{bin, free_port, wait_for};
use gst::prelude::*;
use roomcast::room::janus::session::Session;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The test interface's address inside the namespace.
pub const ICE_ADDRESS: &str = "10.99.0.1";
/// Set in the re-executed test process.
const IN_NETNS: &str = "ROOMCAST_TEST_IN_NETNS";

/// Held while a test's namespace runs: the tests of one binary take turns. Each runs a Janus,
/// its publishers and a recorder, and checks what is heard and seen at given seconds; two at
/// once on two cores starve each other. Seen with two at once: a flash's frame reaching the
/// compositor after its deadline (shown a frame late), and once a publisher's first seconds
/// of sound missing from the mix.
static TURN: Mutex<()> = Mutex::new(());

/// Runs the calling test inside a new network namespace: returns true in the inner run (go
/// on with the test); in the outer run waits for its turn ([`TURN`]), re-executes the test
/// binary for `test` there, asserts it passed and returns false.
pub fn in_network_namespace(test: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    /// First and last UDP port of its media.
    pub rtp_ports: (u16, u16),
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
            rtp_ports: (rtp, rtp + 199),
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

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Starts `roomcast record` on the room; returns it and the instant its pipeline started.
pub fn recorder(
    janus: &Janus,
    room: u64,
    dir: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, Instant) {
    let log = dir.join("record.log");
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "record",
        "--janus",
        &janus.url(),
        "--room",
        &room.to_string(),
    ])
    .args(["--ice-address", ICE_ADDRESS, "--out"])
    .arg(dir.join("rec"))
    .args(extra)
    .env("ROOMCAST_DATA_DIR", dir.join("data"))
    .env(
        "RUST_LOG",
        std::env::var("RECORD_LOG").unwrap_or_else(|_| "info".into()),
    )
    .stdout(std::fs::File::create(dir.join("record.out")).unwrap())
    .stderr(std::fs::File::create(&log).unwrap());
    let spawned = Instant::now();
    let child = cmd.spawn().unwrap();
    let started = wait_for(15.0, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("recording started")
            .then(Instant::now)
    })
    .unwrap_or_else(|| {
        panic!(
            "recorder did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    eprintln!(
        "recorder pipeline started {:?} after spawn",
        started - spawned
    );
    (child, started)
}

/// A Janus server with room `room` created, a runtime and an admin session.
pub fn janus_room(dir: &std::path::Path, room: u64) -> (Janus, tokio::runtime::Runtime, Admin) {
    let janus = Janus::start(&dir.join("janus"));
    let rt = rt();
    let admin = rt.block_on(Admin::connect(&janus.url()));
    rt.block_on(admin.create_room(room));
    (janus, rt, admin)
}

/// Runs an nftables script in the test's network namespace (packet loss: the kernel here has
/// no `netem`).
pub fn nft(script: &str) {
    super::tool_output(Command::new("nft").arg(script));
}

/// Drops `to_janus` % of the UDP packets reaching Janus's media ports and `from_janus` % of
/// those it sends to others (the recorder), until [`clear_loss`].
pub fn add_loss(janus: &Janus, to_janus: u32, from_janus: u32) {
    let (first, last) = janus.rtp_ports;
    nft(&format!(
        "add table inet loss; add chain inet loss in {{ type filter hook input priority 0; }}; \
         add rule inet loss in udp dport {first}-{last} numgen random mod 100 lt {to_janus} drop; \
         add rule inet loss in udp sport {first}-{last} udp dport != {first}-{last} \
         numgen random mod 100 lt {from_janus} drop"
    ));
}

/// Removes the loss [`add_loss`] added.
pub fn clear_loss() {
    nft("delete table inet loss");
}

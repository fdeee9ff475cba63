//! The container image (`deploy/container/Containerfile`, `make image`): built here on a
//! Debian 12 base made from Debian's packages (`make image-base`: no image registry is
//! reachable), it records the demo into a mounted folder with no network, serves `/readyz`,
//! stops on SIGTERM, and runs as an unprivileged user with `/data` as its volume.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::*;

const BASE: &str = "localhost/roomcast-base:bookworm";

fn make(args: &[&str]) {
    let out = Command::new("make")
        .arg("--no-print-directory")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("make");
    assert!(
        out.status.success(),
        "make {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// podman as it runs here: runc, cgroupfs, no default ulimits (see the README's Deploy).
fn podman(conf: &Path) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", conf).args([
        "--runtime",
        "/usr/sbin/runc",
        "--cgroup-manager=cgroupfs",
    ]);
    c
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Removes the image when the test ends, passed or not.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

#[test]
fn the_image_records_the_demo_and_serves_without_a_network() {
    let dir = TempDir::new("image");
    let conf = dir.path().join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    make(&["image-base", &format!("BASE_IMAGE={BASE}")]);
    let image = Image(format!("localhost/roomcast:test-{}", std::process::id()));
    make(&[
        "image",
        &format!("BIN={}", bin()),
        &format!("BASE={BASE}"),
        &format!("IMAGE={}", image.0),
    ]);

    // What the image says about itself.
    let inspect = ok(
        podman(&conf)
            .args(["image", "inspect", "--format", "json", &image.0])
            .output()
            .unwrap(),
        "inspect",
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let cfg = &v[0]["Config"];
    assert_eq!(cfg["User"], "roomcast:roomcast", "{cfg}");
    assert_eq!(cfg["Entrypoint"][0], "/usr/local/bin/roomcast", "{cfg}");
    assert_eq!(cfg["StopSignal"], "SIGTERM", "{cfg}");
    assert!(cfg["Volumes"].get("/data").is_some(), "{cfg}");
    let labels = &cfg["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "roomcast");
    assert_eq!(labels["org.opencontainers.image.base.name"], BASE);
    assert!(labels["org.opencontainers.image.revision"].is_string());

    // The demo, with no network, into a mounted folder: a 15 s H.264 + AAC MP4.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::process::Command::new("chmod")
        .args(["0777"])
        .arg(&out)
        .status()
        .unwrap();
    ok(
        podman(&conf)
            .args(["run", "--rm", "--network", "none", "-v"])
            .arg(format!("{}:/out", out.display()))
            .args([&image.0, "demo", "--out", "/out"])
            .output()
            .unwrap(),
        "demo in the container",
    );
    let mp4 = out.join("demo_1_1.mp4");
    let p = probe(&mp4);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!((p.duration - 15.0).abs() < 0.5, "{} s", p.duration);
    // Written by the image's own user, not root.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&mp4).unwrap().uid(), 10001);

    // `serve` (the default command) answers /readyz and ends cleanly on SIGTERM.
    let port = free_port();
    let name = format!("roomcast-serve-{}", std::process::id());
    let mut serve = podman(&conf)
        .args(["run", "--rm", "--name", &name, "--network", "host"])
        .args(["-e", "ROOMCAST_API_TOKEN=container-test-token"])
        .args(["-e", &format!("ROOMCAST_LISTEN=127.0.0.1:{port}")])
        .arg(&image.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let ready = wait_for(60.0, || {
        std::net::TcpStream::connect(&addr).ok()?;
        (http(&addr, "GET", "/readyz", None, None).0 == 200).then_some(())
    });
    if ready.is_none() {
        let _ = serve.kill();
        let out = serve.wait_with_output().unwrap();
        panic!(
            "serve never ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t = Instant::now();
    ok(
        podman(&conf)
            .args(["stop", "--time", "30", &name])
            .output()
            .unwrap(),
        "stop",
    );
    let status = serve.wait().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "SIGTERM took {:?}",
        t.elapsed()
    );
    assert!(status.success(), "serve ended with {status}");
}

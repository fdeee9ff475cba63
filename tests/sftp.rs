//! Delivery to a real OpenSSH server over SFTP, host key checked.

mod support;

use sha2::{Digest, Sha256};
use support::*;

#[test]
fn demo_uploads_over_sftp_and_checks_the_host_key() {
    let dir = TempDir::new("sftp");
    let sshd = Sshd::start(&dir.0.join("sshd"));
    let remote = dir.0.join("remote");
    std::fs::create_dir_all(&remote).unwrap();

    // A wrong host key: nothing is sent, the file waits in the spool.
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let data = dir.0.join("data");
    let env = |url: String| {
        vec![
            ("ROOMCAST_DATA_DIR", data.display().to_string()),
            ("ROOMCAST_STORAGE", url),
        ]
    };
    let out = dir.0.join("rec");
    let (ok, j, err) = Demo::new(&out)
        .participants(2)
        .duration(3)
        .arg("--deliver-wait", "1")
        .env(&env(sshd.url(&remote, wrong)))
        .run();
    assert!(ok, "{err}");
    assert_eq!(j["delivery"]["pending"], 1, "{j}");
    assert!(
        err.contains("does not match"),
        "host key mismatch not reported: {err}"
    );
    assert!(
        std::fs::read_dir(&remote).unwrap().next().is_none(),
        "uploaded despite a bad host key"
    );
    let sha = j["delivery"]["sha256"].as_str().unwrap().to_string();

    // The right key: the spooled file goes up, under its final name, byte for byte.
    let (ok, r, err) = run_env(
        &env(sshd.url(&remote, &sshd.fingerprint)),
        &["deliver", "--wait", "20"],
    );
    assert!(ok, "{err}");
    assert_eq!(r["delivery"]["delivered"], 1, "{r} {err}");
    let stored = remote.join("demo/1/demo_1_1.mp4");
    let got: String = Sha256::digest(std::fs::read(&stored).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(got, sha);
    assert_eq!(
        r["delivery"]["urls"][0],
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            sshd.user,
            sshd.port,
            stored.display()
        )
    );
    let leftovers: Vec<_> = std::fs::read_dir(remote.join("demo/1")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary file left behind");
    assert!((probe(&stored).duration - 3.0).abs() < 0.5);
}

#[test]
fn a_recording_on_the_sftp_server_is_read_back_by_range_for_a_player() {
    let dir = TempDir::new("sftp-media");
    let sshd = Sshd::start(&dir.0.join("sshd"));
    let remote = dir.0.join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let storage = sshd.url(&remote, &sshd.fingerprint);
    let env = serve_env(&dir.0.join("data"), &[("ROOMCAST_STORAGE", &storage)]);
    let api = Service::start(&["serve"], &env, &dir.0.join("serve.log"), true);
    let (id, name, entry) = record_delivered(&api, "seminar");
    assert!(
        entry["url"].as_str().unwrap().starts_with("sftp://"),
        "{entry}"
    );
    let stored = files_under(&remote)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name))
        .expect("the file on the server");
    let object = std::fs::read(&stored).unwrap();
    let addr = api.addr.clone().unwrap();
    let path = format!("/v1/recordings/{id}/{name}/media");

    // Read over SFTP by the API, with the storage's own key and host-key check.
    let (status, head, body) = get_bytes(&addr, &path, Some("bytes=0-"));
    assert_eq!(status, 206, "{head}");
    assert_eq!(body, object);
    let (status, head, body) = get_bytes(&addr, &path, Some("bytes=500-1499"));
    assert_eq!(status, 206, "{head}");
    assert!(
        head.contains(&format!("content-range: bytes 500-1499/{}", object.len())),
        "{head}"
    );
    assert_eq!(body, &object[500..1500]);
    let (status, _, body) = get_bytes(&addr, &path, None);
    assert_eq!(status, 200);
    let file = dir.0.join("read-back.mp4");
    std::fs::write(&file, &body).unwrap();
    let p = probe(&file);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert!(p.duration > 2.0, "{}", p.duration);
}

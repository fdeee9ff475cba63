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

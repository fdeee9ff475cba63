//! The systemd units in `deploy/systemd/`: each passes `systemd-analyze verify`, is rated "OK"
//! or better by `systemd-analyze security`, and gives a stopping worker longer than its drain.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const UNITS: [&str; 3] = [
    "roomcast-serve.service",
    "roomcast-api.service",
    "roomcast-worker.service",
];

/// How long a stopping worker may take: its jobs' drain (60 s) and one webhook pass (2 s).
const WORKER_STOP_S: u64 = 62;

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd")
}

/// `unit` as installed, with `ExecStart=` naming the binary under test (verify checks that
/// the command exists).
fn installed(dir: &TempDir, unit: &str) -> PathBuf {
    let text = std::fs::read_to_string(unit_dir().join(unit)).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/roomcast "),
        "{unit}"
    );
    let path = dir.path().join(unit);
    std::fs::write(&path, text.replace("/usr/local/bin/roomcast", bin())).unwrap();
    path
}

fn setting(unit: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(unit_dir().join(unit))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn every_unit_verifies_and_is_rated_ok_or_better() {
    let dir = TempDir::new("units");
    for unit in UNITS {
        let path = installed(&dir, unit);
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian systemd)");
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{unit}: {said}");
        assert!(said.trim().is_empty(), "{unit}: verify said {said}");

        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{unit}: no rating in {text}"));
        let rating: Vec<&str> = line
            .rsplit(':')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let exposure: f64 = rating[0].parse().unwrap();
        eprintln!("{unit}: exposure {exposure} {}", rating[1]);
        assert!(
            matches!(rating[1], "SAFE" | "OK") && exposure < 5.0,
            "{unit}: {line}"
        );
    }
}

#[test]
fn units_run_as_their_own_user_in_their_state_directory() {
    let wanted = [
        ("DynamicUser", "yes"),
        ("StateDirectory", "roomcast"),
        ("Environment", "ROOMCAST_DATA_DIR=%S/roomcast"),
        ("KillMode", "mixed"),
        ("Restart", "on-failure"),
    ];
    for unit in UNITS {
        for (key, value) in wanted {
            assert_eq!(setting(unit, key).as_deref(), Some(value), "{unit}: {key}");
        }
    }
    for unit in ["roomcast-serve.service", "roomcast-worker.service"] {
        let stop: u64 = setting(unit, "TimeoutStopSec").unwrap().parse().unwrap();
        assert!(stop > WORKER_STOP_S, "{unit}: TimeoutStopSec={stop}");
    }
}

//! The bench commands whose figures the README's Performance section quotes, run short: what
//! they print has the shape the README reads and sane values. Not timed: a bench's figures
//! are measured by `make bench`, not asserted here.

mod support;

use support::*;

fn bench(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = run(args);
    assert!(ok, "{args:?}: {err}");
    last_json(&out)
}

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number: {v}"))
}

#[test]
fn bench_composite_reports_cost_speed_and_memory() {
    let v = bench(&[
        "bench",
        "composite",
        "--participants",
        "2",
        "--seconds",
        "3",
    ]);
    assert_eq!(number(&v, "media_seconds"), 3.0, "{v}");
    assert_eq!(v["participants"], 2, "{v}");
    assert_eq!(v["preset"], "h264-720p30", "{v}");
    let cpu = number(&v, "cpu_seconds");
    let wall = number(&v, "wall_seconds");
    assert!(cpu > 0.0 && wall > 0.0, "{v}");
    // Consistent with one another: speed is media over wall time, cost is CPU over media.
    let speed = number(&v, "realtime_factor");
    assert!((speed - 3.0 / wall).abs() < 0.05 * speed, "{v}");
    let cores = number(&v, "cores_per_recording");
    assert!((cores - cpu / 3.0).abs() < 0.01, "{v}");
    assert!(cores > 0.0 && cores < 4.0, "{v}");
    let rss = number(&v, "peak_rss_mib");
    assert!((20.0..2000.0).contains(&rss), "{v}");
    assert!(number(&v, "output_bytes") > 10_000.0, "{v}");
}

#[test]
fn bench_live_checks_every_recording_it_ran() {
    let v = bench(&[
        "bench",
        "live",
        "--jobs",
        "2",
        "--participants",
        "2",
        "--seconds",
        "4",
    ]);
    assert_eq!(v["jobs"], 2, "{v}");
    let per_job = v["per_job"].as_array().expect("per_job");
    assert_eq!(per_job.len(), 2, "{v}");
    for j in per_job {
        let expected = number(j, "expected_frames");
        assert_eq!(expected, 120.0, "{j}");
        let frames = number(j, "frames");
        assert!(frames > 0.0 && frames <= expected + 1.0, "{j}");
        assert!(number(j, "av_pairs") >= 1.0, "{j}");
        assert!(number(j, "worst_av_offset_ms") >= 0.0, "{j}");
    }
    let kept_up = v["kept_up"].as_u64().expect("kept_up");
    assert!(kept_up <= 2, "{v}");
    let total = number(&v, "cores_total");
    let each = number(&v, "cores_per_job");
    assert!((total - 2.0 * each).abs() < 1e-6 && total > 0.0, "{v}");
}

#[test]
fn long_commands_show_their_progress() {
    let args = [
        "bench",
        "live",
        "--jobs",
        "1",
        "--participants",
        "2",
        "--seconds",
        "7",
    ];
    // Without a terminal: a progress line every few seconds on standard error, and the one
    // JSON line on standard output as ever.
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(last_json(&out)["jobs"], 1, "{out}");
    let line = err
        .lines()
        .find(|l| l.contains("progress") && l.contains("bench live"))
        .unwrap_or_else(|| panic!("no progress line: {err}"));
    assert!(
        line.contains("percent=") && line.contains("left_s="),
        "{line}"
    );

    // On a terminal (a pseudo-terminal made by `script`): a bar with percent and time left.
    let cmd = format!("{} {} 2>&1 >/dev/null", bin(), args.join(" "));
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("bench live [") && screen.contains('%') && screen.contains("left"),
        "no progress bar on the terminal: {screen}"
    );
}

#[test]
fn bench_snapshot_reports_what_a_thumbnail_costs() {
    let v = bench(&["bench", "snapshot", "--count", "5"]);
    assert_eq!(v["frame"], "1280x720", "{v}");
    assert!(number(&v, "jpeg_bytes") > 1000.0, "{v}");
    assert!(number(&v, "cpu_ms_per_snapshot") > 0.0, "{v}");
    assert!(number(&v, "tap_ns_per_frame") > 0.0, "{v}");
    let cores = number(&v, "cores_per_job");
    assert!(cores > 0.0 && cores < 1.0, "{v}");
}

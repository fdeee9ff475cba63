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

//! The stall watchdog: a segment whose output stops (a wedged element, injected with
//! `ROOMCAST_FAULT_STALL_AFTER_SECS`) is ended with what reached the file, and the job goes on
//! in a new segment.

mod support;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

/// `roomcast serve` delivering to a folder, with the stall `fault` settings, recording
/// synthetic room "st": its folder, the service, the storage folder and the job id.
fn recording(tag: &str, fault: &[(&str, &str)]) -> (TempDir, Service, PathBuf, String) {
    let dir = TempDir::new(tag);
    let storage = dir.path().join("storage");
    let target = format!("file://{}", storage.display());
    let mut settings = vec![("ROOMCAST_STORAGE", target.as_str())];
    settings.extend_from_slice(fault);
    let env = serve_env(&dir.path().join("data"), &settings);
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "st", 2, "{}");
    let (status, v) = start_recording(&api, "st");
    assert_eq!(status, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    (dir, api, storage, id)
}

#[test]
fn a_stalled_output_ends_the_segment_and_a_new_one_records() {
    let (_dir, api, storage, id) = recording("stall", &[("ROOMCAST_FAULT_STALL_AFTER_SECS", "3")]);
    wait_state(&api, &id, "active", 20.0);
    let t0 = Instant::now();

    // The wedge comes at 3 s; within the watchdog's 5 s (checked every 2 s) the segment ends,
    // is finalized and delivered, and a second segment starts.
    let second = wait_for(30.0, || {
        let j = job(&api, &id);
        let segments = j["segments"].as_array()?.len();
        (segments >= 2 && j["state"] == "active").then_some(j)
    })
    .unwrap_or_else(|| panic!("no second segment: {}\n{}", job(&api, &id), api.log_text()));
    eprintln!(
        "second segment recording {:?} after the start",
        t0.elapsed()
    );
    assert_eq!(second["stall_restarts"], 1, "{second}");
    assert_eq!(second["segments"][0]["status"], "delivered", "{second}");
    assert!(api.log_text().contains("the mixers produced nothing"));

    std::thread::sleep(Duration::from_secs(4));
    let (status, v) = stop_recording(&api, "st");
    assert_eq!(status, 200, "{v}");
    let done = wait_state(&api, &id, "completed", 30.0);
    let segments = done["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "{done}");
    assert!(
        segments.iter().all(|s| s["status"] == "delivered"),
        "{done}"
    );

    // Both files play: the first holds what was recorded before the wedge, the second the
    // rest.
    let files = mp4s_under(&storage);
    assert_eq!(files.len(), 2, "{files:?}");
    let durations: Vec<f64> = files.iter().map(|f| probe(f).duration).collect();
    eprintln!("segment durations {durations:?}");
    for f in &files {
        let p = probe(f);
        assert_eq!(p.video_codec.as_deref(), Some("h264"));
        assert_eq!(p.audio_codec.as_deref(), Some("aac"));
        assert!(decoded_video_frames(f) > 30, "{}", f.display());
    }
    assert!(
        (1.5..=5.0).contains(&durations[0]),
        "first segment {durations:?}"
    );
    assert!(durations[1] >= 3.0, "second segment {durations:?}");
}

/// A job whose new segments stall again is not restarted forever: after the third stalled
/// segment in a row it fails with 7204, every segment delivered.
#[test]
fn a_job_that_keeps_stalling_fails_with_7204() {
    let (_dir, api, storage, id) = recording(
        "stall-again",
        &[
            ("ROOMCAST_FAULT_STALL_AFTER_SECS", "2"),
            ("ROOMCAST_FAULT_STALL_SEGMENTS", "10"),
        ],
    );
    let failed = wait_failed(&api, &id, 7204, "stalled 3 times", 90.0);
    let segments = failed["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 3, "{failed}");
    assert!(
        segments.iter().all(|s| s["status"] == "delivered"),
        "{failed}"
    );
    assert_eq!(mp4s_under(&storage).len(), 3);
}

/// A recording whose encoders produce nothing within `ROOMCAST_START_TIMEOUT_SECS` (its video
/// encoder wedged from the start) fails with 7013, "start timed out", not with a stall.
#[test]
fn a_start_that_encodes_nothing_fails_with_7013() {
    let (_dir, api, storage, id) = recording(
        "start-timeout",
        &[
            ("ROOMCAST_FAULT_STALL_AFTER_SECS", "0"),
            ("ROOMCAST_START_TIMEOUT_SECS", "3"),
        ],
    );
    let t0 = Instant::now();
    let failed = wait_failed(&api, &id, 7013, "no frame was encoded within 3 s", 30.0);
    assert_eq!(
        failed["stall_restarts"].as_u64().unwrap_or(0),
        0,
        "{failed}"
    );
    // The 3 s start timeout, then the stop: 3–4 s measured; bounded at twice that.
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    // Nothing was recorded, so no file is listed or delivered.
    assert!(mp4s_under(&storage).is_empty());
    let segments = failed["segments"].as_array().unwrap();
    assert!(
        segments.iter().all(|s| s["status"] != "delivered"),
        "{failed}"
    );
}

/// A stop the pipeline cannot drain within its limit (the encoder wedged just before it) ends
/// the job with 7031, and what was written is finalized and delivered all the same.
#[test]
fn a_stop_that_cannot_drain_reports_7031_and_keeps_the_file() {
    let (_dir, api, storage, id) =
        recording("stop-timeout", &[("ROOMCAST_FAULT_STALL_AFTER_SECS", "3")]);
    wait_state(&api, &id, "active", 20.0);
    // Stopped after the wedge (3 s), before the stall watchdog would notice it.
    std::thread::sleep(Duration::from_millis(4500));
    let (status, v) = stop_recording(&api, "st");
    assert_eq!(status, 200, "{v}");
    let failed = wait_failed(&api, &id, 7031, "did not drain", 40.0);
    assert_eq!(failed["segments"][0]["status"], "delivered", "{failed}");
    let files = mp4s_under(&storage);
    assert_eq!(files.len(), 1, "{files:?}");
    let p = probe(&files[0]);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert!((1.5..=5.0).contains(&p.duration), "duration {}", p.duration);
    assert!(decoded_video_frames(&files[0]) > 30);
}

/// A stop that arrives while a stalled segment is still ending (its teardown held 3 s, as a
/// big room's can take) ends the job: that segment is the last, delivered, and no new one
/// starts.
#[test]
fn a_stop_during_a_stalled_segments_ending_ends_the_job() {
    let (_dir, api, storage, id) = recording(
        "stop-while-stalled",
        &[
            ("ROOMCAST_FAULT_STALL_AFTER_SECS", "3"),
            ("ROOMCAST_FAULT_SHUTDOWN_HANG_SECS", "3"),
        ],
    );
    wait_state(&api, &id, "active", 20.0);
    wait_for(30.0, || {
        api.log_text()
            .contains("the mixers produced nothing")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the stall was not noticed: {}", api.log_text()));
    let (status, v) = stop_recording(&api, "st");
    assert_eq!((status, v["result"].as_u64()), (200, Some(0)), "{v}");
    let done = wait_state(&api, &id, "completed", 30.0);
    assert_eq!(done["result"], 0, "{done}");
    assert_eq!(done["stall_restarts"].as_u64().unwrap_or(0), 0, "{done}");
    let segments = done["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{done}");
    assert_eq!(segments[0]["status"], "delivered", "{done}");
    let files = mp4s_under(&storage);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        decoded_video_frames(&files[0]) > 30,
        "{}",
        files[0].display()
    );
    // Nothing started again after the job ended.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(job(&api, &id)["segments"].as_array().unwrap().len(), 1);
    assert!(!api.log_text().contains("starting a new segment"));
}

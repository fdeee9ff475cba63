//! Start and stop failures by their cause, each with the platform's code in the job record and
//! the `…-failed` status webhook: a room that cannot be joined in time (7011, streaming 7001),
//! a stream whose destination never goes live (7001), a stream whose stop cannot drain (7041),
//! a pipeline that does not shut down in time (7032, streaming 7042), a segment that cannot be
//! rewritten at the end (7033).

mod support;
use std::time::{Duration, Instant};
use support::*;

/// A loopback port that accepts connections and never says a word (a hung server).
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

fn service(tag: &str, extra: &[(&str, &str)]) -> (TempDir, Service, Receiver) {
    let dir = TempDir::new(tag);
    let hooks = Receiver::start(0);
    let url = format!("http://127.0.0.1:{}/hook", hooks.port);
    let mut env = vec![
        ("ROOMCAST_WEBHOOK_URL", url.as_str()),
        ("ROOMCAST_WEBHOOK_SECRET", "s3cret"),
    ];
    env.extend_from_slice(extra);
    let api = Service::start(
        &["serve"],
        &serve_env(&dir.path().join("data"), &env),
        &dir.path().join("serve.log"),
        true,
    );
    (dir, api, hooks)
}

fn start_streaming(api: &Service, room: &str, rtmp: &str) -> String {
    let (s, v) = api.call(
        "POST",
        &format!("/v1/rooms/{room}/streaming"),
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"rtmp_urls":["{rtmp}"]}}"#
        )),
    );
    assert_eq!(s, 201, "{v}");
    v["job_id"].as_str().unwrap().to_string()
}

/// The result codes of the `kind` status webhooks of `room` so far.
fn hook_codes(hooks: &Receiver, kind: &str, room: &str) -> Vec<u64> {
    hooks
        .of_type(kind)
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .filter(|v| v["room_id"] == room)
        .map(|v| v["data"]["status"]["resultCode"].as_u64().unwrap_or(0))
        .collect()
}

/// Waits for a `kind` status webhook of `room` carrying `code` (a streaming job also reports
/// its destinations' failures with `room-streaming-failed`).
fn failed_hook(hooks: &Receiver, kind: &str, room: &str, code: u64) {
    if wait_for(20.0, || {
        hook_codes(hooks, kind, room).contains(&code).then_some(())
    })
    .is_none()
    {
        panic!(
            "no {kind} webhook with {code} for {room}: {:?}",
            hook_codes(hooks, kind, room)
        );
    }
}

#[test]
fn a_room_that_cannot_be_joined_in_time_fails_with_7011_and_a_stream_with_7001() {
    let (_dir, api, hooks) = service("join-timeout", &[("ROOMCAST_START_TIMEOUT_SECS", "3")]);
    let janus = silent_server();
    let (s, v) = api.call(
        "PUT",
        "/v1/rooms/hung",
        Some(&format!(
            r#"{{"conf_num":"1","connector":{{"type":"janus","url":"ws://127.0.0.1:{janus}","room":1}}}}"#
        )),
    );
    assert_eq!(s, 200, "{v}");
    let t0 = Instant::now();
    let (_, v) = start_recording(&api, "hung");
    let id = v["job_id"].as_str().unwrap().to_string();
    let failed = wait_state(&api, &id, "failed", 30.0);
    assert_eq!(failed["result"], 7011, "{failed}");
    // The 3 s start timeout and the job's end: 3–4 s measured; bounded at twice that.
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    failed_hook(&hooks, "room-live-recording-failed", "hung", 7011);

    let rtmp = silent_server();
    let id = start_streaming(&api, "hung", &format!("rtmp://127.0.0.1:{rtmp}/live/k"));
    let failed = wait_state(&api, &id, "failed", 30.0);
    assert_eq!(failed["result"], 7001, "{failed}");
    failed_hook(&hooks, "room-streaming-failed", "hung", 7001);
}

#[test]
fn a_stream_whose_destination_never_goes_live_fails_with_7001() {
    let (_dir, api, hooks) = service("rtmp-timeout", &[("ROOMCAST_START_TIMEOUT_SECS", "3")]);
    register_room(&api, "quiet", 1, "{}");
    let rtmp = silent_server();
    let t0 = Instant::now();
    let id = start_streaming(&api, "quiet", &format!("rtmp://127.0.0.1:{rtmp}/live/k"));
    wait_failed(
        &api,
        &id,
        7001,
        "no RTMP destination was live within 3 s",
        30.0,
    );
    // The 3 s start timeout and the job's end: 3–4 s measured; bounded at twice that.
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    failed_hook(&hooks, "room-streaming-failed", "quiet", 7001);
}

#[test]
fn a_stream_stop_that_cannot_drain_reports_7041() {
    let (_dir, api, hooks) = service(
        "stream-stop-timeout",
        &[("ROOMCAST_FAULT_STALL_AFTER_SECS", "3")],
    );
    register_room(&api, "wedge", 1, "{}");
    // A destination that never answers: the stream itself is not what fails here.
    let rtmp = silent_server();
    let id = start_streaming(&api, "wedge", &format!("rtmp://127.0.0.1:{rtmp}/live/k"));
    wait_state(&api, &id, "active", 20.0);
    // Stopped after the wedge (3 s), before the stall watchdog would notice it.
    std::thread::sleep(Duration::from_millis(4500));
    let (s, v) = stop_streaming(&api, "wedge");
    assert_eq!(s, 200, "{v}");
    let failed = wait_failed(&api, &id, 7041, "did not drain", 40.0);
    failed_hook(&hooks, "room-streaming-failed", "wedge", 7041);
    // Its destination failed again and again (a connection attempt times out every few
    // seconds): one failure was reported, not one per attempt.
    let attempts = failed["destinations"][0]["connections"]
        .as_u64()
        .unwrap_or(0);
    assert!(attempts >= 2, "{failed}");
    let codes = hook_codes(&hooks, "room-streaming-failed", "wedge");
    assert_eq!(codes.iter().filter(|c| **c == 7020).count(), 1, "{codes:?}");
}

#[test]
fn a_pipeline_that_does_not_shut_down_in_time_reports_7032_and_7042_and_keeps_the_file() {
    let (_dir, api, hooks) = service(
        "shutdown-timeout",
        &[("ROOMCAST_FAULT_SHUTDOWN_HANG_SECS", "8")],
    );
    // Two rooms: each job shuts its own pipeline down (a room's recording and stream share
    // one, and only the last job to stop shuts it down).
    register_room(&api, "slow", 1, "{}");
    register_room(&api, "slower", 1, "{}");
    let (_, v) = start_recording(&api, "slow");
    let rec = v["job_id"].as_str().unwrap().to_string();
    let rtmp = silent_server();
    let stream = start_streaming(&api, "slower", &format!("rtmp://127.0.0.1:{rtmp}/live/k"));
    wait_state(&api, &rec, "active", 20.0);
    wait_state(&api, &stream, "active", 20.0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stop_recording(&api, "slow").1["result"], 0);
    let (s, v) = stop_streaming(&api, "slower");
    assert_eq!(s, 200, "{v}");
    let failed = wait_failed(&api, &rec, 7032, "did not shut down", 40.0);
    // What was recorded is finalized and kept all the same.
    let seg = &failed["segments"][0];
    assert_eq!(seg["status"], "local", "{failed}");
    let path = std::path::PathBuf::from(seg["path"].as_str().unwrap());
    let p = probe(&path);
    assert!(p.duration >= 2.0, "{} s", p.duration);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    failed_hook(&hooks, "room-live-recording-failed", "slow", 7032);
    let failed = wait_state(&api, &stream, "failed", 40.0);
    assert_eq!(failed["result"], 7042, "{failed}");
    failed_hook(&hooks, "room-streaming-failed", "slower", 7042);
}

#[test]
fn a_segment_that_cannot_be_rewritten_reports_7033_and_stays_playable() {
    let (_dir, api, hooks) = service("finalize-fails", &[("ROOMCAST_FAULT_FINALIZE_FAILS", "1")]);
    register_room(&api, "frag", 1, "{}");
    let (_, v) = start_recording(&api, "frag");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stop_recording(&api, "frag").1["result"], 0);
    let failed = wait_failed(&api, &id, 7033, "could not be finalized", 40.0);
    failed_hook(&hooks, "room-live-recording-failed", "frag", 7033);
    // Kept as it was written: fragmented, and playable.
    let seg = &failed["segments"][0];
    assert_eq!(seg["status"], "local", "{failed}");
    let path = std::path::PathBuf::from(seg["path"].as_str().unwrap());
    assert!(top_level_boxes(&path).iter().any(|b| b == "moof"));
    let p = probe(&path);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert!(decoded_video_frames(&path) >= 60, "{p:?}");
}

//! Health of WebRTC feeds on a real Janus, through `roomcast serve`: every received track's
//! counters in the job record and in `/metrics`, and what packet loss (nftables, inside the
//! test's own network namespace) does to them and to the recording (decoded: frame count,
//! colour, voice).

mod support;
use std::time::Duration;
use support::janus::*;
use support::*;

const RED: u32 = 0xd02020;

/// The value of the `/metrics` series `name` for `participant`'s `kind` track.
fn metric(text: &str, name: &str, participant: &str, kind: &str) -> Option<f64> {
    let labels = format!("participant=\"{participant}\",kind=\"{kind}\"");
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn metrics(api: &Service) -> String {
    let (status, body) = api.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    body.as_str().unwrap_or_default().to_string()
}

#[test]
fn feed_health_is_reported_and_losses_are_repaired() {
    if !in_network_namespace("feed_health_is_reported_and_losses_are_repaired") {
        return;
    }
    gst::init().unwrap();
    let dir = TempDir::new("feed-health");
    let (janus, rt, _admin) = janus_room(dir.path(), 1);
    let publisher = rt.block_on(Publisher::publish_sized(
        &janus.url(),
        1,
        "Ann",
        RED,
        440.0,
        Codec::Vp8,
        (640, 360, 30),
    ));
    rt.block_on(publisher.wait_connected());
    let ann = publisher.id.to_string();

    let api = Service::start(
        &["serve"],
        &serve_env(&dir.path().join("data"), &[]),
        &dir.path().join("serve.log"),
        true,
    );
    let room = format!(
        r#"{{"conf_num":"1","connector":{{"type":"janus","url":"{}","room":1,"ice_address":"{ICE_ADDRESS}"}}}}"#,
        janus.url()
    );
    let (status, v) = api.call("PUT", "/v1/rooms/r1", Some(&room));
    assert!(status == 200 || status == 201, "{status} {v}");
    let (status, v) = start_recording(&api, "r1");
    assert_eq!(status, 201, "{v}");
    let id = v["job_id"].as_str().expect("job id").to_string();
    wait_state(&api, &id, "active", 20.0);

    // A clean network: the video decodes at the sender's rate, nothing is lost.
    let clean = wait_for(15.0, || {
        let text = metrics(&api);
        let fps = metric(&text, "roomcast_feed_fps", &ann, "video")?;
        let received = metric(&text, "roomcast_feed_packets_received_total", &ann, "video")?;
        (fps > 20.0 && received > 100.0).then_some(text)
    })
    .unwrap_or_else(|| panic!("no video for {ann}: {}", metrics(&api)));
    assert!(
        metric(
            &clean,
            "roomcast_feed_packets_received_total",
            &ann,
            "audio"
        )
        .unwrap()
            > 50.0
    );
    assert_eq!(
        metric(&clean, "roomcast_feed_degraded", &ann, "video"),
        Some(0.0)
    );
    let record = job(&api, &id);
    let feeds = record["feeds"]
        .as_array()
        .expect("feeds in the job record")
        .clone();
    assert!(
        feeds
            .iter()
            .any(|f| f["participant"] == ann.as_str() && f["kind"] == "video"),
        "{record}"
    );

    // 5 % of the packets reaching the recorder from Janus are dropped for 8 s.
    add_loss(&janus, 0, 5);
    std::thread::sleep(Duration::from_secs(8));
    clear_loss();
    std::thread::sleep(Duration::from_secs(3));
    let lossy = metrics(&api);
    let lost = metric(&lossy, "roomcast_feed_packets_lost_total", &ann, "video").unwrap();
    let nacks = metric(&lossy, "roomcast_feed_nacks_sent_total", &ann, "video").unwrap();
    let plis = metric(&lossy, "roomcast_feed_plis_sent_total", &ann, "video").unwrap();
    let freezes = metric(&lossy, "roomcast_feed_freezes_total", &ann, "video").unwrap();
    let fps = metric(&lossy, "roomcast_feed_fps", &ann, "video").unwrap();
    eprintln!(
        "after 8 s of 5 % loss: lost {lost}, NACKs {nacks}, PLIs {plis}, freezes {freezes}, fps {fps:.1}"
    );
    // README (5 runs): 9–18 packets lost after repair, 0–2 freezes; bounded at twice that.
    assert!(lost <= 36.0, "{lost} packets lost after repair: {lossy}");
    assert!(freezes <= 4.0, "{freezes} freezes: {lossy}");
    assert!(nacks > 0.0, "lost packets must be requested again: {lossy}");
    assert!(
        plis > 0.0,
        "keyframes must be asked for after a loss: {lossy}"
    );
    assert!(fps > 20.0, "the video decodes at full rate again: {lossy}");
    assert_eq!(
        metric(&lossy, "roomcast_feed_degraded", &ann, "video"),
        Some(0.0),
        "{lossy}"
    );
    let (status, _) = stop_recording(&api, "r1");
    assert_eq!(status, 200);
    let done = wait_state(&api, &id, "completed", 30.0);
    eprintln!("job record feeds: {}", done["feeds"]);
    drop(publisher);
    // The recording across the loss: the picture at full rate, Ann in her colour and her
    // voice in the sound after the loss as before it.
    let path = std::path::PathBuf::from(done["segments"][0]["path"].as_str().unwrap());
    let p = probe(&path);
    assert!(p.duration > 12.0, "{} s recorded", p.duration);
    let frames = decoded_video_frames(&path) as f64;
    assert!(
        frames >= p.duration * 30.0 * 0.95,
        "{frames} frames in {:.1} s",
        p.duration
    );
    let end = frame_at(&path, p.duration - 1.5, 1280, 720);
    assert_region(&end, (560, 300, 160, 120), RED, "Ann after the loss");
    let pcm = audio_mono(&path, 48_000);
    for (from, what) in [(1.0, "before"), (p.duration - 2.5, "after")] {
        let hum = tone_amplitude(window(&pcm, 48_000, from, from + 1.0), 440.0, 48_000);
        // Sent at 0.42: 0.41–0.43 is found on every run.
        assert!(hum > 0.2, "Ann's voice {what} the loss: {hum}");
    }
}

//! Live HLS: fMP4 segments and playlists from the job's one encode, read by ffmpeg while live
//! and after the end, and delivered through the spool to S3 (a storage outage delays segments
//! but loses none).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

/// `#EXTINF` durations and URIs of a playlist.
fn entries(text: &str) -> Vec<(f64, String)> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let d = l.strip_prefix("#EXTINF:")?.trim_end_matches(',');
            Some((d.parse().ok()?, lines.get(i + 1)?.to_string()))
        })
        .collect()
}

fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(name))
}

/// ffmpeg's complaints while decoding every frame of `input` (empty: clean).
fn decode_errors(input: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(input)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg failed on {}", input.display());
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The frame shown at `t` s, decoding from the start (ffmpeg 5.1 cannot seek its input in
/// fMP4 HLS, its own included).
fn frame_decoded_at(input: &Path, t: f64) -> Frame {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(input)
        .args(["-ss", &format!("{t:.3}"), "-frames:v", "1"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    assert_eq!(
        out.stdout.len(),
        1280 * 720 * 3,
        "frame at {t} s of {}",
        input.display()
    );
    Frame {
        w: 1280,
        h: 720,
        rgb: out.stdout,
    }
}

/// Share of sampled points whose colours differ by more than 40 between two frames.
fn differing(a: &Frame, b: &Frame) -> f64 {
    let mut n = 0;
    let mut bad = 0;
    for y in (0..a.h).step_by(6) {
        for x in (0..a.w).step_by(6) {
            let (p, q) = (a.px(x, y), b.px(x, y));
            let rgb = (u32::from(q[0]) << 16) | (u32::from(q[1]) << 8) | u32::from(q[2]);
            n += 1;
            if dist(p, rgb) > 40.0 {
                bad += 1;
            }
        }
    }
    bad as f64 / n as f64
}

#[test]
fn demo_hls_plays_while_live_and_after_the_end() {
    let dir = TempDir::new("hls-demo");
    let out = dir.path().join("out");
    let child = Command::new(bin())
        .args([
            "demo",
            "--duration",
            "16",
            "--hls",
            "--hls-segment",
            "2",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("demo.log")).unwrap())
        .spawn()
        .expect("start demo");
    let playlist = out.join("demo_1_1_hls/demo_1_1.m3u8");
    // While live: the playlist grows by one segment every 2 s, never ends, slides its window
    // (6 segments) and plays. One thread watches it, this one plays it.
    let watched = playlist.clone();
    let watcher = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let mut seen: Vec<(u32, usize, f64)> = Vec::new(); // (media sequence, listed, when)
        while t0.elapsed().as_secs() < 40 {
            if let Ok(text) = std::fs::read_to_string(&watched) {
                if text.contains("#EXT-X-ENDLIST") {
                    break;
                }
                let seq: u32 = tag(&text, "#EXT-X-MEDIA-SEQUENCE:")
                    .unwrap()
                    .parse()
                    .unwrap();
                let listed = entries(&text).len();
                if seen.last().map(|s| (s.0, s.1)) != Some((seq, listed)) {
                    seen.push((seq, listed, t0.elapsed().as_secs_f64()));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        seen
    });
    let probed_live = wait_for(30.0, || {
        let text = std::fs::read_to_string(&playlist).ok()?;
        (entries(&text).len() >= 2 && !text.contains("#EXT-X-ENDLIST")).then_some(())
    })
    .is_some();
    if probed_live {
        let p = probe(&playlist);
        assert_eq!(p.video_codec.as_deref(), Some("h264"), "live probe: {p:?}");
        assert_eq!(p.audio_codec.as_deref(), Some("aac"), "live probe: {p:?}");
        assert_eq!(
            decode_errors(&playlist),
            "",
            "the live playlist decodes cleanly"
        );
    }
    let seen = watcher.join().unwrap();
    let output = child.wait_with_output().expect("demo");
    assert!(output.status.success(), "demo failed");
    let json = last_json(&String::from_utf8_lossy(&output.stdout));
    assert!(
        probed_live,
        "never saw a live playlist with two segments: {seen:?}"
    );
    assert!(seen.len() >= 6, "the playlist grew in steps: {seen:?}");
    assert!(
        seen.iter().all(|s| s.1 <= 6) && seen.iter().any(|s| s.0 > 1),
        "the live window holds 6 segments and slides: {seen:?}"
    );
    // Each new segment is listed one segment length after the previous: latency does not
    // build up. (The first two may come closer together: the pipeline's start-up.)
    let arrivals: Vec<f64> = seen
        .windows(2)
        .filter(|w| w[1].0 + w[1].1 as u32 > w[0].0 + w[0].1 as u32)
        .map(|w| w[1].2)
        .collect();
    assert!(arrivals.len() >= 5, "{seen:?}");
    for w in arrivals.windows(2).skip(1) {
        assert!(
            (w[1] - w[0] - 2.0).abs() < 0.6,
            "segments listed {:.2} s apart: {arrivals:?}",
            w[1] - w[0]
        );
    }
    let hls = &json["hls"];
    assert_eq!(hls["state"], "ended", "{json}");
    let max_latency = hls["max_latency_ms"].as_u64().unwrap();
    // README: 2.03–2.05 s for 2 s segments.
    assert!(
        (1900..=2600).contains(&max_latency),
        "a frame waits at most a segment + 1 s to be listed: {max_latency} ms"
    );
    // After the end: the VOD playlist lists every segment, their lengths add up to the
    // recording's, and it decodes frame for frame like the MP4.
    let text = std::fs::read_to_string(&playlist).unwrap();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.ends_with("#EXT-X-ENDLIST\n"));
    assert_eq!(tag(&text, "#EXT-X-MEDIA-SEQUENCE:"), Some("1"));
    let list = entries(&text);
    let target: f64 = tag(&text, "#EXT-X-TARGETDURATION:")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(target, 2.0, "{text}");
    for (d, _) in &list[..list.len() - 1] {
        assert!((d - 2.0).abs() < 0.001, "segments are cut at 2 s: {text}");
    }
    let total: f64 = list.iter().map(|e| e.0).sum();
    let mp4 = PathBuf::from(json["file"].as_str().unwrap());
    let mp4_duration = json["duration_s"].as_f64().unwrap();
    assert!(
        (total - mp4_duration).abs() < 2.0,
        "HLS {total} s vs MP4 {mp4_duration} s"
    );
    assert_eq!(hls["segments"].as_u64(), Some(list.len() as u64));
    assert_eq!(decode_errors(&playlist), "");
    let frames = decoded_video_frames(&playlist);
    let mp4_frames = decoded_video_frames(&mp4);
    assert!(
        frames.abs_diff(mp4_frames) <= 2,
        "HLS {frames} frames, MP4 {mp4_frames}"
    );
    // Same picture at the same moments (the demo room changes over time).
    for t in [1.5, 5.0, 9.0, 12.5] {
        let a = frame_decoded_at(&playlist, t);
        let b = frame_decoded_at(&mp4, t);
        let d = differing(&a, &b);
        assert!(
            d < 0.03,
            "at {t} s {:.1} % of the picture differs",
            d * 100.0
        );
    }
    // Lip sync: the sync reference's flashes and beeps line up exactly as in the MP4.
    // Measured on the segments played in sequence (one fMP4 stream: what a player's buffer
    // holds), with the audio on the stream's timeline.
    let joined = dir.path().join("joined.mp4");
    let mut bytes = std::fs::read(
        playlist.with_file_name(tag(&text, "#EXT-X-MAP:URI=").unwrap().trim_matches('"')),
    )
    .unwrap();
    for (_, name) in &list {
        bytes.extend(std::fs::read(playlist.with_file_name(name)).unwrap());
    }
    std::fs::write(&joined, bytes).unwrap();
    let beeps = |f: &Path| beep_onsets_on_timeline(f, 2000.0);
    let offsets = av_offsets(&flash_onsets(&joined, 1200), &beeps(&joined));
    let mp4_offsets = av_offsets(&flash_onsets(&mp4, 1200), &beeps(&mp4));
    assert!(offsets.len() >= 14, "flash/beep pairs: {offsets:?}");
    assert_eq!(
        offsets.len(),
        mp4_offsets.len(),
        "{offsets:?} vs {mp4_offsets:?}"
    );
    // Within 5 ms of the MP4's (the same frames and sound; 0.3 ms measured): the MP4 trims
    // the encoder's priming with an edit list, the segments place the picture later by as
    // much instead. (The first pair is left out: the MP4's audio is trimmed to
    // start with its picture, so a beep under way at zero is found a few ms apart.)
    for ((at, off), (_, mp4_off)) in offsets.iter().zip(&mp4_offsets).skip(1) {
        assert!(
            (off - mp4_off).abs() <= 0.005,
            "flash at {at:.3} s: {:.1} ms off its beep, {:.1} ms in the MP4",
            off * 1000.0,
            mp4_off * 1000.0
        );
    }
}

#[test]
fn hls_through_the_api_reaches_s3_after_an_outage_with_its_webhooks() {
    let dir = TempDir::new("hls-s3");
    let s3_port = free_port();
    let rx = Receiver::start(0);
    let storage = format!(
        "s3://media/live?endpoint=http://127.0.0.1:{s3_port}&region=us-east-1&path_style=true"
    );
    let env = serve_env(
        &dir.path().join("data"),
        &[
            ("ROOMCAST_STORAGE", &storage),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            (
                "ROOMCAST_WEBHOOK_URL",
                &format!("http://127.0.0.1:{}/hook", rx.port),
            ),
            ("ROOMCAST_WEBHOOK_SECRET", "s3cret"),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "stage", 3, "{}");
    let start = |body: &str| {
        api.call(
            "POST",
            "/v1/rooms/stage/live-recording",
            Some(&format!(r#"{{"requested_by":{MODERATOR},{body}}}"#)),
        )
    };
    // Bad outputs are refused with the start's parameter code and what is wrong.
    for (body, says) in [
        (r#""outputs":{"hls":{"segment_secs":0.2}}"#, "segment_secs"),
        (r#""outputs":{"hls":{"window":0}}"#, "window"),
        (r#""outputs":{"dash":true}"#, "outputs.dash"),
        (r#""outputs":{"hls":"yes"}"#, "outputs.hls"),
    ] {
        let (status, v) = start(body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["result"], 7017, "{body}: {v}");
        assert!(
            v["msg"].as_str().unwrap_or("").contains(says),
            "{body}: {v}"
        );
    }
    // A stream's start checks its outputs the same way (7007).
    let (status, v) = api.call(
        "POST",
        "/v1/rooms/stage/streaming",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"rtmp_urls":["rtmp://127.0.0.1:1/live/k"],"outputs":{{"hls":{{"segment_secs":99}}}}}}"#
        )),
    );
    assert_eq!((status, v["result"].as_u64()), (400, Some(7007)), "{v}");
    assert!(
        v["msg"].as_str().unwrap_or("").contains("segment_secs"),
        "{v}"
    );
    // The storage is down when the recording starts.
    let (status, v) = start(r#""outputs":{"hls":{"segment_secs":2,"window":3}}"#);
    assert_eq!(status, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let live = wait_for(30.0, || {
        let j = job(&api, &id);
        (j["hls"]["state"] == "live" && j["hls"]["segments"].as_u64() >= Some(3)).then_some(j)
    })
    .expect("the HLS output goes live while the storage is down");
    // Progress is in /metrics too.
    let (_, m) = api.call("GET", "/metrics", None);
    let text = m.as_str().unwrap_or_default().to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("roomcast_hls_segments{{job=\"{id}\"")))
        .unwrap_or_else(|| panic!("no roomcast_hls_segments for the job: {text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3.0, "{line}");
    assert!(text.contains(&format!("roomcast_hls_max_latency_seconds{{job=\"{id}\"")));
    assert_eq!(
        live["hls"]["playlist_url"],
        format!(
            "s3://media/live/app/stage/1/{}",
            live["hls"]["playlist"].as_str().unwrap()
        )
    );
    // The storage comes back: everything cut meanwhile follows, live.
    let s3 = MotoS3::start_on(s3_port);
    s3.create_bucket("media");
    let rt = janus::rt();
    let key = |name: &str| format!("live/app/stage/1/{name}");
    let playlist_name = live["hls"]["playlist"].as_str().unwrap().to_string();
    let live_text = wait_for(30.0, || {
        let data = rt.block_on(s3.try_get("media", &key(&playlist_name)))?;
        let text = String::from_utf8(data).ok()?;
        (entries(&text).len() == 3).then_some(text)
    })
    .expect("the live playlist reaches S3 once it is back");
    assert!(!live_text.contains("#EXT-X-ENDLIST"), "{live_text}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (status, v) = stop_recording(&api, "stage");
    assert_eq!(status, 200, "{v}");
    let done = wait_state(&api, &id, "completed", 60.0);
    let ended = wait_for(60.0, || {
        rx.of_type("hls").into_iter().find_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            (v["state"] == "ended").then_some(v)
        })
    })
    .expect("the `hls` webhook says the output ended");
    let went_live: Vec<serde_json::Value> = rx
        .of_type("hls")
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter(|v| v["state"] == "live")
        .collect();
    assert_eq!(went_live.len(), 1, "one `hls` live webhook: {went_live:?}");
    assert_eq!(ended["playlist_url"], done["hls"]["playlist_url"]);
    assert_eq!(ended["job_id"], id.as_str());
    // Everything the VOD playlist lists is in S3 and plays; nothing cut during the outage
    // is missing.
    let local = dir.path().join("fetched");
    std::fs::create_dir_all(&local).unwrap();
    let fetch = |name: &str| {
        let data = rt.block_on(s3.get("media", &key(name)));
        std::fs::write(local.join(name), data).unwrap();
    };
    fetch(&playlist_name);
    let text = std::fs::read_to_string(local.join(&playlist_name)).unwrap();
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    let map = tag(&text, "#EXT-X-MAP:URI=")
        .unwrap()
        .trim_matches('"')
        .to_string();
    fetch(&map);
    let list = entries(&text);
    assert_eq!(list.len() as u64, done["hls"]["segments"].as_u64().unwrap());
    for (_, name) in &list {
        fetch(name);
    }
    let total: f64 = list.iter().map(|e| e.0).sum();
    let recorded = done["segments"][0]["duration_s"].as_f64().unwrap();
    assert!(
        (total - recorded).abs() < 2.0,
        "HLS {total} s vs MP4 {recorded} s"
    );
    assert_eq!(decode_errors(&local.join(&playlist_name)), "");
    let p = probe(&local.join(&playlist_name));
    assert!((p.duration - recorded).abs() < 2.0, "{p:?} vs {recorded}");
    // HLS files are not recordings: the archive lists the MP4 (and its transcript) only.
    let (_, rec) = api.call("GET", "/v1/recordings?room_id=stage&kind=all", None);
    let names: Vec<String> = rec["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["file_name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !names.is_empty()
            && names
                .iter()
                .all(|n| n.ends_with(".mp4") || n.ends_with(".json")),
        "{names:?}"
    );
    // Webhooks go out on their own task, a moment after the file is in storage.
    let hooks = wait_for(10.0, || {
        let n = rx.of_type("live_recording").len();
        (n >= 1).then_some(n)
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        (hooks, rx.of_type("live_recording").len()),
        (Some(1), 1),
        "one live_recording webhook (the MP4)"
    );
}

#[test]
fn a_killed_servers_hls_output_is_ended_by_the_next_run() {
    let dir = TempDir::new("hls-kill");
    let store = dir.path().join("store");
    let rx = Receiver::start(0);
    let env = serve_env(
        &dir.path().join("data"),
        &[
            ("ROOMCAST_STORAGE", &format!("file://{}", store.display())),
            (
                "ROOMCAST_WEBHOOK_URL",
                &format!("http://127.0.0.1:{}/hook", rx.port),
            ),
            ("ROOMCAST_WEBHOOK_SECRET", "s3cret"),
        ],
    );
    let mut s1 = Service::start(&["serve"], &env, &dir.path().join("s1.log"), true);
    register_room(&s1, "hall", 2, "{}");
    let (status, v) = s1.call(
        "POST",
        "/v1/rooms/hall/live-recording",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"outputs":{{"hls":{{"segment_secs":2}}}}}}"#
        )),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let before = wait_for(30.0, || {
        let j = job(&s1, &id);
        (j["hls"]["segments"].as_u64() >= Some(3)).then_some(j)
    })
    .expect("three segments cut");
    let first = before["hls"]["playlist"].as_str().unwrap().to_string();
    s1.kill9();
    // The next server takes the job over: the killed run's output is ended with a VOD
    // playlist of everything it cut, and the job goes on in a new segment with its own.
    let s2 = Service::start(&["serve"], &env, &dir.path().join("s2.log"), true);
    wait_for(30.0, || {
        let j = job(&s2, &id);
        (j["state"] == "active" && j["hls"]["playlist"] != first.as_str()).then_some(())
    })
    .expect("the job resumed with a new HLS output");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (status, v) = stop_recording(&s2, "hall");
    assert_eq!(status, 200, "{v}");
    let done = wait_state(&s2, &id, "completed", 60.0);
    let ended = wait_for(30.0, || {
        let v: Vec<serde_json::Value> = rx
            .of_type("hls")
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .filter(|v| v["state"] == "ended")
            .collect();
        (v.len() == 2).then_some(v)
    })
    .expect("an `hls` ended webhook for each output");
    let folder = store.join("hall/1");
    for playlist in [
        first.clone(),
        done["hls"]["playlist"].as_str().unwrap().to_string(),
    ] {
        let path = folder.join(&playlist);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{playlist}: {text}");
        let list = entries(&text);
        if playlist == first {
            assert!(
                list.len() as u64 >= before["hls"]["segments"].as_u64().unwrap(),
                "every segment cut before the kill is listed: {text}"
            );
        }
        for (_, name) in &list {
            assert!(
                folder.join(name).is_file(),
                "{name} of {playlist} is in storage"
            );
        }
        assert_eq!(decode_errors(&path), "", "{playlist} plays");
        assert!(
            ended
                .iter()
                .any(|v| v["playlist_url"] == format!("file://{}", path.display())),
            "{ended:?}"
        );
    }
}

//! Delivery to a real S3-compatible server (moto) through the production aws-sdk-s3 path.

mod support;

use sha2::{Digest, Sha256};
use std::path::Path;
use support::*;

const SECRET: &str = "s3-test-secret";
/// The S3 secret key the tests give (moto takes any): it must never reach a log.
const AWS_SECRET: &str = "Zq9-never-logged-7f3c";

fn hex_sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The AWS credential chain's variables, for the tests that upload in this process.
fn s3_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", AWS_SECRET);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

/// What the spool knows of segment 1 of room `room` holding `data`.
fn room_segment(data: &[u8]) -> roomcast::delivery::spool::SegmentMeta {
    roomcast::delivery::spool::SegmentMeta {
        job_id: "j".into(),
        app_id: "app".into(),
        room_id: "room".into(),
        conf_num: "1".into(),
        segment: 1,
        file_name: "room_1_1.mp4".into(),
        started_at_unix_ms: 0,
        ended_at_unix_ms: 0,
        size: data.len() as u64,
        sha256: hex_sha(data),
        hls: None,
        bundle: None,
        chunk: None,
    }
}

fn env(data: &Path, port: u16, hook: u16) -> Vec<(&'static str, String)> {
    vec![
        ("ROOMCAST_DATA_DIR", data.display().to_string()),
        (
            "ROOMCAST_STORAGE",
            format!("s3://recordings/site-a?endpoint=http://127.0.0.1:{port}&region=us-east-1"),
        ),
        ("ROOMCAST_WEBHOOK_URL", format!("http://127.0.0.1:{hook}/h")),
        ("ROOMCAST_WEBHOOK_SECRET", SECRET.into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// `roomcast serve` delivering to `s3`'s bucket `recordings`, webhooks to `rx`.
fn serve_to_s3(dir: &Path, s3: &MotoS3, rx: &Receiver) -> Service {
    let mut e = env(&dir.join("data"), s3.port, rx.port);
    e.push(("ROOMCAST_API_TOKEN", TOKEN.into()));
    e.push(("ROOMCAST_LISTEN", "127.0.0.1:0".into()));
    e.push(("RUST_LOG", "info".into()));
    Service::start(&["serve"], &e, &dir.join("serve.log"), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_uploads_to_s3_and_the_object_reads_back() {
    let dir = TempDir::new("s3");
    let s3 = MotoS3::start_on(free_port());
    s3.create_bucket("recordings");
    let rx = Receiver::start(0);
    let e = env(&dir.0.join("data"), s3.port, rx.port);
    let out = dir.0.join("rec");
    let (ok, j, err) = Demo::new(&out).participants(2).duration(3).env(&e).run();
    assert!(ok, "{err}");
    let key = "site-a/demo/demo/1/demo_1_1.mp4";
    assert_eq!(
        j["delivery"]["url"],
        format!("s3://recordings/{key}"),
        "{j}"
    );
    let body = s3.get("recordings", key).await;
    assert_eq!(hex_sha(&body), j["delivery"]["sha256"].as_str().unwrap());
    assert!(!err.contains(AWS_SECRET), "the S3 secret key in the logs");
    assert!(!err.contains(SECRET), "the webhook secret in the logs");
    let got = rx.of_type("live_recording");
    assert_eq!(got.len(), 1);
    let hook: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(hook["url"], format!("s3://recordings/{key}"));
    assert_eq!(hook["file_size"], body.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_keeps_the_file_in_the_spool_until_it_returns() {
    let dir = TempDir::new("s3-down");
    let port = free_port();
    let rx = Receiver::start(0);
    let data = dir.0.join("data");
    let e = env(&data, port, rx.port);
    let out = dir.0.join("rec");
    let (ok, j, err) = Demo::new(&out)
        .participants(1)
        .duration(2)
        .arg("--deliver-wait", "2")
        .env(&e)
        .run();
    assert!(ok, "{err}");
    assert_eq!(j["delivery"]["pending"], 1, "{j}");
    let sha = j["delivery"]["sha256"].as_str().unwrap().to_string();
    assert!(rx.of_type("live_recording").is_empty());

    let s3 = MotoS3::start_on(port);
    s3.create_bucket("recordings");
    let (ok, r, err) = run_env(&e, &["deliver", "--wait", "20"]);
    assert!(ok, "{err}");
    assert_eq!(r["delivery"]["delivered"], 1, "{r}");
    let body = s3
        .get("recordings", "site-a/demo/demo/1/demo_1_1.mp4")
        .await;
    assert_eq!(hex_sha(&body), sha);
    assert_eq!(rx.of_type("live_recording").len(), 1);
    let (ok, r, _) = run_env(&e, &["deliver", "--wait", "2"]);
    assert!(ok);
    assert_eq!(r["delivery"]["delivered"], 0);
    assert_eq!(
        rx.of_type("live_recording").len(),
        1,
        "one webhook per file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_up_in_verified_parts() {
    use roomcast::delivery::s3::S3Target;
    let dir = TempDir::new("s3-multipart");
    let s3 = MotoS3::start_on(free_port());
    s3.create_bucket("big");
    // 12 MiB of pseudo-random bytes: three 5 MiB parts (the last one short).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..12 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.0.join("room_1_1.mp4");
    std::fs::write(&path, &data).unwrap();
    s3_credentials();
    let t = S3Target::parse(&format!(
        "s3://big?endpoint={}&part_size_mb=5&multipart_threshold_mb=5",
        s3.endpoint()
    ))
    .unwrap();
    let meta = room_segment(&data);
    let url = t.put(&path, &meta).await.expect("multipart upload");
    assert_eq!(url, "s3://big/app/room/1/room_1_1.mp4");
    let back = s3.get("big", "app/room/1/room_1_1.mp4").await;
    assert_eq!(back.len(), data.len());
    assert_eq!(hex_sha(&back), meta.sha256);
    // It went up in three parts: a multipart object's ETag is the MD5 of its parts' MD5s,
    // then "-" and their count.
    let etag = s3.etag("big", "app/room/1/room_1_1.mp4").await;
    assert!(etag.ends_with("-3"), "ETag {etag}: not a three-part upload");
    use md5::{Digest as _, Md5};
    let md5s: Vec<u8> = data
        .chunks(5 * 1024 * 1024)
        .flat_map(|c| Md5::digest(c).to_vec())
        .collect();
    let whole: String = Md5::digest(&md5s)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(etag, format!("{whole}-3"));
}

/// The platform's (legacy) recording delivered to S3: every track file and the manifest read
/// back from the bucket as the `recording` webhook lists them, then the transcoded MP4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_individual_recording_and_its_transcode_read_back_from_s3() {
    let dir = TempDir::new("s3-individual");
    let s3 = MotoS3::start_on(free_port());
    s3.create_bucket("recordings");
    let rx = Receiver::start(0);
    let api = serve_to_s3(dir.path(), &s3, &rx);
    register_room(&api, "tracks", 2, r#"{"layout":"grid"}"#);
    let body = format!(r#"{{"requested_by":{MODERATOR}}}"#);
    let (s, v) = api.call("POST", "/v1/rooms/tracks/recording", Some(&body));
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 30.0);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(
        api.call("DELETE", "/v1/rooms/tracks/recording", Some(&body))
            .0,
        200
    );
    wait_state(&api, &id, "completed", 40.0);
    let hooks = |kind: &str| {
        wait_for(60.0, || {
            let got = rx.of_type(kind);
            (!got.is_empty())
                .then(|| serde_json::from_slice::<serde_json::Value>(&got[0].body).unwrap())
        })
        .unwrap_or_else(|| panic!("no {kind} webhook"))
    };
    let rec = hooks("recording");
    let list = rec["recording"].as_array().unwrap();
    assert_eq!(list.len(), 5, "{rec}");
    let key_of = |url: &str| {
        url.strip_prefix("s3://recordings/")
            .expect("s3 URL")
            .to_string()
    };
    let manifest_url = list
        .iter()
        .map(|f| f["url"].as_str().unwrap())
        .find(|u| u.ends_with("manifest.json"))
        .expect("manifest listed");
    let manifest: serde_json::Value =
        serde_json::from_slice(&s3.get("recordings", &key_of(manifest_url)).await).unwrap();
    for file in manifest["files"].as_array().unwrap() {
        let name = file["file"].as_str().unwrap();
        let url = list
            .iter()
            .map(|f| f["url"].as_str().unwrap())
            .find(|u| u.ends_with(&format!("-{name}")))
            .unwrap_or_else(|| panic!("{name} not listed: {rec}"));
        let object = s3.get("recordings", &key_of(url)).await;
        assert_eq!(
            object.len() as u64,
            file["bytes"].as_u64().unwrap(),
            "{name}"
        );
        let local = dir.0.join(name);
        std::fs::write(&local, &object).unwrap();
        let p = probe(&local);
        let codec = p.video_codec.or(p.audio_codec).unwrap_or_default();
        assert!(matches!(codec.as_str(), "vp8" | "opus"), "{name}: {codec}");
    }
    let tc = hooks("transcoded");
    let url = tc["transcoded"][0]["url"].as_str().unwrap();
    assert!(url.ends_with("_transcoded.mp4"), "{url}");
    let mp4 = dir.0.join("transcoded.mp4");
    std::fs::write(&mp4, s3.get("recordings", &key_of(url)).await).unwrap();
    let p = probe(&mp4);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert!(p.duration >= 3.0, "{}", p.duration);
}

/// A proxy in front of moto that passes every request on (one per connection) and, in the
/// answers to HEAD requests, replaces the object's ETag: storage that reports something other
/// than what the upload sent.
fn etag_lying_proxy(upstream: u16) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(client.try_clone().unwrap());
                let mut head = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("connection:") {
                        continue;
                    }
                    if line == "\r\n" {
                        head.extend_from_slice(b"Connection: close\r\n\r\n");
                        break;
                    }
                    head.extend_from_slice(line.as_bytes());
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let is_head = head.starts_with(b"HEAD ");
                let mut up = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                up.write_all(&head).unwrap();
                up.write_all(&body).unwrap();
                let mut answer = Vec::new();
                let _ = up.read_to_end(&mut answer);
                let mut text = String::from_utf8_lossy(&answer).to_string();
                if is_head {
                    // Line by line, the blank line that ends the head kept.
                    text = text
                        .split("\r\n")
                        .map(|l| {
                            if l.to_ascii_lowercase().starts_with("etag:") {
                                "ETag: \"00000000000000000000000000000000\"".to_string()
                            } else {
                                l.to_string()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("\r\n");
                    answer = text.into_bytes();
                }
                let mut c = client;
                let _ = c.write_all(&answer);
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_etag_does_not_match_is_not_counted_as_delivered() {
    use roomcast::delivery::s3::S3Target;
    let dir = TempDir::new("s3-etag");
    let s3 = MotoS3::start_on(free_port());
    s3.create_bucket("lies");
    let proxy = etag_lying_proxy(s3.port);
    let data = b"a small recording".repeat(1000);
    let path = dir.0.join("room_1_1.mp4");
    std::fs::write(&path, &data).unwrap();
    s3_credentials();
    let meta = room_segment(&data);
    let lying = S3Target::parse(&format!("s3://lies?endpoint=http://127.0.0.1:{proxy}")).unwrap();
    let err = lying
        .put(&path, &meta)
        .await
        .expect_err("an upload the storage reports differently is not delivered");
    assert!(err.to_string().contains("did not verify"), "{err}");
    // The same upload straight to the storage verifies.
    let honest = S3Target::parse(&format!("s3://lies?endpoint={}", s3.endpoint())).unwrap();
    honest.put(&path, &meta).await.expect("verified upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_in_the_bucket_is_read_back_by_range_for_a_player() {
    let dir = TempDir::new("s3-media");
    let s3 = MotoS3::start_on(free_port());
    s3.create_bucket("recordings");
    let rx = Receiver::start(0);
    let api = serve_to_s3(dir.path(), &s3, &rx);
    let (id, name, entry) = record_delivered(&api, "lecture");
    let url = entry["url"].as_str().unwrap();
    let key = url.strip_prefix("s3://recordings/").expect("an s3 URL");
    let object = s3.get("recordings", key).await;
    let addr = api.addr.clone().unwrap();
    let path = format!("/v1/recordings/{id}/{name}/media");

    // What a player asks first, then a part in the middle: the bucket's bytes.
    let (status, head, body) = get_bytes(&addr, &path, Some("bytes=0-"));
    assert_eq!(status, 206, "{head}");
    assert_eq!(body, object, "{head}");
    assert!(
        head.contains(&format!(
            "content-range: bytes 0-{}/{}",
            object.len() - 1,
            object.len()
        )),
        "{head}"
    );
    let (status, head, body) = get_bytes(&addr, &path, Some("bytes=1000-1999"));
    assert_eq!(status, 206, "{head}");
    assert_eq!(body, &object[1000..2000]);
    let (status, _, body) = get_bytes(&addr, &path, None);
    assert_eq!(status, 200);
    assert_eq!(hex_sha(&body), hex_sha(&object));
    let (status, head, _) = get_bytes(&addr, &path, Some(&format!("bytes={}-", object.len())));
    assert_eq!(status, 416, "{head}");
    let (status, _, _) = get_bytes(&addr, &format!("/v1/recordings/{id}/other.mp4/media"), None);
    assert_eq!(status, 404);
    // The bytes decode: the player gets a real MP4.
    let file = dir.0.join("read-back.mp4");
    std::fs::write(&file, &body).unwrap();
    let p = probe(&file);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!(p.duration > 2.0, "{}", p.duration);
}

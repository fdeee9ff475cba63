//! Delivery to a real S3-compatible server (moto) through the production aws-sdk-s3 path.

mod support;

use sha2::{Digest, Sha256};
use std::path::Path;
use support::*;

const SECRET: &str = "s3-test-secret";

fn hex_sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
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
    assert!(
        !err.contains("test") || !err.contains("AWS_SECRET"),
        "credentials in logs"
    );
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
    use roomcast::delivery::spool::SegmentMeta;
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
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let t = S3Target::parse(&format!(
        "s3://big?endpoint={}&part_size_mb=5&multipart_threshold_mb=5",
        s3.endpoint()
    ))
    .unwrap();
    let meta = SegmentMeta {
        job_id: "j".into(),
        app_id: "app".into(),
        room_id: "room".into(),
        conf_num: "1".into(),
        segment: 1,
        file_name: "room_1_1.mp4".into(),
        started_at_unix_ms: 0,
        ended_at_unix_ms: 0,
        size: data.len() as u64,
        sha256: hex_sha(&data),
        hls: None,
        bundle: None,
    };
    let url = t.put(&path, &meta).await.expect("multipart upload");
    assert_eq!(url, "s3://big/app/room/1/room_1_1.mp4");
    let back = s3.get("big", "app/room/1/room_1_1.mp4").await;
    assert_eq!(back.len(), data.len());
    assert_eq!(hex_sha(&back), meta.sha256);
}

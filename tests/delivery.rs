//! Delivery through the durable spool to storage, and signed webhooks that survive outages.

mod support;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use support::*;

const SECRET: &str = "test-secret-7f3a";

fn deliver(env: &[(&str, String)]) -> serde_json::Value {
    let (ok, j, err) = run_env(env, &["deliver", "--wait", "15"]);
    assert!(ok, "{err}");
    j
}

fn sha256(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a webhook the way a receiver would: HMAC-SHA256 over "id.timestamp.body".
fn verify(r: &Received, secret: &str) -> bool {
    let (Some(id), Some(ts), Some(sig)) = (
        r.headers.get("webhook-id"),
        r.headers.get("webhook-timestamp"),
        r.headers.get("webhook-signature"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    sig.split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

fn spool_files(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("spool"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn env(data: &Path, storage: &Path, hook_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("ROOMCAST_DATA_DIR", data.display().to_string()),
        ("ROOMCAST_STORAGE", format!("file://{}", storage.display())),
        (
            "ROOMCAST_WEBHOOK_URL",
            format!("http://127.0.0.1:{hook_port}/hooks"),
        ),
        ("ROOMCAST_WEBHOOK_SECRET", SECRET.to_string()),
    ]
}

/// `roomcast serve` with `env`, recording a one-person synthetic room `room` for 2 s and
/// stopping it: the service and the job id.
fn serve_and_record_briefly(
    dir: &TempDir,
    env: &[(&'static str, String)],
    room: &str,
) -> (Service, String) {
    let mut e = env.to_vec();
    e.push(("ROOMCAST_API_TOKEN", TOKEN.to_string()));
    e.push(("ROOMCAST_LISTEN", "127.0.0.1:0".to_string()));
    let api = Service::start(&["serve"], &e, &dir.0.join("serve.log"), true);
    register_room(&api, room, 1, "{}");
    let (_, v) = start_recording(&api, room);
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(stop_recording(&api, room).1["result"], 0);
    (api, id)
}

#[test]
fn delivers_to_storage_and_signs_the_webhook() {
    let dir = TempDir::new("deliver");
    let (data, store, out) = (dir.0.join("data"), dir.0.join("store"), dir.0.join("rec"));
    let rx = Receiver::start(0);
    let e = env(&data, &store, rx.port);
    let (ok, j, err) = Demo::new(&out).participants(2).duration(3).env(&e).run();
    assert!(ok, "{err}");
    let stored = store.join("demo/1/demo_1_1.mp4");
    assert_eq!(PathBuf::from(j["file"].as_str().unwrap()), stored);
    assert_eq!(
        j["delivery"]["sha256"].as_str().unwrap(),
        sha256(&stored),
        "stored copy differs"
    );
    assert_eq!(j["delivery"]["pending"], 0);
    assert_eq!(j["delivery"]["webhooks_pending"], 0);
    assert!((probe(&stored).duration - 3.0).abs() < 0.5);
    assert!(
        spool_files(&data).is_empty(),
        "spool not cleaned: {:?}",
        spool_files(&data)
    );
    assert!(
        !out.join("demo_1_1.mp4").exists(),
        "local copy kept after delivery"
    );
    assert!(!err.contains(SECRET), "secret in logs");

    let got = rx.of_type("live_recording");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(verify(&got[0], SECRET), "signature does not verify");
    let mut tampered = got[0].clone();
    tampered.body.push(b' ');
    assert!(!verify(&tampered, SECRET), "tampered body verifies");
    assert!(!verify(&got[0], "wrong-secret"));
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "live_recording");
    assert_eq!(body["app_id"], "demo");
    assert_eq!(body["room_id"], "demo");
    assert_eq!(body["conf_num"], "1");
    assert_eq!(body["url"], format!("file://{}", stored.display()));
    assert_eq!(
        body["file_size"],
        std::fs::metadata(&stored).unwrap().len().to_string()
    );
    assert!(body["trans_date"].as_u64().unwrap() > 1_700_000_000);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "exactly the reference fields: {keys:?}");

    // Status events for the job's transitions, signed the same way.
    for kind in ["room-live-recording-on", "room-live-recording-off"] {
        let ev = rx.of_type(kind);
        assert_eq!(ev.len(), 1, "{kind}");
        assert!(verify(&ev[0], SECRET));
        let v: serde_json::Value = serde_json::from_slice(&ev[0].body).unwrap();
        assert_eq!(v["data"]["status"]["resultCode"], 0);
        assert_eq!(v["data"]["status"]["success"], true);
        assert_eq!(v["room_id"], "demo");
        let by = if kind.ends_with("-on") {
            "startedBy"
        } else {
            "stoppedBy"
        };
        assert!(v["data"][by].is_string(), "{v}");
    }
    assert!(rx.of_type("room-live-recording-failed").is_empty());
}

#[test]
fn storage_down_keeps_the_file_until_it_returns() {
    let dir = TempDir::new("storage-down");
    let (data, store, out) = (dir.0.join("data"), dir.0.join("store"), dir.0.join("rec"));
    // Storage unreachable: its root is a plain file, so nothing can be written under it.
    std::fs::write(&store, b"not a folder").unwrap();
    let rx = Receiver::start(0);
    let e = env(&data, &store, rx.port);
    let (ok, j, err) = Demo::new(&out)
        .participants(2)
        .duration(2)
        .arg("--deliver-wait", "1")
        .env(&e)
        .run();
    assert!(ok, "{err}");
    assert_eq!(j["delivery"]["pending"], 1, "{j}");
    let spooled = spool_files(&data);
    assert!(
        spooled.iter().any(|f| f.ends_with(".mp4")) && spooled.iter().any(|f| f.ends_with(".json"))
    );
    assert!(
        rx.of_type("live_recording").is_empty(),
        "webhook sent before delivery"
    );
    let sidecar = spooled.iter().find(|f| f.ends_with(".json")).unwrap();
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("spool").join(sidecar)).unwrap()).unwrap();
    assert!(entry["attempts"].as_u64().unwrap() >= 1);
    assert!(entry["last_error"].as_str().is_some());

    // Storage comes back; a new process (a restarted worker) delivers what the spool holds.
    std::fs::remove_file(&store).unwrap();
    let r = deliver(&e);
    assert_eq!(r["delivery"]["delivered"], 1, "{r}");
    let stored = store.join("demo/1/demo_1_1.mp4");
    assert_eq!(sha256(&stored), entry["meta"]["sha256"].as_str().unwrap());
    assert!(spool_files(&data).is_empty());
    let got = rx.of_type("live_recording");
    assert_eq!(got.len(), 1);
    let id = got[0].headers["webhook-id"].clone();
    // Nothing is delivered twice.
    let r = deliver(&e);
    assert_eq!(r["delivery"]["delivered"], 0);
    assert_eq!(
        rx.of_type("live_recording").len(),
        1,
        "second webhook for {id}"
    );
}

#[test]
fn webhook_receiver_down_then_back() {
    let dir = TempDir::new("hook-down");
    let (data, store, out) = (dir.0.join("data"), dir.0.join("store"), dir.0.join("rec"));
    let port = free_port();
    let e = env(&data, &store, port);
    let (ok, j, err) = Demo::new(&out)
        .participants(1)
        .duration(2)
        .arg("--deliver-wait", "1")
        .env(&e)
        .run();
    assert!(ok, "{err}");
    assert_eq!(j["delivery"]["pending"], 0, "file delivered anyway: {j}");
    assert_eq!(j["delivery"]["webhooks_pending"], 3, "{j}");
    let queued: Vec<String> = std::fs::read_dir(data.join("webhooks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    // live_recording plus the on/off status events.
    assert_eq!(queued.len(), 3, "{queued:?}");

    let rx = Receiver::start(port);
    let r = deliver(&e);
    assert_eq!(r["webhooks_pending"], 0, "{r}");
    let got = rx.of_type("live_recording");
    assert_eq!(got.len(), 1);
    assert!(verify(&got[0], SECRET));
    let id_file = format!("{}.json", got[0].headers["webhook-id"]);
    assert!(
        queued.contains(&id_file),
        "id changed on retry: {id_file} not in {queued:?}"
    );
    deliver(&e);
    assert_eq!(rx.of_type("live_recording").len(), 1, "delivered twice");
}

#[test]
fn backup_target_takes_over_when_the_primary_keeps_failing() {
    let dir = TempDir::new("backup");
    let (data, store, backup, out) = (
        dir.0.join("data"),
        dir.0.join("store"),
        dir.0.join("backup"),
        dir.0.join("rec"),
    );
    std::fs::write(&store, b"primary is down").unwrap();
    let rx = Receiver::start(0);
    let mut e = env(&data, &store, rx.port);
    e.push((
        "ROOMCAST_STORAGE_BACKUP",
        format!("file://{}", backup.display()),
    ));
    let (ok, j, err) = Demo::new(&out)
        .participants(1)
        .duration(2)
        .arg("--deliver-wait", "20")
        .env(&e)
        .run();
    assert!(ok, "{err}");
    assert_eq!(j["delivery"]["pending"], 0, "{j}");
    let stored = backup.join("demo/1/demo_1_1.mp4");
    assert_eq!(j["delivery"]["url"], format!("file://{}", stored.display()));
    assert_eq!(sha256(&stored), j["delivery"]["sha256"].as_str().unwrap());
    assert!(err.contains("backup"), "switch to backup not logged");
    assert_eq!(rx.of_type("live_recording").len(), 1);
}

#[test]
fn a_jobs_own_target_overrides_the_configured_one() {
    let dir = TempDir::new("override");
    let (data, store, own, out) = (
        dir.0.join("data"),
        dir.0.join("store"),
        dir.0.join("own"),
        dir.0.join("rec"),
    );
    let rx = Receiver::start(0);
    let e = env(&data, &store, rx.port);
    let own_url = format!("file://{}", own.display());
    let (ok, j, err) = Demo::new(&out)
        .participants(1)
        .duration(2)
        .arg("--storage", &own_url)
        .env(&e)
        .run();
    assert!(ok, "{err}");
    assert!(own.join("demo/1/demo_1_1.mp4").is_file(), "{j}");
    assert!(
        !store.exists(),
        "configured target used despite the override"
    );
}

#[test]
fn a_configuration_file_sets_delivery_and_the_environment_overrides_it() {
    let dir = TempDir::new("config-file");
    let (data, store, out) = (dir.0.join("data"), dir.0.join("store"), dir.0.join("rec"));
    let rx = Receiver::start(0);
    let conf = dir.0.join("roomcast.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = \"{}\"\n[storage]\nurl = \"file://{}\"\n[webhook]\nurl = \"http://127.0.0.1:1/never\"\nsecret = \"{SECRET}\"\n",
            data.display(),
            store.display()
        ),
    )
    .unwrap();
    let e = vec![
        ("ROOMCAST_CONFIG", conf.display().to_string()),
        // The environment wins over the file.
        (
            "ROOMCAST_WEBHOOK_URL",
            format!("http://127.0.0.1:{}/h", rx.port),
        ),
    ];
    let (ok, j, err) = Demo::new(&out).participants(1).duration(2).env(&e).run();
    assert!(ok, "{err}");
    assert!(store.join("demo/1/demo_1_1.mp4").is_file(), "{j}");
    assert_eq!(rx.of_type("live_recording").len(), 1);
    assert!(!err.contains(SECRET));
}

#[test]
fn a_slow_webhook_receiver_does_not_hold_up_files() {
    let dir = TempDir::new("slow-hooks");
    let (data, store) = (dir.0.join("data"), dir.0.join("store"));
    // Every webhook takes 6 s to be answered.
    let rx = Receiver::start_with_delay(0, std::time::Duration::from_secs(6));
    let (api, id) = serve_and_record_briefly(&dir, &env(&data, &store, rx.port), "slow");
    let t0 = std::time::Instant::now();
    wait_state(&api, &id, "completed", 30.0);
    // The status webhooks (on, off) are still being sent, one every 6 s; the file is not
    // behind them.
    let stored = wait_for(5.0, || {
        let p = store.join("slow/1/slow_1_1.mp4");
        p.is_file().then_some(p)
    });
    assert!(
        stored.is_some(),
        "file not delivered within 5 s of the job's end"
    );
    eprintln!(
        "delivered {:.1} s after the job completed, {} webhooks answered so far",
        t0.elapsed().as_secs_f64(),
        rx.received().len()
    );
}

/// A file that cannot be moved to its storage is reported with 7051: in the job record
/// (`GET /v1/jobs/{id}`, its segment's `delivery_error`), the archive, and one
/// `move-file-failed` webhook; once storage returns the file is delivered and the error is
/// gone from the record.
#[test]
fn a_failed_move_reaches_the_job_record_and_a_webhook() {
    let dir = TempDir::new("move-failed");
    let (data, store) = (dir.0.join("data"), dir.0.join("store"));
    // Storage unreachable: its root is a plain file, so nothing can be written under it.
    std::fs::write(&store, b"not a folder").unwrap();
    let rx = Receiver::start(0);
    let (api, id) = serve_and_record_briefly(&dir, &env(&data, &store, rx.port), "mv");
    wait_state(&api, &id, "completed", 30.0);

    let failed = wait_for(10.0, || {
        let j = job(&api, &id);
        let err = j["segments"][0]["delivery_error"].clone();
        (!err.is_null()).then_some(err)
    })
    .expect("no delivery_error in the job record");
    assert_eq!(failed["code"], 7051, "{failed}");
    assert!(failed["attempts"].as_u64().unwrap() >= 1, "{failed}");
    assert!(!failed["msg"].as_str().unwrap().is_empty(), "{failed}");
    let (s, a) = api.call("GET", "/v1/recordings?room_id=mv", None);
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        a["files"][0]["delivery_error"]["code"], 7051,
        "archive: {a}"
    );
    let hooks = wait_for(10.0, || {
        let h = rx.of_type("move-file-failed");
        (!h.is_empty()).then_some(h)
    })
    .expect("no move-file-failed webhook");
    let body: serde_json::Value = serde_json::from_slice(&hooks[0].body).unwrap();
    assert_eq!(body["data"]["status"]["resultCode"], 7051, "{body}");
    assert_eq!(body["data"]["status"]["success"], false, "{body}");
    assert_eq!(body["file_name"], "mv_1_1.mp4", "{body}");
    assert_eq!(
        (body["room_id"].as_str(), body["app_id"].as_str()),
        (Some("mv"), Some("app"))
    );
    assert!(verify(&hooks[0], SECRET));
    assert!(rx.of_type("live_recording").is_empty());

    // Storage returns: the file is delivered on its next attempt and the record says so.
    std::fs::remove_file(&store).unwrap();
    let delivered = wait_for(40.0, || {
        let j = job(&api, &id);
        (j["segments"][0]["status"] == "delivered").then_some(j)
    })
    .expect("not delivered after storage returned");
    assert!(
        delivered["segments"][0]["delivery_error"].is_null(),
        "{delivered}"
    );
    assert!(store.join("mv/1/mv_1_1.mp4").is_file());
    // One webhook for the failure, however many attempts failed.
    assert_eq!(rx.of_type("move-file-failed").len(), 1);
}

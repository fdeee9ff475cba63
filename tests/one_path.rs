//! A command-line recording and a recording through `roomcast serve` and the API take the same
//! job path: the same status webhooks (types, codes, id scheme), the same segment record and
//! the same archive entry, for the same scripted synthetic room.

mod support;

use serde_json::Value;
use std::path::Path;
use support::*;

const SECRET: &str = "one-path-secret";

/// `(type, resultCode)` of every status webhook, in the order they were sent, and their ids.
fn statuses(rx: &Receiver) -> (Vec<(String, u64)>, Vec<String>) {
    let mut seq = Vec::new();
    let mut ids = Vec::new();
    for r in rx.received() {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        if v["type"] == "live_recording" {
            continue;
        }
        seq.push((
            v["type"].as_str().unwrap().to_string(),
            v["data"]["status"]["resultCode"].as_u64().unwrap(),
        ));
        ids.push(r.headers["webhook-id"].clone());
    }
    (seq, ids)
}

/// Asserts every status id is `{type}-{job id}-a{attempt}-{stamp}`.
fn assert_id_scheme(seq: &[(String, u64)], ids: &[String], job_id: &str) {
    for ((kind, _), id) in seq.iter().zip(ids) {
        let rest = id
            .strip_prefix(&format!("{kind}-{job_id}-a1-"))
            .unwrap_or_else(|| panic!("id {id} is not {kind}-{job_id}-a1-<stamp>"));
        assert!(rest.parse::<u64>().is_ok(), "stamp of {id}");
    }
}

/// The parts of a segment record or archive entry that do not depend on timing or paths.
fn shape(v: &Value, store: &Path) -> Value {
    let url = v["url"].as_str().unwrap_or_default();
    serde_json::json!({
        "file_name": v["file_name"],
        "status": v["status"],
        "url_in_store": url.starts_with(&format!("file://{}", store.display())),
        "has_size": v["size"].as_u64().is_some_and(|s| s > 10_000),
        "duration_ok": v["duration_s"].as_f64().is_some_and(|d| (3.0..6.0).contains(&d)),
    })
}

#[test]
fn demo_and_serve_report_the_same_way() {
    let dir = TempDir::new("one-path");
    let rx_cli = Receiver::start(0);
    let rx_srv = Receiver::start(0);
    let (store_cli, store_srv) = (dir.path().join("store-cli"), dir.path().join("store-srv"));

    // Command line.
    let env = vec![
        (
            "ROOMCAST_DATA_DIR",
            dir.path().join("data-cli").display().to_string(),
        ),
        (
            "ROOMCAST_WEBHOOK_URL",
            format!("http://127.0.0.1:{}/h", rx_cli.port),
        ),
        ("ROOMCAST_WEBHOOK_SECRET", SECRET.to_string()),
    ];
    let storage = format!("file://{}", store_cli.display());
    let out = dir.path().join("rec-cli");
    let (ok, cli, err) = Demo::new(&out)
        .participants(3)
        .duration(4)
        .arg("--room", "same")
        .arg("--app-id", "app")
        .arg("--storage", &storage)
        .env(&env)
        .run();
    assert!(ok, "{err}");
    let cli_job = cli["job_id"].as_str().unwrap().to_string();

    // Service and API, the same room.
    let senv = serve_env(
        &dir.path().join("data-srv"),
        &[
            (
                "ROOMCAST_STORAGE",
                &format!("file://{}", store_srv.display()),
            ),
            (
                "ROOMCAST_WEBHOOK_URL",
                &format!("http://127.0.0.1:{}/h", rx_srv.port),
            ),
            ("ROOMCAST_WEBHOOK_SECRET", SECRET),
        ],
    );
    let api = Service::start(&["serve"], &senv, &dir.path().join("serve.log"), true);
    let body = r#"{"app_id":"app","conf_num":"1","connector":{"type":"synthetic","participants":3,"script":"demo"},"settings":{}}"#;
    let (s, v) = api.call("PUT", "/v1/rooms/same", Some(body));
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.call(
        "POST",
        "/v1/rooms/same/live-recording",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"config":{{"max_duration_secs":4}}}}"#
        )),
    );
    assert_eq!(s, 201, "{v}");
    let srv_job = v["job_id"].as_str().unwrap().to_string();
    let record = wait_state(&api, &srv_job, "completed", 60.0);
    let archived = wait_for(20.0, || {
        let (_, a) = api.call("GET", "/v1/recordings?room_id=same", None);
        let f = a["files"].get(0).cloned()?;
        (f["status"] == "delivered").then_some(f)
    })
    .expect("the service's file delivered");
    wait_for(20.0, || {
        (rx_srv.of_type("room-live-recording-off").len() == 1).then_some(())
    })
    .expect("the service's off event");

    // The same status events, in the same order, with the same codes and id scheme.
    let (seq_cli, ids_cli) = statuses(&rx_cli);
    let (seq_srv, ids_srv) = statuses(&rx_srv);
    let expected = vec![
        ("room-live-recording-on".to_string(), 0),
        ("room-live-recording-off".to_string(), 0),
    ];
    assert_eq!(seq_cli, expected, "command line");
    assert_eq!(seq_srv, expected, "service");
    assert_id_scheme(&seq_cli, &ids_cli, &cli_job);
    assert_id_scheme(&seq_srv, &ids_srv, &srv_job);
    // One live_recording event each, with the same id scheme (from the file).
    for rx in [&rx_cli, &rx_srv] {
        let lr = rx.of_type("live_recording");
        assert_eq!(lr.len(), 1);
        assert!(lr[0].headers["webhook-id"].starts_with("lr_same_1_1-"));
    }

    // The same segment record and archive entry.
    let cli_segments = cli["segments"].as_array().unwrap();
    let srv_segments = record["segments"].as_array().unwrap();
    assert_eq!(cli_segments.len(), 1, "{cli}");
    assert_eq!(srv_segments.len(), 1, "{record}");
    assert_eq!(cli_segments[0]["status"], srv_segments[0]["status"]);
    assert_eq!(cli_segments[0]["file_name"], srv_segments[0]["file_name"]);
    let cli_archive = &cli["archive"][0];
    assert_eq!(shape(cli_archive, &store_cli), shape(&archived, &store_srv));
    assert_eq!(
        shape(cli_archive, &store_cli)["status"],
        "delivered",
        "{cli_archive}"
    );
    assert_eq!(shape(&archived, &store_srv)["url_in_store"], true);
}

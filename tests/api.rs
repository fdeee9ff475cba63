//! The control API: token, input checking, and every code produced by its cause.

mod support;
use support::*;

fn body(who: &str, extra: &str) -> String {
    let role = if who == "mod" {
        MODERATOR.to_string()
    } else {
        r#"{"client_id":"guest-7","role":"participant"}"#.to_string()
    };
    if extra.is_empty() {
        format!(r#"{{"requested_by":{role}}}"#)
    } else {
        format!(r#"{{"requested_by":{role},{extra}}}"#)
    }
}

fn expect(api: &Service, method: &str, path: &str, b: &str, status: u16, code: u64) {
    let (s, v) = api.call(method, path, Some(b));
    assert_eq!(
        (s, v["result"].as_u64()),
        (status, Some(code)),
        "{method} {path} {b}: {v}"
    );
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[test]
fn every_route_needs_the_token() {
    let dir = TempDir::new("api-auth");
    let api = Service::start(
        &["serve"],
        &serve_env(&dir.path().join("data"), &[]),
        &dir.path().join("serve.log"),
        true,
    );
    let addr = api.addr.clone().unwrap();
    for (m, p) in [
        ("GET", "/v1/health"),
        ("GET", "/metrics"),
        ("PUT", "/v1/rooms/a"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/nothing"),
    ] {
        let (s, text) = http(&addr, m, p, None, Some(b"{}"));
        assert_eq!(s, 401, "{m} {p} without a token: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["result"].as_u64().is_some(), "{text}");
        let (s, _) = http(&addr, m, p, Some("wrong"), Some(b"{}"));
        assert_eq!(s, 401, "{m} {p} with a wrong token");
    }
    let (s, v) = api.call("GET", "/v1/health", None);
    assert_eq!((s, v["store"].as_str()), (200, Some("embedded")), "{v}");
    // The probes answer without a token: alive, and ready (store reachable, worker running).
    let (s, text) = http(&addr, "GET", "/healthz", None, None);
    assert_eq!(s, 200, "{text}");
    let (s, text) = http(&addr, "GET", "/readyz", None, None);
    assert_eq!(s, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["result"].as_u64(), v["worker"].as_str()),
        (Some(0), Some("running")),
        "{v}"
    );
    // The framework's own refusals are coded too: a wrong method, a path that does not decode.
    for (m, p, status) in [("PATCH", "/v1/jobs", 405), ("GET", "/v1/jobs/%FF", 400)] {
        let (s, text) = http(&addr, m, p, Some(TOKEN), None);
        assert_eq!(s, status, "{m} {p}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{m} {p}: not JSON: {text}"));
        assert_eq!(v["result"], 7000, "{v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (s, doc) = api.call("GET", "/openapi.json", None);
    assert_eq!(s, 200);
    assert!(
        doc["paths"]["/v1/rooms/{room_id}/live-recording"].is_object(),
        "{doc}"
    );

    // Without a token the server refuses to start (unless told it is a local trial).
    let mut env = serve_env(&dir.path().join("data2"), &[]);
    env.retain(|(k, _)| *k != "ROOMCAST_API_TOKEN");
    let (ok, _, err) = run_env(&env, &["serve"]);
    assert!(!ok && err.contains("ROOMCAST_API_TOKEN"), "{err}");
}

#[test]
fn bad_input_is_answered_with_codes() {
    let dir = TempDir::new("api-codes");
    let garbage_png = dir.path().join("broken.png");
    std::fs::write(&garbage_png, b"this is not a png").unwrap();
    let api = Service::start(
        &["serve"],
        &serve_env(&dir.path().join("data"), &[("ROOMCAST_CPU_BUDGET", "4")]),
        &dir.path().join("serve.log"),
        true,
    );
    // Room registration.
    expect(&api, "PUT", "/v1/rooms/r1", "{", 400, 7017);
    // Identifiers are plain: no newline (a forged log line), no path.
    for bad in [r#"{"app_id":"a\nINFO forged"}"#, r#"{"conf_num":"../1"}"#] {
        expect(&api, "PUT", "/v1/rooms/r1", bad, 400, 7017);
    }
    // A Janus room is a conference: its number must be given (7029); a generated room is "1".
    expect(
        &api,
        "PUT",
        "/v1/rooms/jr",
        r#"{"connector":{"type":"janus","url":"ws://127.0.0.1:9","room":5}}"#,
        400,
        7029,
    );
    // The Janus PIN is stored but never shown.
    let (s, v) = api.call(
        "PUT",
        "/v1/rooms/jr",
        Some(r#"{"conf_num":"1","connector":{"type":"janus","url":"ws://127.0.0.1:9","room":5,"pin":"s3cret"}}"#),
    );
    assert_eq!(s, 200, "{v}");
    let (_, got) = api.call("GET", "/v1/rooms/jr", None);
    for v in [&v, &got] {
        assert_eq!(v["room"]["connector"]["pin"], "***", "{v}");
        assert!(!v.to_string().contains("s3cret"), "{v}");
    }
    // User ids and names are text without control characters.
    expect(
        &api,
        "POST",
        "/v1/rooms/jr/events",
        r#"{"type":"participant_joined","user_id":"u1","name":"Ann\n2026-01-01 INFO forged"}"#,
        400,
        7017,
    );
    expect(
        &api,
        "POST",
        "/v1/rooms/jr/events",
        r#"{"type":"active_talkers","user_ids":["ok","bad\u0000id"]}"#,
        400,
        7017,
    );
    expect(&api, "PUT", "/v1/rooms/r1", "[]", 400, 7017);
    expect(
        &api,
        "PUT",
        "/v1/rooms/r1",
        r#"{"settings":{"live_recording":{"auto_recording":"yes"}}}"#,
        400,
        7017,
    );
    expect(
        &api,
        "PUT",
        "/v1/rooms/r1",
        r#"{"connector":{"type":"zoom"}}"#,
        400,
        7017,
    );
    expect(
        &api,
        "PUT",
        "/v1/rooms/r1",
        r#"{"settings":{"layout":"mosaic"}}"#,
        400,
        7073,
    );
    expect(
        &api,
        "PUT",
        "/v1/rooms/r1",
        r#"{"settings":{"layout":{"name":"x","region":[{"x":0,"y":0,"w":2,"h":1,"fill":"others"}]}}}"#,
        400,
        7073,
    );
    // Files come only from the assets folder, and the answers do not tell what exists
    // elsewhere; presets are built-in names only.
    for (settings, says) in [
        (r#"{"watermark":"/nonexistent.png"}"#, "not allowed"),
        (r#"{"watermark":"/etc/shadow"}"#, "not allowed"),
        (r#"{"watermark":"../../etc/passwd"}"#, "not allowed"),
        (r#"{"watermark":"logo.png"}"#, "not found"),
        (r#"{"preset":"Makefile"}"#, "must be one of"),
    ] {
        let (s, v) = api.call(
            "PUT",
            "/v1/rooms/r1",
            Some(&format!(r#"{{"settings":{settings}}}"#)),
        );
        assert_eq!(
            (s, v["result"].as_u64()),
            (400, Some(7017)),
            "{settings}: {v}"
        );
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.contains(says), "{settings}: {msg}");
        assert!(
            !msg.contains("such file") && !msg.contains("ermission"),
            "{msg}"
        );
    }
    expect(&api, "PUT", "/v1/rooms/bad%20id", "{}", 400, 7017);
    let huge = format!(r#"{{"app_id":"{}"}}"#, "x".repeat(200_000));
    expect(&api, "PUT", "/v1/rooms/r1", &huge, 413, 7017);
    expect(
        &api,
        "POST",
        "/v1/rooms/unknown/live-recording",
        &body("mod", ""),
        404,
        7000,
    );
    register_room(&api, "r1", 2, "{}");

    let rec = "/v1/rooms/r1/live-recording";
    let st = "/v1/rooms/r1/streaming";
    // Start live recording.
    expect(&api, "POST", rec, "{}", 400, 7017);
    expect(&api, "POST", rec, r#"{"requested_by":"me"}"#, 400, 7017);
    expect(&api, "POST", rec, &body("guest", ""), 403, 7201);
    expect(
        &api,
        "POST",
        rec,
        &body("mod", r#""config":{"url_details":"grid"}"#),
        400,
        7202,
    );
    expect(
        &api,
        "POST",
        rec,
        &body("mod", r#""config":{"url_details":{"layout":"mosaic"}}"#),
        400,
        7073,
    );
    expect(
        &api,
        "POST",
        rec,
        &body("mod", r#""config":{"url_details":{"layout":""}}"#),
        400,
        7075,
    );
    expect(
        &api,
        "POST",
        rec,
        &body("mod", r#""config":{"url_details":{"layout":7}}"#),
        400,
        7073,
    );
    // Change / stop with nothing running.
    expect(&api, "PATCH", rec, &body("guest", ""), 403, 7071);
    expect(
        &api,
        "PATCH",
        rec,
        &body("mod", r#""config":{"url_details":{"layout":"speaker"}}"#),
        409,
        7074,
    );
    expect(
        &api,
        "PATCH",
        rec,
        &body("mod", r#""config":{"url_details":{}}"#),
        400,
        7075,
    );
    expect(&api, "DELETE", rec, &body("guest", ""), 403, 7036);
    expect(&api, "DELETE", rec, &body("mod", ""), 409, 7021);
    // Streaming.
    expect(
        &api,
        "POST",
        st,
        &body("guest", r#""rtmp_urls":["rtmp://h/live/k"]"#),
        403,
        7008,
    );
    expect(&api, "POST", st, &body("mod", ""), 400, 7006);
    expect(
        &api,
        "POST",
        st,
        &body("mod", r#""rtmp_urls":[]"#),
        400,
        7006,
    );
    expect(
        &api,
        "POST",
        st,
        &body(
            "mod",
            r#""rtmp_urls":["rtmp://h/a/1","rtmp://h/a/2","rtmp://h/a/3","rtmp://h/a/4"]"#,
        ),
        400,
        7101,
    );
    expect(
        &api,
        "POST",
        st,
        &body("mod", r#""rtmp_urls":["https://h/a/1"]"#),
        400,
        7102,
    );
    expect(
        &api,
        "POST",
        st,
        &body("mod", r#""rtmp_urls":5"#),
        400,
        7102,
    );
    expect(&api, "POST", st, "not json", 400, 7007);
    expect(&api, "PATCH", st, &body("guest", ""), 403, 7072);
    expect(
        &api,
        "PATCH",
        st,
        &body("mod", r#""layout":"speaker""#),
        409,
        7074,
    );
    expect(&api, "DELETE", st, &body("guest", ""), 403, 7044);
    // Events.
    expect(
        &api,
        "POST",
        "/v1/rooms/r1/events",
        r#"{"type":"participant_joined"}"#,
        400,
        7017,
    );
    expect(
        &api,
        "POST",
        "/v1/rooms/r1/events",
        r#"{"type":"dance"}"#,
        400,
        7017,
    );
    expect(&api, "GET", "/v1/recordings?from=yesterday", "", 400, 7017);
    expect(&api, "GET", "/v1/jobs/nope", "", 404, 7000);

    // A running recording: again → 7019; a layout change is accepted.
    let (s, v) = start_recording(&api, "r1");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    expect(&api, "POST", rec, &body("mod", ""), 409, 7019);
    expect(
        &api,
        "PATCH",
        rec,
        &body("mod", r#""config":{"url_details":{"layout":"speaker"}}"#),
        200,
        0,
    );
    let j = wait_for(10.0, || {
        let j = job(&api, &id);
        (j["spec"]["layout"] == "speaker").then_some(j)
    });
    assert!(j.is_some(), "layout change not applied");
    expect(&api, "DELETE", &format!("/v1/jobs/{id}"), "", 409, 7027);
    expect(&api, "DELETE", rec, &body("mod", ""), 200, 0);
    wait_state(&api, &id, "completed", 30.0);

    // The room is destroyed: everything is refused with the disconnecting codes.
    expect(
        &api,
        "POST",
        "/v1/rooms/r1/events",
        r#"{"type":"room_destroyed"}"#,
        200,
        0,
    );
    expect(&api, "POST", rec, &body("mod", ""), 409, 7203);
    expect(
        &api,
        "POST",
        st,
        &body("mod", r#""rtmp_urls":["rtmp://h/live/k"]"#),
        409,
        7103,
    );
    expect(&api, "DELETE", rec, &body("mod", ""), 409, 7037);
    expect(&api, "DELETE", st, &body("mod", ""), 409, 7045);
    expect(
        &api,
        "PATCH",
        rec,
        &body("mod", r#""config":{"url_details":{"layout":"grid"}}"#),
        409,
        7079,
    );
    expect(
        &api,
        "PATCH",
        st,
        &body("mod", r#""layout":"grid""#),
        409,
        7078,
    );

    // A start that fails (the watermark was a PNG when the room was registered, and is not
    // any more when the worker reads it) → retrying too soon: 7015 / 7004.
    let assets = dir.path().join("data").join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend(32u32.to_be_bytes());
    png.extend(32u32.to_be_bytes());
    std::fs::write(assets.join("swapped.png"), &png).unwrap();
    register_room(&api, "r2", 1, r#"{"watermark":"swapped.png"}"#);
    std::fs::copy(&garbage_png, assets.join("swapped.png")).unwrap();
    let (_, v) = start_recording(&api, "r2");
    let failed = wait_state(&api, v["job_id"].as_str().unwrap(), "failed", 20.0);
    assert!(failed["result"].as_u64().unwrap() > 7000, "{failed}");
    expect(
        &api,
        "POST",
        "/v1/rooms/r2/live-recording",
        &body("mod", ""),
        429,
        7015,
    );
    let (_, v) = api.call(
        "POST",
        "/v1/rooms/r2/streaming",
        Some(&body("mod", r#""rtmp_urls":["rtmp://127.0.0.1:1/live/k"]"#)),
    );
    wait_state(&api, v["job_id"].as_str().unwrap(), "failed", 20.0);
    expect(
        &api,
        "POST",
        "/v1/rooms/r2/streaming",
        &body("mod", r#""rtmp_urls":["rtmp://127.0.0.1:1/live/k"]"#),
        429,
        7004,
    );

    let (_, m) = api.call("GET", "/metrics", None);
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("roomcast_jobs{state=\"failed\"} 2"), "{m}");
    assert!(m.contains("roomcast_job_failures{code="), "{m}");
    assert!(api.log_text().contains("job failed"));
}

#[test]
fn rooms_have_a_participant_cap_and_can_be_deleted() {
    let dir = TempDir::new("api-rooms");
    let api = Service::start(
        &["serve"],
        &serve_env(&dir.path().join("data"), &[("ROOMCAST_CPU_BUDGET", "2")]),
        &dir.path().join("serve.log"),
        true,
    );
    register_room(&api, "cap", 0, "{}");
    let joins = |from: usize, n: usize| {
        let evs: Vec<String> = (from..from + n)
            .map(|i| format!(r#"{{"type":"participant_joined","user_id":"u{i}"}}"#))
            .collect();
        format!(r#"{{"events":[{}]}}"#, evs.join(","))
    };
    let t0 = std::time::Instant::now();
    for batch in 0..10 {
        let (s, v) = api.call(
            "POST",
            "/v1/rooms/cap/events",
            Some(&joins(batch * 100, 100)),
        );
        assert_eq!(s, 200, "{v}");
    }
    eprintln!(
        "1000 joins in 10 requests: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    // The 1001st is refused with a code; the room keeps its 1000.
    let (s, v) = api.call("POST", "/v1/rooms/cap/events", Some(&joins(1000, 1)));
    assert_eq!((s, v["result"].as_u64()), (409, Some(7017)), "{v}");
    let (_, room) = api.call("GET", "/v1/rooms/cap", None);
    assert_eq!(room["room"]["participants"].as_array().unwrap().len(), 1000);

    // A room with a job that has not ended is not deleted; afterwards it is.
    register_room(&api, "gone", 1, "{}");
    let (_, v) = start_recording(&api, "gone");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    let (s, v) = api.call("DELETE", "/v1/rooms/gone", None);
    assert_eq!((s, v["result"].as_u64()), (409, Some(7012)), "{v}");
    assert_eq!(stop_recording(&api, "gone").1["result"], 0);
    wait_state(&api, &id, "completed", 30.0);
    let (s, v) = api.call("DELETE", "/v1/rooms/gone", None);
    assert_eq!((s, v["result"].as_u64()), (200, Some(0)), "{v}");
    let (s, _) = api.call("GET", "/v1/rooms/gone", None);
    assert_eq!(s, 404);
    // The job's record and files stay.
    assert_eq!(job(&api, &id)["state"], "completed");
}

#[test]
fn network_targets_follow_the_allow_lists_and_failures_do_not_describe_the_network() {
    let dir = TempDir::new("api-hosts");
    let api = Service::start(
        &["serve"],
        &serve_env(
            &dir.path().join("data"),
            &[
                ("ROOMCAST_JANUS_HOSTS", "127.0.0.1, *.example.com"),
                ("ROOMCAST_RTMP_HOSTS", "live.example.com"),
                ("ROOMCAST_RETRY_AFTER_SECS", "0"),
            ],
        ),
        &dir.path().join("serve.log"),
        true,
    );
    let janus = |url: &str| put_janus_room(&api, "j", url);
    for bad in [
        "ws://10.0.0.1:8188",
        "ws://example.com.evil.net",
        "wss://[::1]:8989",
    ] {
        let (s, v) = janus(bad);
        assert_eq!((s, v["result"].as_u64()), (400, Some(7017)), "{bad}: {v}");
        assert!(v["msg"].as_str().unwrap().contains("not allowed"), "{v}");
    }
    assert_eq!(janus("wss://sfu.example.com/janus").0, 200);
    register_room(&api, "s", 1, "{}");
    let (s, v) = api.call(
        "POST",
        "/v1/rooms/s/streaming",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"rtmp_urls":["rtmp://127.0.0.1:1935/live/k"]}}"#
        )),
    );
    assert_eq!((s, v["result"].as_u64()), (400, Some(7102)), "{v}");

    // An allowed address where nothing (or something else) answers: the job fails, and what
    // it says does not describe what was found there.
    assert_eq!(janus("ws://127.0.0.1:9").0, 200);
    let (_, v) = start_recording(&api, "j");
    let failed = wait_state(&api, v["job_id"].as_str().unwrap(), "failed", 30.0);
    let msg = failed["msg"].as_str().unwrap().to_lowercase();
    for leak in [
        "refused",
        "os error",
        "io error",
        "lookup",
        "404",
        "protocol error",
    ] {
        assert!(!msg.contains(leak), "{leak}: {msg}");
    }
    assert!(
        api.log_text().contains("Connection refused"),
        "the log keeps the detail"
    );
}

#[test]
fn the_openapi_document_is_valid_and_served_as_written() {
    // Validated by a validator nobody here wrote (openapi-spec-validator, in the test venv).
    let python = std::env::var("ROOMCAST_TEST_PYTHON").expect("ROOMCAST_TEST_PYTHON (make test)");
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json");
    let out = std::process::Command::new(python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&doc)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    assert_eq!(written["openapi"], "3.1.0");
    let dir = TempDir::new("api-openapi");
    let api = Service::start(
        &["serve"],
        &serve_env(&dir.path().join("data"), &[]),
        &dir.path().join("serve.log"),
        true,
    );
    let (s, served) = api.call("GET", "/openapi.json", None);
    assert_eq!(s, 200);
    assert_eq!(served, written);
    // Every route the router answers is in the document.
    for (method, path) in [
        ("delete", "/v1/rooms/{room_id}"),
        ("post", "/v1/rooms/{room_id}/recording"),
        ("patch", "/v1/rooms/{room_id}/streaming"),
        ("get", "/v1/recordings"),
        ("get", "/v1/recordings/{job_id}/{file_name}/media"),
        ("get", "/v1/workers"),
        ("get", "/v1/jobs/{job_id}/thumbnail"),
        ("get", "/v1/jobs/{job_id}/hls/{file}"),
        ("get", "/v1/webhooks"),
        ("get", "/v1/layouts/{name}/preview.png"),
        ("post", "/console/sign-in"),
        ("delete", "/console/session"),
    ] {
        assert!(
            written["paths"][path][method].is_object(),
            "{method} {path}"
        );
    }
}

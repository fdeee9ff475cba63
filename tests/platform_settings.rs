//! The platform's room settings as it sends them: `"watermark": true` draws the app's
//! configured watermark; without one configured the room is refused.

mod support;
use std::time::Duration;
use support::*;

#[test]
fn watermark_true_draws_the_apps_watermark() {
    let dir = TempDir::new("app-watermark");
    let data = dir.path().join("data");
    let assets = data.join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    make_png(&assets.join("brand.png"), 100, 100, "0xff00ff");

    // Not configured: the flag cannot be honoured, and the answer says why.
    let plain = Service::start(
        &["serve"],
        &serve_env(&dir.path().join("plain"), &[]),
        &dir.path().join("plain.log"),
        true,
    );
    let (s, v) = plain.call(
        "PUT",
        "/v1/rooms/w",
        Some(r#"{"app_id":"app","conf_num":"1","settings":{"watermark":true}}"#),
    );
    assert_eq!((s, v["result"].as_u64()), (400, Some(7017)), "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("ROOMCAST_WATERMARK"),
        "{v}"
    );
    drop(plain);

    let env = serve_env(
        &data,
        &[
            ("ROOMCAST_WATERMARK", "brand.png"),
            (
                "ROOMCAST_STORAGE",
                &format!("file://{}", dir.path().join("store").display()),
            ),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    register_room(&api, "w", 1, r#"{"watermark":true}"#);
    let (_, room) = api.call("GET", "/v1/rooms/w", None);
    assert!(
        room["room"]["settings"]["watermark"]
            .as_str()
            .is_some_and(|w| w.ends_with("brand.png")),
        "{room}"
    );
    // `false` is no watermark.
    register_room(&api, "nw", 1, r#"{"watermark":false}"#);
    let (_, room) = api.call("GET", "/v1/rooms/nw", None);
    assert!(room["room"]["settings"]["watermark"].is_null(), "{room}");

    let (_, v) = start_recording(&api, "w");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stop_recording(&api, "w").1["result"], 0);
    wait_state(&api, &id, "completed", 30.0);
    let files = mp4s_under(&dir.path().join("store"));
    assert_eq!(files.len(), 1, "{files:?}");
    // Top right, 24 px from the edges, over the participant's tile.
    let f = frame_at(&files[0], 1.5, 1280, 720);
    assert_region(&f, (1280 - 24 - 100, 24, 100, 100), 0xff00ff, "watermark");
}

//! Custom view pages (the platform's `url`): a page served over HTTP is drawn over the
//! recording, the tiles go where it marks them, it learns the room, a `PATCH` moves to another
//! page, and a page that fails leaves a full recording in the room's own layout.

mod support;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};
use support::*;

const SPEAKER: u32 = 0xd02020; // the first synthetic participant
/// Page A: the speaker at (160, 120) 480×272, a band at the bottom in the colour its query
/// string names, a box that turns green once the page has been told the room and one that
/// turns yellow once it has been told a chat message.
const PAGE_A: &str = r#"<!doctype html><html><head><style>
html,body{margin:0;background:transparent;overflow:hidden}
#band{position:absolute;left:0;top:600px;width:1280px;height:120px}
#spk{position:absolute;left:160px;top:120px;width:480px;height:272px}
#st{position:absolute;left:1120px;top:20px;width:120px;height:80px;background:#0000ff}
#chat{position:absolute;left:1120px;top:440px;width:120px;height:80px;background:#0000ff}
</style></head><body><div id="band"></div><div id="spk" data-roomcast-tile="speaker"></div>
<div id="st"></div><div id="chat"></div><script>
var q = new URLSearchParams(location.search);
document.getElementById('band').style.background = '#' + (q.get('band') || '000000');
window.addEventListener('roomcast', function () {
  var s = window.roomcast.state;
  if (s && s.participants && s.participants.length === 1 && s.participants[0].name)
    document.getElementById('st').style.background = '#00ff00';
  if (s && s.chat && s.chat.some(function (m) { return m.text === 'hello roomcast' && m.name === 'Alice'; }))
    document.getElementById('chat').style.background = '#ffff00';
});
</script></body></html>"#;
/// Page B: the speaker at (720, 360) 480×272 and a magenta band at the top.
const PAGE_B: &str = r#"<!doctype html><html><head><style>
html,body{margin:0;background:transparent;overflow:hidden}
#band{position:absolute;left:0;top:0;width:1280px;height:80px;background:#ff00ff}
#spk{position:absolute;left:720px;top:360px;width:480px;height:272px}
</style></head><body><div id="band"></div>
<div id="spk" data-roomcast-tile="speaker" data-roomcast-fit="crop"></div></body></html>"#;

/// Page C, drawn under the tiles: opaque blue everywhere, the speaker marked at (160, 120).
const PAGE_C: &str = r#"<!doctype html><html data-roomcast-layer="background"><head><style>
html,body{margin:0;background:#2060c0;overflow:hidden}
#spk{position:absolute;left:160px;top:120px;width:480px;height:272px}
</style></head><body><div id="spk" data-roomcast-tile="speaker"></div></body></html>"#;
const PAGE_C_BLUE: u32 = 0x2060c0;

/// Serves the test pages on a free loopback port: `/a.html`, `/b.html`, `/bg.html`,
/// `/hang.html` (headers,
/// then nothing for a minute) and a 404 for anything else.
fn serve_pages() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                let target = line.split_whitespace().nth(1).unwrap_or("/");
                let path = target.split('?').next().unwrap_or("/").to_string();
                // `?to=PORT`: where the pages that lead elsewhere lead.
                let to = target
                    .split_once("to=")
                    .map(|(_, p)| p.split('&').next().unwrap_or_default().to_string())
                    .unwrap_or_default();
                let elsewhere = format!("http://127.0.0.1:{to}");
                let mut s = r.into_inner();
                let led;
                let page = match path.as_str() {
                    "/redirect.html" => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 302 Found\r\nLocation: {elsewhere}/a.html\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        return;
                    }
                    "/nav.html" => {
                        led = format!(
                            "<html><body><script>setTimeout(function () {{ location.href = '{elsewhere}/a.html'; }}, 300);</script></body></html>"
                        );
                        Some(led.as_str())
                    }
                    "/img.html" => {
                        led = format!(
                            "{PAGE_B}<img src=\"{elsewhere}/x.png\"><script>fetch('{elsewhere}/data.json').catch(function () {{}});</script>"
                        );
                        Some(led.as_str())
                    }
                    "/a.html" => Some(PAGE_A),
                    "/b.html" => Some(PAGE_B),
                    "/bg.html" => Some(PAGE_C),
                    "/hang.html" => {
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<html>",
                        );
                        std::thread::sleep(Duration::from_secs(60));
                        return;
                    }
                    _ => None,
                };
                let (status, body) = match page {
                    Some(p) => ("200 OK", p),
                    None => ("404 Not Found", "<html><body>not here</body></html>"),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// A data folder, the test pages, a webhook receiver and the service allowing the pages.
fn set_up(tag: &str) -> (TempDir, u16, Receiver, Service) {
    let dir = TempDir::new(tag);
    let pages = serve_pages();
    let hooks = Receiver::start(0);
    let api = start_service(&dir, pages, hooks.port);
    (dir, pages, hooks, api)
}

fn start_service(dir: &TempDir, pages: u16, hooks: u16) -> Service {
    let env = serve_env(
        &dir.path().join("data"),
        &[
            (
                "ROOMCAST_PAGE_ORIGINS",
                &format!("http://127.0.0.1:{pages}"),
            ),
            (
                "ROOMCAST_STORAGE",
                &format!("file://{}", dir.path().join("store").display()),
            ),
            (
                "ROOMCAST_WEBHOOK_URL",
                &format!("http://127.0.0.1:{hooks}/hook"),
            ),
            ("ROOMCAST_WEBHOOK_SECRET", "s3cret"),
        ],
    );
    Service::start(&["serve"], &env, &dir.path().join("serve.log"), true)
}

fn start_with(api: &Service, room: &str, details: &str) -> (u16, serde_json::Value) {
    api.call(
        "POST",
        &format!("/v1/rooms/{room}/live-recording"),
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"config":{{"urlDetails":{details}}}}}"#
        )),
    )
}

/// Waits until the job's page is in `phase` (and its url ends with `url_end`).
fn wait_page(api: &Service, id: &str, phase: &str, url_end: &str, secs: f64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(secs, || {
        last = job(api, id);
        let page = &last["page"];
        (page["phase"] == phase && page["url"].as_str().is_some_and(|u| u.ends_with(url_end)))
            .then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("page of {id} not {phase} ({url_end}) within {secs} s: {last}"))
}

/// Posts a chat message from the first participant; when it was posted (ms since the epoch).
fn post_chat(api: &Service, room: &str, text: &str) -> u64 {
    let posted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    post_chat_as(api, room, ("p1", "Alice"), text);
    posted
}

/// Waits for the `custom-view` webhook saying `room`'s page fell back, and checks its code.
fn expect_fallback_hook(hooks: &Receiver, room: &str) {
    let hook = wait_for(10.0, || {
        hooks
            .of_type("custom-view")
            .iter()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
            .find(|v| v["room_id"] == room && v["data"]["phase"] == "fallback")
    })
    .unwrap_or_else(|| panic!("no fallback webhook for {room}"));
    assert_eq!(hook["data"]["status"]["resultCode"], 7073, "{hook}");
}

fn near(c: [u8; 3], rgb: u32) -> bool {
    dist(c, rgb) < 60.0
}

#[test]
fn a_page_places_the_speaker_draws_over_the_tiles_and_can_be_changed_live() {
    let (dir, pages, hooks, api) = set_up("custom-view");
    register_room(&api, "cv", 1, "{}");

    // Refused up front: an origin not allowed, a file, no address at all (7202).
    for url in ["http://127.0.0.2:9/x.html", "file:///etc/hostname", "::"] {
        let (s, v) = start_with(&api, "cv", &format!(r#"{{"url":"{url}"}}"#));
        assert_eq!((s, v["result"].as_u64()), (400, Some(7202)), "{url}: {v}");
    }

    let a = format!("http://127.0.0.1:{pages}/a.html");
    let (s, v) = start_with(
        &api,
        "cv",
        &format!(r#"{{"url":"{a}","layOut":{{}},"chatOverlay":false,"band":"ffffff"}}"#),
    );
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    let rec = wait_page(&api, &id, "shown", "/a.html", 20.0);
    // The custom key stays out of the record (it may carry a token).
    assert!(
        !rec["page"]["url"].as_str().unwrap().contains("band"),
        "{rec}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let started_ms = rec["segments"][0]["started_ms"].as_u64().unwrap();
    let chat_ms = post_chat(&api, "cv", "hello roomcast");
    std::thread::sleep(Duration::from_secs(3));

    let b = format!("http://127.0.0.1:{pages}/b.html");
    let changed = Instant::now();
    let (s, v) = api.call(
        "PATCH",
        "/v1/rooms/cv/live-recording",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"config":{{"url_details":{{"url":"{b}"}}}}}}"#
        )),
    );
    assert_eq!((s, v["result"].as_u64()), (200, Some(0)), "{v}");
    wait_page(&api, &id, "shown", "/b.html", 20.0);
    let shown_b = changed.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(stop_recording(&api, "cv").1["result"], 0);
    wait_state(&api, &id, "completed", 40.0);

    let files = mp4s_under(&dir.path().join("store"));
    assert_eq!(files.len(), 1, "{files:?}");
    let p = probe(&files[0]);
    assert!(p.duration > 8.0, "{:?}", p.duration);
    // Decoded at a quarter of the size: every rectangle below is in quarter pixels.
    let frames = all_frames(&files[0], 320, 180);
    // The participant flashes white for 0.1 s each second.
    let speaker = |c: [u8; 3]| near(c, SPEAKER) || near(c, 0xffffff);
    let on_a = |f: &Frame| {
        speaker(f.region_color(40, 30, 120, 68))
            && near(f.region_color(0, 150, 320, 30), 0xffffff)
            // Nothing where the room's grid would put the tile's right half.
            && near(f.region_color(200, 40, 100, 80), 0x000000)
    };
    let on_b = |f: &Frame| {
        speaker(f.region_color(180, 90, 120, 68))
            && near(f.region_color(0, 0, 320, 20), 0xff00ff)
            && near(f.region_color(40, 30, 100, 60), 0x000000)
    };
    let first_a = frames.iter().position(|(_, f)| on_a(f));
    let first_b = frames.iter().position(|(_, f)| on_b(f));
    let (Some(ia), Some(ib)) = (first_a, first_b) else {
        let mid = &frames[frames.len() / 2].1;
        panic!(
            "page A at frame {first_a:?}, page B at {first_b:?}; middle frame: speaker-A {:?} \
             band-A {:?} status {:?} speaker-B {:?} band-B {:?}",
            mid.region_color(40, 30, 120, 68),
            mid.region_color(0, 150, 320, 30),
            mid.region_color(280, 5, 30, 20),
            mid.region_color(180, 90, 120, 68),
            mid.region_color(0, 0, 320, 20)
        );
    };
    assert!(ia < ib, "page B ({ib}) before page A ({ia})");
    // Page A stays until page B is ready: never the room's own layout in between.
    let native = frames[ia..ib]
        .iter()
        .filter(|(_, f)| near(f.region_color(200, 40, 100, 80), SPEAKER))
        .count();
    assert_eq!(native, 0, "the room's layout showed between the pages");
    // The page was told the room: its box turned from blue to green.
    let told = frames
        .iter()
        .filter(|(_, f)| on_a(f) && near(f.region_color(280, 5, 30, 20), 0x00ff00))
        .count();
    assert!(
        told >= 60,
        "the page showed the room's state in {told} frames"
    );
    // The chat message reached the page: its box turned yellow, about when it was posted (the
    // file's clock starts with the segment's record, within a few frames).
    let chat_t = frames
        .iter()
        .find(|(_, f)| on_a(f) && near(f.region_color(280, 110, 30, 20), 0xffff00))
        .map(|(t, _)| *t)
        .expect("the chat message never showed");
    let posted_t = (chat_ms - started_ms) as f64 / 1000.0;
    let chat_delay = chat_t - posted_t;
    // README: 0.3–0.4 s. Not before it was posted (the file's clock against the wall clock
    // allows a few frames), and at most twice the figure.
    assert!(
        (-0.15..0.8).contains(&chat_delay),
        "chat shown {chat_delay:.2} s after it was posted"
    );
    let a_frames = frames.iter().filter(|(_, f)| on_a(f)).count();
    let b_frames = frames.iter().filter(|(_, f)| on_b(f)).count();
    // At least 3 s of each (30 fps) of the 5 s each was shown.
    assert!(a_frames >= 90, "page A shown in {a_frames} frames");
    assert!(b_frames >= 90, "page B shown in {b_frames} frames");
    eprintln!(
        "custom view: page A in {a_frames} frames ({told} with the room's state), chat shown \
         {chat_delay:.2} s after it was posted, page B in {b_frames} (shown {:.1} s after the \
         PATCH)",
        shown_b.as_secs_f64()
    );
    let shown: Vec<_> = hooks
        .of_type("custom-view")
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .filter(|v| v["data"]["phase"] == "shown")
        .collect();
    assert!(shown.len() >= 2, "{shown:?}");
    assert_eq!(shown[0]["data"]["status"]["resultCode"], 0);
}

#[test]
fn a_page_that_fails_leaves_a_full_recording_in_the_rooms_layout() {
    let (dir, pages, hooks, api) = set_up("custom-view-fail");
    let mut lengths = Vec::new();
    for (room, page, why) in [
        ("missing", "missing.html", "HTTP 404"),
        ("hanging", "hang.html", "within 5 s"),
    ] {
        register_room(&api, room, 1, "{}");
        let url = format!("http://127.0.0.1:{pages}/{page}");
        let (s, v) = start_with(&api, room, &format!(r#"{{"url":"{url}"}}"#));
        assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
        let id = v["job_id"].as_str().unwrap().to_string();
        wait_state(&api, &id, "active", 20.0);
        let active = Instant::now();
        let rec = wait_page(&api, &id, "fallback", page, 20.0);
        let error = rec["page"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{room}: {rec}");
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(stop_recording(&api, room).1["result"], 0);
        lengths.push(active.elapsed().as_secs_f64());
        wait_state(&api, &id, "completed", 40.0);
        expect_fallback_hook(&hooks, room);
    }
    let mut files = mp4s_under(&dir.path().join("store"));
    files.sort_by_key(|f| !f.to_string_lossy().contains("missing"));
    assert_eq!(files.len(), 2, "{files:?}");
    for (f, wall) in files.iter().zip(lengths) {
        // As long as the recording ran: nothing lost while the page failed.
        let p = probe(f);
        assert!(
            p.duration > wall - 1.0,
            "{}: {:.2} s of {wall:.2}",
            f.display(),
            p.duration
        );
        // The room's grid: one participant fills the canvas, from the first second on (seen
        // mid-second, clear of the participant's white flash at each second's start).
        for t in [0.5, (p.duration - 1.0).floor() + 0.5] {
            let frame = frame_at(f, t, 1280, 720);
            assert!(
                near(frame.region_color(0, 0, 1280, 720), SPEAKER),
                "{} at {t}: {:?}",
                f.display(),
                frame.region_color(0, 0, 1280, 720)
            );
        }
    }
}

#[test]
fn a_background_page_lies_under_the_tiles() {
    let (dir, pages, _hooks, api) = set_up("custom-view-bg");
    register_room(&api, "bg", 1, "{}");
    let url = format!("http://127.0.0.1:{pages}/bg.html");
    let (s, v) = start_with(&api, "bg", &format!(r#"{{"url":"{url}"}}"#));
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    wait_page(&api, &id, "shown", "/bg.html", 20.0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stop_recording(&api, "bg").1["result"], 0);
    wait_state(&api, &id, "completed", 40.0);
    let files = mp4s_under(&dir.path().join("store"));
    assert_eq!(files.len(), 1, "{files:?}");
    let frames = all_frames(&files[0], 320, 180);
    // The page is opaque: drawn over the tiles it would hide the speaker.
    let shown = |f: &Frame| {
        let spk = f.region_color(50, 40, 100, 48);
        (near(spk, SPEAKER) || near(spk, 0xffffff))
            && near(f.region_color(200, 100, 100, 60), PAGE_C_BLUE)
            && near(f.region_color(0, 0, 320, 20), PAGE_C_BLUE)
    };
    let n = frames.len();
    let last: Vec<_> = frames[n - 30..].iter().filter(|(_, f)| shown(f)).collect();
    let mid = &frames[n - 15].1;
    assert_eq!(
        last.len(),
        30,
        "speaker {:?}, page {:?}",
        mid.region_color(50, 40, 100, 48),
        mid.region_color(200, 100, 100, 60)
    );
}

#[test]
fn the_chat_overlay_shows_a_posted_message_within_a_second() {
    let (dir, _pages, hooks, api) = set_up("chat-overlay");
    register_room(&api, "chat", 1, "{}");
    let (s, v) = start_with(&api, "chat", r#"{"chatOverlay":true}"#);
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    let rec = wait_page(&api, &id, "shown", "(chat overlay)", 20.0);
    std::thread::sleep(Duration::from_secs(2));
    let started_ms = rec["segments"][0]["started_ms"].as_u64().unwrap();
    let posted_ms = post_chat(&api, "chat", "Can everyone hear me?");
    std::thread::sleep(Duration::from_secs(1));
    post_chat(&api, "chat", "Yes — \"loud\" and clear\n👍");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stop_recording(&api, "chat").1["result"], 0);
    // Said as the recording stops: it still belongs to the segment being finalized.
    post_chat(&api, "chat", "bye");
    let done = wait_state(&api, &id, "completed", 40.0);
    // The segment's transcript is delivered with it and announced by a `chatdata` webhook.
    let hook = wait_for(20.0, || hooks.of_type("chatdata").into_iter().next())
        .expect("no chatdata webhook");
    let hook: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(
        (hook["room_id"].as_str(), hook["app_id"].is_string()),
        (Some("chat"), true),
        "{hook}"
    );
    let url = hook["chatdata"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let path = url
        .strip_prefix("file://")
        .unwrap_or_else(|| panic!("{hook}"));
    assert!(
        path.starts_with(&dir.path().join("store").display().to_string()),
        "{url}"
    );
    let transcript: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let messages = transcript["messages"].as_array().unwrap();
    let texts: Vec<_> = messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "Can everyone hear me?",
            "Yes — \"loud\" and clear\n👍",
            "bye"
        ]
    );
    assert_eq!(
        (
            messages[0]["name"].as_str(),
            messages[0]["user_id"].as_str()
        ),
        (Some("Alice"), Some("p1"))
    );
    let offset = messages[0]["offset_s"].as_f64().unwrap();
    let expected = (posted_ms - started_ms) as f64 / 1000.0;
    assert!(
        (offset - expected).abs() < 0.5,
        "offset {offset} s, posted at {expected} s"
    );
    let seg = wait_for(10.0, || {
        let j = job(&api, &id);
        (j["segments"][0]["chat"]["status"] == "delivered").then(|| j["segments"][0].clone())
    })
    .unwrap_or_else(|| panic!("transcript not recorded as delivered: {done}"));
    assert_eq!(seg["chat"]["messages"], 3, "{seg}");
    assert_eq!(seg["chat"]["url"].as_str(), Some(url.as_str()));
    assert_eq!(transcript["recording"], seg["file_name"], "{transcript}");
    let files = mp4s_under(&dir.path().join("store"));
    assert_eq!(files.len(), 1, "{files:?}");
    let frames = all_frames(&files[0], 320, 180);
    // The panel (#101010) at the bottom right, over the room's grid (the participant's colour).
    let panel = |f: &Frame| near(f.region_color(220, 165, 90, 8), 0x101010);
    let posted_t = (posted_ms - started_ms) as f64 / 1000.0;
    let before: Vec<_> = frames.iter().filter(|(t, _)| *t < posted_t - 0.3).collect();
    assert!(before.len() > 30, "{} frames before the post", before.len());
    assert!(
        before.iter().all(|(_, f)| !panel(f)),
        "a chat panel before any message"
    );
    let shown_t = frames
        .iter()
        .find(|(_, f)| panel(f))
        .map(|(t, _)| *t)
        .expect("the chat panel never showed");
    let delay = shown_t - posted_t;
    eprintln!("chat overlay: message shown {delay:.2} s after it was posted");
    assert!(delay < 1.0, "shown {delay:.2} s after it was posted");
    // It stays, and the grid is still there around it.
    let last = &frames[frames.len() - 10].1;
    assert!(panel(last));
    assert!(
        near(last.region_color(40, 30, 120, 68), SPEAKER)
            || near(last.region_color(40, 30, 120, 68), 0xffffff)
    );
}

/// A server on another origin that counts the connections it gets (and answers each 200).
fn counting_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, hits)
}

#[test]
fn a_page_reaches_no_origin_but_its_own() {
    let (_dir, pages, hooks, api) = set_up("custom-view-origins");
    let (other, hits) = counting_server();
    // Led away by a redirect (the check refuses it), by a script once rendered (the
    // renderer's guard refuses it): both fall back to the room's layout with 7073.
    for (room, page, why) in [
        ("redirected", "redirect.html", "not an allowed origin"),
        ("navigated", "nav.html", "not an allowed origin"),
    ] {
        register_room(&api, room, 1, "{}");
        let url = format!("http://127.0.0.1:{pages}/{page}?to={other}");
        let (s, v) = start_with(&api, room, &format!(r#"{{"url":"{url}"}}"#));
        assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
        let id = v["job_id"].as_str().unwrap().to_string();
        let rec = wait_page(&api, &id, "fallback", page, 30.0);
        let error = rec["page"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{room}: {rec}");
        assert!(
            error.contains(&format!("127.0.0.1:{other}")),
            "names the refused origin: {rec}"
        );
        assert_eq!(stop_recording(&api, room).1["result"], 0);
        wait_state(&api, &id, "completed", 40.0);
        expect_fallback_hook(&hooks, room);
    }
    // A page that loads an image and fetches from elsewhere is shown; elsewhere hears nothing.
    register_room(&api, "resources", 1, "{}");
    let url = format!("http://127.0.0.1:{pages}/img.html?to={other}");
    let (s, v) = start_with(&api, "resources", &format!(r#"{{"url":"{url}"}}"#));
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_page(&api, &id, "shown", "img.html", 30.0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stop_recording(&api, "resources").1["result"], 0);
    wait_state(&api, &id, "completed", 40.0);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the other origin was reached"
    );
}

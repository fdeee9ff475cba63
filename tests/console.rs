//! The operator console in a real browser (headless Chromium over WebDriver): an operator
//! signs in once, watches a synthetic room's recording (its live thumbnail shows the
//! participants' colours in their tiles, the feed plots fill), stops it from the page and
//! plays the file from the archive in the page; a read-only session sees but cannot act; a
//! request another site makes with the operator's session is refused.
//!
//! `ROOMCAST_SCREENSHOTS=DIR` keeps the browser's screenshots (the README's pictures).

mod support;
use serde_json::{json, Value};
use support::browser::Browser;
use support::*;

const READ_TOKEN: &str = "read-only-7c21";
const RED: u32 = 0xd02020;
const GREEN: u32 = 0x20a040;
const BLUE: u32 = 0x2040d0;
const YELLOW: u32 = 0xd0b020;
/// Ann's camera flashes white 100 ms a second (her picture is the sync reference); a
/// thumbnail is taken every 2 s of the job's clock, so it may catch the flash every time.
const FLASH: u32 = 0xebebeb;

/// `roomcast serve` with the read-only token and `extra` settings.
fn serve(dir: &std::path::Path, extra: &[(&str, &str)]) -> Service {
    let mut settings = vec![("ROOMCAST_READ_TOKEN", READ_TOKEN)];
    settings.extend_from_slice(extra);
    let env = serve_env(&dir.join("data"), &settings);
    Service::start(&["serve"], &env, &dir.join("serve.log"), true)
}

fn recording(api: &Service, room: &str, hls: bool) -> String {
    register_room(api, room, 4, "{}");
    let outputs = if hls {
        r#","outputs":{"hls":{"segment_secs":2}}"#
    } else {
        ""
    };
    let (s, v) = api.call(
        "POST",
        &format!("/v1/rooms/{room}/live-recording"),
        Some(&format!(r#"{{"requested_by":{MODERATOR}{outputs}}}"#)),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(api, &id, "active", 30.0);
    id
}

fn screenshot(b: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("ROOMCAST_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), b.screenshot()).unwrap();
    }
}

fn sign_in(b: &Browser, token: &str) {
    b.wait(
        15.0,
        "the sign-in form",
        "return !document.querySelector('#sign-in').hidden",
    );
    b.js("document.querySelector('#token').value = ''", json!([]));
    b.type_into("#token", token);
    b.click("#sign-in-form button");
}

fn card(job: &str) -> String {
    format!("article[data-job=\"{job}\"]")
}

/// Signs in with `token` and waits for job `job`'s card (in `state`, if given); its selector.
fn open_card(b: &Browser, token: &str, job: &str, state: Option<&str>) -> String {
    sign_in(b, token);
    let sel = card(job);
    let with_state = state
        .map(|s| format!("[data-state=\"{s}\"]"))
        .unwrap_or_default();
    b.wait(
        20.0,
        "the job's card",
        &format!("return document.querySelector('{sel}{with_state}') !== null"),
    );
    sel
}

/// The median colour of a patch in the middle of each quadrant of the job's thumbnail, read
/// by the page from the picture it shows.
const QUADRANTS: &str = r#"
const img = document.querySelector(arguments[0] + ' img');
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d');
g.drawImage(img, 0, 0);
const out = [];
for (const [qx, qy] of [[0, 0], [1, 0], [0, 1], [1, 1]]) {
  const w = c.width / 2, h = c.height / 2;
  const d = g.getImageData(qx * w + w * 0.15, qy * h + h * 0.15, w * 0.3, h * 0.3).data;
  const ch = [[], [], []];
  for (let i = 0; i < d.length; i += 4) { ch[0].push(d[i]); ch[1].push(d[i + 1]); ch[2].push(d[i + 2]); }
  out.push(ch.map((v) => v.sort((a, b) => a - b)[v.length >> 1]));
}
return [c.width, c.height, out];
"#;

fn near(rgb: &Value, want: u32) -> bool {
    let want = [(want >> 16) & 255, (want >> 8) & 255, want & 255];
    let d: f64 = (0..3)
        .map(|i| (rgb[i].as_f64().unwrap_or(-999.0) - want[i] as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    d < 45.0
}

#[test]
fn an_operator_watches_stops_and_replays_a_recording_in_the_console() {
    let dir = TempDir::new("console");
    // A webhook receiver that is down: its events wait in the queue, retried.
    let down = format!("http://127.0.0.1:{}/hook", free_port());
    let api = serve(
        dir.path(),
        &[
            ("ROOMCAST_WEBHOOK_URL", &down),
            ("ROOMCAST_WEBHOOK_SECRET", "console-secret"),
        ],
    );
    let job = recording(&api, "studio", true);
    let base = format!("http://{}", api.addr.as_deref().unwrap());
    let b = Browser::start(1280, 800);
    b.goto(&format!("{base}/console"));

    sign_in(&b, "not-the-token");
    b.wait(
        10.0,
        "the wrong token refused",
        "return document.querySelector('#sign-in-error').textContent.includes('Wrong token')",
    );
    screenshot(&b, "console-sign-in.png");
    let sel = open_card(&b, TOKEN, &job, Some("active"));

    // The session is a cookie scripts cannot read; the token is kept nowhere in the page.
    let cookies = b.cookies();
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "roomcast_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert!(!session["value"].as_str().unwrap().contains(TOKEN));
    let seen = b.js(
        "return [document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage), \
         location.href, document.documentElement.outerHTML].join('|')",
        json!([]),
    );
    let seen = seen.as_str().unwrap();
    assert!(
        !seen.contains("roomcast_session") && !seen.contains(TOKEN),
        "{seen}"
    );

    // The live thumbnail: the four participants' colours in their tiles, refreshed.
    let first = b.wait(
        20.0,
        "a thumbnail",
        &format!("return document.querySelector('{sel} img').dataset.updated || ''"),
    );
    let expected = [(RED, "Ann"), (GREEN, "Bob"), (BLUE, "Cat"), (YELLOW, "Dan")];
    let mut last = Value::Null;
    let shown = wait_for(10.0, || {
        let q = b.js(QUADRANTS, json!([sel]));
        assert_eq!(
            (q[0].as_u64(), q[1].as_u64()),
            (Some(320), Some(180)),
            "{q}"
        );
        let ok = expected
            .iter()
            .enumerate()
            .all(|(i, (want, _))| near(&q[2][i], *want) || (i == 0 && near(&q[2][i], FLASH)));
        last = q;
        ok.then_some(())
    });
    assert!(
        shown.is_some(),
        "the thumbnail's tiles are not Ann, Bob, Cat, Dan ({expected:06x?}): {last}"
    );
    b.wait(
        10.0,
        "the thumbnail refreshed",
        &format!(
            "return (document.querySelector('{sel} img').dataset.updated || '') !== '{}'",
            first.as_str().unwrap()
        ),
    );
    // Who is in the room, by name.
    let names = b.wait(
        20.0,
        "the participants' names",
        &format!(
            "const n = [...document.querySelectorAll('{sel} ul.people li')].map((l) => l.textContent); \
             return n.length === 4 ? n.join(',') : ''"
        ),
    );
    assert_eq!(names, "Alice,Bob,Carol,Dave");
    // The feed plots: every participant's camera and microphone, with points.
    b.wait(
        20.0,
        "feed plots with points",
        &format!(
            "const c = [...document.querySelectorAll('{sel} canvas[data-series=fps]')]; \
             return c.length === 8 && c.every((x) => +x.dataset.points >= 3)"
        ),
    );
    // The live HLS preview plays (hls.js, bundled).
    b.wait(
        30.0,
        "the HLS preview playing",
        &format!(
            "const v = document.querySelector('{sel} video.hls'); \
             if (v.dataset.error) return 'error ' + v.dataset.error; return v.currentTime > 1"
        ),
    );
    assert_eq!(
        b.js(
            &format!("return document.querySelector('{sel} video.hls').dataset.error || ''"),
            json!([])
        ),
        ""
    );
    screenshot(&b, "console-jobs.png");

    // A layout change from the page: its preview first, then one participant over the whole
    // picture.
    b.js(
        &format!(
            "const s = document.querySelector('{sel} select.layout'); s.value = 'single'; \
             s.dispatchEvent(new Event('change'))"
        ),
        json!([]),
    );
    let preview = b.wait(
        20.0,
        "the layout's preview",
        &format!("return document.querySelector('{sel} img.layout-preview').naturalWidth"),
    );
    assert_eq!(preview, 1280);
    b.click(&format!("{sel} button.apply-layout"));
    let single = wait_for(15.0, || {
        let q = b.js(QUADRANTS, json!([sel]));
        let first = [RED, GREEN, BLUE, YELLOW, FLASH]
            .into_iter()
            .find(|c| near(&q[2][0], *c))?;
        (1..4).all(|i| near(&q[2][i], first)).then_some(())
    });
    assert!(
        single.is_some(),
        "the single layout never showed in the thumbnail"
    );

    b.click("#tabs button[data-tab=fleet]");
    b.wait(
        10.0,
        "the worker in the fleet table",
        "return document.querySelectorAll('#workers tbody tr').length === 1",
    );
    screenshot(&b, "console-fleet.png");

    // At phone width nothing is wider than the screen.
    b.resize(390, 844);
    b.click("#tabs button[data-tab=jobs]");
    let overflow = b.js(
        "return document.documentElement.scrollWidth - window.innerWidth",
        json!([]),
    );
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "wider than a phone: {overflow}"
    );
    screenshot(&b, "console-phone.png");
    b.resize(1280, 800);

    // Stop from the page: the job completes.
    b.click(&format!("{sel} button.stop"));
    let done = wait_state(&api, &job, "completed", 60.0);
    assert_eq!(done["stopped_by"], "console", "{done}");

    // The file in the archive, played in the page.
    b.click("#tabs button[data-tab=archive]");
    b.wait(
        30.0,
        "the recording in the archive",
        "return [...document.querySelectorAll('#recordings tbody tr')]\
         .some((r) => r.dataset.file.endsWith('.mp4'))",
    );
    b.click("#recordings tbody tr button");
    b.wait(
        30.0,
        "the recording playing in the page",
        "const v = document.querySelector('#player'); \
         if (v.error) return 'error ' + v.error.code; return v.currentTime > 1.5",
    );
    let err = b.js(
        "const v = document.querySelector('#player'); return v.error ? v.error.code : 0",
        json!([]),
    );
    assert_eq!(err, 0, "media error in the page");
    screenshot(&b, "console-archive.png");

    // The webhooks the receiver never took: waiting, retried, with the reason.
    b.click("#tabs button[data-tab=deliveries]");
    b.wait(
        30.0,
        "the recording's webhooks waiting for their receiver",
        "const rows = [...document.querySelectorAll('#webhook-list tbody tr')]; \
         return rows.some((r) => r.cells[0].textContent === 'room-live-recording-on' \
           && +r.cells[3].textContent >= 1 && r.cells[5].textContent.includes('request failed'))",
    );
    screenshot(&b, "console-deliveries.png");
}

/// A request as a browser on another page would send it, with `cookie` and `origin`.
fn raw(addr: &str, method: &str, path: &str, cookie: &str, origin: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: roomcast_session={cookie}\r\n\
         Origin: {origin}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Serves `html` to every request on a port of its own (another origin of the same site).
fn other_site(html: String) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in l.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    addr
}

#[test]
fn a_read_only_session_cannot_act_and_another_site_cannot_use_a_session() {
    let dir = TempDir::new("console-access");
    let api = serve(dir.path(), &[]);
    let addr = api.addr.clone().unwrap();
    let job = recording(&api, "hall", false);
    let b = Browser::start(1280, 800);
    b.goto(&format!("http://{addr}/console"));
    let sel = open_card(&b, READ_TOKEN, &job, None);
    assert_eq!(
        b.js(
            &format!("return document.querySelector('{sel} button.stop').disabled"),
            json!([])
        ),
        true
    );
    assert_eq!(
        b.js(
            "return document.querySelector('#access').textContent",
            json!([])
        ),
        "read-only"
    );
    // Sent anyway (a user's own script): refused, and the job goes on.
    b.js(
        &format!(
            "fetch('/v1/rooms/hall/live-recording', {{method: 'DELETE', headers: {{'Content-Type': 'application/json'}}, \
             body: JSON.stringify({{requested_by: {MODERATOR}}})}}).then((r) => window.stopStatus = r.status)"
        ),
        json!([]),
    );
    let status = b.wait(10.0, "the stop's answer", "return window.stopStatus || 0");
    assert_eq!(status, 403);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(job_state(&api, &job), "active");

    // An operator's session, and a page of another origin on the same site (cookies go with
    // its requests) trying to start a recording with it.
    b.click("#sign-out");
    open_card(&b, TOKEN, &job, None);
    register_room(&api, "other", 2, "{}");
    let body = format!(r#"{{"requested_by":{MODERATOR}}}"#);
    let page = format!(
        "<!doctype html><script>fetch('http://{addr}/v1/rooms/other/live-recording', \
         {{method: 'POST', mode: 'no-cors', credentials: 'include', headers: {{'Content-Type': 'text/plain'}}, \
         body: '{body}'}}).then(() => document.title = 'sent', () => document.title = 'failed');</script>"
    );
    let evil = other_site(page);
    b.goto(&format!("http://{evil}/"));
    b.wait(
        10.0,
        "the other site's request sent",
        "return document.title === 'sent'",
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (_, jobs) = api.call("GET", "/v1/rooms/other/jobs", None);
    assert_eq!(
        jobs["jobs"],
        json!([]),
        "another site started a recording: {jobs}"
    );

    // The same request with the session, from the console's origin, is taken: only the
    // origin made the difference.
    let cookie = b
        .cookies()
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "roomcast_session")
        .map(|c| c["value"].as_str().unwrap().to_string())
        .expect("the session cookie");
    let start = |cookie: &str, origin: &str| {
        raw(
            &addr,
            "POST",
            "/v1/rooms/other/live-recording",
            cookie,
            origin,
            &body,
        )
    };
    assert_eq!(start(&cookie, &format!("http://{evil}")), 403);
    assert_eq!(start(&cookie, &format!("http://{addr}")), 201);
    assert_eq!(start("read.1.forged", &format!("http://{addr}")), 401);
}

fn job_state(api: &Service, id: &str) -> String {
    job(api, id)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_operator_adds_and_removes_a_streams_destination_in_the_console() {
    let dir = TempDir::new("console-rtmp");
    let nginx = NginxRtmp::start(&dir.path().join("nginx"));
    let api = serve(dir.path(), &[]);
    register_room(&api, "stage", 2, "{}");
    let (s, v) = api.call(
        "POST",
        "/v1/rooms/stage/streaming",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"rtmp_urls":["{}"]}}"#,
            nginx.url("first")
        )),
    );
    assert_eq!(s, 201, "{v}");
    let job = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &job, "active", 30.0);
    let b = Browser::start(1280, 800);
    b.goto(&format!("http://{}/console", api.addr.as_deref().unwrap()));
    let sel = open_card(&b, TOKEN, &job, Some("active"));
    let live = |n: usize| {
        format!(
            "const d = [...document.querySelectorAll('{sel} ul.destinations li')]; \
             return d.length === {n} && d.every((l) => l.dataset.state === 'live') \
               ? d.map((l) => l.dataset.id).join(',') : ''"
        )
    };
    let first = b.wait(30.0, "the stream's destination live", &live(1));

    // Add a second destination from the page; both go live.
    b.type_into(&format!("{sel} form.rtmp-add input"), &nginx.url("second"));
    b.click(&format!("{sel} form.rtmp-add button"));
    b.wait(30.0, "two live destinations", &live(2));
    // The stream key is not shown in the page.
    let text = b.js("return document.body.innerText", json!([]));
    assert!(!text.as_str().unwrap().contains("/second"), "{text}");

    // Remove the first: the second goes on alone.
    b.click(&format!(
        "{sel} ul.destinations li[data-id=\"{}\"] button",
        first.as_str().unwrap()
    ));
    let left = b.wait(30.0, "one destination left", &live(1));
    assert_ne!(left, first);
    // The same edit through the API keeps its bounds: one to three destinations, known ids.
    let left = left.as_str().unwrap().to_string();
    let edit = |body: &str| {
        let (_, v) = api.call(
            "PATCH",
            "/v1/rooms/stage/streaming",
            Some(&format!(r#"{{"requested_by":{MODERATOR},{body}}}"#)),
        );
        v["result"].as_u64().unwrap_or_default()
    };
    let three = [1, 2, 3].map(|i| format!("\"{}\"", nginx.url(&format!("x{i}"))));
    assert_eq!(
        edit(&format!(r#""add_rtmp_urls":[{}]"#, three.join(","))),
        7101
    );
    assert_eq!(edit(&format!(r#""remove_destinations":[{left}]"#)), 7006);
    assert_eq!(edit(r#""remove_destinations":[99]"#), 7007);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (s, v) = api.call(
        "DELETE",
        "/v1/rooms/stage/streaming",
        Some(&format!(r#"{{"requested_by":{MODERATOR}}}"#)),
    );
    assert_eq!(s, 200, "{v}");
    wait_state(&api, &job, "completed", 60.0);

    // What nginx received from each: H.264 and AAC, the second longer than the first lasted
    // after it was added.
    let recs = nginx.recordings();
    let of = |name: &str| {
        recs.iter()
            .find(|p| p.to_string_lossy().contains(name))
            .unwrap_or_else(|| panic!("nothing received for {name}: {recs:?}"))
            .clone()
    };
    for name in ["first", "second"] {
        let p = probe(&of(name));
        assert_eq!(p.video_codec.as_deref(), Some("h264"), "{name}");
        assert_eq!(p.audio_codec.as_deref(), Some("aac"), "{name}");
    }
    assert!(probe(&of("second")).duration > 3.0);
}

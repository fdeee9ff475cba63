//! The control API against hostile clients, through a real `serve`: destinations that point
//! at local services, client ids that forge text, duplicate keys, clients that never finish
//! a request, the scrape address without a token, and the answers a client reads.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

fn service(tag: &str, extra: &[(&str, &str)]) -> (TempDir, Service) {
    let dir = TempDir::new(tag);
    let api = Service::start(
        &["serve"],
        &serve_env(&dir.path().join("data"), extra),
        &dir.path().join("serve.log"),
        true,
    );
    (dir, api)
}

fn with_requester(who: &str) -> String {
    format!(r#"{{"requested_by":{who}}}"#)
}

#[test]
fn destinations_are_held_to_address_ranges() {
    let (_dir, api) = service(
        "hostile-ranges",
        &[
            ("ROOMCAST_JANUS_HOSTS", "10.20.0.0/16, janus.example.com"),
            ("ROOMCAST_RTMP_HOSTS", "192.0.2.0/24"),
        ],
    );
    let janus = |url: &str| put_janus_room(&api, "j", url);
    for bad in [
        "ws://127.0.0.1:16379",
        "ws://[::ffff:127.0.0.1]:6379",
        "ws://10.21.0.1:8188",
        "ws://janus.example.com.evil.net",
    ] {
        let (s, v) = janus(bad);
        assert_eq!((s, v["result"].as_u64()), (400, Some(7017)), "{bad}: {v}");
    }
    assert_eq!(janus("ws://10.20.3.4:8188").0, 200);
    assert_eq!(janus("wss://janus.example.com/ws").0, 200);
    register_room(&api, "s", 1, "{}");
    let stream = |url: &str| {
        api.call(
            "POST",
            "/v1/rooms/s/streaming",
            Some(&format!(
                r#"{{"requested_by":{MODERATOR},"rtmp_urls":["{url}"]}}"#
            )),
        )
    };
    let (s, v) = stream("rtmp://u:p@127.0.0.1:6379/live/x");
    assert_eq!((s, v["result"].as_u64()), (400, Some(7102)), "{v}");
    assert!(!v["msg"].as_str().unwrap().contains("u:p"), "{v}");
    let (s, v) = stream("rtmp://192.0.2.7/live/x");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
}

#[test]
fn serve_says_once_that_no_allow_list_is_set() {
    let (_dir, mut api) = service("hostile-open", &[]);
    let log = wait_for(5.0, || {
        let text = api.log_text();
        text.contains("no allow-list").then_some(text)
    })
    .expect("a warning about the missing allow-lists");
    assert_eq!(log.matches("no allow-list").count(), 1, "{log}");
    assert!(log.contains("ROOMCAST_JANUS_HOSTS") && log.contains("ROOMCAST_RTMP_HOSTS"));
    api.kill9();
    let (_dir, api) = service(
        "hostile-closed",
        &[
            ("ROOMCAST_JANUS_HOSTS", "10.0.0.0/8"),
            ("ROOMCAST_RTMP_HOSTS", "10.0.0.0/8"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!api.log_text().contains("no allow-list"));
}

#[test]
fn client_ids_and_keys_are_checked() {
    let (_dir, api) = service("hostile-ids", &[]);
    register_room(&api, "r", 1, "{}");
    let long = "m".repeat(10_000);
    for who in [
        r#"{"client_id":"a\nb","role":"moderator"}"#.to_string(),
        r#"{"client_id":"abc\u202edcba","role":"moderator"}"#.to_string(),
        format!(r#"{{"client_id":"{long}","role":"moderator"}}"#),
        r#"{"client_id":"","role":"moderator"}"#.to_string(),
    ] {
        for path in ["/v1/rooms/r/live-recording", "/v1/rooms/r/streaming"] {
            let (s, v) = api.call("POST", path, Some(&with_requester(&who)));
            let want = if path.ends_with("streaming") {
                7007
            } else {
                7017
            };
            assert_eq!((s, v["result"].as_u64()), (400, Some(want)), "{path} {v}");
            assert!(v["msg"].as_str().unwrap().contains("client_id"), "{v}");
        }
    }
    // A key given twice is refused, whichever comes last, at any depth.
    for body in [
        r#"{"requested_by":{"client_id":"v","role":"viewer","role":"moderator"}}"#,
        r#"{"requested_by":{"client_id":"v","role":"moderator"},"requested_by":{"client_id":"w","role":"moderator"}}"#,
    ] {
        let (s, v) = api.call("POST", "/v1/rooms/r/live-recording", Some(body));
        assert_eq!((s, v["result"].as_u64()), (400, Some(7017)), "{v}");
        assert!(v["msg"].as_str().unwrap().contains("duplicate key"), "{v}");
    }
    let (s, v) = api.call(
        "PUT",
        "/v1/rooms/d",
        Some(r#"{"conf_num":"1","conf_num":"2"}"#),
    );
    assert_eq!((s, v["result"].as_u64()), (400, Some(7017)), "{v}");
    let (_, v) = api.call("GET", "/v1/rooms/r/jobs", None);
    assert_eq!(
        v["jobs"].as_array().map(Vec::len),
        Some(0),
        "nothing started: {v}"
    );
}

#[test]
fn answers_say_what_happened() {
    let (_dir, api) = service("hostile-answers", &[("ROOMCAST_CPU_BUDGET", "0")]);
    register_room(&api, "r", 1, "{}");
    // A malformed requester is the client's mistake: 400, with the route's own code.
    let (s, v) = api.call(
        "POST",
        "/v1/rooms/r/recording",
        Some(r#"{"requested_by":{"client_id":5}}"#),
    );
    assert_eq!((s, v["result"].as_u64()), (400, Some(7016)), "{v}");
    let (s, v) = api.call(
        "POST",
        "/v1/rooms/r/live-recording",
        Some(r#"{"requested_by":"me"}"#),
    );
    assert_eq!((s, v["result"].as_u64()), (400, Some(7017)), "{v}");
    // Unknown rooms are unknown on every route.
    let (s, v) = api.call("GET", "/v1/rooms/nope/jobs", None);
    assert_eq!((s, v["result"].as_u64()), (404, Some(7000)), "{v}");
    // No worker has room (budget 0): the individual recording waits, and its
    // cancellation speaks of the recording, not of a live recording.
    let (s, v) = api.call(
        "POST",
        "/v1/rooms/r/recording",
        Some(&with_requester(MODERATOR)),
    );
    assert_eq!(v["result"].as_u64(), Some(7207), "{s} {v}");
    let (s, v) = api.call(
        "DELETE",
        "/v1/rooms/r/recording",
        Some(&with_requester(MODERATOR)),
    );
    assert_eq!((s, v["result"].as_u64()), (200, Some(7039)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("recording request") && !msg.contains("live"),
        "{msg}"
    );
    // And a waiting stream's cancellation reads as written.
    let (_, v) = api.call(
        "POST",
        "/v1/rooms/r/streaming",
        Some(&format!(
            r#"{{"requested_by":{MODERATOR},"rtmp_urls":["rtmp://192.0.2.1/live/x"]}}"#
        )),
    );
    assert_eq!(v["result"].as_u64(), Some(7104), "{v}");
    let (_, v) = stop_streaming(&api, "r");
    assert_eq!(v["result"].as_u64(), Some(7046), "{v}");
    assert!(!v["msg"].as_str().unwrap().contains("was was"), "{v}");
}

#[test]
fn the_scrape_address_serves_metrics_and_probes_without_the_token() {
    let (_dir, api) = service(
        "hostile-scrape",
        &[("ROOMCAST_METRICS_LISTEN", "127.0.0.1:0")],
    );
    let at = api
        .scrape_addr
        .clone()
        .expect("the scrape address is announced");
    let (s, body) = http(&at, "GET", "/metrics", None, None);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("roomcast_queue_depth"), "{body}");
    assert_eq!(http(&at, "GET", "/healthz", None, None).0, 200);
    assert_eq!(http(&at, "GET", "/readyz", None, None).0, 200);
    // Nothing else is there, not even with the token.
    let (s, body) = http(&at, "GET", "/v1/health", Some(TOKEN), None);
    assert_eq!(s, 404, "{body}");
    let (s, _) = http(&at, "PUT", "/v1/rooms/x", Some(TOKEN), Some(b"{}"));
    assert_eq!(s, 404);
    // The API's own /metrics still wants the token.
    let (s, _) = http(api.addr.as_deref().unwrap(), "GET", "/metrics", None, None);
    assert_eq!(s, 401);
}

/// Whether the server closed `s` (a read gives end of stream or an error) within `secs`.
fn closed_within(s: &mut TcpStream, secs: f64) -> bool {
    s.set_read_timeout(Some(Duration::from_secs_f64(secs)))
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An answer (a 408) before the close is fine: keep reading to the end.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Whether the server has closed `s` already (without waiting).
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let closed = match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn slow_clients_are_cut_off_and_cannot_crowd_out_others() {
    let (_dir, api) = service("hostile-slow", &[]);
    register_room(&api, "r", 1, "{}");
    let addr = api.addr.clone().unwrap();
    // Clients that never finish their headers, and one that never finishes its body.
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            let _ = write!(s, "GET /v1/health HTTP/1.1\r\nHost: x{i}\r\n");
            s
        })
        .collect();
    let mut body = TcpStream::connect(&addr).unwrap();
    let _ = write!(
        body,
        "POST /v1/rooms/r/live-recording HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 100\r\n\r\n{{\"requested"
    );
    // Others are still served meanwhile.
    let t = Instant::now();
    let (s, _) = api.call("GET", "/v1/health", None);
    assert_eq!(s, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The slow ones are closed once the header timeout (10 s) passes.
    let started = Instant::now();
    for s in slow.iter_mut() {
        let left = 14.0 - started.elapsed().as_secs_f64();
        assert!(
            closed_within(s, left.max(0.1)),
            "a slow client still open after 14 s"
        );
    }
    let mut answer = String::new();
    body.set_read_timeout(Some(Duration::from_secs(14)))
        .unwrap();
    let _ = body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("7017"), "{answer}");
    drop(slow);
    // Past the connection limit (256), a connection is closed at once; the limit frees up
    // as connections end.
    let mut crowd: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let shut = crowd.iter_mut().map(closed_now).filter(|c| *c).count();
    assert!((44..=60).contains(&shut), "{shut} of 300 closed at once");
    drop(crowd);
    let (s, _) = wait_for(5.0, || {
        let r = std::panic::catch_unwind(|| api.call("GET", "/v1/health", None)).ok()?;
        (r.0 == 200).then_some(r)
    })
    .expect("served again once the crowd left");
    assert_eq!(s, 200);
}

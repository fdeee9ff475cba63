//! `roomcast serve|api|worker` as a process, its HTTP API, and the API scenarios several
//! tests share.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running `roomcast serve|api|worker` process; killed (SIGKILL) on drop.
pub struct Service {
    pub child: Option<std::process::Child>,
    /// API address, for processes that serve the API.
    pub addr: Option<String>,
    /// The scrape address (`ROOMCAST_METRICS_LISTEN`), when it serves one.
    pub scrape_addr: Option<String>,
    pub log: PathBuf,
}

impl Service {
    /// Starts `roomcast <args>` with `env`; waits for the API's `{"listening": …}` line when
    /// `api` is set. Its stderr goes to `log`.
    pub fn start(args: &[&str], env: &[(&str, String)], log: &Path, api: bool) -> Service {
        use std::io::BufRead;
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start roomcast");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    // The scrape address is announced before the API's.
                    for key in ["metrics_listening", "listening"] {
                        if let Some(a) = v[key].as_str() {
                            let _ = tx.send((key, a.to_string()));
                        }
                    }
                }
            }
        });
        let (mut addr, mut scrape_addr) = (None, None);
        while api && addr.is_none() {
            match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(("listening", a)) => addr = Some(a),
                Ok((_, a)) => scrape_addr = Some(a),
                Err(_) => panic!(
                    "roomcast {args:?} did not start: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            }
        }
        Service {
            child: Some(child),
            addr,
            scrape_addr,
            log: log.to_path_buf(),
        }
    }

    /// Sends SIGKILL and reaps.
    pub fn kill9(&mut self) {
        stop_child(&mut self.child);
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process: a stalled machine or a network
    /// partition, as the rest of the fleet sees it.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Sends SIGTERM and waits up to `secs` for the exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, secs: u64) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP request to this service's API with the bearer token `token`.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, text) = http(
            self.addr.as_deref().expect("an API service"),
            method,
            path,
            Some(TOKEN),
            body.map(|b| b.as_bytes()),
        );
        let v = match serde_json::from_str(&text) {
            Ok(v) => {
                super::openapi::check_answer(method, path, status, &v);
                v
            }
            Err(_) => serde_json::Value::String(text),
        };
        (status, v)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// The API token the tests use.
pub const TOKEN: &str = "test-token-3f9a";

/// A minimal HTTP/1.1 client: (status, body text).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the API");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or(b"");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body; a failed write is not an error.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Environment for a `roomcast serve` on a free port with data in `data`.
pub fn serve_env(data: &Path, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("ROOMCAST_DATA_DIR", data.to_string_lossy().to_string()),
        ("ROOMCAST_API_TOKEN", TOKEN.to_string()),
        ("ROOMCAST_LISTEN", "127.0.0.1:0".to_string()),
        ("RUST_LOG", "info".to_string()),
    ];
    for (k, v) in extra {
        // Leak is fine in tests: keys are static strings of the caller.
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        env.retain(|(e, _)| *e != k);
        env.push((k, v.to_string()));
    }
    env
}

pub const MODERATOR: &str = r#"{"client_id":"mod-1","role":"moderator"}"#;

/// Registers a synthetic room with `n` generated participants.
pub fn register_room(api: &Service, room: &str, n: u32, settings: &str) {
    let body = format!(
        r#"{{"app_id":"app","conf_num":"1","connector":{{"type":"synthetic","participants":{n}}},"settings":{settings}}}"#
    );
    let (status, v) = api.call("PUT", &format!("/v1/rooms/{room}"), Some(&body));
    assert_eq!(status, 200, "{v}");
}

/// Registers room `room` as Janus room 1 at `url`; returns (HTTP status, body).
pub fn put_janus_room(api: &Service, room: &str, url: &str) -> (u16, serde_json::Value) {
    api.call(
        "PUT",
        &format!("/v1/rooms/{room}"),
        Some(&format!(
            r#"{{"conf_num":"1","connector":{{"type":"janus","url":"{url}","room":1}}}}"#
        )),
    )
}

/// Starts a recording; returns (HTTP status, body).
pub fn start_recording(api: &Service, room: &str) -> (u16, serde_json::Value) {
    api.call(
        "POST",
        &format!("/v1/rooms/{room}/live-recording"),
        Some(&format!(r#"{{"requested_by":{MODERATOR}}}"#)),
    )
}

/// Stops a recording; returns (HTTP status, body).
pub fn stop_recording(api: &Service, room: &str) -> (u16, serde_json::Value) {
    api.call(
        "DELETE",
        &format!("/v1/rooms/{room}/live-recording"),
        Some(&format!(r#"{{"requested_by":{MODERATOR}}}"#)),
    )
}

/// A job record.
pub fn job(api: &Service, id: &str) -> serde_json::Value {
    let (status, v) = api.call("GET", &format!("/v1/jobs/{id}"), None);
    assert_eq!(status, 200, "{v}");
    v["job"].clone()
}

/// Waits until job `id` is in `state`; returns the record.
pub fn wait_state(api: &Service, id: &str, state: &str, secs: f64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(secs, || {
        last = job(api, id);
        (last["state"] == state).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("job {id} not {state} within {secs} s: {last}"))
}

/// Waits until job `id` has failed with `code` and a message containing `says`; returns the
/// record.
pub fn wait_failed(api: &Service, id: &str, code: u16, says: &str, secs: f64) -> serde_json::Value {
    let failed = wait_state(api, id, "failed", secs);
    assert_eq!(failed["result"], code, "{failed}");
    assert!(
        failed["msg"].as_str().unwrap_or_default().contains(says),
        "{failed}"
    );
    failed
}

/// Stops a room's streaming; returns (HTTP status, body).
pub fn stop_streaming(api: &Service, room: &str) -> (u16, serde_json::Value) {
    api.call(
        "DELETE",
        &format!("/v1/rooms/{room}/streaming"),
        Some(&format!(r#"{{"requested_by":{MODERATOR}}}"#)),
    )
}

/// Posts a `chat_message` room event from `user` (`name`) to `room`.
pub fn post_chat_as(api: &Service, room: &str, (user, name): (&str, &str), text: &str) {
    let body = serde_json::json!({"events": [
        {"type": "chat_message", "user_id": user, "name": name, "text": text}
    ]});
    let (s, v) = api.call(
        "POST",
        &format!("/v1/rooms/{room}/events"),
        Some(&body.to_string()),
    );
    assert_eq!(s, 200, "{v}");
}

/// With capacity for one job: one running, three waiting (7207, 7208, 7208), one cancelled
/// (7039), the rest start in order as capacity frees. Rooms are registered here.
pub fn queue_order_scenario(api: &Service, prefix: &str) {
    let rooms: Vec<String> = (0..4).map(|i| format!("{prefix}{i}")).collect();
    for r in &rooms {
        register_room(api, r, 1, "{}");
    }
    let (s, a) = start_recording(api, &rooms[0]);
    assert_eq!((s, a["result"].as_u64()), (201, Some(0)), "{a}");
    let a = a["job_id"].as_str().unwrap().to_string();
    wait_state(api, &a, "active", 20.0);
    // Same room again: already running.
    let (_, again) = start_recording(api, &rooms[0]);
    assert_eq!(again["result"], 7019, "{again}");
    let mut ids = Vec::new();
    for (r, want) in rooms[1..].iter().zip([7207, 7208, 7208]) {
        let (s, v) = start_recording(api, r);
        assert_eq!((s, v["result"].as_u64()), (202, Some(want)), "{r}: {v}");
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    // Same room while it waits: the request is in process.
    let (_, again) = start_recording(api, &rooms[1]);
    assert_eq!(again["result"], 7012, "{again}");
    // Cancel the last one while it waits.
    let (s, v) = api.call("DELETE", &format!("/v1/jobs/{}", ids[2]), None);
    assert_eq!((s, v["result"].as_u64()), (200, Some(7039)), "{v}");
    assert_eq!(job(api, &ids[2])["state"], "cancelled");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(job(api, &ids[0])["state"], "queued", "no capacity yet");
    // Capacity frees in turn: B starts, then C; the cancelled one never does.
    assert_eq!(stop_recording(api, &rooms[0]).1["result"], 0);
    wait_state(api, &a, "completed", 30.0);
    let b = wait_state(api, &ids[0], "active", 20.0);
    assert_eq!(job(api, &ids[1])["state"], "queued", "C waits behind B");
    assert_eq!(stop_recording(api, &rooms[1]).1["result"], 0);
    let c = wait_state(api, &ids[1], "active", 30.0);
    assert!(b["started_ms"].as_u64() < c["started_ms"].as_u64());
    assert_eq!(job(api, &ids[2])["state"], "cancelled");
    assert_eq!(stop_recording(api, &rooms[2]).1["result"], 0);
    wait_state(api, &ids[1], "completed", 30.0);
    // A request for a cancelled room's recording finds nothing running.
    let (_, v) = stop_recording(api, &rooms[3]);
    assert_eq!(v["result"], 7021, "{v}");
}

/// With `ROOMCAST_JOB_RETENTION_SECS=2` and no capacity: an ended (cancelled) request's record
/// is deleted after the retention; a request still waiting is kept however old it is.
pub fn retention_scenario(api: &Service) {
    register_room(api, "gone", 1, "{}");
    register_room(api, "kept", 1, "{}");
    let (s, old) = start_recording(api, "gone");
    assert_eq!((s, old["result"].as_u64()), (202, Some(7207)), "{old}");
    let old = old["job_id"].as_str().unwrap().to_string();
    let (s, v) = api.call("DELETE", &format!("/v1/jobs/{old}"), None);
    assert_eq!((s, v["result"].as_u64()), (200, Some(7039)), "{v}");
    let (s, kept) = start_recording(api, "kept");
    assert_eq!((s, kept["result"].as_u64()), (202, Some(7207)), "{kept}");
    let kept = kept["job_id"].as_str().unwrap().to_string();
    assert_eq!(job(api, &old)["state"], "cancelled");
    let deleted = wait_for(10.0, || {
        let (s, _) = api.call("GET", &format!("/v1/jobs/{old}"), None);
        (s == 404).then_some(())
    });
    assert!(
        deleted.is_some(),
        "ended job still on record after the retention"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(job(api, &kept)["state"], "queued");
    let (_, all) = api.call("GET", "/v1/jobs", None);
    let ids: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, [kept.as_str()], "{all}");
}

/// A memory figure of process `pid` from `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …) in MiB.
pub fn proc_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// A `POST /v1/rooms/{id}/events` body: `participant_joined` (kind "join", named "Guest {id}")
/// or `participant_left` for each id.
pub fn events(kind: &str, ids: impl Iterator<Item = String>) -> String {
    let list: Vec<String> = ids
        .map(|id| match kind {
            "join" => {
                format!(r#"{{"type":"participant_joined","user_id":"{id}","name":"Guest {id}"}}"#)
            }
            _ => format!(r#"{{"type":"participant_left","user_id":"{id}"}}"#),
        })
        .collect();
    format!(r#"{{"events":[{}]}}"#, list.join(","))
}

/// `roomcast_capacity_cores{kind="used"}` from `/metrics`.
pub fn used_cores(api: &Service) -> f64 {
    let (_, m) = api.call("GET", "/metrics", None);
    m.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("roomcast_capacity_cores{kind=\"used\"} "))
        .and_then(|v| v.parse().ok())
        .expect("used cores in /metrics")
}

/// A GET with the bearer token and `range`: (status, headers, body bytes).
pub fn get_bytes(addr: &str, path: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n{range}\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..at]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    (status, head, out[at + 4..].to_vec())
}

/// Records synthetic room `room` (two people) for about 3 s through `api`, stops it and waits
/// until the archive lists its segment delivered: (job id, file name, archive entry).
pub fn record_delivered(api: &Service, room: &str) -> (String, String, serde_json::Value) {
    register_room(api, room, 2, "{}");
    let (s, v) = start_recording(api, room);
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(api, &id, "active", 30.0);
    std::thread::sleep(std::time::Duration::from_secs(3));
    stop_recording(api, room);
    let done = wait_state(api, &id, "completed", 60.0);
    let name = done["segments"][0]["file_name"]
        .as_str()
        .unwrap()
        .to_string();
    let entry = wait_for(30.0, || {
        let (_, r) = api.call("GET", &format!("/v1/recordings?room_id={room}"), None);
        r["files"]
            .as_array()?
            .iter()
            .find(|f| f["file_name"] == name.as_str() && f["status"] == "delivered")
            .cloned()
    })
    .expect("the recording delivered to its storage");
    (id, name, entry)
}

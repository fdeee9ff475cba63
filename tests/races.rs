//! Racing requests: many starts for one room at once give exactly one job per kind, in the
//! embedded store and on Redis; racing first joins of an auto-recording room start one
//! recording.

mod support;
use std::collections::BTreeMap;
use std::sync::Arc;
use support::*;

/// Sends `n` copies of a request at once; returns (HTTP status, result code) → count.
fn burst(
    api: &Arc<Service>,
    n: usize,
    method: &str,
    path: &str,
    body: &str,
) -> BTreeMap<(u16, u64), usize> {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (api, barrier) = (api.clone(), barrier.clone());
            let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
            std::thread::spawn(move || {
                barrier.wait();
                let (s, v) = api.call(&method, &path, Some(&body));
                (s, v["result"].as_u64().unwrap_or(u64::MAX))
            })
        })
        .collect();
    let mut out = BTreeMap::new();
    for h in handles {
        *out.entry(h.join().unwrap()).or_default() += 1;
    }
    out
}

fn live_jobs(api: &Service, room: &str, kind: &str) -> Vec<serde_json::Value> {
    let (_, v) = api.call("GET", &format!("/v1/rooms/{room}/jobs"), None);
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["spec"]["kind"] == kind)
        .cloned()
        .collect()
}

fn racing_starts(api: Arc<Service>) {
    register_room(&api, "race", 2, "{}");
    let body = format!(r#"{{"requested_by":{MODERATOR}}}"#);
    let got = burst(&api, 50, "POST", "/v1/rooms/race/live-recording", &body);
    let accepted: usize = got
        .iter()
        .filter(|((s, c), _)| *c == 0 || (*s == 202 && *c >= 7200))
        .map(|(_, n)| n)
        .sum();
    let refused: usize = got
        .iter()
        .filter(|((s, c), _)| *s == 409 && (*c == 7012 || *c == 7019))
        .map(|(_, n)| n)
        .sum();
    assert_eq!((accepted, refused), (1, 49), "{got:?}");
    assert_eq!(live_jobs(&api, "race", "recording").len(), 1);

    let body =
        format!(r#"{{"requested_by":{MODERATOR},"rtmp_urls":["rtmp://127.0.0.1:9/live/k"]}}"#);
    let got = burst(&api, 30, "POST", "/v1/rooms/race/streaming", &body);
    let refused = got.get(&(409, 7002)).copied().unwrap_or(0);
    assert_eq!(refused, 29, "{got:?}");
    assert_eq!(live_jobs(&api, "race", "streaming").len(), 1);

    // Racing first joins of an auto-recording room: one recording.
    register_room(
        &api,
        "auto",
        0,
        r#"{"live_recording":{"auto_recording":true}}"#,
    );
    let barrier = Arc::new(std::sync::Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (api, barrier) = (api.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let body = format!(r#"{{"type":"participant_joined","user_id":"u{i}"}}"#);
                api.call("POST", "/v1/rooms/auto/events", Some(&body)).0
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(live_jobs(&api, "auto", "recording").len(), 1);
    // Stopped (0) or, if no worker had picked it up yet, cancelled while waiting (7039).
    for room in ["race", "auto"] {
        let code = stop_recording(&api, room).1["result"].as_u64();
        assert!(matches!(code, Some(0 | 7039)), "{room}: {code:?}");
    }
}

#[test]
fn racing_starts_give_one_job_per_room_and_kind_embedded() {
    let dir = TempDir::new("race-embedded");
    let env = serve_env(&dir.path().join("data"), &[("ROOMCAST_CPU_BUDGET", "4")]);
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    racing_starts(Arc::new(api));
}

#[test]
fn racing_starts_give_one_job_per_room_and_kind_on_redis() {
    let dir = TempDir::new("race-redis");
    let redis = Redis::start(&dir.path().join("redis"));
    let env = serve_env(
        &dir.path().join("data"),
        &[
            ("ROOMCAST_REDIS_URL", &redis.url()),
            ("ROOMCAST_CPU_BUDGET", "4"),
        ],
    );
    let api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    racing_starts(Arc::new(api));
}

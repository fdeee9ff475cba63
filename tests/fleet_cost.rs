//! What one recording costs the shared Redis: commands and bytes per job-minute, measured from
//! `INFO commandstats` and `INFO stats` around a recording, less the same span of an idle
//! fleet (the API and a worker heart-beating and polling with nothing to do). The figures
//! behind the README's capacity plan; run with
//! `cargo test --release --test fleet_cost -- --ignored --nocapture`
//! (`ROOMCAST_COST_SECS`, default 60).

mod support;
use std::collections::BTreeMap;
use std::time::Duration;
use support::*;

/// Calls per command, bytes in and out, and the server's CPU time (µs), as `INFO` says.
fn redis_counters(port: &str) -> (BTreeMap<String, u64>, u64, u64, u64) {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", port, "INFO", "all"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut calls = BTreeMap::new();
    let (mut input, mut output, mut cpu) = (0, 0, 0.0);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let (name, stats) = rest.split_once(':').unwrap();
            let n = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            calls.insert(name.to_string(), n);
        }
        if let Some(v) = line.strip_prefix("total_net_input_bytes:") {
            input = v.trim().parse().unwrap();
        }
        if let Some(v) = line.strip_prefix("total_net_output_bytes:") {
            output = v.trim().parse().unwrap();
        }
        for key in ["used_cpu_sys:", "used_cpu_user:"] {
            if let Some(v) = line.strip_prefix(key) {
                cpu += v.trim().parse::<f64>().unwrap();
            }
        }
    }
    (calls, input, output, (cpu * 1e6) as u64)
}

type Counters = (BTreeMap<String, u64>, u64, u64, u64);

fn delta(a: &Counters, b: &Counters) -> Counters {
    let calls =
        b.0.iter()
            .map(|(k, v)| (k.clone(), v - a.0.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
    (calls, b.1 - a.1, b.2 - a.2, b.3 - a.3)
}

#[test]
#[ignore]
fn what_a_recording_costs_the_shared_redis() {
    let secs: u64 = std::env::var("ROOMCAST_COST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = TempDir::new("fleet-cost");
    let redis = Redis::start(&dir.path().join("redis"));
    let port = redis.port.to_string();
    let env = serve_env(
        &dir.path().join("data-api"),
        &[("ROOMCAST_REDIS_URL", &redis.url())],
    );
    let api = Service::start(&["api"], &env, &dir.path().join("api.log"), true);
    let wenv = serve_env(
        &dir.path().join("data-w"),
        &[
            ("ROOMCAST_REDIS_URL", &redis.url()),
            ("ROOMCAST_WORKER_ID", "w"),
        ],
    );
    let _worker = Service::start(&["worker"], &wenv, &dir.path().join("w.log"), false);
    let up = wait_for(15.0, || {
        (api.call("GET", "/v1/health", None).1["workers"] == 1).then_some(())
    });
    assert!(up.is_some());

    let t0 = redis_counters(&port);
    std::thread::sleep(Duration::from_secs(secs));
    let idle = delta(&t0, &redis_counters(&port));

    register_room(&api, "cost", 4, "{}");
    let (s, v) = start_recording(&api, "cost");
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    let t1 = redis_counters(&port);
    std::thread::sleep(Duration::from_secs(secs));
    let busy = delta(&t1, &redis_counters(&port));
    assert_eq!(stop_recording(&api, "cost").1["result"], 0);
    wait_state(&api, &id, "completed", 30.0);

    let minutes = secs as f64 / 60.0;
    let total = |d: &Counters| d.0.values().sum::<u64>() as f64;
    let per_min = |busy: f64, idle: f64| (busy - idle) / minutes;
    println!(
        "idle fleet (API + 1 worker): {:.0} commands/min (scripts' inner calls counted), \
         {:.1} kB/min in, {:.1} kB/min out, Redis CPU {:.1} ms/min",
        total(&idle) / minutes,
        idle.1 as f64 / 1e3 / minutes,
        idle.2 as f64 / 1e3 / minutes,
        idle.3 as f64 / 1e3 / minutes
    );
    println!(
        "one recording adds: {:.0} commands/job-minute, {:.1} kB/job-minute in, \
         {:.1} kB/job-minute out, Redis CPU {:.1} ms/job-minute",
        per_min(total(&busy), total(&idle)),
        per_min(busy.1 as f64, idle.1 as f64) / 1e3,
        per_min(busy.2 as f64, idle.2 as f64) / 1e3,
        per_min(busy.3 as f64, idle.3 as f64) / 1e3
    );
    for (name, n) in &busy.0 {
        let before = idle.0.get(name).copied().unwrap_or(0);
        println!(
            "  {name}: {:.0}/min recording, {:.0}/min idle",
            *n as f64 / minutes,
            before as f64 / minutes
        );
    }
    assert!(total(&busy) > total(&idle), "a recording uses Redis");
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime), counted after the command name.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// What one API process serves: 16 clients reading a job's record as fast as they can (a new
/// connection per request, as a platform's poller makes them) for `ROOMCAST_COST_SECS`
/// (default 60): requests per second, latency and the API's CPU per thousand requests. Run
/// with `cargo test --release --test fleet_cost api_capacity -- --ignored --nocapture`.
#[test]
#[ignore]
fn api_capacity() {
    let secs: u64 = std::env::var("ROOMCAST_COST_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = TempDir::new("api-capacity");
    let redis = Redis::start(&dir.path().join("redis"));
    let env = serve_env(
        &dir.path().join("data-api"),
        &[("ROOMCAST_REDIS_URL", &redis.url())],
    );
    let api = Service::start(&["api"], &env, &dir.path().join("api.log"), true);
    register_room(&api, "capacity", 2, "{}");
    // No worker: the job waits, and its record is what the clients read.
    let (_, v) = start_recording(&api, "capacity");
    let id = v["job_id"].as_str().unwrap().to_string();
    let pid = api.child.as_ref().unwrap().id();
    let cpu0 = cpu_secs(pid);
    let start = std::time::Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let latencies = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                let mut mine = Vec::new();
                while std::time::Instant::now() < deadline {
                    let t = std::time::Instant::now();
                    let (status, v) = api.call("GET", &format!("/v1/jobs/{id}"), None);
                    assert_eq!(status, 200, "{v}");
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let mut l = latencies.into_inner().unwrap();
    l.sort_by(|a, b| a.total_cmp(b));
    let n = l.len();
    let at = |q: f64| l[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "API: {n} job reads in {wall:.1} s = {:.0}/s with 16 clients; latency p50 {:.1} ms, \
         p99 {:.1} ms; API CPU {cpu:.1} s = {:.1} ms per 1000 reads ({:.2} cores)",
        n as f64 / wall,
        at(0.5),
        at(0.99),
        cpu * 1e6 / n as f64,
        cpu / wall
    );
    assert!(n > 0);
}

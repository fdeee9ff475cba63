//! Memory comes back after a big job: a worker that recorded a 1000-person room (two thousand
//! streaming threads) shrinks to near its size before the job once the job has ended.

mod support;
use std::time::Duration;
use support::*;

#[test]
fn a_workers_memory_returns_after_a_thousand_person_recording() {
    let dir = TempDir::new("memory");
    let env = serve_env(&dir.path().join("data"), &[("ROOMCAST_CPU_BUDGET", "64")]);
    let mut api = Service::start(&["serve"], &env, &dir.path().join("serve.log"), true);
    let pid = api.child.as_ref().unwrap().id();
    register_room(&api, "crowd", 2, r#"{"layout":"grid"}"#);

    // A small job first, so the libraries every recording loads are in the baseline.
    let (s, v) = start_recording(&api, "crowd");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let first = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &first, "active", 20.0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stop_recording(&api, "crowd").1["result"], 0);
    wait_state(&api, &first, "completed", 60.0);
    std::thread::sleep(Duration::from_secs(2));
    let before = proc_mib(pid, "VmRSS");

    let (s, v) = start_recording(&api, "crowd");
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_state(&api, &id, "active", 20.0);
    for burst in 0..10 {
        let (s, v) = api.call(
            "POST",
            "/v1/rooms/crowd/events",
            Some(&events(
                "join",
                (burst * 100..burst * 100 + 100).map(|i| format!("m{i}")),
            )),
        );
        assert_eq!(s, 200, "{v}");
    }
    std::thread::sleep(Duration::from_secs(6));
    let during = proc_mib(pid, "VmRSS");
    assert_eq!(stop_recording(&api, "crowd").1["result"], 0);
    let j = wait_state(&api, &id, "completed", 120.0);
    assert_eq!(j["result"], 0, "{j}");
    assert!(
        api.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "serve died"
    );
    std::thread::sleep(Duration::from_secs(5));
    let after = proc_mib(pid, "VmRSS");
    eprintln!(
        "RSS before {before:.0} MiB, recording 1002 people {during:.0} MiB, after {after:.0} MiB"
    );
    assert!(
        during > before + 300.0,
        "the big room did not use the memory this test is about: {during:.0} MiB"
    );
    assert!(
        after < before + 100.0,
        "memory not returned: {after:.0} MiB after the job, {before:.0} MiB before it"
    );
}

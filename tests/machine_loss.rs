//! A recording survives losing its machine: on a Redis fleet of two workers with their own
//! data folders, the recording worker is killed 40 s into a recording and its data folder
//! deleted (its machine is gone). The other worker takes the job over, rebuilds the lost
//! segment from the chunks that reached storage while it recorded, delivers it under its own
//! name with one `live_recording` webhook, and records on in a new segment; at the end the
//! storage holds the two files and no chunk; a live HLS output of the lost segment is ended
//! from what reached storage. Once per storage kind: a folder, S3 (moto) and SFTP (OpenSSH).

mod support;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

/// `ROOMCAST_CHUNK_SECS` of the workers.
const CHUNK_SECS: f64 = 10.0;
/// How long the lost worker records before it is killed.
const KILLED_AFTER: Duration = Duration::from_secs(40);
const BUCKET: &str = "lost";
const SECRET: &str = "machine-loss-webhook-secret";

/// Where the recordings go, and how the test reads them back.
enum Store {
    Folder(PathBuf),
    S3(MotoS3),
    Sftp(Sshd, PathBuf),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Store::Folder(p) => format!("file://{}", p.display()),
            Store::S3(s3) => format!("s3://{BUCKET}?endpoint={}", s3.endpoint()),
            Store::Sftp(sshd, p) => sshd.url(p, &sshd.fingerprint),
        }
    }

    /// Every stored file's name.
    fn names(&self) -> Vec<String> {
        match self {
            Store::Folder(p) | Store::Sftp(_, p) => files_under(p)
                .iter()
                .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
                .collect(),
            Store::S3(s3) => block_on(s3.keys(BUCKET))
                .iter()
                .map(|k| k.rsplit('/').next().unwrap().to_string())
                .collect(),
        }
    }

    /// A stored recording copied to `dest` (for ffprobe).
    fn fetch(&self, name: &str, dest: &Path) -> PathBuf {
        let out = dest.join(name);
        match self {
            Store::Folder(p) | Store::Sftp(_, p) => {
                let found = files_under(p)
                    .into_iter()
                    .find(|f| f.file_name().unwrap().to_string_lossy() == name)
                    .unwrap_or_else(|| panic!("{name} not in storage"));
                std::fs::copy(found, &out).unwrap();
            }
            Store::S3(s3) => {
                let key = block_on(s3.keys(BUCKET))
                    .into_iter()
                    .find(|k| k.ends_with(&format!("/{name}")))
                    .unwrap_or_else(|| panic!("{name} not in the bucket"));
                std::fs::write(&out, block_on(s3.get(BUCKET, &key))).unwrap();
            }
        }
        out
    }
}

fn worker(dir: &Path, redis: &Redis, id: &str, store: &Store, hooks: &Receiver) -> Service {
    let hook_url = format!("http://127.0.0.1:{}/hook", hooks.port);
    let env = serve_env(
        &dir.join(format!("data-{id}")),
        &[
            ("ROOMCAST_REDIS_URL", &redis.url()),
            ("ROOMCAST_WORKER_ID", id),
            ("ROOMCAST_CPU_BUDGET", "0.6"),
            ("ROOMCAST_STORAGE", &store.url()),
            ("ROOMCAST_CHUNK_SECS", &CHUNK_SECS.to_string()),
            ("ROOMCAST_WEBHOOK_URL", &hook_url),
            ("ROOMCAST_WEBHOOK_SECRET", SECRET),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    Service::start(&["worker"], &env, &dir.join(format!("{id}.log")), false)
}

/// A Redis fleet of two workers recording to `store`, and its control API.
struct Fleet {
    redis: Redis,
    hooks: Receiver,
    api: Service,
    workers: [(&'static str, Option<Service>); 2],
}

impl Fleet {
    fn start(dir: &Path, store: &Store) -> Fleet {
        let redis = Redis::start(&dir.join("redis"));
        let hooks = Receiver::start(0);
        let api_env = serve_env(
            &dir.join("data-api"),
            &[("ROOMCAST_REDIS_URL", &redis.url())],
        );
        let api = Service::start(&["api"], &api_env, &dir.join("api.log"), true);
        let workers = [
            ("wa", Some(worker(dir, &redis, "wa", store, &hooks))),
            ("wb", Some(worker(dir, &redis, "wb", store, &hooks))),
        ];
        wait_for(15.0, || {
            (api.call("GET", "/v1/health", None).1["workers"] == 2).then_some(())
        })
        .expect("two workers");
        Fleet {
            redis,
            hooks,
            api,
            workers,
        }
    }
}

/// The machine of worker `holder` is gone: its process and its disk. Returns the other.
fn lose(
    dir: &Path,
    workers: &mut [(&'static str, Option<Service>); 2],
    holder: &str,
) -> &'static str {
    let (_, lost) = workers.iter_mut().find(|(w, _)| *w == holder).unwrap();
    lost.take().unwrap().kill9();
    std::fs::remove_dir_all(dir.join(format!("data-{holder}"))).unwrap();
    if holder == "wa" {
        "wb"
    } else {
        "wa"
    }
}

/// Starts a recording (`body` POSTed to `path`), lets it record [`KILLED_AFTER`] once active and
/// loses the machine of the worker recording it. Returns the job id, its record when it went
/// active, how long it recorded and the surviving worker.
fn record_until_lost(
    api: &Service,
    dir: &Path,
    workers: &mut [(&'static str, Option<Service>); 2],
    path: &str,
    body: &str,
) -> (String, serde_json::Value, f64, &'static str) {
    let (s, v) = api.call("POST", path, Some(body));
    assert_eq!((s, v["result"].as_u64()), (201, Some(0)), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let j = wait_state(api, &id, "active", 30.0);
    let started = Instant::now();
    let holder = j["worker"].as_str().unwrap().to_string();
    std::thread::sleep(KILLED_AFTER);
    let lived = started.elapsed().as_secs_f64();
    let survivor = lose(dir, workers, &holder);
    (id, j, lived, survivor)
}

/// The job's record once `survivor` records it again (its second attempt).
fn taken_over(api: &Service, id: &str, survivor: &str) -> serde_json::Value {
    wait_for(45.0, || {
        let j = job(api, id);
        (j["worker"] == survivor && j["state"] == "active" && j["attempts"] == 2).then_some(j)
    })
    .unwrap_or_else(|| panic!("not taken over: {}", job(api, id)))
}

/// With `hls`, the recording also has a live HLS output, whose lost part must be ended too.
/// With `outage` (a folder store only), storage cannot be read when the job is taken over and
/// is back before the stop: the lost segment is rebuilt when the job ends.
fn lose_the_recording_machine(tag: &str, store: Store, hls: bool, outage: bool) {
    let dir = TempDir::new(tag);
    let Fleet {
        redis: _redis,
        hooks,
        api,
        mut workers,
    } = Fleet::start(dir.path(), &store);
    register_room(&api, "lost", 2, "{}");
    let outputs = if hls {
        r#","outputs":{"hls":true}"#
    } else {
        ""
    };
    let body = format!(r#"{{"requested_by":{MODERATOR}{outputs}}}"#);
    let (id, j, lived, survivor) = record_until_lost(
        &api,
        dir.path(),
        &mut workers,
        "/v1/rooms/lost/live-recording",
        &body,
    );
    let first_name = j["segments"][0]["file_name"].as_str().unwrap().to_string();
    let killed = Instant::now();
    let away = |root: &Path| root.with_extension("away");
    if outage {
        let Store::Folder(root) = &store else {
            panic!("an outage is made on a folder store")
        };
        // Not a folder any more: every read fails (not "not found").
        std::fs::rename(root, away(root)).unwrap();
        std::fs::write(root, b"storage is down").unwrap();
    }

    let j = taken_over(&api, &id, survivor);
    eprintln!(
        "recording again {:.1} s after the loss",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(j["segments"][0]["file_name"], first_name.as_str(), "{j}");
    if let (true, Store::Folder(root)) = (outage, &store) {
        // Kept for another try, not given up.
        assert_eq!(j["segments"][0]["status"], "recording", "{j}");
        std::fs::remove_file(root).unwrap();
        std::fs::rename(away(root), root).unwrap();
    }
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(stop_recording(&api, "lost").1["result"], 0);
    let done = wait_state(&api, &id, "completed", 60.0);
    let segments = done["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "{done}");
    // Both segments are in storage (the webhooks come once they are).
    let names: Vec<String> = segments
        .iter()
        .map(|s| s["file_name"].as_str().unwrap().to_string())
        .collect();
    let log =
        |w: &str| std::fs::read_to_string(dir.path().join(format!("{w}.log"))).unwrap_or_default();
    wait_for(60.0, || {
        (hooks.of_type("live_recording").len() >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} live_recording webhooks: {done}\n{}",
            hooks.of_type("live_recording").len(),
            log(survivor)
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let announced = hooks.announced_files("live_recording");
    assert!(announced.len() >= 2);
    assert_eq!(announced, names, "one live_recording webhook per segment");

    // The lost segment holds everything up to its last chunk: at most one chunk and a second
    // short of what was recorded before the loss.
    let scratch = dir.path().join("fetched");
    std::fs::create_dir_all(&scratch).unwrap();
    let first = probe(&store.fetch(&names[0], &scratch));
    eprintln!(
        "recorded {lived:.1} s before the loss; the rebuilt segment holds {:.1} s",
        first.duration
    );
    assert_eq!(first.video_codec.as_deref(), Some("h264"));
    assert_eq!(first.audio_codec.as_deref(), Some("aac"));
    assert!(
        first.duration >= lived - CHUNK_SECS - 1.0,
        "lost segment holds {:.1} s of {lived:.1} s",
        first.duration
    );
    assert!(first.duration <= lived + 1.0, "{:.1} s", first.duration);
    let listed = segments[0]["duration_s"].as_f64().unwrap();
    assert!((listed - first.duration).abs() < 1.0, "listed {listed} s");
    let second = probe(&store.fetch(&names[1], &scratch));
    assert!(
        second.duration >= 2.0,
        "second segment {} s",
        second.duration
    );
    let (_, arch) = api.call("GET", "/v1/recordings?room_id=lost", None);
    assert_eq!(arch["count"], 2, "{arch}");

    if hls {
        check_lost_hls(&store, &hooks, &names[0], lived, &scratch);
    }

    // Nothing but the two recordings (and their HLS outputs) is left in storage: no chunk, no
    // temporary file.
    let all = store.names();
    let mut stored: Vec<String> = all
        .iter()
        .filter(|n| !(hls && (n.ends_with(".m3u8") || n.ends_with(".m4s"))))
        .cloned()
        .collect();
    stored.sort();
    assert_eq!(stored, names, "storage holds only the recordings: {all:?}");
    if let Store::S3(s3) = &store {
        let open = block_on(s3.unfinished_uploads(BUCKET));
        assert!(open.is_empty(), "unfinished multipart uploads: {open:?}");
    }
}

/// The lost segment's HLS output was ended from storage: its VOD playlist lists the segments
/// that reached storage (all but the last few seconds), each is there, an `hls` "ended"
/// webhook names it, and (in a folder) the playlist decodes.
fn check_lost_hls(store: &Store, hooks: &Receiver, first: &str, lived: f64, scratch: &Path) {
    let stem = first.trim_end_matches(".mp4");
    let playlist = store.fetch(&format!("{stem}.m3u8"), scratch);
    let text = std::fs::read_to_string(&playlist).unwrap();
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    let listed: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(".m4s") && !l.starts_with('#'))
        .collect();
    let stored = store.names();
    for seg in &listed {
        assert!(stored.iter().any(|n| n == seg), "{seg} listed, not stored");
    }
    // 4 s segments: the one being cut and the one being sent may be lost with the machine.
    assert!(
        listed.len() as f64 >= lived / 4.0 - 3.0,
        "{} segments listed for {lived:.1} s: {text}",
        listed.len()
    );
    let ended = hooks.of_type("hls").into_iter().any(|r| {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["state"] == "ended"
            && v["playlist_url"]
                .as_str()
                .is_some_and(|u| u.ends_with(&format!("/{stem}.m3u8")))
    });
    assert!(ended, "no hls ended webhook for {stem}");
    if let Store::Folder(root) = store {
        let local = files_under(root)
            .into_iter()
            .find(|f| f.file_name().unwrap().to_string_lossy() == format!("{stem}.m3u8"))
            .unwrap();
        let p = probe(&local);
        assert!(
            p.duration >= listed.len() as f64 * 4.0 - 1.0,
            "the VOD playlist plays {:.1} s",
            p.duration
        );
    }
}

#[test]
fn a_lost_machines_segment_is_rebuilt_from_a_folder() {
    let dir = TempDir::new("lost-folder-store");
    let root = dir.path().join("storage");
    lose_the_recording_machine("lost-folder", Store::Folder(root), true, false);
}

#[test]
fn a_lost_machines_segment_is_rebuilt_from_s3() {
    let s3 = MotoS3::start_on(free_port());
    s3.create_bucket(BUCKET);
    lose_the_recording_machine("lost-s3", Store::S3(s3), true, false);
}

#[test]
fn a_lost_machines_segment_is_rebuilt_over_sftp() {
    let dir = TempDir::new("lost-sftp-store");
    let sshd = Sshd::start(&dir.path().join("sshd"));
    let remote = dir.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    lose_the_recording_machine("lost-sftp", Store::Sftp(sshd, remote), false, false);
}

#[test]
fn a_lost_machines_segment_is_rebuilt_when_the_job_ends_if_storage_was_down_at_the_takeover() {
    let dir = TempDir::new("lost-outage-store");
    let root = dir.path().join("storage");
    lose_the_recording_machine("lost-outage", Store::Folder(root), false, true);
}

/// An individual recording (every track in its own file) whose machine is lost: the other
/// worker rebuilds its folder from the chunks in storage, delivers it as one bundle (one
/// `recording` webhook) and records on in a new folder; each rebuilt track file holds what
/// was recorded up to at most a chunk and a second before the loss; no chunk is left.
#[test]
fn a_lost_machines_individual_recording_is_rebuilt_from_a_folder() {
    let dir = TempDir::new("lost-individual");
    let root = dir.path().join("storage");
    let store = Store::Folder(root.clone());
    let Fleet {
        redis: _redis,
        hooks,
        api,
        mut workers,
    } = Fleet::start(dir.path(), &store);
    register_room(&api, "lostind", 2, "{}");
    let path = "/v1/rooms/lostind/recording";
    let body = format!(r#"{{"requested_by":{MODERATOR}}}"#);
    let (id, _, lived, survivor) = record_until_lost(&api, dir.path(), &mut workers, path, &body);
    taken_over(&api, &id, survivor);
    std::thread::sleep(Duration::from_secs(4));
    let (s, v) = api.call("DELETE", path, Some(&body));
    assert_eq!(s, 200, "{v}");
    let done = wait_state(&api, &id, "completed", 60.0);
    let segments = done["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "{done}");
    let first = segments[0]["file_name"].as_str().unwrap().to_string();
    wait_for(60.0, || {
        (hooks.of_type("recording").len() >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} recording webhooks: {done}",
            hooks.of_type("recording").len()
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let bundles: Vec<serde_json::Value> = hooks
        .of_type("recording")
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(bundles.len(), 2, "one webhook per folder");
    let lost = bundles
        .iter()
        .find(|b| b["recording"][0]["url"].as_str().unwrap().contains(&first))
        .unwrap_or_else(|| panic!("no webhook names {first}: {bundles:?}"));
    // A camera and a microphone per participant, and the manifest.
    let files = lost["recording"].as_array().unwrap();
    assert_eq!(files.len(), 5, "{lost}");
    for f in files {
        let url = f["url"].as_str().unwrap();
        let path = std::path::PathBuf::from(url.trim_start_matches("file://"));
        assert!(path.is_file(), "{url}");
        if url.ends_with(".mkv") {
            // A file whose recording process was killed states no length: its packets do.
            let span = packet_span(&path);
            eprintln!("recorded {lived:.1} s before the loss; {url} holds {span:.1} s");
            // Its track starts when the participant's first frame arrives, after the start.
            assert!(span >= lived - CHUNK_SECS - 1.0 - 2.0, "{url}: {span:.1} s");
        }
    }
    let chunks: Vec<String> = store
        .names()
        .into_iter()
        .filter(|n| n.contains(".chunk"))
        .collect();
    assert!(chunks.is_empty(), "chunks left in storage: {chunks:?}");
}

/// From the first packet's time to the last's, as ffprobe reads them.
fn packet_span(path: &Path) -> f64 {
    let out = tool_output(
        std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "packet=pts_time",
                "-of",
                "csv=p=0",
            ])
            .arg(path),
    );
    let times: Vec<f64> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    match (times.first(), times.iter().cloned().reduce(f64::max)) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    }
}

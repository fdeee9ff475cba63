//! The Kubernetes manifests in `deploy/kubernetes/`: every overlay builds with kustomize
//! (`kubectl kustomize`), passes the Kubernetes schemas strictly (`kubernetes-validate`) and
//! its custom resources pass their CRDs' schemas (KEDA, Prometheus Operator); what they say
//! agrees with roomcast: the stream and consumer group KEDA reads are the ones a real Redis
//! holds with a waiting job as lag, the probes and ports are the ones a worker serves, the
//! grace period covers the drain, the jobs per worker follow the cost model, and the dashboard
//! asks only for metrics roomcast exports.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const OVERLAYS: [&str; 4] = ["base", "overlays/keda", "overlays/hpa", "overlays/dev"];

/// How long a stopping worker may take: its jobs' drain (60 s) and one webhook pass (2 s).
const WORKER_STOP_S: u64 = 62;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `kubectl kustomize` of an overlay, written to a file in `dir`.
fn build(dir: &TempDir, overlay: &str) -> PathBuf {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(manifests().join(overlay))
        .output()
        .expect("kubectl (`make test-setup` installs it)");
    assert!(
        out.status.success(),
        "kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir
        .path()
        .join(format!("{}.yaml", overlay.replace('/', "-")));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// The resources of a YAML stream, as JSON.
fn resources(path: &Path) -> Vec<Value> {
    let out = Command::new(test_python())
        .args([
            "-c",
            "import json, sys, yaml; \
             print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Both validators over a built stream: (passed, what they said).
fn validate(path: &Path) -> (bool, String) {
    let venv_bin = test_python().parent().unwrap().to_path_buf();
    let k8s = Command::new(venv_bin.join("kubernetes-validate"))
        .args(["--strict", "--no-warn"])
        .arg(path)
        .output()
        .expect("kubernetes-validate (`make test-setup` installs it)");
    let crds: Vec<PathBuf> = std::fs::read_dir(fixtures().join("crds"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let custom = Command::new(test_python())
        .arg(fixtures().join("validate_custom.py"))
        .arg(path)
        .args(&crds)
        .output()
        .unwrap();
    let said = [&k8s, &custom]
        .iter()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
        })
        .collect::<Vec<_>>()
        .join("");
    (k8s.status.success() && custom.status.success(), said)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn every_overlay_builds_and_passes_the_kubernetes_and_crd_schemas() {
    let dir = TempDir::new("k8s");
    for overlay in OVERLAYS {
        let path = build(&dir, overlay);
        let (ok, said) = validate(&path);
        assert!(ok, "{overlay}: {said}");
        let docs = resources(&path);
        assert!(docs.len() >= 8, "{overlay}: {} resources", docs.len());
        // Every built-in resource was checked against a schema (none skipped for its kind).
        let checked = said.matches("passed for resource").count();
        let custom = said.lines().filter(|l| l.starts_with("valid ")).count();
        assert_eq!(checked + custom, docs.len(), "{overlay}: {said}");
    }
    // The validators can fail: a wrong type and an unknown field in each kind of resource.
    let keda = build(&dir, "overlays/keda");
    let text = std::fs::read_to_string(&keda).unwrap();
    for (from, to) in [
        (
            "terminationGracePeriodSeconds: 90",
            "terminationGracePeriodSeconds: ninety",
        ),
        ("maxUnavailable: 1", "maxUnavailabe: 1"),
        ("pollingInterval: 5", "pollingIntervall: 5"),
        ("interval: 15s", "intervall: 15s"),
    ] {
        assert!(text.contains(from), "{from}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let (ok, said) = validate(&bad);
        assert!(!ok, "{to} passed: {said}");
    }
}

#[test]
fn the_manifests_agree_with_what_roomcast_serves_and_measures() {
    let dir = TempDir::new("k8s-agree");
    let docs = resources(&build(&dir, "overlays/keda"));
    let config = find(&docs, "ConfigMap", "roomcast-config");
    let metrics_port: u64 = config["data"]["ROOMCAST_METRICS_LISTEN"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // Workers: probes on the address roomcast serves them, a grace period past the drain.
    let worker = &find(&docs, "Deployment", "roomcast-worker")["spec"]["template"]["spec"];
    assert!(worker["terminationGracePeriodSeconds"].as_u64().unwrap() >= WORKER_STOP_S + 10);
    let c = &worker["containers"][0];
    assert_eq!(c["args"][0], "worker");
    assert_eq!(
        c["image"], "localhost/roomcast:latest",
        "what `make image` names"
    );
    assert_eq!(
        worker["securityContext"]["runAsUser"], 10001,
        "the image's user"
    );
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap();
    assert_eq!(port["containerPort"].as_u64(), Some(metrics_port));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let strategy = &find(&docs, "Deployment", "roomcast-worker")["spec"]["strategy"];
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 0);

    // Jobs per worker follow the cost model: the budget fits between the 9-person jobs
    // roomcast assumes before a room is known and 4-person ones, and KEDA's target is in there.
    let budget: f64 = env_of(c, "ROOMCAST_CPU_BUDGET").unwrap().parse().unwrap();
    let request: f64 = c["resources"]["requests"]["cpu"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(budget < request, "budget {budget} of {request} cores");
    let preset = roomcast::model::preset::Preset::resolve("h264-720p30").unwrap();
    let (big, small) = (
        preset.estimated_cost(0, None),
        preset.estimated_cost(0, Some(4)),
    );
    let scaled = find(&docs, "ScaledObject", "roomcast-worker");
    let triggers = scaled["spec"]["triggers"].as_array().unwrap();
    let running = triggers
        .iter()
        .find(|t| t["metadata"]["pendingEntriesCount"].is_string())
        .unwrap();
    let per_worker: f64 = running["metadata"]["pendingEntriesCount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (lo, hi) = ((budget / big).floor(), (budget / small).floor());
    assert!(
        (lo..=hi).contains(&per_worker),
        "{per_worker} jobs per worker, the cost model says {lo}–{hi}"
    );
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "roomcast-worker");

    // The stream and group KEDA reads are roomcast's: with no worker, a started recording is
    // one entry of lag in that group on a real Redis (what the waiting-jobs trigger counts).
    let redis = Redis::start(&dir.path().join("redis"));
    let env = serve_env(
        &dir.path().join("data-api"),
        &[("ROOMCAST_REDIS_URL", &redis.url())],
    );
    let api = Service::start(&["api"], &env, &dir.path().join("api.log"), true);
    register_room(&api, "scaled", 2, "{}");
    let (s, v) = start_recording(&api, "scaled");
    assert!(s == 201 || s == 202, "{v}");
    let port = redis.port.to_string();
    for t in triggers {
        let m = &t["metadata"];
        let out = Command::new("redis-cli")
            .args(["-p", &port, "--json", "XINFO", "GROUPS"])
            .arg(m["stream"].as_str().unwrap())
            .output()
            .expect("redis-cli");
        let groups: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
        let group = groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == m["consumerGroup"])
            .unwrap_or_else(|| panic!("no group {} in {groups}", m["consumerGroup"]));
        assert_eq!(group["lag"], 1, "{group}");
        assert_eq!(group["pending"], 0, "{group}");
        let allowed = [
            "address",
            "stream",
            "consumerGroup",
            "pendingEntriesCount",
            "lagCount",
            "activationLagCount",
        ];
        for key in m.as_object().unwrap().keys() {
            assert!(allowed.contains(&key.as_str()), "trigger setting {key}");
        }
    }

    // The dashboard and the HPA ask only for metrics the API exports.
    let (s, text) = http(
        api.addr.as_deref().unwrap(),
        "GET",
        "/metrics",
        Some(TOKEN),
        None,
    );
    assert_eq!(s, 200);
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboard =
        std::fs::read_to_string(manifests().join("monitoring/roomcast-dashboard.json")).unwrap();
    let hpa = std::fs::read_to_string(manifests().join("overlays/hpa/hpa.yaml")).unwrap();
    let mut asked = 0;
    for source in [&dashboard, &hpa] {
        for (i, _) in source.match_indices("roomcast_") {
            let name: String = source[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Names the adapter gives its external metrics are not Prometheus series.
            if name == "roomcast_used_cores" || name == "roomcast_waiting_jobs" {
                continue;
            }
            assert!(
                exported.contains(&name.as_str()),
                "{name} is not exported: {exported:?}"
            );
            asked += 1;
        }
    }
    assert!(asked >= 16, "{asked} metric uses");
}

//! The router against its own contract, judged by tools that know nothing
//! of ringup:
//! - schemathesis reads `docs/openapi.yaml`, generates requests for every
//!   operation (valid ones and ones the spec rules out) and checks every
//!   answer: documented status, content type, headers and body schema, no
//!   server error, invalid input refused and valid input accepted;
//! - prometheus_client's strict OpenMetrics parser reads `GET /metrics`,
//!   and the counters must move by what this test sent.
//!
//! The tools live in a Python environment that `scripts/py-tools.sh`
//! installs outside the clone on first use.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use ringup_tests::TestCluster;
use serde_json::{Value, json};

/// Generated cases per operation and phase.
const EXAMPLES: u32 = 40;
/// The longest the schemathesis run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root")
}

/// The Python environment with schemathesis and prometheus_client.
fn py_tools() -> PathBuf {
    let out = Command::new("bash").arg(root().join("scripts/py-tools.sh")).output().expect("bash runs py-tools.sh");
    assert!(out.status.success(), "scripts/py-tools.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}

/// Runs `command` to its end, or kills it after `limit`; returns whether it
/// succeeded and what it printed.
fn run_bounded(mut command: Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("out.log");
    let file = std::fs::File::create(&log).expect("a log file");
    let mut child =
        command.stdout(file.try_clone().expect("a second handle")).stderr(file).spawn().expect("the command starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting on the command") {
            break Some(status);
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let printed = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(status) => (status.success(), printed),
        None => (false, format!("{printed}\n(killed after {limit:?})")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_file() {
    let env = py_tools();
    let cluster = TestCluster::start(3).await;
    // Where schemathesis keeps its example database and reports.
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let mut schemathesis = Command::new(env.join("bin/schemathesis"));
    schemathesis
        .arg("--config-file")
        .arg(root().join("tests/conformance/schemathesis.toml"))
        .arg("run")
        .arg(root().join("docs/openapi.yaml"))
        .args(["--url", &cluster.url("")])
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &EXAMPLES.to_string(), "--seed", "1", "--workers", "2"])
        .args(["--request-timeout", "10", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", root().join("tests/conformance/hooks.py"))
        .env("RINGUP_CONFORMANCE_NO_NODE", no_node_addr())
        .current_dir(scratch.path());
    let (ok, printed) = tokio::task::spawn_blocking(move || run_bounded(schemathesis, RUN_LIMIT)).await.unwrap();
    // The summary: schemathesis ends with its totals.
    let tail: Vec<&str> = printed.lines().rev().take(25).collect();
    println!("schemathesis against the router:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    assert!(ok, "schemathesis found answers that break docs/openapi.yaml:\n{printed}\n{}", cluster.logs().await);
    let (status, _) = cluster.get("/healthz").await;
    assert_eq!(status, 200, "the router survived the run");
    assert!(cluster.stop_all().await.is_empty(), "every process stopped on SIGTERM");
}

/// A loopback address where nothing listens: a port bound and let go.
fn no_node_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("bound").to_string()
}

/// The families the OpenAPI file lists for `GET /metrics`, with their types.
const FAMILIES: [(&str, &str); 11] = [
    ("http_requests", "counter"),
    ("http_request_duration_seconds", "histogram"),
    ("overload_refusals", "counter"),
    ("records_written", "counter"),
    ("replica_calls", "counter"),
    ("speculative_asks", "counter"),
    ("read_repairs", "counter"),
    ("map_epoch", "gauge"),
    ("live_nodes", "gauge"),
    ("in_flight_requests", "gauge"),
    ("in_flight_body_bytes", "gauge"),
];

/// `GET /metrics` as the reference parser reads it: family name (without
/// the prefix) to `{type, samples}`.
async fn scrape(cluster: &TestCluster, env: &Path) -> BTreeMap<String, Value> {
    let response = cluster.http().get(cluster.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap_or("").to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "content type {content_type}");
    let text = response.text().await.expect("a body");
    let mut parser = Command::new(env.join("bin/python"))
        .arg(root().join("tests/conformance/openmetrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    parser.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("the text reaches the parser");
    let out = parser.wait_with_output().expect("the parser ends");
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    let families: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    families.into_iter().filter_map(|(name, f)| Some((name.strip_prefix("ringup_router_")?.to_string(), f))).collect()
}

/// The sum of a family's samples named `sample` whose labels include `labels`.
fn total(families: &BTreeMap<String, Value>, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = families.get(family).and_then(|f| f["samples"].as_array()).cloned().unwrap_or_default();
    samples
        .iter()
        .filter(|s| s[0] == format!("ringup_router_{sample}"))
        .filter(|s| labels.iter().all(|(k, v)| s[1][k] == *v))
        .filter_map(|s| s[2].as_f64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_openmetrics_and_count_what_was_sent() {
    let env = py_tools();
    let cluster = TestCluster::start(3).await;
    let before = scrape(&cluster, &env).await;
    for (name, kind) in FAMILIES {
        let family = before.get(name).unwrap_or_else(|| panic!("family {name} is missing from /metrics"));
        assert_eq!(family["type"], kind, "{name} has the documented type");
    }

    // What this test sends between the two scrapes.
    let batches = 3;
    let per_batch = 4;
    for b in 0..batches {
        let records: Vec<Value> = (0..per_batch).map(|i| json!({"id": format!("m{b}-{i}"), "n": i})).collect();
        let (status, _) = cluster.post_json("/v1/shops/metrics-shop/sales", &Value::Array(records)).await;
        assert_eq!(status, 200);
    }
    let found = 2;
    for i in 0..found {
        let (status, _) = cluster.get(&format!("/v1/shops/metrics-shop/sales/m0-{i}")).await;
        assert_eq!(status, 200);
    }
    let (status, _) = cluster.get("/v1/shops/metrics-shop/sales/absent").await;
    assert_eq!(status, 404);
    let (status, _) =
        cluster.call(Method::POST, "/v1/shops/metrics-shop/sales", Some("application/json"), b"[".to_vec()).await;
    assert_eq!(status, 400);
    // A write is answered once two of its three replicas have; the third
    // call is counted when it ends, soon after: scrape until every call is.
    let all_calls = (batches * 3 + (found + 1) * 2) as f64;
    let calls = |m: &BTreeMap<String, Value>| total(m, "replica_calls", "replica_calls_total", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut after, mut scrapes) = (scrape(&cluster, &env).await, 1);
    while calls(&after) - calls(&before) < all_calls && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        (after, scrapes) = (scrape(&cluster, &env).await, scrapes + 1);
    }

    let delta = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        total(&after, family, sample, labels) - total(&before, family, sample, labels)
    };
    let post_ok = delta("http_requests", "http_requests_total", &[("method", "POST"), ("status", "200")]);
    assert_eq!(post_ok, batches as f64, "POSTs answered 200");
    assert_eq!(delta("http_requests", "http_requests_total", &[("method", "POST"), ("status", "400")]), 1.0);
    // The GETs sent, and every scrape but the last (each is counted after
    // it was rendered).
    let get_ok = delta("http_requests", "http_requests_total", &[("method", "GET"), ("status", "200")]);
    assert_eq!(get_ok, (found + scrapes) as f64, "GETs answered 200");
    assert_eq!(delta("http_requests", "http_requests_total", &[("method", "GET"), ("status", "404")]), 1.0);
    let timed = delta("http_request_duration_seconds", "http_request_duration_seconds_count", &[("method", "POST")]);
    assert_eq!(timed, (batches + 1) as f64, "every POST is in the latency histogram");
    let records = delta("records_written", "records_written_total", &[]);
    assert_eq!(records, (batches * per_batch) as f64, "records acknowledged");
    // Three replicas per write; a QUORUM GET asks at least two.
    let answered = delta("replica_calls", "replica_calls_total", &[("outcome", "answered")]);
    assert!(answered >= all_calls, "{answered} replica calls answered, at least {all_calls} made");
    assert_eq!(delta("replica_calls", "replica_calls_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(delta("overload_refusals", "overload_refusals_total", &[]), 0.0);
    assert_eq!(total(&after, "live_nodes", "live_nodes", &[]), 3.0);
    let (_, map) = cluster.get("/v1/cluster").await;
    assert_eq!(total(&after, "map_epoch", "map_epoch", &[]), map["epoch"].as_f64().expect("an epoch"));
    assert_eq!(total(&after, "in_flight_requests", "in_flight_requests", &[]), 0.0, "nothing else in flight");
    println!(
        "/metrics: {} families, valid OpenMetrics; {post_ok} POSTs, {found} GETs, {records} records, \
         {answered} replica answers counted as sent",
        after.len()
    );
    assert!(cluster.stop_all().await.is_empty());
}

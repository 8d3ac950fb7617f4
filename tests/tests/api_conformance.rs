//! The router against its own contract, judged by tools that know nothing
//! of ringup:
//! - schemathesis reads `docs/openapi.yaml`, generates requests for every
//!   operation (valid ones and ones the spec rules out) and checks every
//!   answer: documented status, content type, headers and body schema, no
//!   server error, invalid input refused and valid input accepted;
//! - the router's route table and the OpenAPI file name the same paths,
//!   and every path answers a method the file does not list with `405`
//!   and an `Allow` header naming exactly those it does;
//! - `promtool check metrics` reads `GET /metrics` as Prometheus text, and
//!   prometheus_client's strict OpenMetrics parser reads it as OpenMetrics;
//!   the counters must move by what this test sent, on the router and on
//!   the nodes.
//!
//! The Python tools live in an environment that `scripts/py-tools.sh`
//! installs outside the clone on first use; `scripts/test.sh` installs
//! promtool (Debian's `prometheus` package).

use std::collections::{BTreeMap, BTreeSet};
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
        // Every check is on. Of the phases, the stateful one is left out:
        // it chains operations through the spec's `links`, and
        // docs/openapi.yaml declares none, so it would add no cases.
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &EXAMPLES.to_string(), "--seed", "1", "--workers", "2"])
        .args(["--request-timeout", "10", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {}", cluster.admin_token())])
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
const FAMILIES: [(&str, &str); 13] = [
    ("http_requests", "counter"),
    ("http_request_duration_seconds", "histogram"),
    ("http_errors", "counter"),
    ("overload_refusals", "counter"),
    ("records_written", "counter"),
    ("replica_calls", "counter"),
    ("speculative_asks", "counter"),
    ("read_repairs", "counter"),
    ("hints", "counter"),
    ("map_epoch", "gauge"),
    ("live_nodes", "gauge"),
    ("in_flight_requests", "gauge"),
    ("in_flight_body_bytes", "gauge"),
];

/// The nodes' families the OpenAPI file lists, with their types.
const NODE_FAMILIES: [(&str, &str); 45] = [
    ("up", "gauge"),
    ("report_partitions_from_segments", "counter"),
    ("report_partitions_scanned", "counter"),
    ("report_segments_built", "counter"),
    ("report_segments", "gauge"),
    ("report_segment_bytes", "gauge"),
    ("raft_term", "gauge"),
    ("raft_leader", "gauge"),
    ("clock_skew_refusals", "counter"),
    ("hints_stored", "counter"),
    ("hints_refused", "counter"),
    ("hints_replayed", "counter"),
    ("hints_dropped", "counter"),
    ("hints_pending_bytes", "gauge"),
    ("anti_entropy_passes", "counter"),
    ("anti_entropy_compared", "counter"),
    ("anti_entropy_differed", "counter"),
    ("anti_entropy_pulled_records", "counter"),
    ("anti_entropy_read_bytes", "counter"),
    ("anti_entropy_pass_done_partitions", "gauge"),
    ("anti_entropy_pass_partitions", "gauge"),
    ("anti_entropy_partitions", "gauge"),
    ("anti_entropy_unagreed_partitions", "gauge"),
    ("anti_entropy_last_pass_age_seconds", "gauge"),
    ("tombstones_dropped", "counter"),
    ("values_resealed", "counter"),
    ("data_key", "gauge"),
    ("write_batches", "counter"),
    ("records_written", "counter"),
    ("point_reads", "counter"),
    ("scans", "counter"),
    ("rocksdb_keys_written", "counter"),
    ("rocksdb_keys_read", "counter"),
    ("rocksdb_flush_written_bytes", "counter"),
    ("rocksdb_compaction_read_bytes", "counter"),
    ("rocksdb_compaction_written_bytes", "counter"),
    ("rocksdb_stall_seconds", "counter"),
    ("rocksdb_sst_bytes", "gauge"),
    ("rocksdb_memtable_bytes", "gauge"),
    ("rocksdb_estimated_keys", "gauge"),
    ("rocksdb_running_flushes", "gauge"),
    ("rocksdb_running_compactions", "gauge"),
    ("rocksdb_pending_compaction_bytes", "gauge"),
    ("rocksdb_write_stopped", "gauge"),
    ("rocksdb_delayed_write_rate_bytes_per_second", "gauge"),
];

/// Node families with no series until something happens.
const OFTEN_EMPTY: [&str; 2] = ["hints_pending_bytes", "anti_entropy_last_pass_age_seconds"];

/// Runs `program` with `input` on stdin; returns whether it succeeded and
/// what it printed on stdout and stderr.
fn pipe(program: &Path, args: &[&Path], input: &str) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not run: {e}", program.display()));
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("the input is taken");
    let out = child.wait_with_output().expect("the program ends");
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `GET /metrics` with `accept`: the content type and the text.
async fn fetch_metrics(cluster: &TestCluster, accept: &str) -> (String, String) {
    let response = cluster.http().get(cluster.url("/metrics")).header("accept", accept).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap_or("").to_string();
    (content_type, response.text().await.expect("a body"))
}

/// `GET /metrics` as the reference OpenMetrics parser reads it: family name
/// (with its prefix) to `{type, samples}`.
async fn scrape(cluster: &TestCluster, env: &Path) -> BTreeMap<String, Value> {
    let (content_type, text) = fetch_metrics(cluster, "application/openmetrics-text; version=1.0.0").await;
    assert!(content_type.starts_with("application/openmetrics-text"), "content type {content_type}");
    let (ok, out, err) = pipe(&env.join("bin/python"), &[&root().join("tests/conformance/openmetrics.py")], &text);
    assert!(ok, "{err}\n{text}");
    serde_json::from_slice(&out).expect("the parser's JSON")
}

/// The sum of the samples named `sample` (without the `ringup_` prefix) of
/// the family `family` whose labels include `labels`.
fn total(families: &BTreeMap<String, Value>, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    let family = families.get(&format!("ringup_{family}"));
    let samples = family.and_then(|f| f["samples"].as_array()).cloned().unwrap_or_default();
    samples
        .iter()
        .filter(|s| s[0] == format!("ringup_{sample}"))
        .filter(|s| labels.iter().all(|(k, v)| s[1][k] == *v))
        .filter_map(|s| s[2].as_f64())
        .sum()
}

/// `promtool`, from Debian's `prometheus` package, which `scripts/test.sh`
/// installs.
fn promtool() -> PathBuf {
    let found = Command::new("sh").args(["-c", "command -v promtool"]).output().expect("sh runs");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(!path.is_empty(), "promtool is not installed: scripts/test.sh installs it (Debian package prometheus)");
    PathBuf::from(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_as_prometheus_text() {
    let promtool = promtool();
    let cluster = TestCluster::start(3).await;
    let (status, _) = cluster.post_json("/v1/shops/promtool-shop/sales", &json!([{"id": "a", "n": 1}])).await;
    assert_eq!(status, 200);
    let (status, _) = cluster.get("/v1/shops/promtool-shop/sales/absent?consistency=one").await;
    assert_eq!(status, 404);
    // A scraper that does not ask for OpenMetrics gets Prometheus text.
    for accept in ["text/plain", "*/*"] {
        let (content_type, text) = fetch_metrics(&cluster, accept).await;
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "content type {content_type}");
        let (ok, out, err) = pipe(&promtool, &[Path::new("check"), Path::new("metrics")], &text);
        let said = format!("{}{err}", String::from_utf8_lossy(&out));
        assert!(ok && said.trim().is_empty(), "promtool check metrics found problems:\n{said}\n{text}");
        assert!(text.contains("ringup_node_rocksdb_sst_bytes{node=\"3\"}"), "the nodes' families are served");
    }
    let families = text_families(&fetch_metrics(&cluster, "text/plain").await.1);
    println!("promtool check metrics: clean; {} families: {}", families.len(), families.join(", "));
    assert!(cluster.stop_all().await.is_empty());
}

/// The family names of a Prometheus text exposition, from its `# TYPE` lines.
fn text_families(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| Some(l.strip_prefix("# TYPE ")?.split(' ').next()?.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_openmetrics_and_count_what_was_sent() {
    let env = py_tools();
    let cluster = TestCluster::start(3).await;
    let before = scrape(&cluster, &env).await;
    let documented = FAMILIES.iter().map(|(n, k)| (format!("ringup_router_{n}"), k));
    for (name, kind) in documented.chain(NODE_FAMILIES.iter().map(|(n, k)| (format!("ringup_node_{n}"), k))) {
        // A family with no series yet is not written: no node holds hints,
        // and a pass may not have ended.
        if OFTEN_EMPTY.iter().any(|e| name.ends_with(e)) && !before.contains_key(&name) {
            continue;
        }
        let family = before.get(&name).unwrap_or_else(|| panic!("family {name} is missing from /metrics"));
        assert_eq!(family["type"], *kind, "{name} has the documented type");
    }
    let served: Vec<&String> =
        before.keys().filter(|n| !FAMILIES.iter().any(|(f, _)| **n == format!("ringup_router_{f}"))).collect();
    let undocumented: Vec<&&String> =
        served.iter().filter(|n| !NODE_FAMILIES.iter().any(|(f, _)| **n == &format!("ringup_node_{f}"))).collect();
    assert!(undocumented.is_empty(), "families served but not documented: {undocumented:?}");

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
    let (status, refused) =
        cluster.call(Method::POST, "/v1/shops/metrics-shop/sales", Some("application/json"), b"[".to_vec()).await;
    assert_eq!(status, 400);
    let refused_code = refused["error"]["code"].as_str().expect("an error code").to_string();
    // A write is answered once two of its three replicas have; the third
    // call is counted when it ends, soon after: scrape until every call is.
    let all_calls = (batches * 3 + (found + 1) * 2) as f64;
    let calls = |m: &BTreeMap<String, Value>| total(m, "router_replica_calls", "router_replica_calls_total", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut after, mut scrapes) = (scrape(&cluster, &env).await, 1);
    while calls(&after) - calls(&before) < all_calls && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        (after, scrapes) = (scrape(&cluster, &env).await, scrapes + 1);
    }

    let delta = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        total(&after, family, sample, labels) - total(&before, family, sample, labels)
    };
    let post_ok = delta("router_http_requests", "router_http_requests_total", &[("method", "POST"), ("status", "200")]);
    assert_eq!(post_ok, batches as f64, "POSTs answered 200");
    assert_eq!(
        delta("router_http_requests", "router_http_requests_total", &[("method", "POST"), ("status", "400")]),
        1.0
    );
    // The GETs sent, and every scrape but the last (each is counted after
    // it was rendered).
    let get_ok = delta("router_http_requests", "router_http_requests_total", &[("method", "GET"), ("status", "200")]);
    assert_eq!(get_ok, (found + scrapes) as f64, "GETs answered 200");
    assert_eq!(
        delta("router_http_requests", "router_http_requests_total", &[("method", "GET"), ("status", "404")]),
        1.0
    );
    let timed = delta(
        "router_http_request_duration_seconds",
        "router_http_request_duration_seconds_count",
        &[("method", "POST")],
    );
    assert_eq!(timed, (batches + 1) as f64, "every POST is in the latency histogram");
    let records = delta("router_records_written", "router_records_written_total", &[]);
    assert_eq!(records, (batches * per_batch) as f64, "records acknowledged");
    // Three replicas per write; a QUORUM GET asks at least two.
    let answered = delta("router_replica_calls", "router_replica_calls_total", &[("outcome", "answered")]);
    assert!(answered >= all_calls, "{answered} replica calls answered, at least {all_calls} made");
    assert_eq!(delta("router_replica_calls", "router_replica_calls_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(delta("router_overload_refusals", "router_overload_refusals_total", &[]), 0.0);
    assert_eq!(total(&after, "router_live_nodes", "router_live_nodes", &[]), 3.0);
    // Errors by their code, latency by route and level.
    let errors = |status: &str, code: &str| {
        delta("router_http_errors", "router_http_errors_total", &[("status", status), ("code", code)])
    };
    assert_eq!(errors("400", &refused_code), 1.0, "the bad batch is counted by its code {refused_code}");
    assert_eq!(errors("404", "not_found"), 1.0, "the missing record is counted by its code");
    let record_route = [("method", "GET"), ("route", "/v1/shops/{shop}/{collection}/{id}"), ("consistency", "quorum")];
    let timed_gets =
        delta("router_http_request_duration_seconds", "router_http_request_duration_seconds_count", &record_route);
    assert_eq!(timed_gets, (found + 1) as f64, "record GETs are timed under their route and level");
    // The nodes: every record reached the three replicas; each GET asked
    // two or three of them.
    let up = total(&after, "node_up", "node_up", &[]);
    assert_eq!(up, 3.0, "every node answered the scrape");
    // A GET that found a replica which had not applied a write yet sends it
    // the newest value: one more record in one more batch, merged once the
    // node has it (the router counts it when it sends it).
    let repairs = delta("router_read_repairs", "router_read_repairs_total", &[]);
    let node_records = delta("node_records_written", "node_records_written_total", &[]);
    let written = (batches * per_batch * 3) as f64;
    assert!(
        (written..=written + repairs).contains(&node_records),
        "{node_records} records merged on the nodes: {written} written and {repairs} read repairs sent"
    );
    let node_batches = delta("node_write_batches", "node_write_batches_total", &[]);
    let sent = (batches * 3) as f64;
    assert!((sent..=sent + repairs).contains(&node_batches), "{node_batches} batches merged, {sent} sent");
    let reads = delta("node_point_reads", "node_point_reads_total", &[]);
    let gets = (found + 1) as f64;
    assert!((2.0 * gets..=3.0 * gets).contains(&reads), "{reads} point reads on the nodes for {gets} GETs");
    for node in ["1", "2", "3"] {
        assert!(total(&after, "node_rocksdb_keys_written", "node_rocksdb_keys_written_total", &[("node", node)]) > 0.0);
    }
    let (_, map) = cluster.get("/v1/cluster").await;
    assert_eq!(total(&after, "router_map_epoch", "router_map_epoch", &[]), map["epoch"].as_f64().expect("an epoch"));
    assert_eq!(
        total(&after, "router_in_flight_requests", "router_in_flight_requests", &[]),
        0.0,
        "nothing else in flight"
    );
    println!(
        "/metrics: {} families, valid OpenMetrics; {post_ok} POSTs, {found} GETs, {records} records, \
         {answered} replica answers, {node_records} records merged on the nodes, {reads} point reads: \
         counted as sent",
        after.len()
    );
    assert!(cluster.stop_all().await.is_empty());
}

/// `docs/openapi.yaml`'s paths, each with the methods it lists (upper case).
fn spec_routes(env: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let to_json = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let out = Command::new(env.join("bin/python"))
        .args(["-c", to_json])
        .arg(root().join("docs/openapi.yaml"))
        .output()
        .expect("python runs");
    assert!(out.status.success(), "docs/openapi.yaml does not load: {}", String::from_utf8_lossy(&out.stderr));
    let spec: Value = serde_json::from_slice(&out.stdout).expect("the spec as JSON");
    let paths = spec["paths"].as_object().expect("the spec has paths");
    let methods = ["get", "head", "post", "put", "patch", "delete", "options", "trace"];
    paths
        .iter()
        .map(|(path, item)| {
            let listed = item.as_object().expect("a path item").keys().filter(|k| methods.contains(&k.as_str()));
            (path.clone(), listed.map(|m| m.to_uppercase()).collect())
        })
        .collect()
}

/// A concrete path for a template: each `{parameter}` filled with a value
/// its pattern allows.
fn concrete(template: &str) -> String {
    template.replace("{shop}", "parity-shop").replace("{collection}", "sales").replace("{id}", "2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_exactly_the_routes_and_methods_of_the_openapi_file() {
    let spec = spec_routes(&py_tools());
    let served: BTreeSet<String> = ringup_router::api::paths().into_iter().map(String::from).collect();
    let listed: BTreeSet<String> = spec.keys().cloned().collect();
    assert_eq!(
        served,
        listed,
        "served but not in docs/openapi.yaml: {:?}; in the file but not served: {:?}",
        served.difference(&listed).collect::<Vec<_>>(),
        listed.difference(&served).collect::<Vec<_>>()
    );

    // Each method a path does not list answers 405, and its Allow header
    // names exactly the listed methods (HEAD goes with GET): so every
    // method the router serves there is in the file, and the reverse.
    let cluster = TestCluster::start(3).await;
    let mut probes = 0;
    for (template, methods) in &spec {
        let mut allowed = methods.clone();
        if allowed.contains("GET") {
            allowed.insert("HEAD".into());
        }
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"].into_iter().filter(|m| !allowed.contains(*m)) {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let response = cluster.http().request(method.clone(), cluster.url(&concrete(template))).send().await;
            let response = response.expect("an answer");
            assert_eq!(response.status(), 405, "{method} {template} is not in the file, so it must be 405");
            let allow = response.headers().get("allow").map(|v| v.to_str().unwrap_or("").to_string());
            let allow = allow.unwrap_or_else(|| panic!("405 for {method} {template} has no Allow header"));
            let named: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_string()).collect();
            assert_eq!(named, allowed, "Allow of {template} against the methods docs/openapi.yaml lists");
            let body: Value = response.json().await.expect("a JSON error");
            assert_eq!(body["error"]["code"], "method_not_allowed");
            probes += 1;
        }
    }
    println!(
        "routes: {} paths served and documented alike; {probes} methods outside the file answered 405 with Allow",
        spec.len()
    );
    assert!(cluster.stop_all().await.is_empty());
}

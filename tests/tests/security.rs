//! TLS on the internal RPC and encryption at rest, end to end.
//!
//! - Only a process with a certificate of the cluster's CA speaks to a
//!   node: a plain TCP client and one with another CA's certificate are
//!   refused, the harness's own certificate is answered. (Every other
//!   end-to-end test runs its cluster over TLS too.)
//! - A marker written in a record's field is found in no file of any
//!   node's data directory (SST files, write-ahead log, everything), while
//!   the record reads back whole; a control cluster storing values in clear
//!   shows the same search does find it there.
//! - After a key is added to the data key file (rotation), records written
//!   before and after read back, and a node given a key file without the
//!   old key refuses to start, saying which key is missing.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use ringup_cli::certs::{self, Kind};
use ringup_cli::local::Process;
use ringup_proto::rpc::{Request, Response};
use ringup_tests::TestCluster;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_holders_of_a_cluster_certificate_speak_to_a_node() {
    let cluster = TestCluster::start(3).await;
    let addr = cluster.node_addr(1).await.to_string();

    let answer = cluster.rpc(addr.clone()).call(Request::Ping, TIMEOUT).await;
    assert!(matches!(answer, Ok(Response::Pong { .. })), "the cluster's certificate is answered: {answer:?}");

    let plain = ringup_rpc::Client::new(addr.clone()).call(Request::Ping, TIMEOUT).await;
    assert!(plain.is_err(), "a client without a certificate is refused: {plain:?}");

    let other = tempfile::tempdir().unwrap();
    let (files, _) = certs::ensure(other.path(), "intruder", Kind::Client, &[]).unwrap();
    let intruder = ringup_rpc::Tls::load(files).unwrap();
    let foreign = ringup_rpc::Client::with_tls(addr.clone(), Some(intruder)).call(Request::Ping, TIMEOUT).await;
    assert!(foreign.is_err(), "a certificate of another CA is refused: {foreign:?}");

    // A node certificate of another CA cannot pose as a node either: the
    // harness's client refuses a server it presents.
    let (node_files, _) = certs::ensure(other.path(), "fake-node", Kind::Node, &["127.0.0.1".into()]).unwrap();
    let fake = ringup_rpc::Tls::load(node_files).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = listener.local_addr().unwrap().to_string();
    let limits = ringup_rpc::Limits::default();
    tokio::spawn(ringup_rpc::serve_tls(
        listener,
        std::sync::Arc::new(Echo),
        limits,
        Some(fake),
        std::future::pending(),
    ));
    let posing = cluster.rpc(fake_addr).call(Request::Ping, TIMEOUT).await;
    assert!(posing.is_err(), "a server with another CA's certificate is refused: {posing:?}");

    // The cluster still works end to end.
    let (status, _) = cluster.post_json("/v1/shops/tls/sales", &json!([{"id": "a", "n": 1}])).await;
    assert_eq!(status, 200);
}

/// A server that answers every request with a pong.
struct Echo;

impl ringup_rpc::Handler for Echo {
    async fn handle(&self, _request: Request) -> Response {
        Response::Pong { node: 99, epoch: 1 }
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Every file under `dir` whose name ends with `suffix`.
fn count_files(dir: &Path, suffix: &str) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.to_string_lossy().ends_with(suffix) {
            count += 1;
        }
    }
    count
}

/// Writes a record holding `marker` (and a field named after it), reads it
/// back, counts it with a report, stops the cluster (the nodes flush their
/// memtables to SST files), and returns the files holding the marker.
async fn write_marker_and_search(cluster: &TestCluster, marker: &str) -> Vec<String> {
    let field = format!("field_{marker}");
    let record = json!({"id": "m1", "note": marker, field.clone(): 7, "amount": 12.5});
    let (status, body) = cluster.post_json("/v1/shops/vault/sales", &json!([record])).await;
    assert_eq!(status, 200, "{body}");
    let (status, back) = cluster.get("/v1/shops/vault/sales/m1?consistency=all").await;
    assert_eq!(status, 200);
    assert_eq!(
        (back["note"].as_str(), back[&field].as_i64(), back["amount"].as_f64()),
        (Some(marker), Some(7), Some(12.5))
    );
    let sql = format!("SELECT count(*) AS n FROM sales WHERE note = '{marker}'");
    let (status, report) = cluster.post_json("/v1/query", &json!({ "sql": sql })).await;
    assert_eq!((status.as_u16(), &report["rows"]), (200, &json!([[1]])), "{report}");
    assert!(cluster.stop_all().await.is_empty(), "every process stopped on SIGTERM");
    let mut found = Vec::new();
    for id in 1..=3 {
        let dir = cluster.layout.dir.join(format!("node-{id}"));
        assert!(count_files(&dir, ".sst") > 0, "node {id} flushed its memtables to SST files");
        assert!(count_files(&dir, ".log") > 0, "node {id} has its write-ahead log");
        found.extend(files_containing(&dir, marker.as_bytes()));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_marker_is_in_no_file_of_an_encrypted_node_but_reads_back() {
    let marker = format!("MARKER{}x", std::process::id() as u64 * 7919 + 17);

    let clear = TestCluster::start_with(3, Some(64), &["--insecure-no-encryption"]).await;
    let found = write_marker_and_search(&clear, &marker).await;
    assert!(!found.is_empty(), "the search finds the marker where values are stored in clear");

    let sealed = TestCluster::start_with(3, Some(64), &[]).await;
    let found = write_marker_and_search(&sealed, &marker).await;
    assert!(found.is_empty(), "the marker is in no file of an encrypted node: {found:?}");
    println!("marker {marker}: found in the clear cluster's files, in none of the encrypted cluster's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_key_rotation_old_and_new_records_read_back() {
    let cluster = TestCluster::start_with(3, Some(64), &[]).await;
    let batch = |tag: &str| -> Value {
        Value::Array((0..40).map(|i| json!({"id": format!("{tag}-{i:02}"), "tag": tag, "n": i})).collect())
    };
    // At ALL: every replica holds the old records sealed under key 1 (a
    // replica that missed them would get them later, sealed under key 2).
    assert_eq!(cluster.post_json("/v1/shops/rot/sales?consistency=all", &batch("old")).await.0, 200);
    assert!(cluster.stop_all().await.is_empty());

    // A key file with a new key but without key 1, which sealed the old
    // records: node 1 says so and does not start.
    let keys = cluster.layout.data_key_file();
    let before = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(ringup_cli::key::add_key(&keys).unwrap(), 2);
    let rotated = std::fs::read_to_string(&keys).unwrap();
    let only_new: String = rotated.lines().filter(|l| !before.contains(*l)).map(|l| format!("{l}\n")).collect();
    std::fs::write(&keys, only_new).unwrap();
    let log = cluster.layout.dir.join("node-1-refused.log");
    let mut node = Process::start("node-1", cluster.layout.node(1).unwrap(), &log).unwrap();
    let started = Instant::now();
    while node.exited().is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "the node should refuse to start:\n{}", node.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said = node.log_tail(5);
    assert!(!node.exited().unwrap().success());
    assert!(said.contains("data key 1"), "the error names the missing key:\n{said}");
    println!("a key file without key 1 is refused: {}", said.lines().last().unwrap_or_default());

    // The rotated file, keys 1 and 2: new writes are sealed under key 2,
    // and both read back.
    std::fs::write(&keys, rotated).unwrap();
    cluster.start_all().await;
    assert_eq!(cluster.post_json("/v1/shops/rot/sales", &batch("new")).await.0, 200);
    for tag in ["old", "new"] {
        for i in 0..40 {
            let (status, record) = cluster.get(&format!("/v1/shops/rot/sales/{tag}-{i:02}?consistency=all")).await;
            assert_eq!((status.as_u16(), record["tag"].as_str(), record["n"].as_i64()), (200, Some(tag), Some(i)));
        }
    }
    let (_, count) = cluster.call(Method::GET, "/v1/shops/rot/sales/_count?consistency=all", None, vec![]).await;
    assert_eq!(count["count"], 80);

    // The reseal pass moves the 40 old records on each of the 3 replicas to
    // key 2; every node seals with key 2.
    let started = Instant::now();
    let (resealed, keys_in_use) = loop {
        let metrics = cluster.http().get(cluster.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let series = |name: &str| -> Vec<f64> {
            metrics
                .lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect()
        };
        let resealed: f64 = series("ringup_node_values_resealed_total").iter().sum();
        if resealed >= 120.0 || started.elapsed() > Duration::from_secs(30) {
            break (resealed, series("ringup_node_data_key"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(resealed, 120.0, "40 old records on each of 3 replicas sealed anew");
    assert_eq!(keys_in_use, vec![2.0; 3], "every node seals with key 2");
    for i in 0..40 {
        let (status, record) = cluster.get(&format!("/v1/shops/rot/sales/old-{i:02}?consistency=all")).await;
        assert_eq!((status.as_u16(), record["n"].as_i64()), (200, Some(i)), "resealed records read back");
    }
    println!("after the rotation: 80 records read back, {resealed} values sealed anew under key 2");
    assert!(cluster.stop_all().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_serves_https_when_given_a_certificate() {
    let cluster = TestCluster::start_with_router(3, None, &[], &["--https"]).await;
    let base = cluster.url("");
    assert!(base.starts_with("https://"), "{base}");
    // The harness's client trusts the cluster's CA.
    let (status, body) = cluster.post_json("/v1/shops/tls/sales", &json!([{"id": "h1", "n": 1}])).await;
    assert_eq!(status, 200, "{body}");

    // curl, trusting the CA, with the admin token.
    let ca = cluster.layout.certs_dir().join("ca.pem");
    let auth = format!("authorization: Bearer {}", cluster.admin_token());
    let url = cluster.url("/v1/shops/tls/sales/h1");
    let out = std::process::Command::new("curl")
        .args(["-s", "--fail-with-body", "--cacert"])
        .arg(&ca)
        .args(["-H", &auth, &url])
        .output()
        .expect("curl runs");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(record["n"], 1, "curl over HTTPS: {}", String::from_utf8_lossy(&out.stderr));

    // A client that does not trust the CA, and plain HTTP, are refused.
    let untrusting = reqwest::Client::new().get(cluster.url("/healthz")).send().await;
    assert!(untrusting.is_err(), "a certificate of an unknown CA is not accepted: {untrusting:?}");
    let plain = reqwest::Client::new().get(base.replacen("https://", "http://", 1) + "healthz").send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "plain HTTP gets no answer");
    assert!(cluster.stop_all().await.is_empty(), "the HTTPS router stops on SIGTERM");
}

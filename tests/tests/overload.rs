//! Overload: the router admits what fits its limits and refuses the rest at
//! once, and a node shrugs off hundreds of connections that announce huge
//! frames and send nothing more. Every process stays up, within a stated
//! memory bound, nothing acknowledged is lost, nothing refused is stored,
//! and ordinary requests succeed right after.
//!
//! The router runs with its defaults: 64 MiB of bodies in flight, so four
//! 16 MiB batches at once; the test sends three times as many together.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ringup_tests::TestCluster;
use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Batches of 16 MiB the router admits at once with its default limits.
const ADMITTED: usize = 4;
/// Batches sent together: three times as many.
const BATCHES: usize = 3 * ADMITTED;
/// Records per batch, and the bytes of padding each carries (its JSON is
/// about 30 bytes more).
const RECORDS: usize = 16_000;
const RECORD_BYTES: usize = 1_000;
/// Connections that send a frame header announcing 64 MiB, then nothing.
const HEADER_ONLY_CONNECTIONS: usize = 300;
/// What no process may exceed, in MiB of resident memory.
const ROUTER_BOUND_MIB: u64 = 512;
const NODE_BOUND_MIB: u64 = 512;

fn big_batch(shop: usize) -> Vec<u8> {
    let pad = "x".repeat(RECORD_BYTES);
    let records: Vec<Value> = (0..RECORDS).map(|i| json!({"id": format!("r-{i:06}"), "n": shop, "pad": pad})).collect();
    let body = serde_json::to_vec(&records).unwrap();
    assert!(body.len() < 16 << 20 && body.len() > 15 << 20, "a batch of just under 16 MiB, not {}", body.len());
    body
}

fn shop(i: usize) -> String {
    format!("overload-{i:02}")
}

/// Sends every big batch at once; returns each shop's status and error
/// code, and how long each answer took.
async fn send_together(cluster: &TestCluster) -> Vec<(usize, StatusCode, String, Duration)> {
    let sends = (0..BATCHES).map(|i| {
        let request = cluster
            .http()
            .post(cluster.url(&format!("/v1/shops/{}/sales", shop(i))))
            .header("content-type", "application/json")
            .body(big_batch(i));
        async move {
            let started = Instant::now();
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return (i, StatusCode::IM_A_TEAPOT, format!("no answer: {e}"), started.elapsed()),
            };
            let status = response.status();
            let retry_after = response.headers().get("retry-after").is_some();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("").to_string();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert!(retry_after, "a 503 carries Retry-After");
            }
            (i, status, code, started.elapsed())
        }
    });
    futures::future::join_all(sends).await
}

async fn count(cluster: &TestCluster, shop: &str) -> u64 {
    let (status, body) = cluster.get(&format!("/v1/shops/{shop}/sales/_count?consistency=all")).await;
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().unwrap()
}

/// An ordinary write and read through the router, at QUORUM.
async fn ordinary_requests_succeed(cluster: &TestCluster, tag: &str) {
    let path = format!("/v1/shops/after-{tag}/sales");
    let (status, body) = cluster.post_json(&path, &json!([{"id": "a", "v": 1}])).await;
    assert_eq!(status, 200, "an ordinary write after {tag}: {body}");
    let (status, body) = cluster.get(&format!("{path}/a")).await;
    assert_eq!((status, body["v"].clone()), (StatusCode::OK, json!(1)), "an ordinary read after {tag}");
}

async fn check_memory(cluster: &TestCluster, when: &str) {
    let peaks = cluster.peak_rss_mib().await;
    eprintln!("peak resident memory {when}: {peaks:?}");
    assert_eq!(peaks.len(), 4, "every process is still up {when}: {peaks:?}\n{}", cluster.logs().await);
    for (name, mib) in peaks {
        let bound = if name == "router" { ROUTER_BOUND_MIB } else { NODE_BOUND_MIB };
        assert!(mib < bound, "{name} peaked at {mib} MiB {when}, over the bound of {bound} MiB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_at_once_and_memory_stays_bounded() {
    // Four 16 MiB batches to three replicas at once, each sealed and sent
    // over TLS, take the 2 cores a few seconds: the replicas get more than
    // the default 2 s. What this test checks is what happens past the
    // limits, not how fast a full batch is stored.
    let cluster = TestCluster::start_with_router(3, None, &[], &["--request-timeout-ms", "15000"]).await;
    check_memory(&cluster, "at start").await;

    let answers = send_together(&cluster).await;
    let (mut stored, mut refused) = (Vec::new(), Vec::new());
    for (i, status, code, took) in &answers {
        match (*status, code.as_str()) {
            (StatusCode::OK, _) => stored.push((*i, *took)),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded") => refused.push((*i, *took)),
            other => panic!("batch {i}: unexpected answer {other:?}\n{}", cluster.logs().await),
        }
    }
    let slowest = |v: &[(usize, Duration)]| v.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "{BATCHES} batches of {RECORDS} records (~16 MiB) at once: {} stored (slowest {:?}), {} refused with 503 (slowest {:?})",
        stored.len(),
        slowest(&stored),
        refused.len(),
        slowest(&refused)
    );
    assert!(!stored.is_empty(), "what fits the limits is stored");
    assert!(!refused.is_empty(), "what does not fit is refused, not queued");
    check_memory(&cluster, "after the batches").await;

    for (i, _) in &stored {
        assert_eq!(count(&cluster, &shop(*i)).await, RECORDS as u64, "acknowledged batch {i} is whole");
    }
    for (i, _) in &refused {
        assert_eq!(count(&cluster, &shop(*i)).await, 0, "refused batch {i} stored nothing");
    }
    ordinary_requests_succeed(&cluster, "batches").await;

    // Hundreds of connections to one node, each through the nodes' mutual
    // TLS (with the harness's client certificate, so that the frame reader
    // is what they reach), announcing a 64 MiB frame and sending nothing
    // more.
    let node = cluster.node_addr(1).await;
    let mut header = (64u32 << 20).to_be_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    let sockets_before = cluster.open_sockets(1).await;
    let mut attackers: Vec<Box<dyn AsyncWrite + Unpin + Send>> = Vec::new();
    for _ in 0..HEADER_ONLY_CONNECTIONS {
        let tcp = TcpStream::connect(node).await.expect("the node accepts connections");
        let mut stream: Box<dyn AsyncWrite + Unpin + Send> = match cluster.rpc_tls() {
            Some(tls) => {
                let (connector, name) = tls.connector();
                Box::new(connector.connect(name, tcp).await.expect("the node completes the handshake"))
            }
            None => Box::new(tcp),
        };
        stream.write_all(&header).await.unwrap();
        stream.flush().await.unwrap();
        attackers.push(stream);
    }
    // Until the node holds them: each waits in the frame reader for a
    // payload that does not come. A few of the node's own connections to
    // its peers and the router may come and go meanwhile.
    let started = Instant::now();
    while cluster.open_sockets(1).await < sockets_before + HEADER_ONLY_CONNECTIONS - 10 {
        assert!(started.elapsed() < Duration::from_secs(10), "node 1 does not hold the connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ordinary_requests_succeed(&cluster, "headers").await;
    check_memory(&cluster, "with the header-only connections open").await;
    drop(attackers);
    ordinary_requests_succeed(&cluster, "headers-closed").await;
    assert!(cluster.stop_all().await.is_empty(), "every process stops on SIGTERM");
}

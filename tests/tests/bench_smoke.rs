//! `ringup bench` against a real cluster, with tiny counts: its summary
//! adds up, the records it reports written are in the store, and a second
//! run with the same seed writes exactly the same records again. Then an
//! open-loop run at a fixed `--rate` sends exactly the requests it was
//! asked for and reports the rate it achieved, and a `--zipf` run's GETs
//! all find the records the clients preloaded.

use ringup_tests::TestCluster;
use serde_json::Value;

const SHOPS: usize = 5;
const BATCH: u64 = 10;
const REQUESTS: u64 = 120;

/// The mix of the first runs: writes, GETs and list pages.
const MIX: [&str; 4] = ["--gets", "20", "--lists", "10"];

/// A `ringup bench` run of `REQUESTS` requests with `extra` arguments; its
/// JSON summary.
async fn bench(cluster: &TestCluster, extra: &[&str]) -> Value {
    let out = tokio::process::Command::new(ringup_tests::bin_dir().join("ringup"))
        .args(["bench", "--json", "--quiet", "--router", &cluster.url("")])
        .env("RINGUP_TOKEN_FILE", cluster.layout.admin_token_file())
        .args(["--shops", &SHOPS.to_string(), "--batch", &BATCH.to_string(), "--requests", &REQUESTS.to_string()])
        .args(["--concurrency", "4", "--consistency", "all", "--seed", "7"])
        .args(extra)
        .output()
        .await
        .expect("ringup bench runs");
    assert!(out.status.success(), "ringup bench failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Live records over the bench's shops, counted at ALL.
async fn stored(cluster: &TestCluster) -> u64 {
    let mut total = 0;
    for shop in 0..SHOPS {
        let (status, body) = cluster.get(&format!("/v1/shops/bench-shop-{shop:05}/sales/_count?consistency=all")).await;
        assert_eq!(status, 200, "{body}");
        total += body["count"].as_u64().expect("count");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_reports_what_it_did() {
    let cluster = TestCluster::start(3).await;
    let first = bench(&cluster, &MIX).await;
    let ops = &first["ops"];
    assert_eq!(first["requests"], REQUESTS, "{first}");
    assert_eq!(first["errors"], 0, "{first}");
    let per_op: u64 = ["write", "get", "list"].iter().map(|op| ops[op]["requests"].as_u64().unwrap_or(0)).sum();
    assert_eq!(per_op, REQUESTS, "{first}");
    let writes = ops["write"]["requests"].as_u64().expect("writes happened");
    assert!(ops["get"]["requests"].as_u64() > Some(0) && ops["list"]["requests"].as_u64() > Some(0), "{first}");
    assert_eq!(ops["write"]["records"], writes * BATCH, "{first}");
    assert_eq!(ops["get"]["records"], ops["get"]["requests"], "every get found its record: {first}");
    assert_eq!(stored(&cluster).await, writes * BATCH, "every record written is stored, once");
    for q in ["p50", "p90", "p99", "p99.9", "max"] {
        assert!(ops["write"]["latency_ms"][q].as_f64() > Some(0.0), "{q}: {first}");
    }

    let second = bench(&cluster, &MIX).await;
    assert_eq!(second["ops"]["write"]["requests"], writes, "the same seed makes the same choices");
    assert_eq!(stored(&cluster).await, writes * BATCH, "the same seed writes the same records");
    eprintln!(
        "ringup bench smoke: {REQUESTS} requests ({writes} batch writes of {BATCH}), {} records/s, write p99 {} ms",
        first["records_per_s"], ops["write"]["latency_ms"]["p99"]
    );

    let paced = bench(&cluster, &["--gets", "50", "--preload", "2", "--rate", "200"]).await;
    assert_eq!(paced["requests"], REQUESTS, "a paced run sends exactly --requests: {paced}");
    assert_eq!(paced["errors"], 0, "{paced}");
    assert_eq!(paced["settings"]["rate_asked"], 200.0, "{paced}");
    let achieved = paced["rate_achieved"].as_f64().expect("an achieved rate");
    assert!(achieved > 0.0 && achieved < 300.0, "about 200 requests/s, not more: {paced}");
    assert_eq!(paced["ops"]["get"]["records"], paced["ops"]["get"]["requests"], "every paced get found its record");

    let hot = bench(&cluster, &["--gets", "100", "--preload", "2", "--zipf", "1.1"]).await;
    assert_eq!(hot["ops"]["get"]["requests"], REQUESTS, "only GETs: {hot}");
    assert_eq!(hot["ops"]["get"]["records"], REQUESTS, "every Zipf get found its record: {hot}");
    assert_eq!(hot["errors"], 0, "{hot}");
    assert!(cluster.stop_all().await.is_empty());
}

//! `scripts/bench-peers.sh --smoke`: the peer comparison still works end to
//! end. It starts ringup (secured, then plain), a Redis Cluster and
//! PostgreSQL on loopback, sends
//! each (and the RocksDB ceiling) 40 writes, 40 GETs, and 40 GETs at a
//! fixed rate of half the rate the GETs reached (open loop), with 4
//! clients, and prints the three tables: writes, reads, and latency at half
//! the maximum GET rate. Every run must have done exactly what it was asked
//! with no errors; how fast is not checked here (see BENCHMARKS.md).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const SYSTEMS: [&str; 5] = ["ringup", "ringup-plain", "redis", "postgres", "rocksdb"];
/// How each system's rows start in the tables, in the order of `SYSTEMS`.
const ROWS: [&str; 5] = [
    "ringup, router, quorum",
    "ringup (no TLS, no encryption), router, quorum",
    "redis cluster, WAIT 1",
    "postgresql",
    "rocksdb ceiling, 2 of 3",
];
/// The title of the third table.
const LATENCY_TITLE: &str = "latency: GET p50/p99 at half of each system's maximum GET rate";
const REQUESTS: u64 = 40;
const BATCH: u64 = 10;
/// The script's exit status when a peer cannot be installed.
const PEERS_UNAVAILABLE: i32 = 75;

fn summary(dir: &Path, phase: &str, system: &str) -> Value {
    let path = dir.join(format!("{phase}-{system}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()));
    serde_json::from_str(&text).expect("a JSON summary")
}

#[test]
fn the_peer_comparison_runs_against_every_system() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let out = tempfile::tempdir().expect("a temporary directory");
    let run = Command::new("bash")
        .arg(root.join("scripts/bench-peers.sh"))
        .args(["--smoke", "--bin-dir"])
        .arg(ringup_tests::bin_dir())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("bash runs the script");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_ne!(run.status.code(), Some(PEERS_UNAVAILABLE), "Redis or PostgreSQL could not be installed: {stderr}");
    assert!(run.status.success(), "bench-peers.sh failed:\n{stderr}");

    for system in SYSTEMS {
        let writes = summary(out.path(), "write", system);
        assert_eq!(writes["ops"]["write"]["requests"], REQUESTS, "{system} writes: {writes}");
        assert_eq!(writes["ops"]["write"]["records"], REQUESTS * BATCH, "{system} writes: {writes}");
        assert_eq!(writes["errors"], 0, "{system} writes: {writes}");
        let gets = summary(out.path(), "get", system);
        assert_eq!(gets["ops"]["get"]["requests"], REQUESTS, "{system} gets: {gets}");
        assert_eq!(gets["ops"]["get"]["records"], REQUESTS, "every get found its record on {system}: {gets}");
        assert_eq!(gets["errors"], 0, "{system} gets: {gets}");
        let paced = summary(out.path(), "latency", system);
        assert_eq!(paced["ops"]["get"]["requests"], REQUESTS, "{system} paced gets: {paced}");
        assert_eq!(paced["ops"]["get"]["records"], REQUESTS, "every paced get found its record on {system}: {paced}");
        assert_eq!(paced["errors"], 0, "{system} paced gets: {paced}");
        let half = (gets["ops"]["get"]["requests_per_s"].as_f64().unwrap() / 2.0).max(1.0);
        let asked = paced["settings"]["rate_asked"].as_f64().expect("the latency phase has a rate");
        assert!((asked - half).abs() <= 0.051, "{system}: asked {asked}/s, half the GET rate is {half}/s");
        assert!(paced["rate_achieved"].as_f64() > Some(0.0), "{system} reports its achieved rate: {paced}");
    }
    let tables = std::fs::read_to_string(out.path().join("tables.txt")).expect("the tables are kept");
    for row in ROWS {
        let rows = tables.lines().filter(|line| line.starts_with(row)).count();
        assert_eq!(rows, 3, "a write row, a read row and a latency row for {row}:\n{tables}");
    }
    let latency = tables.split("\n\n").find(|table| table.starts_with(LATENCY_TITLE));
    let latency = latency.unwrap_or_else(|| panic!("a third table, of latency:\n{tables}"));
    let rows: Vec<&str> = latency.lines().skip(2).filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(rows.len(), SYSTEMS.len(), "one latency row per system:\n{latency}");
    for (line, row) in rows.iter().zip(ROWS) {
        assert!(line.starts_with(row), "the latency rows in order, {row} here:\n{latency}");
    }
    println!("{tables}");
}

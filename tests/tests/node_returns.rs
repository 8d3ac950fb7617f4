//! A node away for a minute, then back, under QUORUM load, with real
//! processes on loopback: 8 writers push batches of 20 records into 100
//! shops; at 10 s node 1 is stopped with SIGTERM, at 70 s it is started
//! again on the same data, and at 90 s the load stops.
//!
//! With one node out at a time every QUORUM write must be acknowledged at
//! the first attempt, while the node is away and after it is back: a
//! single 503 fails the test, retried or not. Then every acknowledged
//! record reads back at ALL with its newest value, and every partition's
//! replicas hold the same records within 60 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringup_tests::TestCluster;
use ringup_tests::healing::wait_converged;
use ringup_tests::load::away::{AFTER, AWAY, BEFORE, SPEC, first_misses, summary};
use ringup_tests::load::{Ledger, Load, lost_records};
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_back_after_a_minute_away_fails_no_quorum_write() {
    let cluster = TestCluster::start(3).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let load = Load::start(cluster.http(), &cluster.layout.router_url(), SPEC, &ledger);
    tokio::time::sleep(BEFORE).await;
    assert!(cluster.stop_node(1).await, "node 1 did not stop on SIGTERM");
    let stopped = started.elapsed();
    tokio::time::sleep(AWAY).await;
    let back = Instant::now();
    cluster.start_node(1).await;
    tokio::time::sleep(AFTER).await;
    load.stop().await;

    let l = ledger.lock().await;
    let lost = lost_records(cluster.http(), &cluster.layout.router_url(), &l.acked, "all").await;
    let converged = wait_converged(&cluster, Duration::from_secs(60)).await;
    let at = |t: Instant| t.duration_since(started).as_secs_f64();
    println!(
        "node 1 stopped at {:.1} s, started again at {:.1} s: {}; replicas equal {:.1} s after the load",
        stopped.as_secs_f64(),
        at(back),
        summary(&l, back, lost.len()),
        converged.as_secs_f64()
    );
    let misses = first_misses(&l, started);
    assert!(misses.is_empty(), "QUORUM writes were not acknowledged:\n{}\n{}", misses.join("\n"), cluster.logs().await);
    assert!(lost.is_empty(), "acknowledged records lost:\n{}", lost[..lost.len().min(10)].join("\n"));
    assert!(cluster.stop_all().await.is_empty());
}

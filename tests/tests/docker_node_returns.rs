//! The scenario of a node away for a minute, on the containers of
//! `docker-compose.yml`: 8 writers push QUORUM batches of 20 records into
//! 100 shops; at 10 s `node1`'s container is stopped (SIGTERM, as `docker
//! compose stop` does), at 70 s it is started again, and at 90 s the load
//! stops.
//!
//! Every QUORUM write must be acknowledged at the first attempt, while the
//! node is away and after it is back: a single 503 fails the test, retried
//! or not. Then every acknowledged record reads back at ALL with its newest
//! value. Without a Docker daemon the test fails, saying why.

use std::sync::Arc;
use std::time::Instant;

use ringup_tests::docker::{self, DockerCluster};
use ringup_tests::load::away::{AFTER, AWAY, BEFORE, SPEC, first_misses, summary};
use ringup_tests::load::{Ledger, Load, lost_records};
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_container_back_after_a_minute_away_fails_no_quorum_write() {
    if let Some(reason) = docker::unavailable().await {
        panic!("docker_node_returns needs Docker: {reason}");
    }
    let cluster = DockerCluster::up(&ringup_tests::bin_dir()).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let load = Load::start(cluster.http(), &cluster.router_url, SPEC, &ledger);
    tokio::time::sleep(BEFORE).await;
    cluster.stop("node1").await;
    let stopped = started.elapsed();
    tokio::time::sleep(BEFORE + AWAY - stopped).await;
    let back = Instant::now();
    cluster.start("node1").await;
    let serving = cluster.wait_serving("node1").await;
    tokio::time::sleep(AFTER.saturating_sub(back.elapsed())).await;
    load.stop().await;

    let l = ledger.lock().await;
    let lost = lost_records(cluster.http(), &cluster.router_url, &l.acked, "all").await;
    let at = |t: Instant| t.duration_since(started).as_secs_f64();
    println!(
        "docker compose stop node1 at {:.1} s, start at {:.1} s (serving {:.1} s later): {}",
        stopped.as_secs_f64(),
        at(back),
        serving.as_secs_f64(),
        summary(&l, back, lost.len()),
    );
    let misses = first_misses(&l, started);
    assert!(misses.is_empty(), "QUORUM writes were not acknowledged:\n{}\n{}", misses.join("\n"), cluster.logs().await);
    assert!(lost.is_empty(), "acknowledged records lost:\n{}", lost[..lost.len().min(10)].join("\n"));
}

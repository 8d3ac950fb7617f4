//! A fresh cluster of four initial nodes: the first three vote in the
//! metadata group, the fourth is a learner, and all four hold an even share
//! of the partition replicas and serve reads and writes at ALL.

use ringup_tests::TestCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_initial_nodes_share_the_ring() {
    let cluster = TestCluster::start(4).await;
    let (status, map) = cluster.get("/v1/cluster").await;
    assert_eq!(status, 200);
    let nodes = map["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4, "{map}");
    let partitions = map["partitions"].as_u64().expect("partitions");
    let replicas: Vec<u64> = nodes.iter().map(|n| n["partition_replicas"].as_u64().expect("load")).collect();
    assert_eq!(replicas.iter().sum::<u64>(), partitions * 3, "{map}");
    let mean = (partitions * 3) as f64 / 4.0;
    for load in &replicas {
        assert!((*load as f64) <= mean * 1.05, "uneven load {replicas:?}");
    }
    eprintln!("4 initial nodes: partition replicas per node {replicas:?}");

    // Shops spread over the whole ring; each must be written to and read
    // from all three of its replicas.
    for s in 0..40 {
        let path = format!("/v1/shops/four-{s}/sales?consistency=all");
        let (status, body) = cluster.post_json(&path, &json!([{"id": "r", "shop": s}])).await;
        assert_eq!((status.as_u16(), body["written"].clone()), (200, json!(1)), "{body}");
        let (status, body) = cluster.get(&format!("/v1/shops/four-{s}/sales/r?consistency=all")).await;
        assert_eq!((status.as_u16(), body["shop"].clone()), (200, json!(s)), "{body}");
    }
    assert!(cluster.stop_all().await.is_empty(), "every process should stop on SIGTERM");
}

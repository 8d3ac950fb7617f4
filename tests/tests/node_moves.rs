//! A node restarted on a new address announces it through the metadata
//! group: the epoch rises, the router follows the new map, and ALL reads and
//! writes reach the node where it now listens.

use std::time::{Duration, Instant};

use ringup_tests::TestCluster;
use serde_json::{Value, json};

const SHOPS: usize = 10;

async fn write_all_shops(cluster: &TestCluster, round: i64, level: &str) {
    for s in 0..SHOPS {
        let batch: Vec<Value> = (0..20).map(|k| json!({"id": format!("r{k}"), "round": round})).collect();
        let path = format!("/v1/shops/move-{s}/sales?consistency={level}");
        let (status, body) = cluster.post_json(&path, &Value::Array(batch)).await;
        assert_eq!(status, 200, "round {round} at {level}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_on_a_new_address_is_followed_by_the_map_and_the_router() {
    let cluster = TestCluster::start(3).await;
    write_all_shops(&cluster, 1, "all").await;
    let (_, before) = cluster.get("/v1/cluster").await;
    let epoch = before["epoch"].as_u64().expect("epoch");

    let moved_to = cluster.move_node(3).await.to_string();
    let started = Instant::now();
    let after = loop {
        let (_, now) = cluster.get("/v1/cluster").await;
        let node3 = now["nodes"].as_array().unwrap().iter().find(|n| n["id"] == 3).cloned().unwrap();
        if node3["addr"] == json!(moved_to) && node3["live"] == true {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the map never showed node 3 at {moved_to}: {now}\n{}",
            cluster.logs().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("node 3 moved to {moved_to}; the router saw epoch {} after {:?}", after["epoch"], started.elapsed());
    assert_eq!(after["epoch"], json!(epoch + 1), "one address change is one epoch");

    write_all_shops(&cluster, 2, "all").await;
    for s in 0..SHOPS {
        let (status, record) = cluster.get(&format!("/v1/shops/move-{s}/sales/r7?consistency=all")).await;
        assert_eq!((status.as_u16(), &record["round"]), (200, &json!(2)), "{record}");
    }
    assert!(cluster.stop_all().await.is_empty());
}

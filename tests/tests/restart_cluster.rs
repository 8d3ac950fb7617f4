//! Restart the whole cluster on the same data directories: the map, the
//! members and all the data are intact.

use ringup_tests::TestCluster;
use serde_json::{Value, json};

const SHOPS: usize = 20;
const RECORDS: usize = 50;

fn shop(i: usize) -> String {
    format!("restart-shop-{i}")
}

/// The parts of `GET /v1/cluster` that must survive a restart.
fn durable_view(cluster: &Value) -> Value {
    let nodes: Vec<Value> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| json!({"id": n["id"], "addr": n["addr"], "state": n["state"], "partition_replicas": n["partition_replicas"]}))
        .collect();
    json!({"epoch": cluster["epoch"], "partitions": cluster["partitions"],
           "replication_factor": cluster["replication_factor"], "nodes": nodes})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_restart_keeps_map_members_and_data() {
    let cluster = TestCluster::start(3).await;
    for s in 0..SHOPS {
        let batch: Vec<Value> = (0..RECORDS).map(|k| json!({"id": format!("r{k}"), "k": k, "shop_no": s})).collect();
        let (status, body) = cluster.post_json(&format!("/v1/shops/{}/items", shop(s)), &Value::Array(batch)).await;
        assert_eq!(status, 200, "{body}");
    }
    // Overwrite one record and delete another in every shop.
    for s in 0..SHOPS {
        let put = json!({"k": -1}).to_string().into_bytes();
        let (status, _) = cluster
            .call(reqwest::Method::PUT, &format!("/v1/shops/{}/items/r0", shop(s)), Some("application/json"), put)
            .await;
        assert_eq!(status, 200);
        let (status, _) =
            cluster.call(reqwest::Method::DELETE, &format!("/v1/shops/{}/items/r1", shop(s)), None, vec![]).await;
        assert_eq!(status, 204);
    }
    let (_, before) = cluster.get("/v1/cluster").await;

    let killed = cluster.stop_all().await;
    assert!(killed.is_empty(), "{killed:?} did not stop on SIGTERM");
    cluster.start_all().await;

    let (status, after) = cluster.get("/v1/cluster").await;
    assert_eq!(status, 200);
    assert_eq!(durable_view(&after), durable_view(&before), "the cluster map changed across a restart");
    assert_eq!(after["nodes"].as_array().unwrap().len(), 3);

    for s in 0..SHOPS {
        let (_, count) = cluster.get(&format!("/v1/shops/{}/items/_count?consistency=all", shop(s))).await;
        assert_eq!(count["count"], json!(RECORDS - 1), "shop {s} count");
        let (status, deleted) = cluster.get(&format!("/v1/shops/{}/items/r1?consistency=all", shop(s))).await;
        assert_eq!(status, 404, "a deleted record came back: {deleted}");
        let (_, overwritten) = cluster.get(&format!("/v1/shops/{}/items/r0?consistency=all", shop(s))).await;
        assert_eq!(overwritten["k"], json!(-1));
        let (_, page) = cluster.get(&format!("/v1/shops/{}/items?limit=1000&consistency=all", shop(s))).await;
        let records = page["records"].as_array().expect("records");
        assert_eq!(records.len(), RECORDS - 1);
        for r in records.iter().filter(|r| r["id"] != json!("r0")) {
            assert_eq!(r["shop_no"], json!(s), "{r}");
            assert_eq!(format!("r{}", r["k"]), r["id"].as_str().unwrap(), "{r}");
        }
    }
    eprintln!(
        "{} records in {SHOPS} shops intact after a full restart at epoch {}",
        SHOPS * (RECORDS - 1),
        after["epoch"]
    );
    assert!(cluster.stop_all().await.is_empty());
}

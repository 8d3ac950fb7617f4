//! When a consistency level cannot be met, the router answers 503 with
//! Retry-After, never 200; lower levels keep working.

use ringup_tests::TestCluster;
use serde_json::{Value, json};

/// Posts one record at `level`; returns the status, the Retry-After header
/// and the error code.
async fn write(cluster: &TestCluster, id: &str, level: &str) -> (u16, Option<String>, Value) {
    let response = cluster
        .http()
        .post(cluster.url(&format!("/v1/shops/avail/sales?consistency={level}")))
        .json(&json!([{"id": id, "level": level}]))
        .send()
        .await
        .expect("the router answers");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_string());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body["error"]["code"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmet_levels_get_503_with_retry_after() {
    let cluster = TestCluster::start(3).await;
    assert_eq!(write(&cluster, "a", "all").await.0, 200);

    cluster.kill_node(3).await;
    let (status, retry_after, code) = write(&cluster, "b", "all").await;
    assert_eq!((status, code), (503, json!("not_enough_replicas")), "ALL with a node down");
    assert!(retry_after.is_some(), "a 503 carries Retry-After");
    assert_eq!(write(&cluster, "c", "quorum").await.0, 200, "QUORUM with one node down");
    let (status, _) = cluster.get("/v1/shops/avail/sales/a?consistency=all").await;
    assert_eq!(status, 503, "an ALL read with a node down");

    cluster.kill_node(2).await;
    let (status, retry_after, code) = write(&cluster, "d", "quorum").await;
    assert_eq!((status, code), (503, json!("not_enough_replicas")), "QUORUM with two nodes down");
    assert!(retry_after.is_some());
    assert_eq!(write(&cluster, "e", "one").await.0, 200, "ONE with one node left");
    let (status, record) = cluster.get("/v1/shops/avail/sales/c?consistency=one").await;
    assert_eq!((status.as_u16(), &record["level"]), (200, &json!("quorum")));
    cluster.stop_all().await;
}

//! The records API end to end: NDJSON ingest, PUT, PATCH, DELETE, paging
//! through a collection with deleted records, and counting.

use reqwest::Method;
use ringup_tests::TestCluster;
use serde_json::{Value, json};

const COLLECTION: &str = "/v1/shops/api-shop/orders";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_can_be_written_patched_deleted_listed_and_counted() {
    let cluster = TestCluster::start(3).await;

    let ndjson: String =
        (0..50).map(|i| format!("{{\"id\":\"o-{i:02}\",\"n\":{i},\"ts\":\"2026-01-01T00:00:{i:02}Z\"}}\n")).collect();
    let (status, body) =
        cluster.call(Method::POST, COLLECTION, Some("application/x-ndjson"), ndjson.into_bytes()).await;
    assert_eq!((status.as_u16(), body), (200, json!({"written": 50})));

    for i in (0..50).step_by(5) {
        let (status, _) = cluster.call(Method::DELETE, &format!("{COLLECTION}/o-{i:02}"), None, vec![]).await;
        assert_eq!(status, 204);
    }
    let (status, _) = cluster.call(Method::DELETE, &format!("{COLLECTION}/o-00"), None, vec![]).await;
    assert_eq!(status, 204, "DELETE is idempotent");

    let patch = json!({"n": null, "status": "paid"}).to_string().into_bytes();
    let path = format!("{COLLECTION}/o-01");
    let (status, _) = cluster.call(Method::PATCH, &path, Some("application/merge-patch+json"), patch).await;
    assert_eq!(status, 200);
    let (_, patched) = cluster.get(&path).await;
    assert_eq!(
        patched,
        json!({"id": "o-01", "ts": 1_767_225_601_000i64, "status": "paid"}),
        "merge patch removed n, kept ts"
    );
    let (status, _) =
        cluster.call(Method::PATCH, &format!("{COLLECTION}/o-00"), Some("application/json"), b"{}".to_vec()).await;
    assert_eq!(status, 404, "a deleted record cannot be patched");

    let put = json!({"id": "o-99", "n": 99}).to_string().into_bytes();
    let (status, _) = cluster.call(Method::PUT, &format!("{COLLECTION}/o-99"), Some("application/json"), put).await;
    assert_eq!(status, 200);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let query = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (status, page) = cluster.get(&format!("{COLLECTION}?limit=7{query}")).await;
        assert_eq!(status, 200, "{page}");
        let records = page["records"].as_array().expect("records");
        assert!(records.len() <= 7, "a page holds at most limit records");
        seen.extend(records.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        match &page["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            _ => break,
        }
    }
    let expected: Vec<String> =
        (0..50).filter(|i| i % 5 != 0).map(|i| format!("o-{i:02}")).chain(["o-99".to_string()]).collect();
    assert_eq!(seen, expected, "paging returns every live record once, in id order");

    let (_, count) = cluster.get(&format!("{COLLECTION}/_count")).await;
    assert_eq!(count, json!({"count": expected.len()}));
    eprintln!("paged through {} live records 7 at a time, with 10 deleted ones skipped", expected.len());
    assert!(cluster.stop_all().await.is_empty());
}

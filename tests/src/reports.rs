//! A sales dataset for the report tests, written through the API and kept
//! in memory so that tests compute expected results from what they sent.

use serde_json::{Value, json};

use crate::TestCluster;

/// 2026-03-01T00:00:00Z in epoch milliseconds.
pub const MARCH_1_MS: i64 = 1_772_323_200_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// One sale as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    /// The shop.
    pub shop: String,
    /// The record id.
    pub id: String,
    /// Event time, epoch ms.
    pub ts: i64,
    /// Absent in some records.
    pub amount: Option<i64>,
    /// Quarters only, so that sums are exact in any order; absent in some.
    pub price: Option<f64>,
    /// JSON null in some records.
    pub region: Option<&'static str>,
    /// Mixed case, to check byte-wise ordering.
    pub status: &'static str,
    /// Always present.
    pub paid: bool,
}

impl Sale {
    /// The record as JSON: a missing amount is left out, a missing price
    /// too, a missing region is `null`.
    pub fn json(&self) -> Value {
        let mut v =
            json!({"id": self.id, "ts": self.ts, "region": self.region, "status": self.status, "paid": self.paid});
        if let Some(a) = self.amount {
            v["amount"] = json!(a);
        }
        if let Some(p) = self.price {
            v["price"] = json!(p);
        }
        v
    }
}

/// A deterministic sequence of pseudo-random numbers.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// `shops` shops with between 1 and `max_per_shop` sales each, spread over
/// ten days from 2026-03-01.
pub fn sales(shops: usize, max_per_shop: u64, seed: u64) -> Vec<Sale> {
    const REGIONS: [Option<&str>; 5] = [Some("eu"), Some("us"), Some("apac"), None, Some("eu")];
    const STATUSES: [&str; 4] = ["open", "paid", "Open", "refunded"];
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    for s in 0..shops {
        let shop = format!("shop-{s:03}");
        for k in 0..1 + rng.below(max_per_shop) {
            out.push(Sale {
                shop: shop.clone(),
                id: format!("sale-{k:04}"),
                ts: MARCH_1_MS + rng.below(240) as i64 * HOUR_MS + rng.below(3_600_000) as i64,
                amount: (rng.below(7) != 0).then(|| rng.below(100) as i64 - 10),
                price: (rng.below(5) != 0).then(|| rng.below(400) as f64 * 0.25),
                region: REGIONS[rng.below(5) as usize],
                status: STATUSES[rng.below(4) as usize],
                paid: rng.below(2) == 0,
            });
        }
    }
    out
}

/// Writes `sales` into `collection` at ALL, one batch per shop: every
/// replica holds them once this returns, so a report at ONE, whichever
/// replica it reads, sees them all.
pub async fn write(cluster: &TestCluster, collection: &str, sales: &[Sale]) {
    write_at(cluster, collection, sales, "all").await;
}

/// [`write`] at the consistency level `level`.
pub async fn write_at(cluster: &TestCluster, collection: &str, sales: &[Sale], level: &str) {
    let mut by_shop: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
    for s in sales {
        by_shop.entry(&s.shop).or_default().push(s.json());
    }
    for (shop, batch) in by_shop {
        let n = batch.len();
        let (status, body) = cluster
            .post_json(&format!("/v1/shops/{shop}/{collection}?consistency={level}"), &Value::Array(batch))
            .await;
        assert!(status == 200 && body["written"] == json!(n), "writing {shop}: {status} {body}");
    }
}

/// Runs a report; returns the status and the body as text.
pub async fn query_text(cluster: &TestCluster, sql: &str, consistency: &str, accept: &str) -> (u16, String) {
    let response = cluster
        .http()
        .post(cluster.url(&format!("/v1/query?consistency={consistency}")))
        .header("accept", accept)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Runs a report at ONE and returns its JSON, which must be a 200.
pub async fn query(cluster: &TestCluster, sql: &str) -> Value {
    let (status, text) = query_text(cluster, sql, "one", "application/json").await;
    assert_eq!(status, 200, "{sql}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sql}: {e}: {text}"))
}

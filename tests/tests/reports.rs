//! Reports on a local cluster: a table of queries over sales from many
//! shops, each answer compared with a result this test computes from the
//! records it wrote; then a report kept running while a node is killed
//! with SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::DateTime;
use ringup_tests::TestCluster;
use ringup_tests::reports::{self, HOUR_MS, MARCH_1_MS, Sale};
use serde_json::{Value, json};

/// RFC 3339 in UTC of epoch milliseconds.
fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).expect("a valid time").format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// SQL's three-valued AND, OR and NOT over `Option<bool>`.
fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// JSON for an integer sum, an average or a NULL, as the API writes them.
fn num(x: Option<f64>) -> Value {
    match x {
        None => Value::Null,
        Some(x) if x.fract() == 0.0 && x.abs() < 9e15 => json!(x as i64),
        Some(x) => json!(x),
    }
}

/// The expected answers, computed from `sales` (the live records of the
/// `sales` collection) without any of ringup's code.
fn expectations(sales: &[Sale]) -> Vec<(String, Value)> {
    let mut cases = Vec::new();
    let amounts: Vec<i64> = sales.iter().filter_map(|s| s.amount).collect();
    let sum = amounts.iter().sum::<i64>();
    cases.push((
        "SELECT count(*), count(amount), sum(amount), min(amount), max(amount), avg(amount) FROM sales".to_string(),
        json!([[
            sales.len(),
            amounts.len(),
            sum,
            amounts.iter().min(),
            amounts.iter().max(),
            num(Some(sum as f64 / amounts.len() as f64))
        ]]),
    ));

    // The NULL region is a group of its own, ordered last ascending.
    let mut by_region: BTreeMap<Option<&str>, (usize, Option<f64>)> = BTreeMap::new();
    for s in sales {
        let e = by_region.entry(s.region).or_default();
        e.0 += 1;
        if let Some(p) = s.price {
            e.1 = Some(e.1.unwrap_or(0.0) + p);
        }
    }
    let mut rows: Vec<Value> =
        by_region.iter().filter(|(r, _)| r.is_some()).map(|(r, (n, p))| json!([r, n, num(*p)])).collect();
    if let Some((n, p)) = by_region.get(&None) {
        rows.push(json!([null, n, num(*p)]));
    }
    cases.push(("SELECT region, count(*), sum(price) FROM sales GROUP BY region ORDER BY region".into(), json!(rows)));

    // Shops by total amount, descending: a shop without amounts has a NULL
    // total, which sorts first descending.
    let mut totals: BTreeMap<&str, Option<i64>> = BTreeMap::new();
    for s in sales {
        let t = totals.entry(&s.shop).or_default();
        if let Some(a) = s.amount {
            *t = Some(t.unwrap_or(0) + a);
        }
    }
    let mut ranked: Vec<(&str, Option<i64>)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| match (a.1, b.1) {
        (None, None) => a.0.cmp(b.0),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x).then(a.0.cmp(b.0)),
    });
    let top: Vec<Value> = ranked.iter().take(5).map(|(s, t)| json!([s, t])).collect();
    cases.push((
        "SELECT shop, sum(amount) AS total FROM sales GROUP BY shop ORDER BY total DESC, shop LIMIT 5".into(),
        json!(top),
    ));

    // Days within a ts range, with two spellings of timestamp literals.
    let (from, to) = (MARCH_1_MS + 24 * HOUR_MS, MARCH_1_MS + 96 * HOUR_MS);
    let mut days: BTreeMap<i64, usize> = BTreeMap::new();
    for s in sales.iter().filter(|s| s.ts >= from && s.ts < to) {
        *days.entry(s.ts - s.ts.rem_euclid(24 * HOUR_MS)).or_default() += 1;
    }
    let rows: Vec<Value> = days.iter().map(|(d, n)| json!([rfc3339(*d), n])).collect();
    cases.push((
        "SELECT date_trunc('day', ts) AS day, count(*) FROM sales \
         WHERE ts >= '2026-03-02' AND ts < TIMESTAMP '2026-03-05 00:00:00' GROUP BY day ORDER BY day"
            .into(),
        json!(rows),
    ));
    let before = MARCH_1_MS + 60 * HOUR_MS;
    cases.push((
        "SELECT count(*) FROM sales WHERE ts < '2026-03-03T12:00:00Z'".into(),
        json!([[sales.iter().filter(|s| s.ts < before).count()]]),
    ));

    // Three-valued logic over IN, OR, NOT and BETWEEN.
    let passes = |s: &Sale| {
        let region_in = s.region.map(|r| r == "eu" || r == "us");
        let open = Some(s.status == "open");
        let between = s.amount.map(|a| (10..=60).contains(&a));
        and(and(or(region_in, open), Some(!s.paid)), between) == Some(true)
    };
    cases.push((
        "SELECT count(*) FROM sales WHERE (region IN ('eu', 'us') OR status = 'open') AND NOT paid \
         AND amount BETWEEN 10 AND 60"
            .into(),
        json!([[sales.iter().filter(|s| passes(s)).count()]]),
    ));
    // NOT IN with a NULL in the list is never true.
    cases.push(("SELECT count(*) FROM sales WHERE region NOT IN ('eu', NULL)".into(), json!([[0]])));
    cases.push((
        "SELECT count(*) FROM sales WHERE region IS NULL OR amount IS NULL".into(),
        json!([[sales.iter().filter(|s| s.region.is_none() || s.amount.is_none()).count()]]),
    ));
    cases.push((
        "SELECT count(*) FROM sales WHERE amount IS NOT NULL AND amount <> 20 AND NOT (amount > 50)".into(),
        json!([[sales.iter().filter(|s| s.amount.is_some_and(|a| a != 20 && a <= 50)).count()]]),
    ));

    // count(DISTINCT) per group; text ordered byte-wise ("Open" < "open").
    let mut statuses: BTreeMap<Option<&str>, BTreeSet<&str>> = BTreeMap::new();
    for s in sales {
        statuses.entry(s.region).or_default().insert(s.status);
    }
    let mut rows: Vec<Value> = statuses.iter().rev().map(|(r, set)| json!([r, set.len()])).collect();
    rows.rotate_right(usize::from(statuses.contains_key(&None)));
    cases
        .push(("SELECT region, count(DISTINCT status) FROM sales GROUP BY 1 ORDER BY region DESC".into(), json!(rows)));
    let all: BTreeSet<&str> = sales.iter().map(|s| s.status).collect();
    cases.push(("SELECT min(status), max(status) FROM sales".into(), json!([[all.first(), all.last()]])));

    // Plain rows ordered and limited.
    let mut rows: Vec<&Sale> = sales.iter().filter(|s| s.amount.is_some()).collect();
    rows.sort_by(|a, b| b.amount.cmp(&a.amount).then(a.shop.cmp(&b.shop)).then(a.id.cmp(&b.id)));
    let rows: Vec<Value> = rows.iter().take(7).map(|s| json!([s.shop, s.id, s.amount])).collect();
    cases.push((
        "SELECT shop, id, amount FROM sales WHERE amount IS NOT NULL ORDER BY amount DESC, shop, id LIMIT 7".into(),
        json!(rows),
    ));

    // Over no rows: count is 0 and sum NULL; grouped, no rows at all.
    cases.push((
        "SELECT count(*), sum(amount), max(status) FROM sales WHERE amount > 1000000".into(),
        json!([[0, null, null]]),
    ));
    cases.push(("SELECT region, count(*) FROM sales WHERE amount > 1000000 GROUP BY region".into(), json!([])));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_match_results_computed_from_the_records_written() {
    let cluster = TestCluster::start(3).await;
    let mut sales = reports::sales(60, 30, 7);
    reports::write(&cluster, "sales", &sales).await;
    // Another collection, which no report on sales may read.
    let refunds = reports::sales(5, 3, 8);
    reports::write(&cluster, "refunds", &refunds).await;
    // Deleted records are not counted. Deleted at ALL, as everything here
    // is written, so that a report at ONE sees it whichever replica it reads.
    for s in sales.iter().step_by(9) {
        let path = format!("/v1/shops/{}/sales/{}?consistency=all", s.shop, s.id);
        let (status, body) = cluster.call(reqwest::Method::DELETE, &path, None, Vec::new()).await;
        assert!(status.is_success(), "delete: {status} {body}");
    }
    let deleted: BTreeSet<(String, String)> = sales.iter().step_by(9).map(|s| (s.shop.clone(), s.id.clone())).collect();
    sales.retain(|s| !deleted.contains(&(s.shop.clone(), s.id.clone())));

    let cases = expectations(&sales);
    for (sql, expected) in &cases {
        let answer = reports::query(&cluster, sql).await;
        assert_eq!(answer["rows"], *expected, "{sql}\nanswer: {answer}");
    }
    println!("{} report queries over {} sales from 60 shops answered as computed", cases.len(), sales.len());

    let answer = reports::query(&cluster, "SELECT count(*) AS n FROM refunds").await;
    assert_eq!(answer, json!({"columns": ["n"], "rows": [[refunds.len()]]}));
    let answer =
        reports::query(&cluster, "SELECT date_trunc('month', ts) AS m, count(*) AS n FROM sales GROUP BY m").await;
    assert_eq!(answer, json!({"columns": ["m", "n"], "rows": [["2026-03-01T00:00:00Z", sales.len()]]}));

    // QUORUM, and CSV.
    let (status, text) =
        reports::query_text(&cluster, "SELECT count(*) FROM sales", "quorum", "application/json").await;
    assert_eq!((status, text), (200, format!("{{\"columns\":[\"count\"],\"rows\":[[{}]]}}", sales.len())));
    let (status, csv) = reports::query_text(
        &cluster,
        "SELECT region, count(*) AS n FROM sales GROUP BY region ORDER BY region",
        "one",
        "text/csv",
    )
    .await;
    assert_eq!(status, 200);
    let mut regions: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    sales.iter().for_each(|s| *regions.entry(s.region).or_default() += 1);
    let mut expected = String::from("region,n\r\n");
    for (r, n) in regions.iter().filter(|(r, _)| r.is_some()).chain(regions.iter().filter(|(r, _)| r.is_none())) {
        expected.push_str(&format!("{},{n}\r\n", r.unwrap_or("")));
    }
    assert_eq!(csv, expected);

    // Integer sums never overflow; the answer holds the exact number.
    let big: Vec<Value> = (0..3).map(|i| json!({"id": format!("b{i}"), "v": i64::MAX})).collect();
    let (status, _) = cluster.post_json("/v1/shops/big-shop/big?consistency=all", &Value::Array(big)).await;
    assert_eq!(status, 200);
    let (_, text) = reports::query_text(&cluster, "SELECT sum(v) FROM big", "one", "application/json").await;
    assert_eq!(text, format!("{{\"columns\":[\"sum\"],\"rows\":[[{}]]}}", 3 * i128::from(i64::MAX)));

    // A field of mixed JSON types: a value that cannot be summed counts
    // as NULL; count(x) counts every non-NULL value; min prefers numbers.
    let mixed =
        json!([{"id": "a", "v": 5}, {"id": "b", "v": "7"}, {"id": "c", "v": 2.5}, {"id": "d", "v": true}, {"id": "e"}]);
    let (status, _) = cluster.post_json("/v1/shops/mixed-shop/mixed?consistency=all", &mixed).await;
    assert_eq!(status, 200);
    let answer = reports::query(&cluster, "SELECT sum(v), count(v), min(v), max(v) FROM mixed").await;
    assert_eq!(answer["rows"], json!([[7.5, 4, 2.5, 5]]));
    let answer = reports::query(&cluster, "SELECT count(*) FROM mixed WHERE v = '7'").await;
    assert_eq!(answer["rows"], json!([[1]]), "an untyped literal compares with the string 7 only");

    // Bad input: 4xx JSON errors that say what is wrong.
    let bad = [
        ("SELECT count(*) FROM nosuch", 400, "unknown_table", "nosuch"),
        ("SELECT a.x FROM sales a JOIN refunds b ON a.id = b.id", 400, "unsupported_sql", "JOIN"),
        ("SELECT region, count(*) FROM sales", 400, "invalid_sql", "GROUP BY"),
        ("SELECT count(*) FROM sales WHERE ts > 'tomorrow'", 400, "invalid_sql", "timestamp"),
        ("SELECT id FROM sales", 400, "unsupported_sql", "LIMIT"),
        ("DROP TABLE sales", 400, "unsupported_sql", "DROP"),
        ("SELECT count(*) FROM sales WHERE", 400, "invalid_sql", "syntax"),
    ];
    for (sql, status, code, part) in bad {
        let (got, text) = reports::query_text(&cluster, sql, "one", "application/json").await;
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(got, status, "{sql}: {text}");
        assert_eq!(body["error"]["code"], code, "{sql}: {text}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(part), "{sql}: {text}");
    }
    let (status, body) =
        cluster.call(reqwest::Method::POST, "/v1/query", Some("application/json"), b"{\"sq\": 1}".to_vec()).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (400, Some("invalid_body")));
    // Nothing was changed by any of it.
    let answer = reports::query(&cluster, "SELECT count(*) FROM sales").await;
    assert_eq!(answer["rows"], json!([[sales.len()]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_survives_a_node_killed_while_it_runs() {
    let cluster = Arc::new(TestCluster::start(3).await);
    let sales = reports::sales(200, 300, 11);
    reports::write(&cluster, "sales", &sales).await;
    let sql = "SELECT shop, count(*), sum(amount), count(DISTINCT status) FROM sales GROUP BY shop ORDER BY shop";
    let mut expected: BTreeMap<&str, (usize, i64, BTreeSet<&str>)> = BTreeMap::new();
    for s in &sales {
        let e = expected.entry(&s.shop).or_default();
        e.0 += 1;
        e.1 += s.amount.unwrap_or(0);
        e.2.insert(s.status);
    }
    let expected: Vec<Value> = expected.iter().map(|(shop, (n, sum, st))| json!([shop, n, sum, st.len()])).collect();

    // Reports run back to back while node 2 is killed; each must answer
    // the full result, and at least one must span the kill.
    let killed = Arc::new(AtomicBool::new(false));
    let first_answered = Arc::new(tokio::sync::Notify::new());
    let runner = {
        let (cluster, killed, first_answered) = (cluster.clone(), killed.clone(), first_answered.clone());
        tokio::spawn(async move {
            let (mut answered, mut spanning) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && (spanning == 0 || answered < 5) {
                let before = killed.load(Ordering::SeqCst);
                let answer = reports::query(&cluster, sql).await;
                spanning += usize::from(!before && killed.load(Ordering::SeqCst));
                answered += 1;
                assert_eq!(answer["rows"], json!(expected), "report {answered} (spanning the kill: {spanning})");
                first_answered.notify_one();
            }
            (answered, spanning)
        })
    };
    // Once reports run back to back, the next one is under way.
    tokio::time::timeout(Duration::from_secs(30), first_answered.notified()).await.expect("a first report answers");
    cluster.kill_node(2).await;
    killed.store(true, Ordering::SeqCst);
    let (answered, spanning) = runner.await.expect("the report runner");
    assert!(spanning >= 1, "no report was running when the node was killed");
    println!(
        "{answered} reports over {} sales answered in full; {spanning} ran across the SIGKILL of node 2",
        sales.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_report_includes_every_write_acknowledged_at_quorum() {
    // No hints and no anti-entropy: only the report's own comparison can
    // bring node 3 the writes it missed.
    let cluster = TestCluster::start_with(3, None, &["--max-hint-mib", "0", "--anti-entropy-mib-per-sec", "0"]).await;
    let before = reports::sales(30, 20, 31);
    reports::write(&cluster, "sales", &before).await;
    assert!(cluster.stop_node(3).await, "node 3 stops");
    // Written at QUORUM by nodes 1 and 2 alone.
    let missed: Vec<Sale> =
        reports::sales(30, 20, 32).into_iter().map(|s| Sale { id: format!("late-{}", s.id), ..s }).collect();
    reports::write_at(&cluster, "sales", &missed, "quorum").await;
    cluster.start_node(3).await;
    cluster.wait_node_serving(3).await;
    cluster.wait_node_live(3).await;
    let total = before.len() + missed.len();

    // At ONE, the partitions node 3 scans lack what it missed. Until the
    // router's own connection to node 3 is dialed again (its liveness pings
    // have connections of their own, and a dial that failed while the node
    // was away backs off), a report's scans on node 3 fail over to the
    // others, which hold everything: so ask until node 3 takes part. A
    // report at ONE reconciles nothing, so asking again changes no copy.
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_one = loop {
        let one = reports::query(&cluster, "SELECT count(*) FROM sales").await;
        let at_one = one["rows"][0][0].as_u64().expect("a count") as usize;
        if at_one < total {
            break at_one;
        }
        assert!(
            Instant::now() < deadline,
            "at ONE node 3's stale copies never showed: {at_one} of {total}\n{}",
            cluster.logs().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, text) =
        reports::query_text(&cluster, "SELECT count(*), count(DISTINCT shop) FROM sales", "quorum", "application/json")
            .await;
    assert_eq!(status, 200, "{text}");
    let shops: BTreeSet<&str> = before.iter().chain(&missed).map(|s| s.shop.as_str()).collect();
    assert_eq!(text, format!("{{\"columns\":[\"count\",\"count\"],\"rows\":[[{total},{}]]}}", shops.len()));
    // The comparison pulled the missed writes into node 3's copies.
    let again = reports::query(&cluster, "SELECT count(*) FROM sales").await;
    assert_eq!(again["rows"], json!([[total]]));
    println!("{total} sales: {at_one} at ONE with node 3 stale, all {total} at QUORUM, then at ONE too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_past_their_limits_are_refused_and_the_cluster_stays_healthy() {
    // A cap of 50 groups and distinct values.
    let cluster = TestCluster::start_with_router(3, None, &[], &["--max-query-groups", "50"]).await;
    let sales = reports::sales(10, 40, 41);
    reports::write(&cluster, "sales", &sales).await;
    let (status, text) = reports::query_text(
        &cluster,
        "SELECT shop, id, count(*) FROM sales GROUP BY shop, id",
        "one",
        "application/json",
    )
    .await;
    let body: Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("too_many_groups")), "{text}");
    assert_eq!(body["error"]["max_groups"], json!(50), "{text}");
    let answer = reports::query(&cluster, "SELECT count(DISTINCT shop) FROM sales").await;
    assert_eq!(answer["rows"], json!([[10]]), "a report within the cap still runs");
    drop(cluster);

    // A deadline no report over 1024 partitions can meet.
    let cluster = TestCluster::start_with_router(3, None, &[], &["--query-timeout-ms", "1"]).await;
    reports::write(&cluster, "sales", &sales).await;
    let (status, text) = reports::query_text(&cluster, "SELECT count(*) FROM sales", "one", "application/json").await;
    let body: Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("query_timeout")), "{text}");
    assert_eq!(body["error"]["timeout_ms"], json!(1), "{text}");
    // The nodes and the router serve on.
    let s = &sales[0];
    let (status, record) = cluster.get(&format!("/v1/shops/{}/sales/{}?consistency=all", s.shop, s.id)).await;
    assert_eq!((status.as_u16(), record["ts"].as_i64()), (200, Some(s.ts)));
    let (status, _) = cluster.get("/readyz").await;
    assert_eq!(status, 200);
}

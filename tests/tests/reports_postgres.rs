//! Reports against a real PostgreSQL: the same sales go into ringup and
//! into a typed PostgreSQL table, the same queries run on both, and the
//! answers must be equal (column names, row order, NULLs; numbers equal to
//! within double rounding, since sums of doubles add in another order).
//!
//! The test command installs PostgreSQL from Debian's packages; where no
//! server binary is found the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringup_tests::TestCluster;
use ringup_tests::reports::{self, Sale};
use serde_json::Value;

/// The newest PostgreSQL server binaries installed.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    dirs.pop()
}

/// A PostgreSQL server in a temporary directory, stopped when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Runs a server binary as the `postgres` user when this test runs as
    /// root (the server refuses root).
    fn command(bin: &Path, tool: &str) -> Command {
        if unsafe_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
            c
        } else {
            Command::new(bin.join(tool))
        }
    }

    fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        if unsafe_is_root() {
            let ok = Command::new("chown").arg("postgres").arg(dir.path()).status().is_ok_and(|s| s.success());
            assert!(ok, "cannot hand the temporary directory to the postgres user");
        }
        let port = free_port();
        let out = Self::command(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "ringup", "--auth=trust", "-E", "UTF8", "--no-locale"])
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let log = dir.path().join("postgres.log");
        let out = Self::command(&bin, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {port} -k {} -c listen_addresses=127.0.0.1", dir.path().display()))
            .arg("start")
            .output()
            .expect("pg_ctl runs");
        assert!(out.status.success(), "postgres did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        Self { bin, data, port, _dir: dir }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ =
            Self::command(&self.bin, "pg_ctl").arg("-D").arg(&self.data).args(["-m", "fast", "-w", "stop"]).output();
    }
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// The queries both answer; every one orders its rows fully.
const QUERIES: &[&str] = &[
    "SELECT count(*), count(amount), sum(amount), min(amount), max(amount), avg(amount) FROM sales",
    "SELECT count(price), sum(price), avg(price), min(price), max(price) FROM sales",
    "SELECT region, count(*), sum(price), avg(amount) FROM sales GROUP BY region ORDER BY region",
    "SELECT region, count(*) AS n FROM sales GROUP BY region ORDER BY region DESC",
    "SELECT region, count(*) AS n FROM sales GROUP BY region ORDER BY region NULLS FIRST",
    "SELECT shop, sum(amount) AS total FROM sales GROUP BY shop ORDER BY total DESC, shop LIMIT 10",
    "SELECT shop, sum(amount) AS total FROM sales GROUP BY shop ORDER BY total ASC, shop LIMIT 10",
    "SELECT date_trunc('day', ts) AS day, count(*), sum(amount) FROM sales \
     WHERE ts >= '2026-03-02' AND ts < TIMESTAMP '2026-03-06 00:00:00' GROUP BY day ORDER BY day",
    "SELECT date_trunc('hour', ts), count(*) FROM sales WHERE ts BETWEEN '2026-03-03T00:00:00Z' AND '2026-03-03 05:59:59' GROUP BY 1 ORDER BY 1",
    "SELECT date_trunc('month', ts) AS m, count(*) FROM sales GROUP BY m ORDER BY m",
    "SELECT count(*) FROM sales WHERE (region IN ('eu', 'us') OR status = 'open') AND NOT paid AND amount BETWEEN 10 AND 60",
    "SELECT count(*) FROM sales WHERE region NOT IN ('eu', 'us')",
    "SELECT count(*) FROM sales WHERE region NOT IN ('eu', NULL)",
    "SELECT count(*) FROM sales WHERE NOT (amount > 50) OR region IS NULL",
    "SELECT count(*) FROM sales WHERE amount IS NULL AND price IS NOT NULL",
    "SELECT count(*) FROM sales WHERE amount <> 20 AND price >= 10.5",
    "SELECT status, count(*) FROM sales GROUP BY status ORDER BY status",
    "SELECT min(status), max(status), count(DISTINCT status), count(DISTINCT region) FROM sales",
    "SELECT region, count(DISTINCT status) AS statuses, count(DISTINCT shop) FROM sales GROUP BY region ORDER BY statuses DESC, region",
    "SELECT paid, count(*), avg(price) FROM sales GROUP BY paid ORDER BY paid",
    "SELECT region, status, count(*) FROM sales WHERE paid GROUP BY region, status ORDER BY region, status",
    "SELECT shop, id, amount, ts FROM sales WHERE amount IS NOT NULL ORDER BY amount DESC, shop, id LIMIT 12",
    "SELECT shop, id, price FROM sales ORDER BY price NULLS FIRST, shop, id LIMIT 5",
    "SELECT shop FROM sales GROUP BY shop ORDER BY sum(amount) DESC NULLS LAST, shop LIMIT 5",
    "SELECT count(*), sum(amount), avg(price), max(status) FROM sales WHERE amount > 1000000",
    "SELECT region, count(*) FROM sales WHERE amount > 1000000 GROUP BY region ORDER BY region",
];

/// PostgreSQL's text for a value, as the API would write it: numbers as
/// doubles, timestamps as RFC 3339 in UTC, booleans as JSON.
fn pg_cell(text: Option<&str>, type_hint: &Value) -> Value {
    let Some(text) = text else { return Value::Null };
    match type_hint {
        Value::Number(_) => Value::from(text.parse::<f64>().unwrap_or(f64::NAN)),
        Value::Bool(_) => Value::Bool(text == "t"),
        _ => {
            // "2026-03-02 00:00:00+00" is a timestamptz in UTC.
            if let Some(t) = text.strip_suffix("+00")
                && t.len() >= 19
                && t.as_bytes()[10] == b' '
            {
                return Value::from(format!("{}Z", t.replacen(' ', "T", 1)));
            }
            Value::from(text)
        }
    }
}

/// Whether two cells are equal, numbers within double rounding.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_equal_postgresql_on_the_same_data() {
    let bin = pg_bin().expect("no PostgreSQL server under /usr/lib/postgresql: scripts/test.sh installs it");
    let pg = Postgres::start(bin);
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=ringup dbname=postgres", pg.port),
        tokio_postgres::NoTls,
    )
    .await
    .expect("a connection to postgres");
    tokio::spawn(connection);
    client
        .batch_execute(
            "SET TIME ZONE 'UTC';
             CREATE TABLE sales (shop text COLLATE \"C\", id text COLLATE \"C\", ts timestamptz, amount bigint,
                                 price double precision, region text COLLATE \"C\", status text COLLATE \"C\",
                                 paid boolean, PRIMARY KEY (shop, id))",
        )
        .await
        .expect("the table");

    let cluster = TestCluster::start(3).await;
    let sales = reports::sales(80, 40, 21);
    reports::write(&cluster, "sales", &sales).await;
    let insert = client
        .prepare(
            "INSERT INTO sales VALUES ($1, $2, TIMESTAMPTZ 'epoch' + $3::bigint * INTERVAL '1 millisecond', \
             $4, $5, $6, $7, $8)",
        )
        .await
        .expect("an insert");
    for Sale { shop, id, ts, amount, price, region, status, paid } in &sales {
        client.execute(&insert, &[shop, id, ts, amount, price, region, status, paid]).await.expect("a row");
    }

    // The second pass comes once the partitions have been quiet for longer
    // than the nodes wait before building column segments, so it reads
    // segments (checked below); the first reads what there is then.
    let reader = &cluster;
    let segment_reads = move || async move {
        let text = reader.http().get(reader.url("/metrics")).send().await.expect("GET").text().await.expect("text");
        text.lines()
            .filter(|l| l.starts_with("ringup_node_report_partitions_from_segments_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    for pass in ["first", "second"] {
        if pass == "second" {
            // Once the partitions have been quiet long enough, a report
            // builds segments: ask until one reads from them.
            let started = std::time::Instant::now();
            loop {
                let before = segment_reads().await;
                reports::query(&cluster, QUERIES[0]).await;
                if segment_reads().await > before {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(30), "no report read from a column segment");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let before = segment_reads().await;
        for sql in QUERIES {
            let ours = reports::query(&cluster, sql).await;
            let theirs = client.simple_query(sql).await.unwrap_or_else(|e| panic!("postgres: {sql}: {e}"));
            let mut columns = Vec::new();
            let mut rows: Vec<Vec<Option<String>>> = Vec::new();
            for message in theirs {
                match message {
                    tokio_postgres::SimpleQueryMessage::RowDescription(desc) => {
                        columns = desc.iter().map(|c| c.name().to_string()).collect();
                    }
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
                    }
                    _ => {}
                }
            }
            assert_eq!(ours["columns"], serde_json::json!(columns), "{sql}");
            let our_rows = ours["rows"].as_array().cloned().unwrap_or_default();
            assert_eq!(our_rows.len(), rows.len(), "{sql}\nringup: {ours}\npostgres: {rows:?}");
            for (i, (mine, pgs)) in our_rows.iter().zip(&rows).enumerate() {
                let mine = mine.as_array().cloned().unwrap_or_default();
                for (j, (m, p)) in mine.iter().zip(pgs).enumerate() {
                    let p = pg_cell(p.as_deref(), m);
                    assert!(
                        same(m, &p),
                        "{sql}\nrow {i} column {j}: ringup {m}, postgres {p}\nringup: {ours}\npostgres: {rows:?}"
                    );
                }
            }
        }
        if pass == "second" {
            let read = segment_reads().await - before;
            assert!(read > 0.0, "the second pass read no partition from a column segment");
            println!("second pass: {read} partition reads from column segments");
        }
    }
    println!("{} queries over {} sales: ringup's answers equal PostgreSQL's", QUERIES.len(), sales.len());
}

//! PostgreSQL, loaded the way its documentation advises for many rows: one
//! multi-row `INSERT` per batch through a prepared statement, one
//! connection per client, default durability (each commit is flushed to
//! the WAL before it is acknowledged).
//!
//! The table is `sales (shop, id, ts, doc jsonb)` with primary key
//! `(shop, id)`. A batch upserts (`ON CONFLICT … DO UPDATE`), as a ringup
//! write replaces a record with the same id. A GET is a primary-key lookup;
//! a list page is the shop's first records in id order, as ringup pages.

use clap::Args;
use ringup_bench::workload::Sale;
use ringup_bench::{Client, LoadArgs, Target};
use serde_json::{Value, json};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Statement};

/// The table, made if missing.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sales (
    shop text NOT NULL,
    id text NOT NULL,
    ts bigint NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (shop, id)
)";
const GET: &str = "SELECT doc::text FROM sales WHERE shop = $1 AND id = $2";
const LIST: &str = "SELECT doc::text FROM sales WHERE shop = $1 ORDER BY id LIMIT $2";

/// Arguments of `ringup-peers postgres`.
#[derive(Debug, Clone, Args)]
pub struct PostgresArgs {
    /// The connection string, e.g. `host=127.0.0.1 port=5432 user=ringup dbname=ringup`.
    #[arg(long)]
    pub url: String,
    /// The load.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Makes the table and runs the load against the server.
pub async fn run(args: PostgresArgs) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(&args.url, NoTls).await?;
    let driver = tokio::spawn(connection);
    client.batch_execute(SCHEMA).await?;
    drop(client);
    let _ = driver.await;
    let target = Postgres { url: args.url, batch: args.load.batch };
    ringup_bench::run(&args.load, target).await?;
    Ok(())
}

struct Postgres {
    url: String,
    batch: usize,
}

impl Target for Postgres {
    type Client = PostgresClient;

    fn describe(&self) -> Value {
        json!({ "target": "postgresql", "url": self.url })
    }

    fn lists(&self) -> bool {
        true
    }

    async fn connect(&self) -> anyhow::Result<PostgresClient> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(connection);
        let insert = client.prepare(&insert_sql(self.batch)).await?;
        let get = client.prepare(GET).await?;
        let list = client.prepare(LIST).await?;
        Ok(PostgresClient { client, insert, get, list })
    }
}

/// The upsert of `rows` rows: `($1, $2, $3, $4), ($5, …`.
fn insert_sql(rows: usize) -> String {
    let values: Vec<String> =
        (0..rows).map(|r| format!("(${}, ${}, ${}, ${})", 4 * r + 1, 4 * r + 2, 4 * r + 3, 4 * r + 4)).collect();
    format!(
        "INSERT INTO sales (shop, id, ts, doc) VALUES {} \
         ON CONFLICT (shop, id) DO UPDATE SET ts = EXCLUDED.ts, doc = EXCLUDED.doc",
        values.join(", ")
    )
}

/// One client's connection and its prepared statements.
pub struct PostgresClient {
    client: tokio_postgres::Client,
    insert: Statement,
    get: Statement,
    list: Statement,
}

/// The kind of a PostgreSQL failure.
fn kind(e: tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => format!("postgres {}", code.code()),
        None if e.is_closed() => "connection closed".to_string(),
        None => format!("postgres: {e}"),
    }
}

impl Client for PostgresClient {
    async fn write(&mut self, shop: &str, sales: &[Sale]) -> Result<u64, String> {
        let shop = shop.to_string();
        let docs: Vec<Value> = sales.iter().map(|s| Value::Object(s.fields())).collect();
        let bytes = sales.iter().map(|s| s.json_len as u64).sum();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(4 * sales.len());
        for (sale, doc) in sales.iter().zip(&docs) {
            params.extend([&shop as &(dyn ToSql + Sync), &sale.id, &sale.ts, doc]);
        }
        let rows = self.client.execute(&self.insert, &params).await.map_err(kind)?;
        if rows != sales.len() as u64 {
            return Err(format!("upserted {rows} of {} rows", sales.len()));
        }
        Ok(bytes)
    }

    async fn get(&mut self, shop: &str, id: &str) -> Result<u64, String> {
        match self.client.query_opt(&self.get, &[&shop, &id]).await.map_err(kind)? {
            Some(row) => Ok(row.get::<_, String>(0).len() as u64),
            None => Err("not found".into()),
        }
    }

    async fn list(&mut self, shop: &str, limit: usize) -> Result<(u64, u64), String> {
        let rows = self.client.query(&self.list, &[&shop, &(limit as i64)]).await.map_err(kind)?;
        let bytes = rows.iter().map(|r| r.get::<_, String>(0).len() as u64).sum();
        Ok((rows.len() as u64, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_numbers_four_parameters_per_row() {
        let sql = insert_sql(2);
        assert!(sql.contains("VALUES ($1, $2, $3, $4), ($5, $6, $7, $8) ON CONFLICT"), "{sql}");
    }
}

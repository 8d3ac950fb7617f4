//! Redis Cluster, loaded the way its documentation advises for batches:
//! one pipeline per batch, keys that share a hash tag, and `WAIT` for the
//! replicas a write must reach.
//!
//! A record is the string `sale:{<shop>}:<id>` → its JSON. The braces make
//! the shop the hash tag, so a shop's records live on one master, as they
//! live on one partition in ringup, and a batch is one round trip: the
//! `SET`s and a `WAIT <replicas> <timeout>` after them. `WAIT` answers how
//! many replicas acknowledged every write of this connection so far; a
//! batch that reached fewer than asked is a failure. Each client has its
//! own cluster connection, because `WAIT` blocks the connection it is sent
//! on.

use std::time::Duration;

use clap::Args;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use ringup_bench::workload::Sale;
use ringup_bench::{Client, LoadArgs, Target};
use serde_json::{Value, json};

/// Arguments of `ringup-peers redis`.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Cluster nodes to discover the cluster from, as host:port.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Replicas each batch must reach before it counts (`WAIT`).
    #[arg(long, default_value_t = 1)]
    pub wait_replicas: u32,
    /// How long one request may take, in milliseconds; also `WAIT`'s limit.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// The load.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Runs the load against the cluster.
pub async fn run(args: RedisArgs) -> anyhow::Result<()> {
    let urls: Vec<String> = args.nodes.iter().map(|n| format!("redis://{n}/")).collect();
    let timeout = Duration::from_millis(args.timeout_ms);
    let client = ClusterClient::builder(urls).response_timeout(timeout).connection_timeout(timeout).build()?;
    let target = Redis { client, nodes: args.nodes, wait_replicas: args.wait_replicas, timeout_ms: args.timeout_ms };
    ringup_bench::run(&args.load, target).await?;
    Ok(())
}

struct Redis {
    client: ClusterClient,
    nodes: Vec<String>,
    wait_replicas: u32,
    timeout_ms: u64,
}

impl Target for Redis {
    type Client = RedisClient;

    fn describe(&self) -> Value {
        json!({ "target": "redis-cluster", "nodes": self.nodes, "wait_replicas": self.wait_replicas })
    }

    fn lists(&self) -> bool {
        false
    }

    async fn connect(&self) -> anyhow::Result<RedisClient> {
        let connection = self.client.get_async_connection().await?;
        Ok(RedisClient { connection, wait_replicas: self.wait_replicas, timeout_ms: self.timeout_ms })
    }
}

/// One client's cluster connection.
pub struct RedisClient {
    connection: ClusterConnection,
    wait_replicas: u32,
    timeout_ms: u64,
}

/// The key of a record: the shop is the hash tag.
fn key(shop: &str, id: &str) -> String {
    format!("sale:{{{shop}}}:{id}")
}

/// The kind of a Redis failure.
fn kind(e: redis::RedisError) -> String {
    if e.is_timeout() {
        "timeout".to_string()
    } else if let Some(code) = e.code() {
        format!("redis {code}")
    } else {
        format!("redis {:?}", e.kind())
    }
}

impl Client for RedisClient {
    async fn write(&mut self, shop: &str, sales: &[Sale]) -> Result<u64, String> {
        let mut pipe = redis::pipe();
        let mut bytes = 0;
        for sale in sales {
            let value = sale.to_json().to_string();
            bytes += value.len() as u64;
            pipe.set(key(shop, &sale.id), value).ignore();
        }
        pipe.cmd("WAIT").arg(self.wait_replicas).arg(self.timeout_ms);
        let (acked,): (u32,) = pipe.query_async(&mut self.connection).await.map_err(kind)?;
        if acked < self.wait_replicas {
            return Err(format!("WAIT reached {acked} of {} replicas", self.wait_replicas));
        }
        Ok(bytes)
    }

    async fn get(&mut self, shop: &str, id: &str) -> Result<u64, String> {
        let value: Option<String> =
            redis::cmd("GET").arg(key(shop, id)).query_async(&mut self.connection).await.map_err(kind)?;
        match value {
            Some(json) => Ok(json.len() as u64),
            None => Err("not found".into()),
        }
    }

    async fn list(&mut self, _shop: &str, _limit: usize) -> Result<(u64, u64), String> {
        Err("redis keeps no list pages".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shops_keys_share_one_hash_tag() {
        assert_eq!(key("bench-shop-00007", "c001-000000002"), "sale:{bench-shop-00007}:c001-000000002");
    }
}

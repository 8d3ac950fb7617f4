//! The ceiling: what ringup's storage alone can take on this machine.
//!
//! Three replicas, each a RocksDB instance opened by the node's own
//! [`Storage`] (the same column families, merge operator, compression and
//! group-commit fsync), live in this process. A batch is encoded once,
//! exactly as a node stores it ([`RecordKey`] and [`StoredRecord`]), and
//! merged into every replica; it counts once a quorum of them committed
//! it, as a QUORUM write through the router does. A GET reads a quorum of
//! replicas and keeps the newest value. What ringup adds on top (HTTP, the
//! router, RPC, the network) is what separates it from this line.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use ringup_bench::workload::Sale;
use ringup_bench::{Client, LoadArgs, Target};
use ringup_node::storage::FsyncPolicy;
use ringup_node::storage::Storage;
use ringup_proto::keys::RecordKey;
use ringup_proto::ring::{DEFAULT_PARTITIONS, Ring};
use ringup_proto::value::{self, StoredRecord, Version};
use serde_json::{Value, json};

/// Arguments of `ringup-peers rocksdb`.
#[derive(Debug, Clone, Args)]
pub struct RocksArgs {
    /// The directory the replicas' databases go under.
    #[arg(long)]
    pub dir: PathBuf,
    /// Replicas each record is written to.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// When the replicas fsync, as a node's `--fsync`.
    #[arg(long, value_enum, default_value_t = FsyncPolicy::Group)]
    pub fsync: FsyncPolicy,
    /// The load.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Opens the replicas and runs the load against them.
pub async fn run(args: RocksArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let mut replicas = Vec::with_capacity(args.replicas);
    for r in 0..args.replicas {
        replicas.push(Storage::open(&args.dir.join(format!("replica-{r}")), args.fsync)?);
    }
    let replicas = Arc::new(replicas);
    let target = Rocks {
        replicas: replicas.clone(),
        ring: Ring::new(DEFAULT_PARTITIONS),
        clock: Arc::new(AtomicU64::new(1)),
        fsync: args.fsync,
    };
    let ran = ringup_bench::run(&args.load, target).await;
    // Clients may still hold the replicas when the process exits; their
    // flushes and compactions must be over by then.
    for replica in replicas.iter() {
        replica.stop_background_work();
    }
    ran.map(drop)
}

#[derive(Clone)]
struct Rocks {
    replicas: Arc<Vec<Storage>>,
    ring: Ring,
    /// Stamps versions; every write is newer than the one before.
    clock: Arc<AtomicU64>,
    fsync: FsyncPolicy,
}

impl Target for Rocks {
    type Client = Rocks;

    fn describe(&self) -> Value {
        json!({
            "target": "rocksdb",
            "replicas": self.replicas.len(),
            "quorum": self.quorum(),
            "fsync": format!("{:?}", self.fsync).to_lowercase(),
        })
    }

    fn lists(&self) -> bool {
        false
    }

    async fn connect(&self) -> anyhow::Result<Rocks> {
        Ok(self.clone())
    }
}

impl Rocks {
    fn quorum(&self) -> usize {
        self.replicas.len() / 2 + 1
    }

    fn key(&self, shop: &str, id: &str) -> RecordKey {
        let partition = self.ring.partition_of(shop);
        RecordKey { partition, shop: shop.to_string(), collection: "sales".to_string(), id: id.to_string() }
    }

    /// A record as a node stores it.
    fn encode(&self, version: Version, sale: &Sale) -> Vec<u8> {
        StoredRecord::from_json(version, sale.ts, &sale.fields()).encode()
    }
}

impl Client for Rocks {
    async fn write(&mut self, shop: &str, sales: &[Sale]) -> Result<u64, String> {
        let version = Version { hlc: self.clock.fetch_add(1, Ordering::Relaxed), origin: 1 };
        let records: Vec<(RecordKey, Vec<u8>)> =
            sales.iter().map(|s| (self.key(shop, &s.id), self.encode(version, s))).collect();
        let bytes = sales.iter().map(|s| s.json_len as u64).sum();
        let mut commits: FuturesUnordered<_> = self
            .replicas
            .iter()
            .map(|replica| {
                let (replica, records) = (replica.clone(), records.clone());
                tokio::spawn(async move { replica.merge_records(records).await })
            })
            .collect();
        let mut committed = 0;
        while let Some(done) = commits.next().await {
            done.map_err(|e| format!("replica task: {e}"))?.map_err(|e| e.to_string())?;
            committed += 1;
            if committed == self.quorum() {
                return Ok(bytes);
            }
        }
        Err(format!("{committed} of {} replicas committed", self.replicas.len()))
    }

    async fn get(&mut self, shop: &str, id: &str) -> Result<u64, String> {
        let key = self.key(shop, id);
        let reads = self.replicas[..self.quorum()].iter().map(|replica| replica.get_record(key.clone()));
        let mut newest: Option<Vec<u8>> = None;
        for read in futures::future::join_all(reads).await {
            if let Some(found) = read.map_err(|e| e.to_string())? {
                newest = Some(match newest {
                    Some(held) => value::merge(&held, &found).to_vec(),
                    None => found,
                });
            }
        }
        let bytes = newest.ok_or("not found")?;
        StoredRecord::decode(&bytes).map_err(|e| e.to_string())?;
        Ok(bytes.len() as u64)
    }

    async fn list(&mut self, _shop: &str, _limit: usize) -> Result<(u64, u64), String> {
        Err("the ceiling run reads no list pages".into())
    }
}

//! The node's configuration: command-line flags, each with an environment
//! variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;
use ringup_proto::NodeId;
use ringup_rpc::Limits;

use crate::storage::FsyncPolicy;

/// One of the nodes that form a fresh cluster: `ID=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialNode {
    /// The node's id.
    pub id: NodeId,
    /// The node's RPC address.
    pub addr: String,
}

impl FromStr for InitialNode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = s.split_once('=').ok_or_else(|| format!("{s:?} is not ID=HOST:PORT"))?;
        let id = id.parse().map_err(|_| format!("{id:?} is not a node id"))?;
        if addr.is_empty() {
            return Err(format!("{s:?} has no address"));
        }
        Ok(Self { id, addr: addr.to_string() })
    }
}

/// The nodes that form a fresh cluster: `ID=HOST:PORT,...`. An empty list
/// (the variable set to nothing, as a compose file may) means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitialNodes(pub Vec<InitialNode>);

impl FromStr for InitialNodes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::parse).collect::<Result<_, _>>().map(Self)
    }
}

impl std::ops::Deref for InitialNodes {
    type Target = [InitialNode];

    fn deref(&self) -> &[InitialNode] {
        &self.0
    }
}

/// `ringup-node`: a ringup storage node.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// This node's id, unique in the cluster. Stored in the data directory on
    /// first start; may be left out on later starts.
    #[arg(long, env = "RINGUP_NODE_ID")]
    pub id: Option<NodeId>,

    /// Where the internal RPC listens.
    #[arg(long, env = "RINGUP_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,

    /// The RPC address other processes use to reach this node (default: --listen).
    #[arg(long, env = "RINGUP_ADVERTISE")]
    pub advertise: Option<String>,

    /// The data directory (RocksDB, Raft log and metadata).
    #[arg(long, env = "RINGUP_DATA_DIR", default_value = "./ringup-data")]
    pub data_dir: PathBuf,

    /// The nodes that form a fresh cluster, as ID=HOST:PORT, comma-separated.
    /// Every initial node is given the same list. Ignored once the cluster
    /// exists.
    #[arg(long, env = "RINGUP_INITIAL_NODES", default_value = "", hide_default_value = true)]
    pub initial_nodes: InitialNodes,

    /// Partitions of a fresh cluster's ring (a power of two).
    #[arg(long, env = "RINGUP_PARTITIONS", default_value_t = ringup_proto::ring::DEFAULT_PARTITIONS)]
    pub partitions: u32,

    /// Replicas per partition of a fresh cluster.
    #[arg(long, env = "RINGUP_REPLICATION_FACTOR", default_value_t = ringup_proto::cluster::DEFAULT_REPLICATION_FACTOR)]
    pub replication_factor: u8,

    /// When to fsync record writes.
    #[arg(long, env = "RINGUP_FSYNC", value_enum, default_value_t = FsyncPolicy::Group)]
    pub fsync: FsyncPolicy,

    /// RPC connections served at once; more are closed when accepted.
    #[arg(long, env = "RINGUP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Requests of one RPC connection handled at once; past it the node
    /// stops reading that connection until answers go out.
    #[arg(long, env = "RINGUP_MAX_REQUESTS_PER_CONNECTION", default_value_t = 256)]
    pub max_requests_per_connection: usize,

    /// MiB of request frames held at once over all connections (at least
    /// 64, the largest frame); past it, reading waits.
    #[arg(long, env = "RINGUP_MAX_REQUEST_MIB", default_value_t = 256)]
    pub max_request_mib: usize,

    /// Partition moves one node takes part in at once, as a new replica or
    /// the one replaced (read by the metadata leader's driver).
    #[arg(long, env = "RINGUP_MOVES_PER_NODE", default_value_t = 4)]
    pub moves_per_node: usize,

    /// Milliseconds a switched partition waits before its old replicas drop
    /// it, so that requests routed before the switch have ended.
    #[arg(long, env = "RINGUP_MOVE_SETTLE_MS", default_value_t = 2000)]
    pub move_settle_ms: u64,

    /// Milliseconds a write's version may lie ahead of this node's clock;
    /// a write stamped further ahead is refused (the stamping router's
    /// clock is wrong).
    #[arg(long, env = "RINGUP_MAX_CLOCK_SKEW_MS", default_value_t = ringup_proto::hlc::DEFAULT_MAX_SKEW_MS)]
    pub max_clock_skew_ms: u64,

    /// MiB of hints kept for each replica that missed writes; past it no
    /// more are kept and anti-entropy repairs the replica. 0 turns hinted
    /// handoff off.
    #[arg(long, env = "RINGUP_MAX_HINT_MIB", default_value_t = 256)]
    pub max_hint_mib: u64,

    /// MiB of hints replayed per second.
    #[arg(long, env = "RINGUP_HINT_REPLAY_MIB_PER_SEC", default_value_t = 4)]
    pub hint_replay_mib_per_sec: u64,

    /// MiB per second anti-entropy may scan or pull; 0 turns it off.
    #[arg(long, env = "RINGUP_ANTI_ENTROPY_MIB_PER_SEC", default_value_t = 4)]
    pub anti_entropy_mib_per_sec: u64,

    /// Seconds from one anti-entropy pass's start to the next's, at least.
    #[arg(long, env = "RINGUP_ANTI_ENTROPY_INTERVAL_SECS", default_value_t = 10)]
    pub anti_entropy_interval_secs: u64,

    /// MiB of memory for reports' column segments: a partition's records
    /// decoded into columns once it has stopped changing, so that reports
    /// over it read memory instead of the disk. 0 turns them off.
    #[arg(long, env = "RINGUP_COLUMN_CACHE_MIB", default_value_t = 1024)]
    pub column_cache_mib: usize,

    /// Seconds a tombstone is kept at least; it is dropped only once every
    /// replica has agreed on it after that (see docs/operations.md, "Healing").
    #[arg(long, env = "RINGUP_TOMBSTONE_GRACE_SECS", default_value_t = 3600)]
    pub tombstone_grace_secs: u64,

    /// Mutual TLS on the internal RPC, served and dialled.
    #[command(flatten)]
    pub tls: ringup_process::TlsArgs,

    /// The data key file (lines `ID HEX`, made by `ringup key add`): record
    /// values and hints are sealed with AES-256-GCM under its highest key,
    /// and opened with whichever key sealed them. Every node of a cluster
    /// has the same file.
    #[arg(long, env = "RINGUP_DATA_KEY_FILE")]
    pub data_key_file: Option<PathBuf>,

    /// Store values in clear. For development only: anyone who can read
    /// the data directory can then read every record.
    #[arg(long, env = "RINGUP_INSECURE_NO_ENCRYPTION")]
    pub insecure_no_encryption: bool,

    /// MiB per second the reseal pass reads: after a data key is added, it
    /// seals every value anew under it, in the background. 0 turns it off.
    #[arg(long, env = "RINGUP_RESEAL_MIB_PER_SEC", default_value_t = 8)]
    pub reseal_mib_per_sec: u64,
}

impl Config {
    /// The data keys; `None` with `--insecure-no-encryption`; without
    /// either, an error that says what to give.
    pub fn data_keys(&self) -> Result<Option<std::sync::Arc<crate::crypt::DataKeys>>, String> {
        match (&self.data_key_file, self.insecure_no_encryption) {
            (None, true) => Ok(None),
            (Some(_), true) => Err("--insecure-no-encryption goes without --data-key-file".into()),
            (Some(path), false) => {
                crate::crypt::DataKeys::load(path).map(|k| Some(std::sync::Arc::new(k))).map_err(|e| e.to_string())
            }
            (None, false) => Err("values are encrypted at rest: give --data-key-file (RINGUP_DATA_KEY_FILE; \
                                  `ringup key add --file F` makes one), or --insecure-no-encryption to store them in clear"
                .into()),
        }
    }

    /// The address peers reach this node at.
    pub fn advertise_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// What the RPC server admits at once.
    pub fn limits(&self) -> Limits {
        Limits {
            connections: self.max_connections,
            requests_per_connection: self.max_requests_per_connection,
            request_bytes: self.max_request_mib.saturating_mul(1 << 20),
            ..Limits::default()
        }
    }

    /// How hard the driver of partition moves pushes.
    pub fn move_limits(&self) -> ringup_proto::migration::Limits {
        ringup_proto::migration::Limits { moves_per_node: self.moves_per_node, settle_ms: self.move_settle_ms }
    }

    /// How hints are kept and replayed.
    pub fn hint_settings(&self) -> crate::hints::HintSettings {
        crate::hints::HintSettings {
            max_bytes_per_node: self.max_hint_mib.saturating_mul(1 << 20),
            replay_bytes_per_sec: self.hint_replay_mib_per_sec.max(1).saturating_mul(1 << 20),
            grace_ms: self.tombstone_grace_secs.saturating_mul(1000),
        }
    }

    /// How anti-entropy runs.
    pub fn repair_settings(&self) -> crate::repair::RepairSettings {
        crate::repair::RepairSettings {
            enabled: self.anti_entropy_mib_per_sec > 0,
            bytes_per_sec: self.anti_entropy_mib_per_sec.saturating_mul(1 << 20),
            interval: std::time::Duration::from_secs(self.anti_entropy_interval_secs),
            grace_ms: self.tombstone_grace_secs.saturating_mul(1000),
        }
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !self.partitions.is_power_of_two() {
            return Err(format!("--partitions must be a power of two, not {}", self.partitions));
        }
        if self.replication_factor == 0 {
            return Err("--replication-factor must be at least 1".into());
        }
        if self.moves_per_node == 0 {
            return Err("--moves-per-node must be at least 1".into());
        }
        if self.max_connections == 0 || self.max_requests_per_connection == 0 {
            return Err("--max-connections and --max-requests-per-connection must be at least 1".into());
        }
        if self.max_request_mib.saturating_mul(1 << 20) < ringup_proto::frame::MAX_FRAME {
            return Err(format!(
                "--max-request-mib must be at least {}, the largest frame",
                ringup_proto::frame::MAX_FRAME >> 20
            ));
        }
        if self.advertise.is_none() && self.listen.ip().is_unspecified() {
            return Err(format!(
                "--listen {} is not an address other processes can reach: set --advertise to this node's host:port",
                self.listen
            ));
        }
        if let Some(id) = self.id
            && !self.initial_nodes.is_empty()
            && !self.initial_nodes.iter().any(|n| n.id == id)
        {
            return Err(format!("--initial-nodes does not name this node (id {id})"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initial_nodes() {
        let config = Config::parse_from(["ringup-node", "--id", "2", "--initial-nodes", "1=a:1,2=b:2"]);
        assert_eq!(config.initial_nodes[1], InitialNode { id: 2, addr: "b:2".into() });
        assert!(config.validate().is_ok());
        assert!("x=a:1".parse::<InitialNode>().is_err());
        assert!("1=".parse::<InitialNode>().is_err());
        assert_eq!("".parse::<InitialNodes>(), Ok(InitialNodes::default()), "set to nothing means none");
        assert!("1=a:1,,x".parse::<InitialNodes>().is_err());
    }

    #[test]
    fn a_wildcard_listen_address_needs_an_advertised_one() {
        let config = Config::parse_from(["ringup-node", "--id", "1", "--listen", "0.0.0.0:7001"]);
        assert!(config.validate().is_err());
        let config =
            Config::parse_from(["ringup-node", "--id", "1", "--listen", "0.0.0.0:7001", "--advertise", "n1:7001"]);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.advertise_addr(), "n1:7001");
    }

    #[test]
    fn refuses_a_list_without_this_node() {
        let config = Config::parse_from(["ringup-node", "--id", "9", "--initial-nodes", "1=a:1"]);
        assert!(config.validate().is_err());
    }
}

//! openraft's own storage test suite, run against ringup's Raft log and
//! state machine over a real RocksDB directory: every case of
//! `openraft::testing::Suite` (initial state, log reads and purges,
//! membership from log and state machine, votes, snapshots) on a fresh
//! store each.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use ringup_node::raft::TypeConfig;
use ringup_node::raft::log_store::LogStore;
use ringup_node::raft::state_machine::StateMachine;
use ringup_node::storage::{FsyncPolicy, Storage};
use ringup_proto::NodeId;
use ringup_proto::cluster::ClusterMap;
use tempfile::TempDir;
use tokio::sync::watch;

/// A fresh store in a temporary directory, removed when the case ends.
struct Fresh;

/// What a case holds on to: the directory, and the map the state machine
/// publishes.
type Guard = (TempDir, watch::Receiver<Arc<ClusterMap>>);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, Guard> for Fresh {
    async fn build(&self) -> Result<(Guard, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let storage = Storage::open(dir.path(), FsyncPolicy::Group).expect("the store opens");
        let (map, published) = watch::channel(Arc::new(ClusterMap::default()));
        let machine = StateMachine::load(storage.clone(), map)?;
        Ok(((dir, published), LogStore::new(storage), machine))
    }
}

#[test]
fn the_raft_log_and_state_machine_pass_openraft_s_storage_suite() {
    Suite::test_all(Fresh).expect("every case of the suite passes");
}

//! The node's identity as its data directory keeps it: its id, and the
//! epoch before which an adopted node serves no reads.

use ringup_proto::NodeId;

use crate::storage::{MetaKey, Storage};

/// The node's id as the data directory stores it; none in a fresh one.
pub fn stored(storage: &Storage) -> anyhow::Result<Option<NodeId>> {
    read_u64(storage, MetaKey::NodeId)
}

/// Stores the id of a node that forms a fresh cluster.
pub fn store(storage: &Storage, id: NodeId) -> anyhow::Result<()> {
    storage.put_meta(&[(MetaKey::NodeId, Some(id.to_be_bytes().to_vec()))])?;
    Ok(())
}

/// Stores the id and the epoch before which no reads are served, in one
/// synced write, before the node serves anything.
pub fn store_adoption(storage: &Storage, id: NodeId, reads_from: u64) -> anyhow::Result<()> {
    storage.put_meta(&[
        (MetaKey::NodeId, Some(id.to_be_bytes().to_vec())),
        (MetaKey::ReadsFrom, Some(reads_from.to_be_bytes().to_vec())),
    ])?;
    Ok(())
}

/// The epoch the node's map must reach before it serves reads; 0 when no
/// adoption set one.
pub fn reads_from(storage: &Storage) -> anyhow::Result<u64> {
    Ok(read_u64(storage, MetaKey::ReadsFrom)?.unwrap_or(0))
}

fn read_u64(storage: &Storage, key: MetaKey) -> anyhow::Result<Option<u64>> {
    storage
        .get_meta(key)?
        .map(|b| <[u8; 8]>::try_from(b.as_slice()).map(u64::from_be_bytes))
        .transpose()
        .map_err(|_| anyhow::anyhow!("the stored {key:?} is corrupt"))
}

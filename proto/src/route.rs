//! Whether a node serves a request routed by a router's map: the epoch
//! check that makes a change of where a partition's requests go safe while
//! routers and nodes learn the change at different times.

use crate::cluster::ClusterMap;
use crate::placement::NodeId;
use crate::rpc::{BadRequest, CollectionRef, RpcError};

/// What a data request does with a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads it: the node must be in the partition's read set.
    Read,
    /// Writes it: the node must be in one of its write sets.
    Write,
}

/// The epoch and ownership check of a data request.
///
/// A request routed before the partition's last routing change is refused
/// with the current epoch; one routed after it, even with an older map
/// than this node's, went where this node's map would send it, so other
/// partitions' moves never disturb it. A coordinator routing with a newer
/// map than this node's knows better and is trusted; that includes a node
/// that has not applied the first map yet. Otherwise the node must be in
/// the partition's read set and not refilling it (reads), or in one of its
/// write sets (writes).
pub fn check_route(map: &ClusterMap, node: NodeId, target: &CollectionRef, access: Access) -> Result<(), RpcError> {
    if target.epoch > map.epoch {
        return Ok(());
    }
    if !map.is_ready() {
        return Err(RpcError::NoMap);
    }
    if target.partition >= map.ring.partitions() {
        return Err(RpcError::BadRequest(BadRequest::NoPartition { partition: target.partition }));
    }
    if target.epoch < map.changed_at(target.partition) {
        return Err(RpcError::StaleEpoch { current: map.epoch });
    }
    let serves = match access {
        Access::Read => map.readable(target.partition).contains(&node),
        Access::Write => map.write_sets(target.partition).iter().any(|set| set.contains(&node)),
    };
    if !serves || map.is_gone(node) {
        return Err(RpcError::NotReplica { partition: target.partition });
    }
    Ok(())
}

//! Coordinates reads and writes across a partition's replica set.
//!
//! A request is sent to every replica at once, each in its own task, and
//! the coordinator answers as soon as the consistency level is met. Tasks
//! still running then carry on, so a slow replica still gets the write. A
//! level that cannot be met in time is an error: the API answers 503 and
//! never 200. A replica that reports a newer epoch makes the coordinator
//! refresh its map and try once more.
//!
//! Reads merge the answers by last-writer-wins and write the newest value
//! back to every answering replica that was stale, before answering.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ringup_proto::NodeId;
use ringup_proto::cluster::ClusterMap;
use ringup_proto::consistency::{AckCounter, Consistency, Tally};
use ringup_proto::hlc::Hlc;
use ringup_proto::rpc::{CollectionRef, Request, Response, RpcError};
use ringup_proto::value::{self, Header, StoredRecord, Version};
use thiserror::Error;

use crate::now_ms;
use crate::view::ClusterView;

/// How many times a request is routed afresh after a stale-epoch refusal.
const EPOCH_RETRIES: usize = 2;
/// How many scan rounds one list page may take when tombstones hide records.
const MAX_LIST_ROUNDS: usize = 16;
/// How many digests one count round asks each replica for.
const DIGEST_PAGE: usize = 50_000;

/// Why a coordinated request failed.
#[derive(Debug, Error)]
pub enum CoordError {
    /// The router has no cluster map yet.
    #[error("the router has no cluster map yet")]
    NoMap,
    /// Too few replicas answered in time.
    #[error("consistency level {level} needs {needed} of {replicas} replicas, {acked} answered")]
    Unavailable {
        /// The level asked for.
        level: Consistency,
        /// How many answers it needs.
        needed: usize,
        /// How many replicas the partition has.
        replicas: usize,
        /// How many answered.
        acked: usize,
    },
    /// A stored value failed to decode.
    #[error("corrupt value from a replica: {0}")]
    Corrupt(String),
}

/// Where to read or write: one shop's collection.
#[derive(Debug, Clone)]
pub struct Collection {
    /// The shop.
    pub shop: String,
    /// The collection.
    pub collection: String,
}

/// Coordinates requests; one per router.
pub struct Coordinator {
    view: Arc<ClusterView>,
    timeout: Duration,
    origin: u64,
    /// Held only to tick, never across an `.await`.
    clock: Mutex<Hlc>,
}

impl Coordinator {
    /// A coordinator over `view`, waiting at most `timeout` for replicas.
    pub fn new(view: Arc<ClusterView>, timeout: Duration) -> Self {
        let origin = rand_origin();
        Self { view, timeout, origin, clock: Mutex::new(Hlc::new()) }
    }

    /// A fresh version for a write.
    pub fn stamp(&self) -> Version {
        let hlc = self.clock.lock().expect("clock poisoned").tick(now_ms() as u64);
        Version { hlc, origin: self.origin }
    }

    /// Writes encoded records, answering once `level` replicas hold them.
    pub async fn write(
        &self,
        at: &Collection,
        records: Vec<(String, Vec<u8>)>,
        level: Consistency,
    ) -> Result<(), CoordError> {
        self.fan_out(at, level, |target| Request::Write { target, records: records.clone() }).await?;
        Ok(())
    }

    /// Takes note of a version read from a replica, so that this router's
    /// next stamp is newer: a read-modify-write (PATCH) then always wins
    /// over what it read, whichever router wrote that.
    fn observe(&self, version: Version) {
        self.clock.lock().expect("clock poisoned").observe(version.hlc);
    }

    /// The newest version of one record, with stale replicas repaired.
    /// Deleted records come back as tombstones.
    ///
    /// The answer stands only once `level` replicas hold the newest value,
    /// counting the repairs (to stale replicas, and if those fail, to the
    /// replicas that did not answer): so a later read at the same level
    /// never sees an older one. A value that fails its checksum counts as absent, and
    /// its replica as stale.
    pub async fn get(&self, at: &Collection, id: &str, level: Consistency) -> Result<Option<StoredRecord>, CoordError> {
        let routed = self.fan_out(at, level, |target| Request::Get { target, id: id.to_string() }).await?;
        let values: Vec<(NodeId, Option<Vec<u8>>)> = routed
            .answers
            .into_iter()
            .filter_map(|(node, r)| match r {
                Response::Value(v) => Some((node, v.filter(|bytes| valid(bytes, node, id)))),
                _ => None,
            })
            .collect();
        let newest = values.iter().filter_map(|(_, v)| v.as_deref()).reduce(value::merge).map(<[u8]>::to_vec);
        let Some(newest) = newest else {
            return Ok(None);
        };
        let record = StoredRecord::decode(&newest).map_err(|e| CoordError::Corrupt(e.to_string()))?;
        self.observe(record.version);
        let stale: Vec<NodeId> =
            values.iter().filter(|(_, v)| v.as_deref() != Some(&newest[..])).map(|(n, _)| *n).collect();
        let records = vec![(id.to_string(), newest)];
        let fresh = values.len() - stale.len();
        let mut holders = fresh + self.repair(&routed.target, stale, records.clone()).await;
        let needed = level.required(routed.replicas.len());
        if holders < needed {
            // A stale replica failed to take the repair (it may have just
            // died); the replicas that did not answer can take it instead.
            let silent = routed.replicas.iter().copied().filter(|n| !values.iter().any(|(v, _)| v == n)).collect();
            holders += self.repair(&routed.target, silent, records).await;
        }
        if holders < needed {
            return Err(CoordError::Unavailable { level, needed, replicas: routed.replicas.len(), acked: holders });
        }
        Ok(Some(record))
    }

    /// Up to `limit` live records after `after`, in id order, merged from
    /// `level` replicas, and the id to continue after if more may follow.
    pub async fn list(
        &self,
        at: &Collection,
        mut after: Option<String>,
        limit: usize,
        level: Consistency,
    ) -> Result<(Vec<(String, StoredRecord)>, Option<String>), CoordError> {
        let mut page = Vec::new();
        for _ in 0..MAX_LIST_ROUNDS {
            let ask = limit.saturating_sub(page.len());
            let request = |target| Request::Scan { target, after: after.clone(), limit: ask as u32 };
            let answers = self.fan_out(at, level, request).await?.answers;
            let pages = answers.into_iter().filter_map(|(node, r)| match r {
                Response::Entries { entries, more } => {
                    let items = entries.into_iter().filter(|e| valid(&e.value, node, &e.id)).map(|e| (e.id, e.value));
                    Some(Page { items: items.collect(), more })
                }
                _ => None,
            });
            let (merged, bound) = merge_pages(pages.collect(), ask, |held, new| value::merge(held, new) == &new[..]);
            for (id, bytes) in merged {
                let record = StoredRecord::decode(&bytes).map_err(|e| CoordError::Corrupt(e.to_string()))?;
                self.observe(record.version);
                if !record.tombstone {
                    page.push((id, record));
                }
            }
            match bound {
                None => return Ok((page, None)),
                Some(bound) if page.len() >= limit => return Ok((page, Some(bound))),
                Some(bound) => after = Some(bound),
            }
        }
        // Many tombstones in a row: answer what there is and let the
        // client continue from where the scan stopped.
        Ok((page, after))
    }

    /// How many live records a collection holds, merged from `level`
    /// replicas a page of digests at a time.
    pub async fn count(&self, at: &Collection, level: Consistency) -> Result<u64, CoordError> {
        let (mut after, mut live) = (None, 0u64);
        loop {
            let request = |target| Request::Digests { target, after: after.clone(), limit: DIGEST_PAGE as u32 };
            let answers = self.fan_out(at, level, request).await?.answers;
            let pages = answers.into_iter().filter_map(|(_, r)| match r {
                Response::Digests { digests, more } => {
                    Some(Page { items: digests.into_iter().map(|d| (d.id, (d.version, d.tombstone))).collect(), more })
                }
                _ => None,
            });
            let (merged, bound) = merge_pages(pages.collect(), DIGEST_PAGE, |held, new| new.0 > held.0);
            live += merged.iter().filter(|(_, (_, tombstone))| !tombstone).count() as u64;
            match bound {
                None => return Ok(live),
                Some(bound) => after = Some(bound),
            }
        }
    }

    /// Writes the newest values back to stale replicas and waits for them;
    /// returns how many took the write.
    async fn repair(&self, target: &CollectionRef, stale: Vec<NodeId>, records: Vec<(String, Vec<u8>)>) -> usize {
        let Some(map) = self.view.map() else { return 0 };
        let writes = stale.into_iter().filter_map(|node| self.view.client(&map, node).map(|c| (node, c))).map(
            |(node, client)| {
                let request = Request::Write { target: target.clone(), records: records.clone() };
                async move {
                    match client.call(request, self.timeout).await {
                        Ok(Response::Written) => true,
                        Ok(other) => {
                            tracing::warn!(node, answer = ?other, "read repair refused");
                            false
                        }
                        Err(e) => {
                            tracing::warn!(node, error = %e, "read repair failed");
                            false
                        }
                    }
                }
            },
        );
        futures::future::join_all(writes).await.into_iter().filter(|ok| *ok).count()
    }

    /// Sends a request to every replica of the collection's partition and
    /// returns the first answers that meet `level`, with where it was routed.
    async fn fan_out(
        &self,
        at: &Collection,
        level: Consistency,
        request: impl Fn(CollectionRef) -> Request,
    ) -> Result<Routed, CoordError> {
        let mut attempt = 0;
        loop {
            let map = self.view.map().ok_or(CoordError::NoMap)?;
            let partition = map.partition_of(&at.shop);
            let target =
                CollectionRef { epoch: map.epoch, partition, shop: at.shop.clone(), collection: at.collection.clone() };
            let outcome = self.gather(&map, &target, level, &request).await;
            match outcome {
                Gathered::Met(answers) => {
                    return Ok(Routed { target, replicas: map.replicas(partition).to_vec(), answers });
                }
                Gathered::Stale { client, epoch } if attempt < EPOCH_RETRIES => {
                    self.view.refresh_from(&client, epoch, self.timeout).await;
                    attempt += 1;
                }
                Gathered::Stale { .. } | Gathered::Failed { .. } => {
                    let replicas = map.replicas(partition).len();
                    let acked = if let Gathered::Failed { acked } = outcome { acked } else { 0 };
                    return Err(CoordError::Unavailable { level, needed: level.required(replicas), replicas, acked });
                }
            }
        }
    }

    /// One round of a fan-out under one map.
    async fn gather(
        &self,
        map: &ClusterMap,
        target: &CollectionRef,
        level: Consistency,
        request: &impl Fn(CollectionRef) -> Request,
    ) -> Gathered {
        let replicas = map.replicas(target.partition);
        let mut counter = AckCounter::new(level, replicas.len());
        let mut calls: FuturesUnordered<_> = replicas
            .iter()
            .map(|node| {
                let client = self.view.client(map, *node);
                let (node, req, timeout) = (*node, request(target.clone()), self.timeout);
                tokio::spawn(async move {
                    let Some(client) = client else {
                        return (node, None, Err("no address".to_string()));
                    };
                    let answer = client.call(req, timeout).await.map_err(|e| e.to_string());
                    (node, Some(client), answer)
                })
            })
            .collect();
        let mut answers = Vec::new();
        let mut stale = None;
        while let Some(joined) = calls.next().await {
            let (node, client, answer) = joined.expect("a replica call panicked");
            let ok = match answer {
                Ok(Response::Error(RpcError::StaleEpoch { current })) => {
                    stale = client.map(|c| (c, current));
                    false
                }
                Ok(Response::Error(e)) => {
                    tracing::debug!(node, error = %e, "replica refused");
                    false
                }
                Ok(response) => {
                    answers.push((node, response));
                    true
                }
                Err(e) => {
                    tracing::debug!(node, error = %e, "replica failed");
                    false
                }
            };
            match counter.record(ok) {
                Tally::Met => return Gathered::Met(answers),
                Tally::Failed => break,
                Tally::Pending => {}
            }
        }
        match stale {
            Some((client, epoch)) => Gathered::Stale { client, epoch },
            None => Gathered::Failed { acked: counter.acks() },
        }
    }
}

/// A fan-out that met its level.
struct Routed {
    /// Where it was routed, epoch included.
    target: CollectionRef,
    /// The partition's replica set under that map.
    replicas: Vec<NodeId>,
    /// The answers that met the level.
    answers: Vec<(NodeId, Response)>,
}

/// The end of one fan-out round.
enum Gathered {
    /// Enough replicas answered.
    Met(Vec<(NodeId, Response)>),
    /// A replica knows a newer map.
    Stale { client: Arc<ringup_rpc::Client>, epoch: u64 },
    /// Too few answered.
    Failed { acked: usize },
}

/// One replica's page of a scan: items in id order, and whether the
/// replica stopped before the end of the range.
pub struct Page<T> {
    /// Id and item, in id order.
    pub items: Vec<(String, T)>,
    /// Whether the replica may hold more after the last item.
    pub more: bool,
}

/// Merges pages from several replicas, keeping per id the item `newer`
/// prefers, and at most `limit` ids.
///
/// A replica that stopped early may hold more ids past its last one, so the
/// merge is complete only up to the smallest such last id: the bound,
/// returned as the cursor to continue after (`None` when every replica
/// reached the end).
pub fn merge_pages<T>(
    pages: Vec<Page<T>>,
    limit: usize,
    newer: impl Fn(&T, &T) -> bool,
) -> (Vec<(String, T)>, Option<String>) {
    let mut bound = pages.iter().filter(|p| p.more).filter_map(|p| p.items.last()).map(|(id, _)| id.clone()).min();
    let mut merged: BTreeMap<String, T> = BTreeMap::new();
    for (id, item) in pages.into_iter().flat_map(|p| p.items) {
        if bound.as_ref().is_some_and(|b| &id > b) {
            continue;
        }
        match merged.get_mut(&id) {
            Some(held) if newer(held, &item) => *held = item,
            Some(_) => {}
            None => {
                merged.insert(id, item);
            }
        }
    }
    let mut merged: Vec<(String, T)> = merged.into_iter().collect();
    if merged.len() > limit {
        merged.truncate(limit);
        bound = merged.last().map(|(id, _)| id.clone());
    }
    (merged, bound)
}

/// Whether a value from a replica passes its checksum; logs it if not.
fn valid(bytes: &[u8], node: NodeId, id: &str) -> bool {
    match Header::read(bytes) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(node, id, error = %e, "a replica holds a corrupt value; ignoring it");
            false
        }
    }
}

/// A random id for this router process, used to break version ties.
fn rand_origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[(&str, u64)], more: bool) -> Page<u64> {
        Page { items: ids.iter().map(|(id, v)| (id.to_string(), *v)).collect(), more }
    }

    fn newer(held: &u64, new: &u64) -> bool {
        new > held
    }

    #[test]
    fn merged_pages_keep_the_newest_and_stop_at_the_first_unfinished_page() {
        let a = page(&[("a", 1), ("b", 5), ("c", 1)], true);
        let b = page(&[("a", 2), ("b", 1)], false);
        let (merged, bound) = merge_pages(vec![a, b], 3, newer);
        assert_eq!(bound.as_deref(), Some("c"));
        assert_eq!(merged, [("a".to_string(), 2), ("b".to_string(), 5), ("c".to_string(), 1)]);
    }

    #[test]
    fn an_unfinished_page_bounds_what_a_finished_one_may_add() {
        let unfinished = page(&[("a", 1), ("b", 1)], true);
        let finished_but_further = page(&[("a", 1), ("z", 1)], false);
        let (merged, bound) = merge_pages(vec![unfinished, finished_but_further], 2, newer);
        assert_eq!(bound.as_deref(), Some("b"));
        assert_eq!(merged.len(), 2, "z lies past the bound and must wait for the next page");
    }

    #[test]
    fn the_union_of_pages_is_cut_at_the_limit() {
        let a = page(&[("a", 1), ("c", 1), ("e", 1)], true);
        let b = page(&[("b", 1), ("d", 1)], false);
        let (merged, bound) = merge_pages(vec![a, b], 3, newer);
        let ids: Vec<&str> = merged.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(bound.as_deref(), Some("c"), "the next page starts after the last id returned");
    }

    #[test]
    fn pages_that_all_ended_have_no_bound() {
        let (merged, bound) = merge_pages(vec![page(&[("a", 1)], false), page(&[], false)], 5, newer);
        assert_eq!(merged.len(), 1);
        assert_eq!(bound, None);
    }
}

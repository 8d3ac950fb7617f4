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
use ringup_proto::rpc::{CollectionRef, Entry, Request, Response, RpcError};
use ringup_proto::value::{self, StoredRecord, Version};
use thiserror::Error;

use crate::now_ms;
use crate::view::ClusterView;

/// How many times a request is routed afresh after a stale-epoch refusal.
const EPOCH_RETRIES: usize = 2;
/// How many scan rounds one list page may take when tombstones hide records.
const MAX_LIST_ROUNDS: usize = 16;

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

    /// The newest version of one record, with stale replicas repaired.
    /// Deleted records come back as tombstones.
    pub async fn get(&self, at: &Collection, id: &str, level: Consistency) -> Result<Option<StoredRecord>, CoordError> {
        let (target, answers) = self.fan_out(at, level, |target| Request::Get { target, id: id.to_string() }).await?;
        let values: Vec<(NodeId, Option<Vec<u8>>)> = answers
            .into_iter()
            .filter_map(|(node, r)| match r {
                Response::Value(v) => Some((node, v)),
                _ => None,
            })
            .collect();
        let newest = values.iter().filter_map(|(_, v)| v.as_deref()).reduce(value::merge).map(<[u8]>::to_vec);
        let Some(newest) = newest else {
            return Ok(None);
        };
        let stale: Vec<NodeId> =
            values.iter().filter(|(_, v)| v.as_deref() != Some(&newest[..])).map(|(n, _)| *n).collect();
        self.repair(&target, stale, vec![(id.to_string(), newest.clone())]).await;
        StoredRecord::decode(&newest).map(Some).map_err(|e| CoordError::Corrupt(e.to_string()))
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
            let ask = limit.saturating_sub(page.len()) as u32;
            let (_, answers) =
                self.fan_out(at, level, |target| Request::Scan { target, after: after.clone(), limit: ask }).await?;
            let pages: Vec<Vec<Entry>> = answers
                .into_iter()
                .filter_map(|(_, r)| match r {
                    Response::Entries(e) => Some(e),
                    _ => None,
                })
                .collect();
            let (merged, bound) = merge_pages(pages, ask as usize);
            for (id, bytes) in merged {
                let record = StoredRecord::decode(&bytes).map_err(|e| CoordError::Corrupt(e.to_string()))?;
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
        let next = page.last().map(|(id, _)| id.clone()).or(after);
        Ok((page, next))
    }

    /// How many live records a collection holds, merged from `level` replicas.
    pub async fn count(&self, at: &Collection, level: Consistency) -> Result<u64, CoordError> {
        let (_, answers) = self.fan_out(at, level, |target| Request::Digests { target }).await?;
        let mut newest: BTreeMap<String, (Version, bool)> = BTreeMap::new();
        for digest in answers.into_iter().flat_map(|(_, r)| match r {
            Response::Digests(d) => d,
            _ => Vec::new(),
        }) {
            let slot = newest.entry(digest.id).or_insert((digest.version, digest.tombstone));
            if digest.version > slot.0 {
                *slot = (digest.version, digest.tombstone);
            }
        }
        Ok(newest.values().filter(|(_, tombstone)| !tombstone).count() as u64)
    }

    /// Writes the newest values back to stale replicas and waits for them.
    async fn repair(&self, target: &CollectionRef, stale: Vec<NodeId>, records: Vec<(String, Vec<u8>)>) {
        let Some(map) = self.view.map() else { return };
        let writes = stale.into_iter().filter_map(|node| self.view.client(&map, node).map(|c| (node, c))).map(
            |(node, client)| {
                let request = Request::Write { target: target.clone(), records: records.clone() };
                async move {
                    if let Err(e) = client.call(request, self.timeout).await {
                        tracing::warn!(node, error = %e, "read repair failed");
                    }
                }
            },
        );
        futures::future::join_all(writes).await;
    }

    /// Sends a request to every replica of the collection's partition and
    /// returns the first answers that meet `level`, with the target used.
    async fn fan_out(
        &self,
        at: &Collection,
        level: Consistency,
        request: impl Fn(CollectionRef) -> Request,
    ) -> Result<(CollectionRef, Vec<(NodeId, Response)>), CoordError> {
        let mut attempt = 0;
        loop {
            let map = self.view.map().ok_or(CoordError::NoMap)?;
            let partition = map.partition_of(&at.shop);
            let target =
                CollectionRef { epoch: map.epoch, partition, shop: at.shop.clone(), collection: at.collection.clone() };
            let outcome = self.gather(&map, &target, level, &request).await;
            match outcome {
                Gathered::Met(answers) => return Ok((target, answers)),
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

/// The end of one fan-out round.
enum Gathered {
    /// Enough replicas answered.
    Met(Vec<(NodeId, Response)>),
    /// A replica knows a newer map.
    Stale { client: Arc<ringup_rpc::Client>, epoch: u64 },
    /// Too few answered.
    Failed { acked: usize },
}

/// Merges scan pages from several replicas, newest version per id.
///
/// A replica that returned a full page may hold more ids past its last one,
/// so the merged page is complete only up to the smallest such last id: the
/// bound, returned as the cursor to continue from (`None` when every replica
/// reached the end).
pub fn merge_pages(pages: Vec<Vec<Entry>>, limit: usize) -> (Vec<(String, Vec<u8>)>, Option<String>) {
    let bound =
        pages.iter().filter(|p| p.len() >= limit && limit > 0).filter_map(|p| p.last()).map(|e| e.id.clone()).min();
    let mut merged: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in pages.into_iter().flatten() {
        if bound.as_ref().is_some_and(|b| &entry.id > b) {
            continue;
        }
        match merged.get_mut(&entry.id) {
            Some(held) => {
                if value::merge(held, &entry.value) == &entry.value[..] {
                    *held = entry.value;
                }
            }
            None => {
                merged.insert(entry.id, entry.value);
            }
        }
    }
    (merged.into_iter().collect(), bound)
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
    use ringup_proto::value::Header;

    fn entry(id: &str, hlc: u64) -> Entry {
        let r = StoredRecord { version: Version { hlc, origin: 0 }, ts: 0, tombstone: false, fields: vec![] };
        Entry { id: id.into(), value: r.encode() }
    }

    fn hlc_of(bytes: &[u8]) -> u64 {
        Header::read(bytes).unwrap().version.hlc
    }

    #[test]
    fn merged_pages_keep_the_newest_and_stop_at_the_shortest_full_page() {
        let a = vec![entry("a", 1), entry("b", 5), entry("c", 1)];
        let b = vec![entry("a", 2), entry("b", 1)];
        let (merged, bound) = merge_pages(vec![a, b], 3);
        assert_eq!(bound.as_deref(), Some("c"));
        let got: Vec<_> = merged.iter().map(|(id, v)| (id.as_str(), hlc_of(v))).collect();
        assert_eq!(got, [("a", 2), ("b", 5), ("c", 1)]);
    }

    #[test]
    fn a_full_page_bounds_what_a_short_one_may_add() {
        let full = vec![entry("a", 1), entry("b", 1)];
        let short_but_further = vec![entry("a", 1), entry("z", 1)];
        let (merged, bound) = merge_pages(vec![full, short_but_further], 2);
        assert_eq!(bound.as_deref(), Some("b"));
        assert_eq!(merged.len(), 2, "z lies past the bound and must wait for the next page");
    }

    #[test]
    fn pages_that_all_ended_have_no_bound() {
        let (merged, bound) = merge_pages(vec![vec![entry("a", 1)], vec![]], 5);
        assert_eq!(merged.len(), 1);
        assert_eq!(bound, None);
    }
}

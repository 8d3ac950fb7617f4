//! A report's scan on a node: the collection's records in each partition
//! asked for, filtered and aggregated straight from the stored bytes into
//! one partial result.
//!
//! Per record it reads the value's header first (deleted records and
//! those outside the plan's time bounds stop there), then only the fields
//! the plan names, borrowed from the value's bytes.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ringup_proto::keys::{self, KeyError};
use ringup_proto::query::{Accumulator, Plan, Row, TooManyGroups, Val};
use ringup_proto::ring::PartitionId;
use ringup_proto::rpc::{Response, RpcError};
use ringup_proto::value::{self, Header};

use crate::storage::{Storage, StorageError, blocking};

/// Records read between two looks at the clock.
const CLOCK_EVERY: u64 = 4096;

/// Why a scan stopped short.
enum Stop {
    Storage(StorageError),
    Groups(TooManyGroups),
    Deadline,
}

impl From<StorageError> for Stop {
    fn from(e: StorageError) -> Self {
        Stop::Storage(e)
    }
}

/// Scans `partitions` for `plan`, within `budget`, holding at most
/// `max_groups` groups and distinct values.
pub async fn scan(
    storage: &Storage,
    partitions: Vec<PartitionId>,
    plan: Box<Plan>,
    max_groups: u64,
    budget: Duration,
) -> Result<Response, RpcError> {
    let storage = storage.clone();
    let deadline = Instant::now() + budget;
    let outcome = blocking(move || Ok(scan_blocking(&storage, &partitions, &plan, max_groups, deadline))).await;
    match outcome {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(Stop::Groups(e))) => Err(RpcError::TooManyGroups { cap: e.cap as u64 }),
        Ok(Err(Stop::Deadline)) => Err(RpcError::QueryDeadline),
        Ok(Err(Stop::Storage(e))) | Err(e) => {
            tracing::error!(error = %e, "storage failure in a report scan");
            Err(RpcError::Storage(e.fault()))
        }
    }
}

fn scan_blocking(
    storage: &Storage,
    partitions: &[PartitionId],
    plan: &Plan,
    max_groups: u64,
    deadline: Instant,
) -> Result<Response, Stop> {
    let mut acc = Accumulator::new(plan, usize::try_from(max_groups).unwrap_or(usize::MAX));
    let (mut exists, mut scanned) = (false, 0u64);
    let mut outcome = Ok(());
    let keys_read = plan.reads_shop_or_id();
    for &partition in partitions {
        let prefix_len = keys::table_range(partition, &plan.collection).0.len();
        storage.scan_table(partition, &plan.collection, |key, bytes| {
            exists = true;
            scanned += 1;
            if scanned.is_multiple_of(CLOCK_EVERY) && Instant::now() > deadline {
                outcome = Err(Stop::Deadline);
                return Ok(false);
            }
            match add_record(plan, &mut acc, key, bytes, keys_read.then_some(prefix_len)) {
                Ok(()) => Ok(true),
                Err(Skip::Groups(e)) => {
                    outcome = Err(Stop::Groups(e));
                    Ok(false)
                }
                Err(Skip::Corrupt(reason)) => {
                    // Checked where it entered; a record that no longer
                    // reads is left out and logged, as digests do.
                    tracing::error!(partition, reason, "corrupt record left out of a report");
                    Ok(true)
                }
            }
        })?;
        std::mem::replace(&mut outcome, Ok(()))?;
    }
    Ok(Response::QueryPart { part: Box::new(acc.into_partial()), exists, scanned })
}

enum Skip {
    Groups(TooManyGroups),
    Corrupt(String),
}

impl From<value::ValueError> for Skip {
    fn from(e: value::ValueError) -> Self {
        Skip::Corrupt(e.to_string())
    }
}

impl From<KeyError> for Skip {
    fn from(e: KeyError) -> Self {
        Skip::Corrupt(e.to_string())
    }
}

/// Feeds one stored record to the accumulator if it is live, within the
/// time bounds and passes the filter. The shop and id are read from the
/// key (after its `prefix_len` bytes) only when given a length.
fn add_record(
    plan: &Plan,
    acc: &mut Accumulator<'_>,
    key: &[u8],
    bytes: &[u8],
    prefix_len: Option<usize>,
) -> Result<(), Skip> {
    let header = Header::parse(bytes)?;
    let ts = header.ts.saturating_mul(1000);
    if header.tombstone || !plan.time.holds(ts) {
        return Ok(());
    }
    // Up to 8 fields on the stack, more on the heap.
    let mut stack = [Val::Null; 8];
    let mut heap = Vec::new();
    let fields: &mut [Val<'_>] = if plan.fields.len() <= stack.len() {
        &mut stack[..plan.fields.len()]
    } else {
        heap.resize(plan.fields.len(), Val::Null);
        &mut heap
    };
    if !plan.fields.is_empty() {
        // Both lists are in name order: one pass over each, comparing
        // names as bytes; only wanted values are decoded.
        let mut wanted = plan.fields.iter().enumerate().peekable();
        let mut stored = value::fields_ref(bytes)?;
        while let Some(field) = stored.step() {
            let (name, raw) = field?;
            while wanted.peek().is_some_and(|(_, w)| w.as_bytes() < name) {
                wanted.next();
            }
            match wanted.peek() {
                Some((i, w)) if w.as_bytes() == name => fields[*i] = Val::from(raw.value()?),
                Some(_) => {}
                None => break,
            }
        }
    }
    let (shop, id) = match prefix_len {
        Some(len) => shop_and_id(key, len)?,
        None => (Cow::Borrowed(""), Cow::Borrowed("")),
    };
    let row = Row { shop: &shop, id: &id, ts, fields };
    if plan.filter.as_ref().is_none_or(|f| f.passes(&row)) {
        acc.add(&row).map_err(Skip::Groups)?;
    }
    Ok(())
}

/// The shop and id of a key within a collection's range, borrowed unless
/// they hold escaped zero bytes.
fn shop_and_id(key: &[u8], prefix_len: usize) -> Result<(Cow<'_, str>, Cow<'_, str>), KeyError> {
    let rest = key.get(prefix_len..).ok_or(KeyError::Truncated)?;
    let plain = |s: &[u8]| !s.contains(&0);
    // Without escapes a string ends at the first 0x00 0x00.
    if let Some(end) = rest.windows(2).position(|w| w == [0, 0]) {
        let (shop, tail) = (&rest[..end], &rest[end + 2..]);
        if plain(shop) && tail.len() >= 2 && tail.ends_with(&[0, 0]) && plain(&tail[..tail.len() - 2]) {
            let shop = std::str::from_utf8(shop).map_err(|_| KeyError::NotUtf8)?;
            let id = std::str::from_utf8(&tail[..tail.len() - 2]).map_err(|_| KeyError::NotUtf8)?;
            return Ok((Cow::Borrowed(shop), Cow::Borrowed(id)));
        }
    }
    let (shop, id) = keys::shop_and_id(key, prefix_len)?;
    Ok((Cow::Owned(shop), Cow::Owned(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringup_proto::keys::RecordKey;

    #[test]
    fn shop_and_id_read_borrowed_or_escaped() {
        for (shop, id) in [("s-1", "a"), ("s\0x", "i"), ("s", "i\0"), ("", ""), ("s", "")] {
            let key = RecordKey { partition: 7, collection: "c".into(), shop: shop.into(), id: id.into() }.encode();
            let prefix_len = keys::table_range(7, "c").0.len();
            let (s, i) = shop_and_id(&key, prefix_len).unwrap();
            assert_eq!((s.as_ref(), i.as_ref()), (shop, id));
        }
    }
}

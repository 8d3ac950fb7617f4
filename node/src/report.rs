//! A report's scan on a node: the collection's records in each partition
//! asked for, filtered and aggregated straight from the stored bytes into
//! one partial result.
//!
//! A partition that has not changed for a while ([`QUIET`]) is decoded
//! into a column segment once and kept ([`crate::columns`]); reports over
//! it then read the segment. Other partitions are scanned record by record.
//!
//! Per record it reads the value's header first (deleted records and
//! those outside the plan's time bounds stop there), then only the fields
//! the plan names, borrowed from the value's bytes.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringup_proto::keys::{self, KeyError};
use ringup_proto::query::{Accumulator, Plan, Row, TooManyGroups, Val};
use ringup_proto::ring::PartitionId;
use ringup_proto::rpc::{Response, RpcError};
use ringup_proto::value::{self, Header};

use crate::columns::{self, ColumnCache, QUIET, Refused, Segment, SegmentBuilder};
use crate::rows::{shop_and_id, with_vals};
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
    columns: &Arc<ColumnCache>,
    partitions: Vec<PartitionId>,
    plan: Box<Plan>,
    max_groups: u64,
    budget: Duration,
) -> Result<Response, RpcError> {
    let (storage, columns) = (storage.clone(), columns.clone());
    let deadline = Instant::now() + budget;
    let outcome =
        blocking(move || Ok(scan_blocking(&storage, &columns, &partitions, &plan, max_groups, deadline))).await;
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
    columns: &ColumnCache,
    partitions: &[PartitionId],
    plan: &Plan,
    max_groups: u64,
    deadline: Instant,
) -> Result<Response, Stop> {
    let cap = usize::try_from(max_groups).unwrap_or(usize::MAX);
    let mut acc = Accumulator::new(plan, cap);
    let mut read = Read::default();
    for &partition in partitions {
        if Instant::now() > deadline {
            return Err(Stop::Deadline);
        }
        let segment = segment_for(storage, columns, partition, plan, deadline)?;
        match segment {
            Some(segment) => {
                columns.from_segments.fetch_add(1, Ordering::Relaxed);
                read.exists |= segment.keys() > 0;
                read.scanned += segment.keys();
                columns::aggregate(&segment, plan, &mut acc, cap).map_err(Stop::Groups)?;
            }
            None => {
                columns.scanned.fetch_add(1, Ordering::Relaxed);
                scan_rows(storage, partition, plan, &mut acc, &mut read, deadline)?;
            }
        }
    }
    Ok(Response::QueryPart { part: Box::new(acc.into_partial()), exists: read.exists, scanned: read.scanned })
}

/// What the scans of a request read.
#[derive(Debug, Default)]
struct Read {
    /// Whether any key of the collection was found, deleted or not.
    exists: bool,
    /// Keys read.
    scanned: u64,
}

/// The partition's segment with the fields `plan` reads: kept, extended
/// with the fields it lacks, or built if the partition is quiet; `None`
/// where the partition is to be scanned record by record.
fn segment_for(
    storage: &Storage,
    columns: &ColumnCache,
    partition: PartitionId,
    plan: &Plan,
    deadline: Instant,
) -> Result<Option<Arc<Segment>>, Stop> {
    if !columns.enabled() {
        return Ok(None);
    }
    // Read before the scan starts; see `Generations`.
    let (Some(generation), quiet) = storage.generations().of(partition) else { return Ok(None) };
    let collection = &plan.collection;
    let built = match columns.get(partition, collection, generation) {
        Some(segment) => {
            let missing = segment.missing(&plan.fields);
            if missing.is_empty() {
                return Ok(Some(segment));
            }
            let builder = SegmentBuilder::extend(&segment, partition, collection, &missing);
            fill(storage, partition, collection, builder, deadline)?
        }
        None if quiet >= QUIET => {
            fill(storage, partition, collection, SegmentBuilder::new(partition, collection, &plan.fields), deadline)?
        }
        None => return Ok(None),
    };
    // Kept only if no change started since the generation was read: then
    // the scan saw the records as they were at that read.
    let unchanged = storage.generations().of(partition).0 == Some(generation);
    match built {
        Some(segment) if unchanged => {
            let segment = Arc::new(segment);
            columns.built.fetch_add(1, Ordering::Relaxed);
            columns.put(partition, collection, generation, segment.clone());
            Ok(Some(segment))
        }
        _ => Ok(None),
    }
}

/// Feeds the collection's records in `partition` to `builder`; `None` if
/// they changed under an extension.
fn fill(
    storage: &Storage,
    partition: PartitionId,
    collection: &str,
    mut builder: SegmentBuilder,
    deadline: Instant,
) -> Result<Option<Segment>, Stop> {
    let (mut read, mut late, mut changed) = (0u64, false, false);
    storage.scan_table(partition, collection, |key, bytes| {
        read += 1;
        if read.is_multiple_of(CLOCK_EVERY) && Instant::now() > deadline {
            late = true;
            return Ok(false);
        }
        match builder.push(key, bytes) {
            Ok(()) => Ok(true),
            Err(Refused::Corrupt(reason)) => {
                tracing::error!(partition, reason, "corrupt record left out of a report");
                Ok(true)
            }
            Err(Refused::Changed) => {
                changed = true;
                Ok(false)
            }
        }
    })?;
    if late {
        return Err(Stop::Deadline);
    }
    Ok(if changed { None } else { builder.finish().ok() })
}

/// Scans one partition record by record from the stored bytes.
fn scan_rows(
    storage: &Storage,
    partition: PartitionId,
    plan: &Plan,
    acc: &mut Accumulator<'_>,
    read: &mut Read,
    deadline: Instant,
) -> Result<(), Stop> {
    let mut outcome = Ok(());
    let keys_read = plan.reads_shop_or_id();
    let prefix_len = keys::table_range(partition, &plan.collection).0.len();
    storage.scan_table(partition, &plan.collection, |key, bytes| {
        read.exists = true;
        read.scanned += 1;
        if read.scanned.is_multiple_of(CLOCK_EVERY) && Instant::now() > deadline {
            outcome = Err(Stop::Deadline);
            return Ok(false);
        }
        match add_record(plan, acc, key, bytes, keys_read.then_some(prefix_len)) {
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
    outcome
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
    with_vals(plan.fields.len(), |fields| {
        read_fields(plan, bytes, fields)?;
        let (shop, id) = match prefix_len {
            Some(len) => shop_and_id(key, len)?,
            None => (Cow::Borrowed(""), Cow::Borrowed("")),
        };
        let row = Row { shop: &shop, id: &id, ts, fields };
        if plan.filter.as_ref().is_none_or(|f| f.passes(&row)) {
            acc.add(&row).map_err(Skip::Groups)?;
        }
        Ok(())
    })
}

/// Reads the plan's fields from a stored value into `fields`.
fn read_fields<'a>(plan: &Plan, bytes: &'a [u8], fields: &mut [Val<'a>]) -> Result<(), Skip> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringup_proto::keys::RecordKey;
    use ringup_proto::query::Scalar;
    use ringup_proto::value::{Field, StoredRecord, Version};

    /// Reports whose every part the column path handles in its own way
    /// (lookups, tokens, codes) or hands to the evaluator.
    const QUERIES: &[&str] = &[
        "SELECT count(*), sum(amount), avg(amount), min(ts), max(ts) FROM sales",
        "SELECT shop, sum(amount) AS total FROM sales GROUP BY shop ORDER BY total DESC, shop LIMIT 3",
        "SELECT region, count(DISTINCT sku) AS skus, count(*), count(region) FROM sales GROUP BY region ORDER BY region",
        "SELECT date_trunc('day', ts) AS day, count(*), sum(qty) FROM sales WHERE ts >= '2026-02-02' AND ts < '2026-02-05' GROUP BY day ORDER BY day",
        "SELECT shop, id, amount, ts FROM sales WHERE region = 'eu' AND status IN ('paid', 'refunded') ORDER BY amount DESC, shop, id LIMIT 7",
        "SELECT shop, id FROM sales WHERE amount > 5 OR region IS NULL ORDER BY shop, id LIMIT 50",
        "SELECT mixed, count(*), min(mixed), max(mixed), sum(mixed), count(DISTINCT mixed) FROM sales GROUP BY mixed ORDER BY 2 DESC, 1",
        "SELECT count(DISTINCT shop), count(DISTINCT mixed), min(region), max(sku), min(shop), count(missing), sum(missing) FROM sales",
        "SELECT region, status, date_trunc('hour', ts) AS h, count(*) FROM sales WHERE NOT (status = 'void') GROUP BY region, status, h ORDER BY 1, 2, 3",
        "SELECT id, ts FROM sales WHERE ts = '2026-02-03T00:00:00Z' OR shop = 's1' ORDER BY id LIMIT 20",
        "SELECT shop, max(ts), min(amount) FROM sales WHERE ts > '2026-02-03' AND missing IS NULL AND sku <> 'k1' GROUP BY shop ORDER BY shop",
        "SELECT amount, count(*) FROM sales WHERE status = 'paid' GROUP BY amount ORDER BY amount LIMIT 10",
        "SELECT region, count(*) FROM sales WHERE region IN ('eu', 'us') AND ts <> '2026-02-03T00:00:00Z' GROUP BY region ORDER BY region",
        "SELECT id, mixed FROM sales WHERE mixed = 'true' ORDER BY id LIMIT 5",
    ];

    fn text(options: &'static [&'static str]) -> impl Strategy<Value = Field> {
        prop::sample::select(options).prop_map(|s| Field::Str(s.into()))
    }

    /// A record: its key's shop and id, whether it is deleted, its time,
    /// and fields (some missing, some NULL, `mixed` of every kind).
    fn any_record() -> impl Strategy<Value = (String, String, bool, i64, Vec<(String, Field)>)> {
        let amount =
            prop_oneof![(0i64..20).prop_map(Field::Int), (0u32..80).prop_map(|q| Field::Float(f64::from(q) / 4.0))];
        let mixed = prop_oneof![
            Just(Field::Null),
            any::<bool>().prop_map(Field::Bool),
            (0i64..3).prop_map(Field::Int),
            Just(Field::Float(1.5)),
            text(&["a", "b", "true"]),
            Just(Field::Json("[1]".into())),
        ];
        let field = |name: &'static str, value: BoxedStrategy<Field>| {
            prop::option::weighted(0.85, value).prop_map(move |v| v.map(|v| (name.to_string(), v)))
        };
        let fields = (
            field("amount", amount.boxed()),
            field("mixed", mixed.boxed()),
            field("qty", (0i64..5).prop_map(Field::Int).boxed()),
            field("region", prop_oneof![text(&["eu", "us", "ap"]), Just(Field::Null)].boxed()),
            field("sku", text(&["k1", "k2", "k3", "k4"]).boxed()),
            field("status", text(&["paid", "refunded", "void"]).boxed()),
        )
            .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f].into_iter().flatten().collect::<Vec<_>>());
        // Times over four days from 2026-02-01, on the hour.
        let day0 = 1_769_904_000_000i64;
        (
            prop::sample::select(&["s1", "s2", "s\u{0}3", "s4"][..]).prop_map(String::from),
            (0u32..40).prop_map(|i| format!("r{i}")),
            prop::bool::weighted(0.1),
            (0i64..96).prop_map(move |h| day0 + h * 3_600_000),
            fields,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A segment gives every query the same result as the scan of the
        /// stored bytes, records in any mix of kinds, deleted or missing;
        /// built with some of the fields and extended as queries need more.
        #[test]
        fn a_segment_answers_as_the_record_scan_does(
            records in prop::collection::vec(any_record(), 0..120),
            first in prop::sample::subsequence(vec!["amount", "mixed", "region", "nothing"], 0..=4),
        ) {
            let mut stored: Vec<(Vec<u8>, Vec<u8>)> = records
                .into_iter()
                .map(|(shop, id, tombstone, ts, fields)| {
                    let key = RecordKey { partition: 3, collection: "sales".into(), shop, id }.encode();
                    let version = Version { hlc: 1, origin: 1 };
                    let value = StoredRecord { version, ts, tombstone, fields }.encode();
                    (key, value)
                })
                .collect();
            // As the store holds them: by key, one value per key.
            stored.sort_by(|a, b| a.0.cmp(&b.0));
            stored.dedup_by(|a, b| a.0 == b.0);
            let first: Vec<String> = first.into_iter().map(String::from).collect();
            let mut builder = SegmentBuilder::new(3, "sales", &first);
            stored.iter().for_each(|(k, v)| builder.push(k, v).unwrap());
            let mut segment = builder.finish().unwrap();
            prop_assert_eq!(segment.keys(), stored.len() as u64);
            let prefix_len = keys::table_range(3, "sales").0.len();
            for sql in QUERIES {
                let plan = ringup_proto::query::parse(sql).unwrap();
                let missing = segment.missing(&plan.fields);
                if !missing.is_empty() {
                    let mut builder = SegmentBuilder::extend(&segment, 3, "sales", &missing);
                    stored.iter().for_each(|(k, v)| builder.push(k, v).unwrap());
                    segment = builder.finish().unwrap();
                }
                prop_assert!(segment.missing(&plan.fields).is_empty());
                let mut by_rows = Accumulator::new(&plan, usize::MAX);
                for (k, v) in &stored {
                    prop_assert!(add_record(&plan, &mut by_rows, k, v, Some(prefix_len)).is_ok());
                }
                let mut by_columns = Accumulator::new(&plan, usize::MAX);
                columns::aggregate(&segment, &plan, &mut by_columns, usize::MAX).unwrap();
                let (rows, columns) = (by_rows.finish(), by_columns.finish());
                prop_assert_eq!(&rows, &columns, "{}", sql);
            }
        }
    }

    /// Stored records of partition 1, collection `c`, shop `s`: ids and
    /// their `k` field.
    fn records(rows: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        rows.iter()
            .map(|(id, k)| {
                let key = RecordKey { partition: 1, collection: "c".into(), shop: "s".into(), id: id.to_string() };
                let fields = vec![("k".to_string(), Field::Str(k.to_string()))];
                (key.encode(), StoredRecord { version: Version::default(), ts: 0, tombstone: false, fields }.encode())
            })
            .collect()
    }

    #[test]
    fn an_extension_over_other_records_is_refused() {
        let mut builder = SegmentBuilder::new(1, "c", &[]);
        records(&[("a", "1"), ("b", "2")]).iter().for_each(|(k, v)| builder.push(k, v).unwrap());
        let segment = builder.finish().unwrap();
        let extend = |rows: &[(&str, &str)]| {
            let mut builder = SegmentBuilder::extend(&segment, 1, "c", &["k".to_string()]);
            for (k, v) in records(rows) {
                builder.push(&k, &v)?;
            }
            builder.finish().map(|s| s.rows())
        };
        assert_eq!(extend(&[("a", "9"), ("b", "9")]), Ok(2), "the same records, new values of a new field");
        assert_eq!(extend(&[("a", "1"), ("c", "2")]), Err(Refused::Changed), "another record");
        assert_eq!(extend(&[("a", "1")]), Err(Refused::Changed), "a record gone");
        assert_eq!(extend(&[("a", "1"), ("b", "2"), ("c", "3")]), Err(Refused::Changed), "a record more");
    }

    #[test]
    fn a_segment_keeps_to_the_group_cap() {
        let mut builder = SegmentBuilder::new(1, "c", &["k".to_string()]);
        for i in 0..10 {
            let key = RecordKey { partition: 1, collection: "c".into(), shop: "s".into(), id: format!("{i}") }.encode();
            let fields = vec![("k".to_string(), Field::Str(format!("v{i}")))];
            builder
                .push(&key, &StoredRecord { version: Version::default(), ts: 0, tombstone: false, fields }.encode())
                .unwrap();
        }
        let segment = builder.finish().unwrap();
        let plan = ringup_proto::query::parse("SELECT k, count(*) FROM c GROUP BY k").unwrap();
        let mut acc = Accumulator::new(&plan, 10);
        assert!(columns::aggregate(&segment, &plan, &mut acc, 10).is_ok());
        let mut acc = Accumulator::new(&plan, 9);
        assert_eq!(columns::aggregate(&segment, &plan, &mut acc, 9), Err(TooManyGroups { cap: 9 }));
        let (_, rows) = Accumulator::new(&plan, 10).finish();
        assert_eq!(rows, Vec::<Vec<Scalar>>::new());
    }

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

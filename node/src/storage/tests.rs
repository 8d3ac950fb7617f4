//! Storage tests: merges, formats, keys, streamed partitions, generations.

use std::sync::Arc;
use std::time::Duration;

use ringup_proto::keys::{self, RecordKey};
use ringup_proto::value::Header;

use super::records::record_id;
use super::*;
use ringup_proto::keys::collection_range;
use ringup_proto::value::{StoredRecord, Version};

fn value(hlc: u64, n: i64) -> Vec<u8> {
    let fields = serde_json::json!({ "n": n });
    StoredRecord::from_json(Version { hlc, origin: 1 }, 0, fields.as_object().unwrap()).encode()
}

fn key(id: &str) -> RecordKey {
    RecordKey { partition: 5, shop: "s".into(), collection: "c".into(), id: id.into() }
}

#[tokio::test]
async fn a_directory_of_another_data_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
        assert_eq!(storage.get_meta(MetaKey::DataFormat).unwrap(), Some(keys::DATA_FORMAT.to_be_bytes().to_vec()));
        storage.put_meta(&[(MetaKey::NodeId, Some(1u64.to_be_bytes().to_vec()))]).unwrap();
        storage.stop_background_work();
    }
    // Reopened, the format it wrote is read back.
    drop(Storage::open(dir.path(), FsyncPolicy::Group).unwrap());
    // A directory used before the format was stored holds format 1.
    {
        let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
        storage.put_meta(&[(MetaKey::DataFormat, None)]).unwrap();
    }
    let e = Storage::open(dir.path(), FsyncPolicy::Group).err().expect("format 1 is refused");
    assert!(matches!(e, StorageError::Format { found: 1, expected: 3 }), "{e}");
    assert!(e.to_string().contains("data format 1"), "{e}");
}

fn data_keys(lines: &str) -> Option<Arc<DataKeys>> {
    Some(Arc::new(DataKeys::parse(lines).unwrap()))
}

/// Key 1, then keys 1 and 2: the reseal pass moves every value to key
/// 2, never undoes a write that came between its read and its replace,
/// and then lets key 1 go.
#[tokio::test]
async fn the_reseal_pass_moves_values_to_the_newest_key_without_undoing_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (format!("1 {}\n", "11".repeat(32)), format!("2 {}\n", "22".repeat(32)));
    {
        let storage = Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&one)).unwrap();
        storage.merge_records(vec![(key("a"), value(1, 10)), (key("b"), value(1, 20))]).await.unwrap();
        let stored = storage.db.get_cf(storage.cf(CF_DATA), key("a").encode()).unwrap().unwrap();
        assert_eq!(Header::parse(&stored).unwrap().key_id, Some(1));
        assert!(storage.stale_values(None, 10, 1 << 20).await.unwrap().values.is_empty());
        storage.stop_background_work();
    }
    let storage = Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&format!("{one}{two}"))).unwrap();
    let found = storage.stale_values(None, 10, 1 << 20).await.unwrap();
    assert!(found.done);
    assert_eq!(found.values.iter().map(|(k, _, _)| record_id(k).unwrap()).collect::<Vec<_>>(), ["a", "b"]);
    // A write to b after the pass read it: its replace must not undo it.
    storage.merge_records(vec![(key("b"), value(2, 21))]).await.unwrap();
    storage.reseal(found.values).await.unwrap();
    assert_eq!(storage.get_record(key("a")).await.unwrap(), Some(value(1, 10)));
    assert_eq!(storage.get_record(key("b")).await.unwrap(), Some(value(2, 21)), "the newer write stays");
    for id in ["a", "b"] {
        let stored = storage.db.get_cf(storage.cf(CF_DATA), key(id).encode()).unwrap().unwrap();
        assert_eq!(Header::parse(&stored).unwrap().key_id, Some(2), "{id} is sealed under key 2");
    }
    assert!(storage.stale_values(None, 10, 1 << 20).await.unwrap().values.is_empty());
    assert_eq!(storage.retire_key_checks(&[2]).unwrap(), vec![1]);
    storage.stop_background_work();
    drop(storage);
    // Key 1 may now leave the file.
    let storage = Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&two)).unwrap();
    assert_eq!(storage.get_record(key("b")).await.unwrap(), Some(value(2, 21)));
}

#[tokio::test]
async fn a_key_file_without_a_used_key_or_none_at_all_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let one = format!("1 {}\n", "11".repeat(32));
    drop(Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&one)).unwrap());
    let other = format!("1 {}\n", "33".repeat(32));
    let e = Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&other)).err().expect("another key 1");
    assert!(e.to_string().contains("data key 1 does not open"), "{e}");
    let e = Storage::open(dir.path(), FsyncPolicy::Group).err().expect("no key file");
    assert!(e.to_string().contains("--data-key-file"), "{e}");
}

#[tokio::test]
async fn merges_keep_the_newest_version_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
    storage.merge_records(vec![(key("a"), value(2, 20))]).await.unwrap();
    storage.merge_records(vec![(key("a"), value(1, 10)), (key("b"), value(1, 1))]).await.unwrap();
    storage.merge_records(vec![(key("a"), value(2, 20))]).await.unwrap();
    assert_eq!(storage.get_record(key("a")).await.unwrap(), Some(value(2, 20)));

    let (page, more) = storage.scan_records(collection_range(5, "s", "c", None), 10).await.unwrap();
    let ids: Vec<_> = page.iter().map(|e| e.id.as_str()).collect();
    assert_eq!((ids, more), (vec!["a", "b"], false));
    let (after_a, more) = storage.scan_records(collection_range(5, "s", "c", Some("a")), 1).await.unwrap();
    assert_eq!((after_a.len(), more), (1, false), "b is the last record");
    let (first, more) = storage.scan_records(collection_range(5, "s", "c", None), 1).await.unwrap();
    assert_eq!((first.len(), more), (1, true));
    let (digests, more) = storage.digest_records(collection_range(5, "s", "c", None), 10).await.unwrap();
    assert_eq!((digests.len(), more), (2, false));
}

#[tokio::test]
async fn a_streamed_partition_merges_with_newer_writes_and_can_be_dropped() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = Storage::open(&src_dir.path().join("db"), FsyncPolicy::Group).unwrap();
    let target = Storage::open(&dst_dir.path().join("db"), FsyncPolicy::Group).unwrap();
    let ids: Vec<String> = (0..500).map(|i| format!("r{i:04}")).collect();
    source.merge_records(ids.iter().map(|id| (key(id), value(5, 1))).collect()).await.unwrap();
    // A write that reached the target directly, newer than the source's.
    target.merge_records(vec![(key("r0007"), value(9, 2))]).await.unwrap();
    // And one older than the source's, which must lose.
    target.merge_records(vec![(key("r0008"), value(1, 0))]).await.unwrap();

    let (mut after, mut chunks, mut records) = (None, 0, 0);
    loop {
        let chunk = source.export_chunk(5, after.clone(), 2000, src_dir.path()).await.unwrap();
        records += chunk.records;
        if !chunk.sst.is_empty() {
            target.ingest_chunk(chunk.sst, dst_dir.path()).await.unwrap();
        }
        chunks += 1;
        after = chunk.last;
        if chunk.done {
            break;
        }
    }
    assert_eq!(records, 500);
    assert!(chunks > 5, "{chunks} chunks of about 2000 bytes");
    assert_eq!(target.get_record(key("r0007")).await.unwrap(), Some(value(9, 2)), "the newer write wins");
    assert_eq!(target.get_record(key("r0008")).await.unwrap(), Some(value(5, 1)), "the streamed one wins");
    assert_eq!(target.get_record(key("r0499")).await.unwrap(), Some(value(5, 1)));
    assert_eq!(target.holdings(8).await.unwrap(), vec![5]);
    assert!(source.export_chunk(5, after, 2000, src_dir.path()).await.unwrap().done);

    target.delete_partition(5).await.unwrap();
    assert_eq!(target.holdings(8).await.unwrap(), Vec::<u32>::new());
    assert_eq!(target.get_record(key("r0007")).await.unwrap(), None);
}

#[tokio::test]
async fn a_partition_generation_moves_after_each_change_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
    let of = |p| storage.generations().of(p).0.expect("no change under way");
    let before = (of(5), of(6));
    // Twice per change: before and after its commit.
    storage.merge_records(vec![(key("a"), value(1, 1)), (key("b"), value(1, 1))]).await.unwrap();
    assert_eq!((of(5), of(6)), (before.0 + 2, before.1), "only the written partition moves");
    storage.delete_partition(5).await.unwrap();
    assert_eq!(of(5), before.0 + 4);
    storage.barrier().await.unwrap();
    assert_eq!(of(5), before.0 + 4, "a barrier changes nothing");
    let generations = Generations::new();
    generations.raise(&mut [&5u32.to_be_bytes()[..]].into_iter());
    assert_eq!(generations.of(5).0, None, "under way");
    generations.raise(&mut [&5u32.to_be_bytes()[..]].into_iter());
    assert_eq!(generations.of(5).0, Some(2));
    generations.begin_all();
    assert_eq!(generations.of(6).0, None, "an ingest touches every partition");
    generations.end_all();
    assert_eq!((generations.of(5).0, generations.of(6).0), (Some(4), Some(2)));
    assert!(storage.generations().of(5).1 < Duration::from_secs(5));
}

#[tokio::test]
async fn data_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
        storage.merge_records(vec![(key("a"), value(3, 30))]).await.unwrap();
        storage.put_meta(&[(MetaKey::NodeId, Some(vec![7]))]).unwrap();
    }
    let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
    assert_eq!(storage.get_record(key("a")).await.unwrap(), Some(value(3, 30)));
    assert_eq!(storage.get_meta(MetaKey::NodeId).unwrap(), Some(vec![7]));
}

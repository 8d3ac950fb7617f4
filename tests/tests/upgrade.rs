//! Data directories of an earlier format open with today's binaries.
//!
//! `tests/fixtures/format-N/cluster` is the directory of a three-node local
//! cluster written by the binaries of format N (`scripts/make-fixture.sh N`
//! made it), holding the writes listed in `writes.ndjson` beside it:
//! pushes, overwrites and deletes. Its data key file and admin token are
//! the fixture's own. The test starts today's binaries on a copy of it, on
//! the addresses it was written on, and reads every record back: what the
//! writes leave, computed here from the list, never from the store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use ringup_tests::TestCluster;
use serde_json::Value;

/// The addresses `scripts/make-fixture.sh` runs the cluster on: the map and
/// the metadata group keep them.
const NODES: [&str; 3] = ["127.0.0.1:17301", "127.0.0.1:17302", "127.0.0.1:17303"];
const ROUTER: &str = "127.0.0.1:17380";

/// A record's key: shop, collection, id.
type Key = (String, String, String);

#[tokio::test(flavor = "multi_thread")]
async fn a_format_3_directory_opens_and_reads_back_every_record() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format-3");
    let expected = final_state(&fixture.join("writes.ndjson"));
    assert!(expected.values().filter(|v| v.is_some()).count() > 150, "the fixture holds a real amount of data");

    let dir = tempfile::Builder::new().prefix("ringup-upgrade-").tempdir().expect("a temp dir");
    copy_dir(&fixture.join("cluster"), dir.path());
    let nodes = NODES.iter().map(|a| a.parse::<SocketAddr>().expect("an address")).collect();
    let cluster = TestCluster::start_in(dir, nodes, ROUTER.parse().expect("an address")).await;

    let mut wrong = Vec::new();
    for ((shop, collection, id), record) in &expected {
        let (status, body) = cluster.get(&format!("/v1/shops/{shop}/{collection}/{id}?consistency=all")).await;
        let fine = match record {
            Some(record) => status == StatusCode::OK && body == *record,
            None => status == StatusCode::NOT_FOUND,
        };
        if !fine {
            wrong.push(format!("{shop}/{collection}/{id}: expected {record:?}, got {status} {body}"));
        }
    }
    let deleted = expected.values().filter(|v| v.is_none()).count();
    println!("format 3: {} records read back, {deleted} deletes still deleted", expected.len() - deleted);
    assert!(wrong.is_empty(), "{} records differ:\n{}\n{}", wrong.len(), wrong.join("\n"), cluster.logs().await);

    let (status, body) = cluster.get("/v1/shops/shop-01/sales/_count").await;
    let live = expected.iter().filter(|((s, c, _), v)| s == "shop-01" && c == "sales" && v.is_some()).count();
    assert_eq!((status, body["count"].as_u64()), (StatusCode::OK, Some(live as u64)));
}

/// What each record holds after the writes in `path`, in order: the last
/// push of it, or `None` if a delete came after.
fn final_state(path: &Path) -> BTreeMap<Key, Option<Value>> {
    let text = std::fs::read_to_string(path).expect("the fixture's writes");
    let mut state = BTreeMap::new();
    for line in text.lines() {
        let op: Value = serde_json::from_str(line).expect("a JSON line");
        let text = |k: &str| op[k].as_str().expect("a string field").to_string();
        let (shop, collection) = (text("shop"), text("collection"));
        match op["op"].as_str() {
            Some("push") => {
                for record in op["records"].as_array().expect("records") {
                    let id = record["id"].as_str().expect("an id").to_string();
                    state.insert((shop.clone(), collection.clone(), id), Some(record.clone()));
                }
            }
            Some("delete") => {
                state.insert((shop, collection, text("id")), None);
            }
            other => panic!("unknown op {other:?}"),
        }
    }
    state
}

/// Copies the tree at `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("the fixture's directory") {
        let entry = entry.expect("a directory entry");
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            std::fs::create_dir_all(&target).expect("a directory");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("a copy");
        }
    }
}

//! ringup's shared vocabulary: types and pure logic, no I/O.
//!
//! A write travels through this crate like this:
//!
//! 1. The router checks the path's names with [`names`] and finds the shop's
//!    partition on the [`ring`]: `(xxh3(shop) × Q) >> 64`.
//! 2. The [`cluster`] map's [`placement`] names the partition's replica set.
//! 3. The router stamps the record with a [`hlc`] version and encodes it as
//!    a [`value`]: version, event time, tombstone flag, binary fields, crc32.
//! 4. It sends a [`rpc::Request::Write`] to each replica as a [`frame`]
//!    (`[len][crc32][bincode]`), and counts the answers against the
//!    [`consistency`] level; the [`coordinator`] core decides whom to ask
//!    and when the level is met.
//! 5. Each node stores the value under its [`keys`] encoding, which keeps
//!    partitions and collections contiguous, merging with what it holds by
//!    [`value::merge`]: last writer wins.

pub mod auth;
pub mod backoff;
pub mod cluster;
pub mod consistency;
pub mod coordinator;
pub mod formation;
pub mod frame;
pub mod heal;
pub mod hlc;
pub mod keys;
pub mod merkle;
pub mod migration;
pub mod moves;
pub mod names;
pub mod placement;
pub mod query;
pub mod redial;
pub mod ring;
pub mod route;
pub mod rpc;
pub mod rules;
pub mod stats;
pub mod value;

pub use placement::NodeId;

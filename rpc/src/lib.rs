//! The internal RPC transport: [`ringup_proto::frame`]s over persistent TCP
//! connections.
//!
//! A caller takes a [`Client`] for a peer from the [`Pool`] and awaits
//! [`Client::call`]. The client keeps one connection per peer and tags each
//! request with an id, so many requests share it and answers may come back
//! in any order. A server runs [`serve`] with a [`Handler`]; each request is
//! handled in its own task and its answer written back as soon as it is
//! ready.
//!
//! A corrupt or oversized frame closes the connection, on either side. A
//! caller sees that as [`CallError::Closed`] and the next call reconnects.
//!
//! [`process`] holds the set-up every server binary shares: logging and the
//! shutdown signal.

mod client;
pub mod process;
mod server;

pub use client::{CallError, Client, Pool};
pub use server::{Handler, serve};

/// How many frames may wait to be written on one connection.
const WRITE_QUEUE: usize = 1024;

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
//! A message for several peers is serialized once into a
//! [`ringup_proto::frame::Body`] and handed to each peer's
//! [`Client::send`]; only the few bytes of frame header and request id
//! differ per peer (see `codec`). Readers grow their buffers with the bytes
//! that arrive, never by what a header announces.
//!
//! A corrupt or oversized frame closes the connection, on either side. A
//! caller sees that as [`CallError::Closed`] and the next call reconnects.
//! A server holds memory to its [`Limits`]: connections, requests per
//! connection, and bytes of requests over all connections.

mod client;
pub mod clock;
mod codec;
mod server;
mod tls;

pub use client::{CallError, Client, Connect, Pool};
pub use clock::Clock;
pub use server::{Handler, Limits, serve, serve_tls, serve_with};
pub use tls::{NODE_NAME, Tls, TlsError, TlsFiles};

/// How many frames may wait to be written on one connection.
const WRITE_QUEUE: usize = 1024;

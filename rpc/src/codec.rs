//! Frames on the wire: a [`Decoder`] for the answers a client reads, and
//! the [`Outgoing`] frames both sides write.
//!
//! An outgoing frame is its own small head (`[len][crc32][request id]`) and
//! a [`Body`] shared with every other frame that carries the same message:
//! a write batch for three replicas is serialized once and its bytes are
//! written to three sockets, never copied per replica.

use std::io;

use bytes::{Bytes, BytesMut};
use ringup_proto::frame::{self, Body, HEADER_LEN};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

/// The most a reader grows its buffer by ahead of the bytes that arrived:
/// a frame header alone, whatever length it declares, costs no more.
pub(crate) const READ_CHUNK: usize = 64 << 10;

/// One frame to write: its head and the shared body.
pub(crate) struct Outgoing {
    head: Vec<u8>,
    body: Bytes,
}

impl Outgoing {
    /// The frame of `body` under request `id`.
    pub(crate) fn new(id: u64, body: &Body) -> Self {
        Self { head: body.head(id), body: body.bytes().clone() }
    }
}

/// Splits a byte stream into checked frame payloads.
pub(crate) struct FrameDecoder;

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let Some(total) = frame::frame_len(src).map_err(invalid)? else {
            return Ok(None);
        };
        if src.len() < total {
            // Grow with what arrives, never by what a header claims.
            src.reserve((total - src.len()).min(READ_CHUNK));
            return Ok(None);
        }
        let mut frame = src.split_to(total);
        let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().expect("a whole frame is there");
        let payload = frame.split_off(HEADER_LEN);
        frame::check(&header, &payload).map_err(invalid)?;
        Ok(Some(payload))
    }
}

/// Writes queued frames until the queue closes or the socket fails,
/// flushing whenever the queue runs dry.
///
/// Before flushing, the writer lets every other task that is ready run
/// once: under load those queue more frames, and one `send` carries them
/// all instead of one each (a send on loopback costs the sender the
/// receiver's TCP work too). When nothing else is ready, this costs one
/// turn of the scheduler.
pub(crate) async fn write_frames(write: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>) {
    let mut out = BufWriter::with_capacity(READ_CHUNK, write);
    while let Some(frame) = rx.recv().await {
        if out.write_all(&frame.head).await.is_err() || out.write_all(&frame.body).await.is_err() {
            return;
        }
        if rx.is_empty() {
            tokio::task::yield_now().await;
        }
        if rx.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
}

/// A frame error as the I/O error that closes the connection.
pub(crate) fn invalid(e: frame::FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

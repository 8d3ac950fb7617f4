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
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

/// The most a reader grows its buffer by ahead of the bytes that arrived:
/// a frame header alone, whatever length it declares, costs no more.
pub(crate) const READ_CHUNK: usize = 64 << 10;
/// The most frames one flush carries.
const WRITE_BATCH: usize = 256;

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

/// Writes queued frames until the queue closes or the socket fails, in
/// batches: a frame, then every frame queued by the time the other ready
/// tasks have run once (at most [`WRITE_BATCH`]), then one flush.
///
/// Letting the ready tasks run first means that under load one `send`
/// carries the frames they queue meanwhile, instead of one `send` each (a
/// send on loopback costs the sender the receiver's TCP work too). The
/// flush ends every batch, however busy the queue: a writer that flushed
/// only when its queue ran dry would hold small answers in its buffer for
/// as long as new ones kept coming.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(write: W, mut rx: mpsc::Receiver<Outgoing>) {
    let mut out = BufWriter::with_capacity(READ_CHUNK, write);
    while let Some(first) = rx.recv().await {
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        for frame in batch {
            if out.write_all(&frame.head).await.is_err() || out.write_all(&frame.body).await.is_err() {
                return;
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

/// A frame error as the I/O error that closes the connection.
pub(crate) fn invalid(e: frame::FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A steady stream of small frames, each queued while the writer has
    /// others in hand, must still reach the peer batch by batch: a writer
    /// that waits for an empty queue to flush sends nothing until the
    /// stream stops.
    #[tokio::test(flavor = "current_thread")]
    async fn frames_go_out_while_more_keep_coming() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (_read, write) = client.into_split();
        let (queue, rx) = mpsc::channel(4096);
        tokio::spawn(write_frames(write, rx));
        let received = Arc::new(AtomicUsize::new(0));
        let counted = received.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = server.read(&mut buf).await {
                counted.fetch_add(n, Ordering::Relaxed);
            }
        });
        let body = Body::encode(&7u32).unwrap();
        let frames = 2000;
        for id in 0..frames {
            queue.send(Outgoing::new(id, &body)).await.unwrap();
            tokio::task::yield_now().await;
        }
        let seen = received.load(Ordering::Relaxed);
        assert!(seen > 0, "none of {frames} small frames reached the peer while more kept coming");
        println!("{seen} bytes of {frames} frames had arrived when the last was queued");
    }
}

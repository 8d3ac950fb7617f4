//! The calling side: a multiplexed connection per peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringup_proto::frame;
use ringup_proto::rpc::{Envelope, Request, Response};
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::WRITE_QUEUE;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a call got no answer.
#[derive(Debug, Clone, Error)]
pub enum CallError {
    /// No connection could be made.
    #[error("cannot connect to {addr}: {reason}")]
    Unreachable {
        /// The peer.
        addr: String,
        /// What the system said.
        reason: String,
    },
    /// The connection broke before the answer came.
    #[error("connection to {0} closed")]
    Closed(String),
    /// No answer within the deadline.
    #[error("no answer from {0} in time")]
    Timeout(String),
    /// The request could not be encoded.
    #[error("cannot encode request: {0}")]
    Encode(String),
}

/// Answers awaited on one connection, by request id; `None` once the
/// connection has closed, so no caller can wait on it after that.
///
/// A `std` mutex: it is only held to insert or remove one entry, never
/// across an `.await`.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Response>>>>>;

/// One live connection: a queue to its writer task and the answers awaited.
struct Conn {
    queue: mpsc::Sender<Vec<u8>>,
    pending: Pending,
}

impl Conn {
    fn is_open(&self) -> bool {
        !self.queue.is_closed() && self.pending.lock().expect("pending map poisoned").is_some()
    }
}

/// A client of one peer. Cheap to share; reconnects on demand.
pub struct Client {
    addr: String,
    next_id: AtomicU64,
    /// Held only to look at or replace the connection, never across an `.await`.
    conn: Mutex<Option<Arc<Conn>>>,
    /// Held while dialing, across the connect's `.await`: an async mutex.
    dialing: tokio::sync::Mutex<()>,
}

impl Client {
    /// A client of the peer at `addr` (`host:port`); connects on first use.
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), next_id: AtomicU64::new(1), conn: Mutex::new(None), dialing: Default::default() }
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` and waits at most `timeout` for the answer.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Response, CallError> {
        tokio::time::timeout(timeout, self.call_inner(request))
            .await
            .unwrap_or_else(|_| Err(CallError::Timeout(self.addr.clone())))
    }

    async fn call_inner(&self, request: Request) -> Result<Response, CallError> {
        let conn = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode(&Envelope { id, body: request }).map_err(|e| CallError::Encode(e.to_string()))?;
        let closed = || CallError::Closed(self.addr.clone());
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending map poisoned").as_mut().ok_or_else(closed)?.insert(id, tx);
        // Forgets the call however it ends, a timeout included.
        let _forget = Forget { pending: &conn.pending, id };
        conn.queue.send(bytes).await.map_err(|_| closed())?;
        // The reader answers, or drops every waiting sender when the connection closes.
        rx.await.map_err(|_| closed())
    }

    /// The open connection, or a new one. One caller dials at a time;
    /// the others wait for it and share the connection it made.
    async fn connection(&self) -> Result<Arc<Conn>, CallError> {
        if let Some(conn) = self.open_conn() {
            return Ok(conn);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(conn) = self.open_conn() {
            return Ok(conn);
        }
        let unreachable = |reason: String| CallError::Unreachable { addr: self.addr.clone(), reason };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        stream.set_nodelay(true).ok();
        let conn = Arc::new(open(stream));
        *self.conn.lock().expect("conn poisoned") = Some(conn.clone());
        Ok(conn)
    }

    fn open_conn(&self) -> Option<Arc<Conn>> {
        self.conn.lock().expect("conn poisoned").as_ref().filter(|c| c.is_open()).cloned()
    }
}

/// Removes a call's entry from the pending map when the call ends.
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.lock().expect("pending map poisoned").as_mut() {
            pending.remove(&self.id);
        }
    }
}

/// Starts the tasks of a new connection: one writes queued frames, one
/// reads answers. When either stops, both stop and the connection is closed.
fn open(stream: TcpStream) -> Conn {
    let (read, write) = stream.into_split();
    let (queue, rx) = mpsc::channel(WRITE_QUEUE);
    let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
    let answers = pending.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = write_frames(write, rx) => {}
            _ = read_answers(read, &answers) => {}
        }
        // Dropping the senders tells every waiting caller the connection closed.
        answers.lock().expect("pending map poisoned").take();
    });
    Conn { queue, pending }
}

/// Writes queued frames until the queue closes or the socket fails,
/// flushing whenever the queue runs dry.
pub(crate) async fn write_frames(write: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut out = BufWriter::new(write);
    while let Some(bytes) = rx.recv().await {
        if out.write_all(&bytes).await.is_err() {
            return;
        }
        if rx.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
}

/// Hands each answer to its caller until the connection fails or closes.
async fn read_answers(mut read: OwnedReadHalf, pending: &Pending) {
    let mut buf = Vec::with_capacity(64 << 10);
    while let Ok(Some(envelope)) = read_frame::<Response>(&mut read, &mut buf).await {
        let waiting = pending.lock().expect("pending map poisoned").as_mut().and_then(|p| p.remove(&envelope.id));
        if let Some(tx) = waiting {
            let _ = tx.send(envelope.body);
        }
    }
}

/// Reads the next whole frame: `Ok(None)` at a clean end of stream.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    read: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Result<Option<Envelope<T>>, std::io::Error> {
    loop {
        match frame::decode::<Envelope<T>>(buf) {
            Ok(Some((message, used))) => {
                buf.drain(..used);
                return Ok(Some(message));
            }
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        let want = frame::frame_len(buf).ok().flatten().unwrap_or(frame::HEADER_LEN);
        buf.reserve(want.saturating_sub(buf.len()).min(frame::MAX_FRAME));
        if read.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Clients of many peers, one per address, made on first use.
#[derive(Default)]
pub struct Pool {
    /// Held only to look up or insert a client.
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client of the peer at `addr`.
    pub fn get(&self, addr: &str) -> Arc<Client> {
        let mut clients = self.clients.lock().expect("pool poisoned");
        clients.entry(addr.to_string()).or_insert_with(|| Arc::new(Client::new(addr))).clone()
    }
}

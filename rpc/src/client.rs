//! The calling side: a multiplexed connection per peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use ringup_proto::frame::{self, Body};
use ringup_proto::redial::{Decision, Redial};
use ringup_proto::rpc::{Envelope, Request, Response};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::codec::FramedRead;

use crate::WRITE_QUEUE;
use crate::codec::{FrameDecoder, Outgoing, READ_CHUNK, write_frames};
use crate::tls::Tls;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take after the connection is made.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// A call that timed out after at least this long, with no answer of any
/// call arriving on its connection meanwhile, closes the connection.
const SILENCE_CLOSES: Duration = Duration::from_millis(500);

/// Why a call got no answer. Every kind may succeed if tried again, on
/// this peer later or on another replica now.
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

/// One live connection: a queue to its writer task, the answers awaited,
/// and when the last answer came.
struct Conn {
    queue: mpsc::Sender<Outgoing>,
    pending: Pending,
    /// When the connection opened; `last_answer` counts from here.
    opened: Instant,
    /// Microseconds from `opened` to the last answer read.
    last_answer: Arc<AtomicU64>,
    /// The task that reads and writes the socket.
    task: AbortHandle,
}

impl Conn {
    fn is_open(&self) -> bool {
        !self.queue.is_closed() && self.pending.lock().expect("pending map poisoned").is_some()
    }

    /// Whether no answer has arrived since `since`.
    fn silent_since(&self, since: Instant) -> bool {
        let last = self.opened + Duration::from_micros(self.last_answer.load(Ordering::Relaxed));
        last < since
    }

    /// Closes the connection: its task stops, and every caller waiting on it
    /// is told at once.
    fn close(&self) {
        self.task.abort();
        self.pending.lock().expect("pending map poisoned").take();
    }
}

/// A dial in flight, which every caller that needs the connection awaits.
/// It runs in a task of its own, so a caller that gives up does not stop it.
type Dial = Shared<BoxFuture<'static, Result<Arc<Conn>, CallError>>>;

/// How a client opens a TCP stream to its peer's address: resolving the
/// name and connecting. [`TcpStream::connect`] unless a test says otherwise.
pub type Connect = Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<TcpStream>> + Send + Sync>;

/// The connection to a peer, and the dialing of the next one.
#[derive(Default)]
struct Link {
    conn: Option<Arc<Conn>>,
    redial: Redial,
    /// The dial in flight, while `redial` says one is.
    dial: Option<Dial>,
}

/// A client of one peer. Cheap to share; reconnects on demand.
pub struct Client {
    addr: String,
    next_id: AtomicU64,
    /// Held only to look at or change the link, never across an `.await`.
    link: Arc<Mutex<Link>>,
    /// Mutual TLS, or plain TCP when `None`.
    tls: Option<Tls>,
    connect: Connect,
}

impl Client {
    /// A client of the peer at `addr` (`host:port`) over plain TCP;
    /// connects on first use.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with_tls(addr, None)
    }

    /// A client of the peer at `addr` over mutual TLS, or plain TCP when
    /// `tls` is `None`.
    pub fn with_tls(addr: impl Into<String>, tls: Option<Tls>) -> Self {
        let connect: Connect = Arc::new(|addr| TcpStream::connect(addr).boxed());
        Self::with_connect(addr, tls, connect)
    }

    /// A client that opens its streams with `connect`: for tests that need
    /// a peer whose name never resolves, say.
    pub fn with_connect(addr: impl Into<String>, tls: Option<Tls>, connect: Connect) -> Self {
        let addr = addr.into();
        Self { addr, next_id: AtomicU64::new(1), link: Arc::default(), tls, connect }
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` and waits at most `timeout` for the answer.
    ///
    /// A peer that stays silent is taken for gone: when a call times out
    /// after [`SILENCE_CLOSES`] or more and no answer to any call came on
    /// the connection meanwhile, the connection is closed and the next call
    /// dials afresh. A peer whose address vanished (a container cut off the
    /// network, a host that died without a reset) would otherwise hold its
    /// callers on a connection that never answers again.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Response, CallError> {
        let body = Body::encode(&request).map_err(|e| CallError::Encode(e.to_string()))?;
        self.send(&body, timeout).await
    }

    /// Sends a request serialized once (see [`Body`]), perhaps shared with
    /// calls to other peers, and waits at most `timeout` for the answer.
    pub async fn send(&self, body: &Body, timeout: Duration) -> Result<Response, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || CallError::Timeout(self.addr.clone());
        let conn = tokio::time::timeout_at(deadline, self.connection()).await.map_err(|_| timed_out())??;
        let sent = Instant::now();
        match tokio::time::timeout_at(deadline, self.exchange(&conn, body)).await {
            Ok(answer) => answer,
            Err(_) => {
                if sent.elapsed() >= SILENCE_CLOSES && conn.silent_since(sent) {
                    tracing::debug!(addr = %self.addr, "no answer on the connection; closing it");
                    self.forget_conn(&conn);
                    conn.close();
                }
                Err(timed_out())
            }
        }
    }

    async fn exchange(&self, conn: &Conn, body: &Body) -> Result<Response, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let closed = || CallError::Closed(self.addr.clone());
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending map poisoned").as_mut().ok_or_else(closed)?.insert(id, tx);
        // Forgets the call however it ends, a timeout included.
        let _forget = Forget { pending: &conn.pending, id };
        conn.queue.send(Outgoing::new(id, body)).await.map_err(|_| closed())?;
        // The reader answers, or drops every waiting sender when the connection closes.
        rx.await.map_err(|_| closed())
    }

    /// The open connection, or a new one. One dial is in flight at a time
    /// and every caller that needs the connection meanwhile awaits it;
    /// after a failed dial, callers fail at once until the backoff of
    /// [`Redial`] has passed.
    async fn connection(&self) -> Result<Arc<Conn>, CallError> {
        let dial = {
            let mut link = self.link.lock().expect("link poisoned");
            if let Some(conn) = link.conn.as_ref().filter(|c| c.is_open()) {
                return Ok(conn.clone());
            }
            match link.redial.need(now()) {
                Decision::Dial => {
                    let dial = self.start_dial();
                    link.dial = Some(dial.clone());
                    dial
                }
                Decision::Join => link.dial.clone().expect("a dial in flight"),
                Decision::Refuse { reason, retry_in } => {
                    let reason = format!("{reason} (the next dial in {} ms)", retry_in.as_millis());
                    return Err(CallError::Unreachable { addr: self.addr.clone(), reason });
                }
            }
        };
        dial.await
    }

    /// Spawns a dial that records its outcome in the link when it ends.
    fn start_dial(&self) -> Dial {
        let (addr, tls, connect, link) = (self.addr.clone(), self.tls.clone(), self.connect.clone(), self.link.clone());
        let task = tokio::spawn(async move {
            let outcome = dial(&addr, tls.as_ref(), &connect).await;
            let mut link = link.lock().expect("link poisoned");
            link.dial = None;
            match &outcome {
                Ok(conn) => {
                    link.conn = Some(conn.clone());
                    link.redial.dialed(now(), Ok(()));
                }
                Err(e) => {
                    let reason = match e {
                        CallError::Unreachable { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    link.redial.dialed(now(), Err(reason));
                }
            }
            outcome
        });
        let addr = self.addr.clone();
        async move {
            task.await
                .unwrap_or_else(|e| Err(CallError::Unreachable { addr, reason: format!("the dial stopped: {e}") }))
        }
        .boxed()
        .shared()
    }

    /// Stops handing out `conn` (if it is still the current connection).
    fn forget_conn(&self, conn: &Arc<Conn>) {
        let mut link = self.link.lock().expect("link poisoned");
        if link.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            link.conn = None;
        }
    }
}

/// The clock the dial backoff counts on: tokio's, so that tests with a
/// paused clock control it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Opens a connection to `addr`: TCP, then TLS when set up.
async fn dial(addr: &str, tls: Option<&Tls>, connect: &Connect) -> Result<Arc<Conn>, CallError> {
    let unreachable = |reason: String| CallError::Unreachable { addr: addr.to_string(), reason };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect(addr.to_string()))
        .await
        .map_err(|_| unreachable("connect timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    stream.set_nodelay(true).ok();
    let conn = match tls {
        None => {
            let (read, write) = stream.into_split();
            open(read, write)
        }
        Some(tls) => {
            let (connector, name) = tls.connector();
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
                .await
                .map_err(|_| unreachable("the TLS handshake timed out".into()))?
                .map_err(|e| unreachable(format!("TLS: {e}")))?;
            let (read, write) = tokio::io::split(stream);
            open(read, write)
        }
    };
    Ok(Arc::new(conn))
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
fn open<R, W>(read: R, write: W) -> Conn
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (queue, rx) = mpsc::channel(WRITE_QUEUE);
    let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
    let opened = Instant::now();
    let last_answer = Arc::new(AtomicU64::new(0));
    let (answers, heard) = (pending.clone(), last_answer.clone());
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = write_frames(write, rx) => {}
            _ = read_answers(read, &answers, opened, &heard) => {}
        }
        // Dropping the senders tells every waiting caller the connection closed.
        answers.lock().expect("pending map poisoned").take();
    });
    Conn { queue, pending, opened, last_answer, task: task.abort_handle() }
}

/// Hands each answer to its caller until the connection fails or closes,
/// noting when each arrived (in microseconds from `opened`).
async fn read_answers<R: AsyncRead + Unpin>(read: R, pending: &Pending, opened: Instant, heard: &AtomicU64) {
    let mut frames = FramedRead::with_capacity(read, FrameDecoder, READ_CHUNK);
    while let Some(Ok(payload)) = frames.next().await {
        let Ok(envelope) = frame::from_bytes::<Envelope<Response>>(&payload) else {
            tracing::warn!("closing a connection after an answer that does not decode");
            return;
        };
        heard.store(opened.elapsed().as_micros() as u64, Ordering::Relaxed);
        let waiting = pending.lock().expect("pending map poisoned").as_mut().and_then(|p| p.remove(&envelope.id));
        if let Some(tx) = waiting {
            let _ = tx.send(envelope.body);
        }
    }
}

/// Clients of many peers, one per address, made on first use.
#[derive(Default)]
pub struct Pool {
    /// Held only to look up or insert a client.
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// What every client of the pool dials with.
    tls: Option<Tls>,
}

impl Pool {
    /// An empty pool of plain TCP clients.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pool whose clients use mutual TLS (plain TCP when `None`).
    pub fn with_tls(tls: Option<Tls>) -> Self {
        Self { clients: Mutex::default(), tls }
    }

    /// The TLS set-up its clients use.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The client of the peer at `addr`.
    pub fn get(&self, addr: &str) -> Arc<Client> {
        let mut clients = self.clients.lock().expect("pool poisoned");
        clients.entry(addr.to_string()).or_insert_with(|| Arc::new(Client::with_tls(addr, self.tls.clone()))).clone()
    }
}

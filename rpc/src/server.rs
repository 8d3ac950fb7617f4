//! The serving side: accept connections, answer each request in its own
//! task, and hold memory to a bound whatever peers send.
//!
//! Three [`Limits`] bound a server:
//! - connections: one past the limit is closed as soon as it is accepted;
//! - requests in flight per connection: past it, the server stops reading
//!   that connection until answers go out;
//! - bytes of requests read and not yet answered, over all connections:
//!   a frame takes its length from this budget when its payload starts to
//!   arrive, before anything is allocated for it, and gives it back once
//!   the request is answered. Past it, reading waits. A frame header alone
//!   costs nothing, whatever length it declares, and a frame whose payload
//!   does not arrive within a deadline closes its connection.
//!
//! When the server shuts down it stops accepting, reads no further
//! request on any connection, answers those in flight, closes every
//! connection and only then returns (after [`SHUTDOWN_GRACE`] at most), so
//! that nothing is served once the caller goes on to close its storage.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ringup_proto::frame::{self, Body, HEADER_LEN};
use ringup_proto::rpc::{BadRequest, Envelope, Request, Response, RpcError};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::WRITE_QUEUE;
use crate::codec::{Outgoing, READ_CHUNK, invalid, write_frames};
use crate::tls::Tls;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the requests in flight to be answered.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Answers requests. Implemented by the node.
pub trait Handler: Send + Sync + 'static {
    /// The answer to one request.
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send;
}

/// What a server admits at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Requests of one connection handled at once.
    pub requests_per_connection: usize,
    /// Bytes of request frames read and not yet answered, over all
    /// connections; at least the largest frame. Decoding a request takes
    /// about as much again.
    pub request_bytes: usize,
    /// How long a frame's payload may take to arrive after its header.
    pub frame_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 1024,
            requests_per_connection: 256,
            request_bytes: 256 << 20,
            frame_deadline: Duration::from_secs(10),
        }
    }
}

/// Accepts connections on `listener` and answers their requests with
/// `handler` under the default [`Limits`] until `shutdown` completes.
pub async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, shutdown: impl Future<Output = ()>) {
    serve_with(listener, handler, Limits::default(), shutdown).await;
}

/// [`serve`] under the given limits.
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, handler, limits, None, shutdown).await;
}

/// [`serve_with`], over mutual TLS when `tls` is given: a connection whose
/// client presents no certificate signed by the CA is closed after the
/// handshake fails.
pub async fn serve_tls<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    let budget = Arc::new(Budget::new(limits.request_bytes));
    let (closing, connections) = (CancellationToken::new(), TaskTracker::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        stream.set_nodelay(true).ok();
                        let open = Open { handler: handler.clone(), limits, budget: budget.clone(), slot, closing: closing.clone() };
                        connections.spawn(accept(stream, tls.clone(), open));
                    }
                    Err(_) => tracing::warn!(%peer, limit = limits.connections, "too many connections; closing a new one"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    closing.cancel();
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await.is_err() {
        tracing::warn!(connections = connections.len(), grace = ?SHUTDOWN_GRACE, "requests still in flight at shutdown");
    }
}

/// What a connection is served with.
struct Open<H> {
    handler: Arc<H>,
    limits: Limits,
    budget: Arc<Budget>,
    /// Its place among the connections allowed.
    slot: OwnedSemaphorePermit,
    /// Raised when the server shuts down.
    closing: CancellationToken,
}

/// Completes the TLS handshake, if any, then serves the connection.
async fn accept<H: Handler>(stream: TcpStream, tls: Option<Tls>, open: Open<H>) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let Some(tls) = tls else {
        let (read, write) = stream.into_split();
        return connection(peer, read, write, open).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            let (read, write) = tokio::io::split(stream);
            connection(peer, read, write, open).await;
        }
        Ok(Err(e)) => tracing::warn!(%peer, error = %e, "refused a connection: TLS handshake failed"),
        Err(_) => tracing::warn!(%peer, "refused a connection: no TLS handshake in time"),
    }
}

/// Serves one connection until the peer closes it, sends a bad frame or
/// the server shuts down; then answers what is in flight and closes it.
async fn connection<H, R, W>(peer: String, read: R, write: W, open: Open<H>)
where
    H: Handler,
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Open { handler, limits, budget, slot: _slot, closing } = open;
    let mut read = BufReader::with_capacity(READ_CHUNK, read);
    let (queue, rx) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(write_frames(write, rx));
    let in_flight = Arc::new(Semaphore::new(limits.requests_per_connection));
    loop {
        let next = tokio::select! {
            _ = closing.cancelled() => break,
            next = read_request(&mut read, &budget, limits.frame_deadline) => next,
        };
        let admitted = match next {
            Ok(Some(admitted)) => admitted,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing a connection after a bad or late frame");
                break;
            }
        };
        let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (handler, queue) = (handler.clone(), queue.clone());
        tokio::spawn(async move {
            let Admitted { envelope: Envelope { id, body }, held } = admitted;
            let answer = handler.handle(body).await;
            // The request's bytes are gone once it is handled.
            drop((held, permit));
            if let Some(frame) = encode_answer(id, &answer) {
                let _ = queue.send(frame).await;
            }
        });
    }
    drop(queue);
    let _ = writer.await;
}

/// The frame of an answer; an error answer if the answer cannot be sent.
fn encode_answer(id: u64, answer: &Response) -> Option<Outgoing> {
    let body = Body::encode(answer).or_else(|e| {
        tracing::error!(error = %e, "cannot encode a response; answering with an error");
        Body::encode(&Response::Error(RpcError::BadRequest(BadRequest::Response { reason: e.to_string() })))
    });
    body.ok().map(|body| Outgoing::new(id, &body))
}

/// A request read off a connection, with the share of the byte budget its
/// frame holds until it is answered.
struct Admitted {
    envelope: Envelope<Request>,
    held: OwnedSemaphorePermit,
}

/// Reads the next request: `None` when the peer closed the connection
/// between frames.
async fn read_request<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
    budget: &Arc<Budget>,
    deadline: Duration,
) -> io::Result<Option<Admitted>> {
    let mut header = [0u8; HEADER_LEN];
    match read.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame::payload_len(&header).map_err(invalid)?;
    let late = || io::Error::new(io::ErrorKind::TimedOut, format!("a frame of {len} bytes did not arrive in time"));
    let (payload, held) =
        tokio::time::timeout(deadline, read_payload(read, len, budget)).await.map_err(|_| late())??;
    frame::check(&header, &payload).map_err(invalid)?;
    let envelope = frame::from_bytes(&payload).map_err(invalid)?;
    Ok(Some(Admitted { envelope, held }))
}

/// Reads `len` payload bytes. The frame takes its whole share of the
/// budget once its first byte arrives, and only then is memory allocated
/// for it; taking it whole means two large frames can never each hold half
/// of the budget and wait for the other.
async fn read_payload<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
    len: usize,
    budget: &Arc<Budget>,
) -> io::Result<(BytesMut, OwnedSemaphorePermit)> {
    if len > 0 && read.fill_buf().await?.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let held = budget.take(len).await;
    let mut payload = BytesMut::with_capacity(len);
    let mut rest = (&mut *read).take(len as u64);
    while payload.len() < len {
        if rest.read_buf(&mut payload).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok((payload, held))
}

/// Bytes of requests in memory, over all connections of a server.
struct Budget {
    bytes: Arc<Semaphore>,
    /// The most one permit may take: a frame larger than the whole budget
    /// still gets in, alone.
    total: usize,
}

impl Budget {
    /// A budget of `total` bytes, raised to the largest frame if below it.
    fn new(total: usize) -> Self {
        let total = total.clamp(frame::MAX_FRAME, u32::MAX as usize);
        Self { bytes: Arc::new(Semaphore::new(total)), total }
    }

    /// Takes `n` bytes, waiting while too few are free.
    async fn take(&self, n: usize) -> OwnedSemaphorePermit {
        let n = n.min(self.total) as u32;
        self.bytes.clone().acquire_many_owned(n).await.expect("the budget is never closed")
    }
}

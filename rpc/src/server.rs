//! The serving side: accept connections, answer each request in its own task.

use std::future::Future;
use std::sync::Arc;

use ringup_proto::frame;
use ringup_proto::rpc::{Envelope, Request, Response, RpcError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::WRITE_QUEUE;
use crate::client::{read_frame, write_frames};

/// The most requests of one connection handled at once.
const MAX_IN_FLIGHT: usize = 1024;

/// Answers requests. Implemented by the node.
pub trait Handler: Send + Sync + 'static {
    /// The answer to one request.
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send;
}

/// Accepts connections on `listener` and answers their requests with
/// `handler` until `shutdown` completes.
pub async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    stream.set_nodelay(true).ok();
                    tokio::spawn(connection(stream, handler.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves one connection until the peer closes it or sends a bad frame.
async fn connection<H: Handler>(stream: TcpStream, handler: Arc<H>) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (mut read, write) = stream.into_split();
    let (queue, rx) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(write_frames(write, rx));
    // Bounds the requests of one connection in flight: past it, the server
    // stops reading until answers go out.
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = Vec::with_capacity(64 << 10);
    loop {
        match read_frame::<Request>(&mut read, &mut buf).await {
            Ok(Some(Envelope { id, body })) => {
                let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
                let (handler, queue) = (handler.clone(), queue.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let body = handler.handle(body).await;
                    let bytes = frame::encode(&Envelope { id, body }).or_else(|e| {
                        tracing::error!(error = %e, "cannot encode a response; answering with an error");
                        let body = Response::Error(RpcError::BadRequest(format!("the response cannot be sent: {e}")));
                        frame::encode(&Envelope { id, body })
                    });
                    if let Ok(bytes) = bytes {
                        let _ = queue.send(bytes).await;
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing a connection after a bad frame");
                break;
            }
        }
    }
    drop(queue);
    let _ = writer.await;
}

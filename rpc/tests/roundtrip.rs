//! A client and a server over loopback: many calls share one connection,
//! a bad frame closes the connection without harming the server, and a
//! dead peer is reported as unreachable.

use std::sync::Arc;
use std::time::Duration;

use ringup_proto::rpc::{Request, Response, RpcError};
use ringup_rpc::{CallError, Client, Handler, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Answers pings with a fixed node id, and map polls after a delay that
/// reverses the order of answers.
struct Echo;

impl Handler for Echo {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong { node: 7, epoch: 1 },
            Request::GetMap { wait_ms, .. } => {
                tokio::time::sleep(Duration::from_millis(u64::from(wait_ms))).await;
                Response::Error(RpcError::NoMap)
            }
            _ => Response::Error(RpcError::BadRequest("unsupported".into())),
        }
    }
}

async fn server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve(listener, Arc::new(Echo), std::future::pending()));
    addr
}

#[tokio::test]
async fn concurrent_calls_share_a_connection_and_get_their_own_answers() {
    let client = Arc::new(Client::new(server().await));
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.call(Request::GetMap { known_epoch: 0, wait_ms: 200 }, TIMEOUT).await }
    });
    for _ in 0..50 {
        assert!(matches!(client.call(Request::Ping, TIMEOUT).await, Ok(Response::Pong { node: 7, .. })));
    }
    assert!(matches!(slow.await.unwrap(), Ok(Response::Error(RpcError::NoMap))));
}

#[tokio::test]
async fn a_corrupt_frame_closes_only_its_connection() {
    let addr = server().await;
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    // A header announcing 4 bytes with the wrong checksum.
    raw.write_all(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(TIMEOUT, raw.read(&mut buf)).await.expect("the server should close");
    assert_eq!(read.unwrap(), 0, "the server closes a connection that sent a bad frame");

    let client = Client::new(addr);
    assert!(matches!(client.call(Request::Ping, TIMEOUT).await, Ok(Response::Pong { .. })));
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let addr = server().await;
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(TIMEOUT, raw.read(&mut buf)).await.expect("the server should close");
    assert_eq!(read.unwrap(), 0);
}

#[tokio::test]
async fn a_dead_peer_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let answer = Client::new(addr).call(Request::Ping, TIMEOUT).await;
    assert!(matches!(answer, Err(CallError::Unreachable { .. })), "{answer:?}");
}

#[tokio::test]
async fn a_peer_that_goes_away_is_noticed_at_once_and_reconnected_to() {
    // A peer that answers one ping per connection, then hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            let (request, _) =
                ringup_proto::frame::decode::<ringup_proto::rpc::Envelope<Request>>(&buf[..n]).unwrap().unwrap();
            let answer = ringup_proto::rpc::Envelope { id: request.id, body: Response::Pong { node: 1, epoch: 1 } };
            stream.write_all(&ringup_proto::frame::encode(&answer).unwrap()).await.unwrap();
        }
    });
    let client = Client::new(addr);
    for _ in 0..3 {
        // Each call after the first finds its connection closed by the peer
        // and must reconnect rather than wait out the timeout.
        let answer = client.call(Request::Ping, Duration::from_secs(30)).await;
        assert!(matches!(answer, Ok(Response::Pong { .. })), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

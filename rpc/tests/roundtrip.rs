//! A client and a server over loopback: many calls share one connection,
//! a bad frame closes the connection without harming the server, and a
//! dead peer is reported as unreachable, and dialed once per backoff
//! rather than once per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use ringup_proto::rpc::{BadRequest, Request, Response, RpcError};
use ringup_rpc::{CallError, Client, Connect, Handler, serve};
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
            _ => Response::Error(RpcError::BadRequest(BadRequest::Unsupported)),
        }
    }
}

/// Answers up to `n` pings on `stream`, one frame per read, by hand.
async fn answer_pings(stream: &mut TcpStream, n: usize) {
    let mut buf = vec![0u8; 1024];
    for _ in 0..n {
        let Ok(read) = stream.read(&mut buf).await else { return };
        if read == 0 {
            return;
        }
        let (request, _) =
            ringup_proto::frame::decode::<ringup_proto::rpc::Envelope<Request>>(&buf[..read]).unwrap().unwrap();
        let answer = ringup_proto::rpc::Envelope { id: request.id, body: Response::Pong { node: 1, epoch: 1 } };
        stream.write_all(&ringup_proto::frame::encode(&answer).unwrap()).await.unwrap();
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
            answer_pings(&mut stream, 1).await;
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

#[tokio::test]
async fn a_silent_connection_is_closed_and_the_next_call_dials_afresh() {
    // A peer whose first connection swallows every request without an
    // answer (as a host cut off the network does), and whose later
    // connections answer pings.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let (mut silent, _) = listener.accept().await.unwrap();
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            let mut sink = vec![0u8; 1024];
            while silent.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move { answer_pings(&mut stream, usize::MAX).await });
        }
    });
    let client = Arc::new(Client::new(addr));
    // A call that waits longer than the silence threshold closes the
    // connection, and calls still waiting on it fail at once.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.call(Request::Ping, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = client.call(Request::Ping, Duration::from_millis(700)).await;
    assert!(matches!(answer, Err(CallError::Timeout(_))), "{answer:?}");
    let waiting = tokio::time::timeout(TIMEOUT, waiting).await.expect("the waiting call should fail at once").unwrap();
    assert!(matches!(waiting, Err(CallError::Closed(_))), "{waiting:?}");
    let answer = client.call(Request::Ping, TIMEOUT).await;
    assert!(matches!(answer, Ok(Response::Pong { .. })), "{answer:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "one silent connection, then one fresh");
}

#[tokio::test]
async fn a_short_timeout_on_a_quiet_connection_keeps_it() {
    let addr = server().await;
    let client = Client::new(addr);
    assert!(matches!(client.call(Request::Ping, TIMEOUT).await, Ok(Response::Pong { .. })));
    // Times out well under the silence threshold: the connection stays, so
    // a slow answer to another caller is not cut off.
    let slow = client.call(Request::GetMap { known_epoch: 0, wait_ms: 300 }, Duration::from_millis(100)).await;
    assert!(matches!(slow, Err(CallError::Timeout(_))), "{slow:?}");
    assert!(matches!(client.call(Request::Ping, TIMEOUT).await, Ok(Response::Pong { .. })));
}

#[tokio::test(start_paused = true)]
async fn callers_that_give_up_on_a_dial_do_not_start_one_each() {
    // A peer whose name never resolves, as a stopped container's may not:
    // each dial is counted and, like a system lookup on a thread of its
    // own, goes on whatever its callers do.
    let dials = Arc::new(AtomicUsize::new(0));
    let count = dials.clone();
    let connect: Connect = Arc::new(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        futures::future::pending().boxed()
    });
    let client = Arc::new(Client::with_connect("node1:7001", None, connect));
    // 8 writers call for 10 s, each call giving up after 50 ms, as a
    // coordinator's calls to a replica that is away do.
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let end = tokio::time::Instant::now() + Duration::from_secs(10);
                let mut calls = 0;
                while tokio::time::Instant::now() < end {
                    let answer = client.call(Request::Ping, Duration::from_millis(50)).await;
                    assert!(matches!(answer, Err(CallError::Timeout(_) | CallError::Unreachable { .. })), "{answer:?}");
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for writer in writers {
        calls += writer.await.unwrap();
    }
    let dials = dials.load(Ordering::SeqCst);
    assert!(calls >= 1000, "{calls} calls");
    // A dial gives up after a second: at most one a second, whatever the
    // number of calls.
    assert!(dials <= 10, "{calls} calls started {dials} dials");
}

#[tokio::test]
async fn calls_right_after_a_refused_dial_fail_at_once_without_dialing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let dials = Arc::new(AtomicUsize::new(0));
    let count = dials.clone();
    let connect: Connect = Arc::new(move |addr| {
        count.fetch_add(1, Ordering::SeqCst);
        TcpStream::connect(addr).boxed()
    });
    let client = Client::with_connect(addr, None, connect);
    for _ in 0..20 {
        let answer = client.call(Request::Ping, TIMEOUT).await;
        assert!(matches!(answer, Err(CallError::Unreachable { .. })), "{answer:?}");
    }
    assert_eq!(dials.load(Ordering::SeqCst), 1, "20 calls within the first backoff");
    let refused = client.call(Request::Ping, TIMEOUT).await.unwrap_err().to_string();
    assert!(refused.contains("refused") && refused.contains("next dial in"), "{refused}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = client.call(Request::Ping, TIMEOUT).await;
    assert_eq!(dials.load(Ordering::SeqCst), 2, "a call after the backoff dials again");
}

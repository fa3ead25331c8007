//! Admission and handshakes: the transport's say over a connection.

mod support;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use mllp_actors::{CloseReason, Established, ServerConfig, Transport};
use support::{Lines, Rec, TestServer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Refuses every peer.
struct RefuseAll;

impl Transport for RefuseAll {
    type Stream = TcpStream;

    fn admit(&self, _peer: SocketAddr) -> bool {
        false
    }

    async fn handshake(&self, socket: TcpStream) -> io::Result<Established<TcpStream>> {
        Ok(Established::new(socket))
    }
}

/// A refused peer is closed at once, reported as `ConnectionRefused` (no start, no stop), and
/// its slot is given back.
#[tokio::test]
async fn refused_peer_is_closed_and_reported() {
    let server = TestServer::start_with(
        Lines::new(),
        RefuseAll,
        ServerConfig::default().max_connections(1),
    )
    .await;
    for _ in 0..3 {
        let mut client = server.connect().await;
        client.expect_eof().await;
    }
    let events = server.recorder.wait_for(|events| events.len() == 3).await;
    assert!(
        events.iter().all(|e| matches!(e, Rec::Refused { .. })),
        "{events:?}"
    );
    assert_eq!(server.handle.slots_in_use(), 0);
    server.shutdown().await;
    assert_eq!(server.recorder.events().len(), 3);
}

/// A handshake that fails closes the connection as `HandshakeFailed` with the error's text.
struct FailingHandshake;

impl Transport for FailingHandshake {
    type Stream = TcpStream;

    async fn handshake(&self, _socket: TcpStream) -> io::Result<Established<TcpStream>> {
        Err(io::Error::other("bad hello"))
    }
}

/// A failed handshake is a stop with the transport's reason, and nothing else.
#[tokio::test]
async fn failed_handshake_closes_with_its_reason() {
    let server =
        TestServer::start_with(Lines::new(), FailingHandshake, ServerConfig::default()).await;
    let (mut client, id) = server.connect_registered().await;
    client.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::HandshakeFailed("bad hello".into()), 0)
    );
    server.finish().await;
}

/// A TCP stream behind a wrapper, as a TLS stream is, that counts the writes made on it.
struct Wrapped(TcpStream, Arc<AtomicUsize>);

impl AsyncRead for Wrapped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wrapped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.0).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(_))) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A transport standing for TLS: the handshake reports TLS and a peer identity.
struct FakeTls;

impl Transport for FakeTls {
    type Stream = Wrapped;

    fn tls(&self) -> bool {
        true
    }

    async fn handshake(&self, socket: TcpStream) -> io::Result<Established<Wrapped>> {
        Ok(Established::new(Wrapped(socket, Arc::default()))
            .tls(true)
            .peer_identity(Some("CN=lab".into())))
    }
}

/// A connection serves any stream its transport produces, and the registry shows what the
/// handshake established.
#[tokio::test]
async fn wrapped_stream_is_served_with_its_identity() {
    let server = TestServer::start_with(Lines::new(), FakeTls, ServerConfig::default()).await;
    let (mut client, id) = server.connect_registered().await;
    assert_eq!(client.request("over tls").await, "over tls");
    let connections = server.handle.connections().await;
    assert_eq!(connections.len(), 1);
    assert!(connections[0].tls);
    assert_eq!(connections[0].id, id);
    drop(client);
    server.recorder.stop_of(id).await;
    server.finish().await;
}

/// Plain TCP whose streams count their writes into one counter.
#[derive(Default)]
struct CountingWrites(Arc<AtomicUsize>);

impl Transport for CountingWrites {
    type Stream = Wrapped;

    async fn handshake(&self, socket: TcpStream) -> io::Result<Established<Wrapped>> {
        Ok(Established::new(Wrapped(socket, Arc::clone(&self.0))))
    }
}

/// Answers whose handlers have all finished go out together: a pipelining peer whose first
/// request was the slow one gets the four responses in one write, in arrival order, and each
/// is still reported as answered.
#[tokio::test]
async fn answers_ready_together_go_out_in_one_write() {
    let transport = CountingWrites::default();
    let writes = Arc::clone(&transport.0);
    let server = TestServer::start_with(
        Lines::new(),
        transport,
        ServerConfig::default().max_in_flight(4),
    )
    .await;
    let (mut client, id) = server.connect_registered().await;
    client.send_raw(b"block\nb\nc\nd\n").await.unwrap();
    // All four started: the first is blocked, the other three have finished.
    server.recorder.message_starts(4).await;
    assert_eq!(writes.load(Ordering::Relaxed), 0);
    server.release(1);
    for expected in ["unblocked", "b", "c", "d"] {
        assert_eq!(client.recv().await.as_deref(), Some(expected));
    }
    assert_eq!(
        writes.load(Ordering::Relaxed),
        1,
        "one write for four answers"
    );
    drop(client);
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::PeerClosed, 4)
    );
    let stops = server
        .recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Rec::MsgStop { .. }))
        .count();
    assert_eq!(stops, 4);
    server.finish().await;
}

/// Requests that arrive together are answered together on a multi-thread runtime too, where a
/// task woken by another runs next (tokio's LIFO slot): the first handler to finish wakes the
/// connection before the others have run, and the connection lets them run before it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn answers_of_one_read_share_a_write_on_a_multi_thread_runtime() {
    let transport = CountingWrites::default();
    let writes = Arc::clone(&transport.0);
    let server = TestServer::start_with(
        Lines::new(),
        transport,
        ServerConfig::default().max_in_flight(8),
    )
    .await;
    let (mut client, id) = server.connect_registered().await;
    client.send_raw(b"a\nb\nc\nd\ne\nf\ng\nh\n").await.unwrap();
    for expected in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        assert_eq!(client.recv().await.as_deref(), Some(expected));
    }
    let writes = writes.load(Ordering::Relaxed);
    assert!(writes <= 2, "eight answers took {writes} writes");
    drop(client);
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::PeerClosed, 8)
    );
    server.finish().await;
}

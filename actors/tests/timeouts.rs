//! Each connection deadline closes with its own reason (paused time: timers under test stay
//! far from the others and below the 20 s hang guard).

mod support;

use std::io;
use std::time::Duration;

use mllp_actors::{CloseReason, Established, ServerConfig, Transport};
use support::{LineClient, Lines, Rec, TestServer, within};
use tokio::net::{TcpSocket, TcpStream};

/// A connection with nothing in flight and no bytes for `idle_timeout` closes as `Idle`.
#[tokio::test(start_paused = true)]
async fn quiet_connection_closes_as_idle() {
    let server =
        TestServer::start(ServerConfig::default().idle_timeout(Some(Duration::from_secs(2)))).await;
    let (mut client, id) = server.connect_registered().await;
    assert_eq!(client.request("hi").await, "hi");
    client.expect_eof().await;
    assert_eq!(server.recorder.stop_of(id).await, (CloseReason::Idle, 1));
    server.finish().await;
}

/// The idle clock does not run while a handler is busy, and restarts from the response.
#[tokio::test(start_paused = true)]
async fn busy_connection_is_not_idle() {
    let server =
        TestServer::start(ServerConfig::default().idle_timeout(Some(Duration::from_secs(2)))).await;
    let (mut client, id) = server.connect_registered().await;
    let sent = tokio::time::Instant::now();
    assert_eq!(client.request("sleep 5").await, "slept");
    client.expect_eof().await;
    assert!(sent.elapsed() >= Duration::from_secs(7));
    assert_eq!(server.recorder.stop_of(id).await, (CloseReason::Idle, 1));
    server.finish().await;
}

/// `idle_timeout: None` keeps a quiet connection open: only the shutdown closes it.
#[tokio::test(start_paused = true)]
async fn no_idle_timeout_keeps_quiet_connections() {
    let server = TestServer::start(ServerConfig::default().idle_timeout(None)).await;
    let (mut client, id) = server.connect_registered().await;
    // Ten virtual minutes of silence (the longest other timer is 60 s).
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(client.request("still").await, "still");
    server.shutdown().await;
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::Shutdown, 1)
    );
    server.recorder.assert_consistent();
}

/// A frame started and not finished within `frame_timeout` closes the connection, even while
/// bytes trickle in.
#[tokio::test(start_paused = true)]
async fn slow_frame_closes_as_frame_timeout() {
    let server =
        TestServer::start(ServerConfig::default().frame_timeout(Duration::from_secs(3))).await;
    let (mut client, id) = server.connect_registered().await;
    let started = tokio::time::Instant::now();
    client.send_raw(b"par").await.unwrap();
    // A slow sender: the next bytes come two seconds later (virtual time).
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.send_raw(b"tial").await.unwrap();
    client.expect_eof().await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(4));
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::FrameTimeout, 0)
    );
    server.finish().await;
}

/// A peer that stops reading makes the response write pass `write_timeout`: the connection
/// closes as `WriteTimeout`, and the message is reported once, as aborted (its answer never
/// went out), not as a message answered with nothing.
#[tokio::test(start_paused = true)]
async fn peer_that_never_reads_closes_as_write_timeout() {
    let server =
        TestServer::start(ServerConfig::default().write_timeout(Duration::from_secs(2))).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(socket.connect(server.addr())).await.unwrap();
    let mut client = LineClient::from_stream(stream);
    let id = server.recorder.nth_start(1).await;
    // 16 MiB: more than any loopback socket buffers hold; the client never reads it.
    client.send(&format!("big {}", 16 << 20)).await;
    let (reason, messages) = server.recorder.stop_of(id).await;
    assert_eq!((reason, messages), (CloseReason::WriteTimeout, 1));
    let ends: Vec<_> = server
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Rec::MsgStop { command, .. } => Some((command, None)),
            Rec::MsgException {
                command, failure, ..
            } => Some((command, Some(failure))),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends,
        [("big".to_owned(), Some(mllp_actors::Failure::Aborted))]
    );
    drop(client);
    server.finish().await;
}

/// A transport whose handshake never finishes.
struct StalledHandshake;

impl Transport for StalledHandshake {
    type Stream = TcpStream;

    async fn handshake(&self, _socket: TcpStream) -> io::Result<Established<TcpStream>> {
        std::future::pending().await
    }
}

/// A handshake not done within `handshake_timeout` closes the connection as
/// `HandshakeTimeout`; the acceptor was never blocked by it.
#[tokio::test(start_paused = true)]
async fn stalled_handshake_closes_as_handshake_timeout() {
    let server = TestServer::start_with(
        Lines::new(),
        StalledHandshake,
        ServerConfig::default().handshake_timeout(Duration::from_secs(1)),
    )
    .await;
    let (mut first, first_id) = server.connect_registered().await;
    // A second peer is accepted while the first one's handshake is stalled.
    let (mut second, second_id) = server.connect_registered().await;
    first.expect_eof().await;
    second.expect_eof().await;
    for id in [first_id, second_id] {
        assert_eq!(
            server.recorder.stop_of(id).await,
            (CloseReason::HandshakeTimeout, 0)
        );
    }
    server.finish().await;
}

/// A handler's deadline holds while the connection waits on a slow write of an earlier answer:
/// the handler is aborted at its deadline (not when the write gives up), and reported as timed
/// out when the connection then closes for the write timeout.
#[tokio::test(start_paused = true)]
async fn handler_deadline_holds_while_a_write_is_blocked() {
    let limit = Duration::from_secs(2);
    let server = TestServer::start(
        ServerConfig::default()
            .max_in_flight(3)
            .handler_timeout(limit)
            .write_timeout(Duration::from_secs(5)),
    )
    .await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(socket.connect(server.addr())).await.unwrap();
    let mut client = LineClient::from_stream(stream);
    let id = server.recorder.nth_start(1).await;
    // All three are read while `sleep 1` runs. At 1 s it is answered, then `big`'s answer
    // fills the socket (the client never reads); `hang` never finishes and passes its deadline
    // (2 s) while that write waits.
    client
        .send_raw(format!("sleep 1\nbig {}\nhang\n", 16 << 20).as_bytes())
        .await
        .unwrap();
    let (reason, _) = server.recorder.stop_of(id).await;
    assert_eq!(reason, CloseReason::WriteTimeout);
    let failures: Vec<_> = server
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Rec::MsgException {
                command, failure, ..
            } => Some((command, failure)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("big".to_owned(), mllp_actors::Failure::Aborted),
            ("hang".to_owned(), mllp_actors::Failure::TimedOut(limit))
        ]
    );
    assert_eq!(server.dropped(), 1);
    server.finish().await;
}

/// A request that waited in the read buffer behind another is timed from the read that brought
/// it, not from the moment the one before it was answered: both lines arrive in one write, the
/// first takes 1 s, so the second's duration includes that second.
#[tokio::test(start_paused = true)]
async fn buffered_request_is_timed_from_its_read() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut client, id) = server.connect_registered().await;
    client.send_raw(b"sleep 1\nsecond\n").await.unwrap();
    assert_eq!(client.recv().await.as_deref(), Some("slept"));
    assert_eq!(client.recv().await.as_deref(), Some("second"));
    drop(client);
    server.recorder.stop_of(id).await;
    let durations: Vec<_> = server
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Rec::MsgStop {
                command, duration, ..
            } => Some((command, duration)),
            _ => None,
        })
        .collect();
    assert_eq!(durations.len(), 2, "{durations:?}");
    assert!(durations[1].1 >= Duration::from_secs(1), "{durations:?}");
    server.finish().await;
}

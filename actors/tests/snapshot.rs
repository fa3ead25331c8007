//! The server snapshot: state, listeners, per-connection counters, recently closed connections.

mod support;

use mllp_actors::{CloseReason, ServerConfig, ServerState};
use support::{TestServer, within};

/// A connection's counters move with its traffic: bytes in and out, messages, the time of its
/// last answer; once it closes it is listed among the recently closed with its reason.
#[tokio::test]
async fn snapshot_counts_traffic_and_remembers_closed_connections() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut client, id) = server.connect_registered().await;
    let before = server.handle.snapshot().await;
    assert_eq!(before.state, ServerState::Running);
    assert_eq!(before.listeners.len(), 1);
    assert_eq!(before.listeners[0].local_addr, server.addr());
    assert!(before.listeners[0].accepting);
    assert_eq!(before.max_connections, 1024);
    assert_eq!(before.connections.len(), 1);
    assert_eq!(before.connections[0].id, id);
    assert_eq!(before.connections[0].last_message, None);
    assert_eq!(before.connections[0].bytes_in, 0);

    client.send("hello").await;
    assert_eq!(client.recv().await.as_deref(), Some("hello"));
    client.send("again").await;
    assert_eq!(client.recv().await.as_deref(), Some("again"));
    let during = server.handle.snapshot().await;
    let connection = &during.connections[0];
    assert_eq!(connection.messages, 2);
    assert_eq!(
        connection.bytes_in, 12,
        "two lines of 5 bytes and their newlines"
    );
    assert_eq!(connection.bytes_out, 12);
    assert_eq!(connection.peer_identity, None);
    let last = connection.last_message.expect("a last message time");
    assert!(last >= connection.started && last <= during.taken);
    assert_eq!(during.connections_opened, 1);

    drop(client);
    let (reason, _) = server.recorder.stop_of(id).await;
    assert_eq!(reason, CloseReason::PeerClosed);
    let after = server.handle.snapshot().await;
    assert!(after.connections.is_empty());
    let closed = &after.recently_closed[0];
    assert_eq!(
        (closed.id, closed.messages, closed.bytes_in, &closed.reason),
        (id, 2, 12, &CloseReason::PeerClosed)
    );
    assert!(closed.closed >= closed.started);
    server.finish().await;
    let stopped = within(server.handle.snapshot()).await;
    assert_eq!(stopped.state, ServerState::Stopped);
    assert!(!stopped.listeners[0].accepting);
}

/// The registry remembers at most `RECENTLY_CLOSED` closed connections, the newest first.
#[tokio::test]
async fn recently_closed_is_bounded_newest_first() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut last = 0;
    for _ in 0..mllp_actors::RECENTLY_CLOSED + 3 {
        let (client, id) = server.connect_registered().await;
        drop(client);
        server.recorder.stop_of(id).await;
        last = id;
    }
    let snapshot = server.handle.snapshot().await;
    assert_eq!(snapshot.recently_closed.len(), mllp_actors::RECENTLY_CLOSED);
    assert_eq!(snapshot.recently_closed[0].id, last);
    server.finish().await;
}

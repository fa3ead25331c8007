//! Per-peer limits: one address cannot take every connection slot, nor open connections
//! faster than `accept_rate_per_peer`; a refused peer sees its connection closed before any
//! byte, and other peers are served at once.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mllp_actors::ServerConfig;
use support::{LineClient, Rec, TestServer, within};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `server` from the loopback address `127.0.0.<last>`.
async fn connect_from(last: u8, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, last], 0)))
        .unwrap();
    within(socket.connect(server)).await.unwrap()
}

async fn refusals(server: &TestServer, n: usize) {
    server
        .recorder
        .wait_for(|events| {
            events
                .iter()
                .filter(|e| matches!(e, Rec::Refused { .. }))
                .count()
                >= n
        })
        .await;
}

/// With `max_connections_per_peer`, idle connections from one address cannot hold every slot:
/// the address's next connection is closed at once, another address is served while the first
/// one's connections stay open, and a closed connection gives its place back.
#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let server = TestServer::start(
        ServerConfig::default()
            .max_connections(8)
            .max_connections_per_peer(Some(4))
            .idle_timeout(None),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(LineClient::from_stream(
            connect_from(1, server.addr()).await,
        ));
    }
    let mut refused = LineClient::from_stream(connect_from(1, server.addr()).await);
    refusals(&server, 1).await;
    assert_eq!(refused.recv().await, None, "a refused peer got bytes");
    let mut other = LineClient::from_stream(connect_from(2, server.addr()).await);
    assert_eq!(other.request("served").await, "served");

    drop(idle.pop());
    server
        .recorder
        .wait_for(|events| events.iter().any(|e| matches!(e, Rec::Stop { .. })))
        .await;
    let mut again = LineClient::from_stream(connect_from(1, server.addr()).await);
    assert_eq!(again.request("again").await, "again");
    let snapshot = server.handle.connections().await;
    assert!(snapshot.len() <= 6, "{snapshot:?}");
    drop((idle, refused, other, again));
    server.finish().await;
}

/// With `accept_rate_per_peer`, an address that opens connections faster than the rate has the
/// extra ones closed at once; another address is not affected, and the rate refills with time.
#[tokio::test(start_paused = true)]
async fn connections_past_the_accept_rate_are_refused() {
    let server = TestServer::start(ServerConfig::default().accept_rate_per_peer(Some(3))).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = LineClient::from_stream(connect_from(1, server.addr()).await);
        assert_eq!(client.request("ok").await, "ok");
        clients.push(client);
    }
    let mut fast = LineClient::from_stream(connect_from(1, server.addr()).await);
    refusals(&server, 1).await;
    assert_eq!(fast.recv().await, None);
    let mut other = LineClient::from_stream(connect_from(2, server.addr()).await);
    assert_eq!(other.request("other").await, "other");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut later = LineClient::from_stream(connect_from(1, server.addr()).await);
    assert_eq!(later.request("later").await, "later");
    drop((clients, fast, other, later));
    server.finish().await;
}

//! The JetStream store against a real nats-server (started by the tests): stored before
//! acknowledged, failures answered AE, recovery, duplicates across receivers, size checks.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats_server;

use nats_server::NatsServer;

/// The harness starts a server that greets clients, and restarts it on the same port.
#[test]
fn harness_starts_stops_and_restarts_on_the_same_port() {
    let mut server = NatsServer::start();
    let port = server.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    server.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    server.restart();
    assert_eq!(server.port(), port);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}

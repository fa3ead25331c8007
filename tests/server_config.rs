//! `ServerBuilder::config`: the runtime settings handed over whole, observed on a loopback
//! server.

mod support;

use std::time::Duration;

use bytes::Bytes;
use mllp::Server;
use mllp::app::{Request, Router};
use mllp::server::ServerConfig;
use support::{Peer, Recorder, Seen, hl7, start, within};

fn accept_all() -> Router {
    Router::new().route("*", |_req: Request| async {})
}

/// Waits for the first connection to close and returns its close reason.
async fn close_reason(events: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> String {
    loop {
        match within(events.recv()).await.expect("observer alive") {
            Seen::ConnectionStop { reason, .. } => return reason,
            _ => continue,
        }
    }
}

/// A whole config replaces what the setters set before it: its idle timeout closes a quiet
/// connection although `idle_timeout(None)` came first.
#[tokio::test(start_paused = true)]
async fn config_replaces_earlier_setters_and_takes_effect() {
    let (recorder, mut events) = Recorder::new();
    let server = start(
        Server::builder()
            .router(accept_all())
            .observer(recorder)
            .idle_timeout(None)
            .config(ServerConfig::default().idle_timeout(Some(Duration::from_secs(2)))),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.expect_closed().await;
    assert_eq!(close_reason(&mut events).await, "idle");
    within(server.shutdown()).await;
}

/// A setter called after `config` changes its one setting of that config.
#[tokio::test(start_paused = true)]
async fn setter_after_config_changes_that_setting() {
    let (recorder, mut events) = Recorder::new();
    let server = start(
        Server::builder()
            .router(accept_all())
            .observer(recorder)
            .config(ServerConfig::default().idle_timeout(None))
            .idle_timeout(Some(Duration::from_secs(2))),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.expect_closed().await;
    assert_eq!(close_reason(&mut events).await, "idle");
    within(server.shutdown()).await;
}

/// The framer's settings are not part of a `ServerConfig`: a `max_message_size` set before
/// `config` still closes the connection on a larger frame.
#[tokio::test]
async fn config_keeps_the_framer_settings() {
    let server = start(
        Server::builder()
            .router(accept_all())
            .max_message_size(1024)
            .config(ServerConfig::default()),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let mut big = hl7("ADT^A01", "BIG", "2.5").to_vec();
    big.extend(std::iter::repeat_n(b'X', 2048));
    big.push(b'\r');
    peer.send(Bytes::from(big)).await;
    peer.expect_closed().await;
    within(server.shutdown()).await;
}

/// A value out of range in a whole config is refused by `bind`, as from a setter.
#[tokio::test]
async fn config_out_of_range_is_refused_at_bind() {
    let result = Server::builder()
        .config(ServerConfig::default().max_connections(0))
        .bind("127.0.0.1:0")
        .await;
    assert!(
        matches!(
            result,
            Err(mllp::Error::Config(mllp::ConfigError::Runtime(_)))
        ),
        "{result:?}"
    );
}

//! Forwarding chains over real loopback sockets: a client sends to server A, whose handler
//! forwards to server B; A answers with B's acknowledgment, mapped and correlated upstream.

mod support;

use std::time::Duration;

use bytes::Bytes;
use mllp::ack::{ErrorCode, Reply};
use mllp::app::{HandlerError, Request, Router};
use mllp::forward::Forwarder;
use mllp::{ClientConfig, Server, ServerHandle};
use support::{Peer, field, hl7, hl7_with, start, within};
use tokio::net::TcpListener;

/// Server B: ADT^A01 accepted, ADT^A08 rejected with 201 and a text.
async fn downstream() -> ServerHandle {
    let router = Router::new()
        .route("ADT^A01", |_r: Request| async {})
        .route("ADT^A08", |_r: Request| async {
            Err::<(), _>(HandlerError::reject(
                ErrorCode::UnsupportedEventCode,
                "updates go elsewhere",
            ))
        });
    start(Server::builder().router(router)).await
}

/// Server A: every message forwarded with `forwarder`.
async fn forwarding(forwarder: Forwarder) -> ServerHandle {
    let router = Router::new().route("*", move |req: Request| {
        let forwarder = forwarder.clone();
        async move { forwarder.forward(req.message()).await }
    });
    start(Server::builder().router(router)).await
}

/// B's code comes back through A: AA, and AR with B's ERR (code 201 and text) kept; each ACK
/// is A's acknowledgment of the upstream message (MSA-2 = its MSH-10, sender and receiver
/// swapped from it).
#[tokio::test]
async fn downstream_codes_and_errors_are_relayed() {
    let b = downstream().await;
    let a = forwarding(Forwarder::new(b.local_addr().to_string())).await;
    let mut peer = Peer::connect(a.local_addr()).await;

    let ack = peer.call(hl7("ADT^A01", "FWD-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    assert_eq!(field(&ack, "MSA-2"), "FWD-1");
    assert_eq!(field(&ack, "MSH-3"), "RECVAPP");
    assert_eq!(field(&ack, "MSH-9"), "ACK^A01^ACK");

    let ack = peer.call(hl7("ADT^A08", "FWD-2", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR");
    assert_eq!(field(&ack, "MSA-2"), "FWD-2");
    assert_eq!(field(&ack, "ERR-3.1"), "201");
    assert_eq!(field(&ack, "ERR-8"), "updates go elsewhere");
    within(a.shutdown()).await;
    within(b.shutdown()).await;
}

/// An upstream message in enhanced mode (MSH-15 = AL) gets the downstream's code as an accept
/// ACK: AA becomes CA, AR becomes CR.
#[tokio::test]
async fn codes_are_mapped_to_the_upstream_mode() {
    let b = downstream().await;
    let a = forwarding(Forwarder::new(b.local_addr().to_string())).await;
    let mut peer = Peer::connect(a.local_addr()).await;
    let ack = peer.call(hl7_with("ADT^A01", "ENH-1", "2.5", "AL")).await;
    assert_eq!(field(&ack, "MSA-1"), "CA");
    let ack = peer.call(hl7_with("ADT^A08", "ENH-2", "2.5", "AL")).await;
    assert_eq!(field(&ack, "MSA-1"), "CR");
    assert_eq!(field(&ack, "ERR-3.1"), "201");
    within(a.shutdown()).await;
    within(b.shutdown()).await;
}

/// A downstream that never answers, or cannot be reached, is AE with ERR-3 = 207 upstream.
#[tokio::test]
async fn silence_and_unreachable_downstreams_are_ae_207() {
    // Accepts and reads, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = silent.accept().await {
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut stream, &mut sink).await;
            });
        }
    });
    let config = ClientConfig::default()
        .reply_timeout(Duration::from_millis(200))
        .max_retries(0);
    let a = forwarding(Forwarder::with_config(
        silent_addr.to_string(),
        config.clone(),
    ))
    .await;
    let mut peer = Peer::connect(a.local_addr()).await;
    let ack = peer.call(hl7("ADT^A01", "SLOW-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AE");
    assert_eq!(field(&ack, "MSA-2"), "SLOW-1");
    assert_eq!(field(&ack, "ERR-3.1"), "207");
    assert!(
        field(&ack, "ERR-8").contains("in time"),
        "{}",
        field(&ack, "ERR-8")
    );
    within(a.shutdown()).await;

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap().to_string();
    drop(closed);
    let a = forwarding(Forwarder::with_config(gone, config)).await;
    let mut peer = Peer::connect(a.local_addr()).await;
    let ack = peer.call(hl7("ADT^A01", "GONE-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AE");
    assert_eq!(field(&ack, "ERR-8"), "downstream unreachable");
    within(a.shutdown()).await;
}

/// The reply timeout bounds the whole exchange with the downstream, reconnecting included: a
/// pooled client that failed before waits a growing backoff before it dials again (100 ms,
/// doubling), which soon passes the timeout; the sender upstream gets its AE by then, and the
/// next message starts on a fresh connection.
#[tokio::test]
async fn the_reply_timeout_bounds_reconnect_backoff_too() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap().to_string();
    drop(closed);
    let limit = Duration::from_millis(150);
    let forwarder = Forwarder::with_config(
        gone,
        ClientConfig::default().reply_timeout(limit).max_retries(0),
    )
    .max_connections(1);
    let mut kinds = Vec::new();
    for n in 0..5 {
        let message = hl7("ADT^A01", &format!("BACKOFF-{n}"), "2.5");
        let error = within(forwarder.send(message)).await.unwrap_err();
        kinds.push(match error {
            mllp::ClientError::Timeout(_) => "timeout",
            mllp::ClientError::Connect { .. } => "connect",
            other => panic!("{other:?}"),
        });
    }
    assert!(
        kinds.contains(&"timeout"),
        "the backoff was cut short: {kinds:?}"
    );
}

/// A downstream ERR written carelessly (an unescaped `\` in a file path) reaches an upstream
/// with other delimiters with its fields where they were, and the path reads the same. ERR-8
/// to ERR-12 used to merge, from the lone backslash to the next escape character (ERR-12's).
#[tokio::test]
async fn a_downstream_err_with_a_lone_backslash_keeps_its_fields_upstream() {
    // Server B answers with its own ACK, written by hand as a careless receiver writes it.
    let careless = Router::new().route("*", |req: Request| async move {
        let id = req.message().control_id().unwrap_or_default().to_owned();
        Reply::raw(format!(
            "MSH|^~\\&|B|B|A|A|20240101||ACK^A01^ACK|B1|P|2.5\rMSA|AE|{id}\r\
             ERR||PID^1|207^Application internal error^HL70357|E||||cannot write C:\\inbox||||desk\\T\\12\r"
        ))
    });
    let b = start(Server::builder().router(careless)).await;
    let a = forwarding(Forwarder::new(b.local_addr().to_string())).await;
    let mut peer = Peer::connect(a.local_addr()).await;
    let upstream =
        Bytes::from_static(b"MSH#$*@!#UP#UPF#A#AF#20240101##ADT$A01#UP-1#P#2.5\rPID#1\r");
    let ack = peer.call(upstream).await;
    assert_eq!(ack.delimiters().field(), b'#');
    assert_eq!(field(&ack, "MSA-1"), "AE");
    assert_eq!(field(&ack, "MSA-2"), "UP-1");
    assert_eq!(field(&ack, "ERR-3.1"), "207");
    assert_eq!(field(&ack, "ERR-4"), "E");
    assert_eq!(field(&ack, "ERR-8"), "cannot write C:\\inbox");
    assert_eq!(field(&ack, "ERR-12"), "desk&12");
    within(a.shutdown()).await;
    within(b.shutdown()).await;
}

/// A message rewritten before it goes on (its own MSH-10) is still answered upstream with the
/// upstream MSH-10 in MSA-2.
#[tokio::test]
async fn a_rewritten_message_is_acknowledged_with_the_upstream_id() {
    let b = downstream().await;
    let forwarder = Forwarder::new(b.local_addr().to_string());
    let router = Router::new().route("*", move |req: Request| {
        let forwarder = forwarder.clone();
        async move {
            let upstream = req.message();
            let id = upstream.control_id().unwrap_or_default();
            let outgoing = String::from_utf8_lossy(upstream.as_bytes())
                .replace(&format!("|{id}|"), &format!("|RELAY-{id}|"));
            forwarder.forward_as(upstream, Bytes::from(outgoing)).await
        }
    });
    let a = start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(a.local_addr()).await;
    let ack = peer.call(hl7("ADT^A01", "UP-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    assert_eq!(field(&ack, "MSA-2"), "UP-1");
    within(a.shutdown()).await;
    within(b.shutdown()).await;
}

/// MSH-16 (application acknowledgment type): the sender gets its accept ACK (CA/CE) on the
/// connection, and the handler's outcome goes to the sender's own endpoint as an application
/// ACK (AA/AE, MSA-2 = the message's MSH-10) when MSH-16 asks for one: `AL` always, `ER` only
/// on failure.
#[tokio::test]
async fn msh16_application_acks_go_to_the_senders_endpoint() {
    use mllp::app::from_fn;
    use mllp::forward::ApplicationAcks;
    use mllp::hl7::Message;
    use tokio::sync::mpsc;

    // The sender's own receiver: records every application ACK it gets.
    let (tx, mut received) = mpsc::unbounded_channel::<Message>();
    let endpoint = start(Server::builder().router(Router::new().route(
        "ACK^*",
        move |req: Request| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(req.message().clone());
            }
        },
    )))
    .await;
    let acks = ApplicationAcks::to(Forwarder::new(endpoint.local_addr().to_string()));
    let router = Router::new()
        .route("ADT^A01", |_r: Request| async {})
        .route("ADT^A08", |_r: Request| async {
            Err::<(), _>(HandlerError::internal("database unavailable"))
        })
        .layer(from_fn(move |req, next| {
            let acks = acks.clone();
            async move { acks.respond(req, next).await }
        }));
    let server = start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let with_msh16 = |kind: &str, id: &str, msh16: &str| {
        Bytes::from(format!(
            "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20261122120000||{kind}|{id}|P|2.5|||AL|{msh16}\rPID|1\r"
        ))
    };

    let accept = peer.call(with_msh16("ADT^A01", "APP-1", "AL")).await;
    assert_eq!(field(&accept, "MSA-1"), "CA");
    let app = within(received.recv()).await.unwrap();
    assert_eq!(field(&app, "MSA-1"), "AA");
    assert_eq!(field(&app, "MSA-2"), "APP-1");
    assert_eq!(field(&app, "MSH-5"), "SENDAPP", "addressed to the sender");

    // ER: nothing on success; on failure an AE with the handler's error.
    let accept = peer.call(with_msh16("ADT^A01", "APP-2", "ER")).await;
    assert_eq!(field(&accept, "MSA-1"), "CA");
    let accept = peer.call(with_msh16("ADT^A08", "APP-3", "ER")).await;
    assert_eq!(field(&accept, "MSA-1"), "CE");
    let app = within(received.recv()).await.unwrap();
    assert_eq!(field(&app, "MSA-2"), "APP-3", "APP-2 got none");
    assert_eq!(field(&app, "MSA-1"), "AE");
    assert_eq!(field(&app, "ERR-3.1"), "207");
    within(server.shutdown()).await;
    within(endpoint.shutdown()).await;
}

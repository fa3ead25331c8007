//! TLS end to end through the real server: round trip, mutual TLS identity in the request
//! context and telemetry, plaintext refused, handshake timeout, drain, and peer admission.

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::sync::Arc;
use std::time::Duration;

use mllp::app::{HandlerError, Request, Router};
use mllp::tls::{Admission, Admitted, TlsClientConfig, TlsConfig};
use mllp::{Client, ClientConfig, Server, ServerHandle};
use pki::Pki;
use support::{Peer, Recorder, Seen, hl7, next_matching, within};
use tokio::io::AsyncReadExt;

async fn tls_server(
    tls: TlsConfig,
    router: Router,
    builder: impl FnOnce(mllp::ServerBuilder) -> mllp::ServerBuilder,
) -> (ServerHandle, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let (recorder, rx) = Recorder::new();
    let server = builder(Server::builder().router(router).observer(recorder))
        .transport(tls.build().expect("tls config"))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn()
        .await
        .expect("start");
    (server, rx)
}

fn accept_all() -> Router {
    Router::new().route("*", |_r: Request| async {})
}

fn tls_client(server: &ServerHandle, tls: TlsClientConfig) -> Client {
    Client::with_tls(
        server.local_addr().to_string(),
        ClientConfig::default(),
        tls,
    )
    .expect("client")
}

/// A message over TLS is acknowledged AA, and telemetry reports the connection as TLS.
#[tokio::test]
async fn tls_round_trip_through_the_server() {
    let pki = Pki::new();
    let (server, mut events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key),
        accept_all(),
        |b| b,
    )
    .await;
    let mut client = tls_client(&server, TlsClientConfig::new(&pki.ca.cert));
    let ack = within(client.send(hl7("ADT^A01", "TLS1", "2.5")))
        .await
        .expect("ack")
        .expect("an ACK (original mode)");
    assert_eq!(ack.code().as_str(), "AA");
    client.close().await;
    let stop = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStop { .. })).await;
    assert_eq!(
        stop,
        Seen::ConnectionStop {
            reason: "peer_closed".into(),
            tls: true,
            identity: None,
            messages: 1
        }
    );
    within(server.shutdown()).await;
}

/// With a client CA, the verified client identity reaches the handler and the telemetry.
#[tokio::test]
async fn mtls_identity_reaches_handler_and_telemetry() {
    let pki = Pki::new();
    let router = Router::new().route("*", |req: Request| async move {
        match (req.connection().tls(), req.connection().peer_identity()) {
            (true, Some("lab-sender")) => Ok(()),
            _ => Err(HandlerError::internal("unexpected identity")),
        }
    });
    let (server, mut events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key)
            .client_ca(&pki.ca.cert)
            .allow_client_subject("lab-sender"),
        router,
        |b| b,
    )
    .await;
    let mut client = tls_client(
        &server,
        TlsClientConfig::new(&pki.ca.cert).client_cert(&pki.client.cert, &pki.client.key),
    );
    let ack = within(client.send(hl7("ADT^A01", "MTLS1", "2.5")))
        .await
        .expect("ack")
        .expect("an ACK (original mode)");
    assert_eq!(ack.code().as_str(), "AA");
    client.close().await;
    let stop = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStop { .. })).await;
    assert!(
        matches!(&stop, Seen::ConnectionStop { identity: Some(id), tls: true, .. } if id == "lab-sender"),
        "{stop:?}"
    );
    within(server.shutdown()).await;
}

/// A client certificate whose subject is not allowed never gets an answer: the handshake
/// fails and telemetry says so.
#[tokio::test]
async fn mtls_disallowed_subject_is_refused() {
    let pki = Pki::new();
    let (server, mut events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key)
            .client_ca(&pki.ca.cert)
            .allow_client_subject("lab-sender"),
        accept_all(),
        |b| b,
    )
    .await;
    let mut client = Client::with_tls(
        server.local_addr().to_string(),
        ClientConfig::default().max_retries(0),
        TlsClientConfig::new(&pki.ca.cert).client_cert(&pki.intruder.cert, &pki.intruder.key),
    )
    .unwrap();
    assert!(
        within(client.send(hl7("ADT^A01", "X", "2.5")))
            .await
            .is_err()
    );
    let stop = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStop { .. })).await;
    assert!(
        matches!(&stop, Seen::ConnectionStop { reason, messages: 0, .. } if reason == "handshake_failed"),
        "{stop:?}"
    );
    within(server.shutdown()).await;
}

/// A plaintext MLLP client on the TLS port is closed and never answered.
#[tokio::test]
async fn plaintext_client_on_tls_port_gets_no_answer() {
    let pki = Pki::new();
    let (server, _events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key),
        accept_all(),
        |b| b,
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut wire = vec![0x0b];
    wire.extend_from_slice(&hl7("ADT^A01", "PLAIN", "2.5"));
    wire.extend_from_slice(&[0x1c, 0x0d]);
    stream.write_all(&wire).await.unwrap();
    let mut reply = Vec::new();
    let _ = within(stream.read_to_end(&mut reply)).await;
    assert!(
        !reply.contains(&0x0b),
        "no MLLP frame may come back: {reply:?}"
    );
    within(server.shutdown()).await;
}

/// The MLLP client, sent to a TLS listener without TLS, gets the listener's TLS alert as its
/// first byte, and its error says that this looks like TLS rather than only "unexpected byte".
#[tokio::test]
async fn plaintext_mllp_client_is_told_the_listener_speaks_tls() {
    let pki = Pki::new();
    let (server, _events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key),
        accept_all(),
        |b| b,
    )
    .await;
    let mut config = ClientConfig::default();
    config.max_retries = 0;
    let mut client = Client::with_config(server.local_addr().to_string(), config);
    match within(client.send(hl7("ADT^A01", "PLAIN", "2.5"))).await {
        Err(mllp::ClientError::Frame(error)) => {
            let text = error.to_string();
            assert!(
                text.contains("0x15") && text.contains("TLS alert"),
                "{text}"
            );
        }
        other => panic!("expected a framing error, got {other:?}"),
    }
    within(server.shutdown()).await;
}

/// A client that connects and never starts the handshake is closed at `handshake_timeout`,
/// and the acceptor keeps serving others meanwhile.
#[tokio::test(start_paused = true)]
async fn silent_client_is_closed_at_handshake_timeout() {
    let pki = Pki::new();
    let (server, mut events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key),
        accept_all(),
        |b| b.handshake_timeout(Duration::from_secs(2)),
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let stop = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStop { .. })).await;
    assert!(
        matches!(&stop, Seen::ConnectionStop { reason, .. } if reason == "handshake_timeout"),
        "{stop:?}"
    );
    let mut buf = [0u8; 16];
    assert_eq!(
        within(silent.read(&mut buf)).await.unwrap_or(0),
        0,
        "closed without data"
    );
    within(server.shutdown()).await;
}

/// Shutdown over TLS: the message in flight is answered before the connection closes.
#[tokio::test]
async fn shutdown_drains_a_tls_connection() {
    let pki = Pki::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let (g, e) = (gate.clone(), entered.clone());
    let router = Router::new().route("*", move |_r: Request| {
        let (g, e) = (g.clone(), e.clone());
        async move {
            e.notify_one();
            g.notified().await;
        }
    });
    let (server, _events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key),
        router,
        |b| b,
    )
    .await;
    let mut client = tls_client(&server, TlsClientConfig::new(&pki.ca.cert));
    let send = tokio::spawn(async move { client.send(hl7("ADT^A01", "DRAIN", "2.5")).await });
    within(entered.notified()).await;
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    gate.notify_one();
    let ack = within(send)
        .await
        .unwrap()
        .expect("in-flight message answered during drain")
        .expect("an ACK (original mode)");
    assert_eq!(ack.code().as_str(), "AA");
    let report = within(shutdown).await.unwrap();
    assert_eq!((report.drained, report.aborted), (1, 0));
}

/// A peer outside the allow-list is closed right after accept and counted; an allowed one is
/// served.
#[tokio::test]
async fn peer_admission_refuses_addresses_outside_the_allow_list() {
    for (rule, admitted) in [("10.0.0.0/8", false), ("127.0.0.1/32", true)] {
        let (recorder, mut events) = Recorder::new();
        let server = Server::builder()
            .router(accept_all())
            .observer(recorder)
            .transport(Admitted::new(
                mllp_actors::PlainTcp,
                Admission::allow_list([rule]).unwrap(),
            ))
            .bind("127.0.0.1:0")
            .await
            .unwrap()
            .spawn()
            .await
            .unwrap();
        let mut peer = Peer::connect(server.local_addr()).await;
        peer.send(hl7("ADT^A01", "ADM", "2.5")).await;
        if admitted {
            assert!(
                within(peer.recv()).await.is_some(),
                "{rule}: allowed peer is answered"
            );
        } else {
            peer.expect_closed().await;
            next_matching(&mut events, |s| *s == Seen::ConnectionRefused).await;
        }
        within(server.shutdown()).await;
    }
}

/// When the server closes a TLS connection (here: idle), it sends `close_notify`: the client
/// sees a clean end of stream, not a truncation.
#[tokio::test(start_paused = true)]
async fn server_close_sends_close_notify() {
    let pki = Pki::new();
    let (server, _events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key),
        accept_all(),
        |b| b.idle_timeout(Some(Duration::from_secs(2))),
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = pki
        .raw_client()
        .connect(name, tcp)
        .await
        .expect("handshake");
    let mut buf = [0u8; 16];
    let read = within(tls.read(&mut buf)).await;
    assert_eq!(read.expect("clean close, not a truncation"), 0);
    within(server.shutdown()).await;
}

/// `ConnectionStart` (emitted before the handshake) reports a TLS listener's connections as
/// TLS, also when the TLS transport is wrapped in a peer allow-list.
#[tokio::test]
async fn connection_start_reports_tls() {
    let pki = Pki::new();
    let tls = || {
        TlsConfig::new(&pki.server.cert, &pki.server.key)
            .build()
            .expect("tls config")
    };
    let (recorder, events) = Recorder::new();
    let bare = Server::builder()
        .router(accept_all())
        .observer(recorder)
        .transport(tls())
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn()
        .await
        .expect("start");
    let (recorder, admitted_events) = Recorder::new();
    let admitted = Server::builder()
        .router(accept_all())
        .observer(recorder)
        .transport(Admitted::new(
            tls(),
            Admission::allow_list(["127.0.0.1"]).unwrap(),
        ))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn()
        .await
        .expect("start");
    for (server, mut events) in [(bare, events), (admitted, admitted_events)] {
        let mut client = tls_client(&server, TlsClientConfig::new(&pki.ca.cert));
        within(client.send(hl7("ADT^A01", "START", "2.5")))
            .await
            .expect("ack");
        let start = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStart { .. })).await;
        assert_eq!(start, Seen::ConnectionStart { tls: true });
        client.close().await;
        within(server.shutdown()).await;
    }
}

/// A client that sends half a ClientHello and stalls is closed at `handshake_timeout`, like a
/// silent one.
#[tokio::test(start_paused = true)]
async fn half_client_hello_is_closed_at_handshake_timeout() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new();
    let (server, mut events) = tls_server(
        TlsConfig::new(&pki.server.cert, &pki.server.key),
        accept_all(),
        |b| b.handshake_timeout(Duration::from_secs(2)),
    )
    .await;
    let mut stalled = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    // A handshake record header announcing 512 bytes, then the start of a ClientHello.
    stalled
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let stop = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStop { .. })).await;
    assert!(
        matches!(&stop, Seen::ConnectionStop { reason, .. } if reason == "handshake_timeout"),
        "{stop:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    let mut buf = [0u8; 16];
    assert_eq!(within(stalled.read(&mut buf)).await.unwrap_or(0), 0);
    within(server.shutdown()).await;
}

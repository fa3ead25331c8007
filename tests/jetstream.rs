//! The JetStream store against a real nats-server (started by the tests): stored before
//! acknowledged, failures answered AE, recovery, duplicates across receivers, size checks,
//! TLS.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats_server;
#[path = "support/pki.rs"]
mod pki;
mod support;

use std::time::Duration;

use async_nats::jetstream::{self, stream::Config};
use bytes::Bytes;
use mllp::app::{Request, Router};
use mllp::store::nats::{JetStreamConfig, JetStreamStore, NatsOptions, StreamSettings, header};
use mllp::store::{NatsSpec, Receipt, Store, StoreError, StoreHealth, StoreLayer, StoreSpec};
use mllp::{Server, ServerHandle};
use nats_server::NatsServer;
use support::{Peer, field, hl7, start, within};

const STREAM: &str = "HL7";

fn spec(server: &NatsServer) -> NatsSpec {
    match format!("{}/{STREAM}", server.url()).parse::<StoreSpec>() {
        Ok(StoreSpec::Nats(spec)) => spec,
        other => panic!("not a nats spec: {other:?}"),
    }
}

/// The test settings: the stream is created; messages up to 512 KiB (the server's default
/// `max_payload` is 1 MiB); a short PubAck timeout so failures are answered quickly.
fn config() -> JetStreamConfig {
    JetStreamConfig::default()
        .max_message_size(512 * 1024)
        .ack_timeout(Duration::from_secs(2))
        .create_stream(Some(StreamSettings::default()))
}

async fn open(server: &NatsServer) -> JetStreamStore {
    within(JetStreamStore::open(&spec(server), config()))
        .await
        .expect("open the store")
}

async fn receiver(store: JetStreamStore) -> ServerHandle {
    let router = Router::new()
        .route("*", |_req: Request| async {})
        .layer(StoreLayer::new(store));
    start(Server::builder().router(router)).await
}

/// A JetStream context of its own, as an operator's tool would have.
async fn js(server: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.expect("connect"))
}

/// Every message in the stream, in order.
async fn stream_messages(server: &NatsServer) -> Vec<jetstream::message::StreamMessage> {
    let js = js(server).await;
    let mut stream = js.get_stream(STREAM).await.expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            out.push(message);
        }
    }
    out
}

fn control_ids(messages: &[jetstream::message::StreamMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            m.headers
                .get(header::CONTROL_ID)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        })
        .collect()
}

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

/// An AA means the message is in the stream: byte for byte, on `hl7.<code>.<event>`, with the
/// MSH metadata as headers and no other field.
#[tokio::test]
async fn acknowledged_message_is_in_the_stream_with_its_headers() {
    let nats = NatsServer::start();
    let store = open(&nats).await;
    let server = receiver(store).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let message = hl7("ADT^A01^ADT_A01", "CTRL-1", "2.5.1");
    let reply = peer.call(message.clone()).await;
    assert_eq!(field(&reply, "MSA-1"), "AA");

    let stored = stream_messages(&nats).await;
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert_eq!(m.payload, message);
    assert_eq!(m.subject.as_str(), "hl7.ADT.A01");
    let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(h(header::CONTROL_ID).as_deref(), Some("CTRL-1"));
    assert_eq!(h(header::MESSAGE_TYPE).as_deref(), Some("ADT^A01^ADT_A01"));
    assert_eq!(h(header::SENDING_APPLICATION).as_deref(), Some("SENDAPP"));
    assert_eq!(h(header::VERSION).as_deref(), Some("2.5.1"));
    assert!(h(header::PEER).unwrap().starts_with("127.0.0.1:"));
    assert!(h(header::RECEIVED_AT).unwrap().ends_with('Z'));
    assert_eq!(h(header::MSG_ID).unwrap().len(), 32);
    let all_headers: String = m
        .headers
        .iter()
        .map(|(n, v)| format!("{n}:{v:?}"))
        .collect();
    assert!(!all_headers.contains(support::SENTINEL), "PHI in headers");
    within(server.shutdown()).await;
}

/// A message type that is not a clean subject token (dots, wildcards, empty) is published to
/// one safe subject, not to a wildcard or a deeper subject.
#[tokio::test]
async fn hostile_message_types_make_safe_subjects() {
    let nats = NatsServer::start();
    let store = open(&nats).await;
    let server = receiver(store).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    assert_eq!(
        field(&peer.call(hl7("A.B^*", "C1", "2.5")).await, "MSA-1"),
        "AA"
    );
    assert_eq!(
        field(&peer.call(hl7("ORU^>", "C2", "2.5")).await, "MSA-1"),
        "AA"
    );
    let subjects: Vec<String> = stream_messages(&nats)
        .await
        .iter()
        .map(|m| m.subject.to_string())
        .collect();
    assert_eq!(subjects, ["hl7.A_B._", "hl7.ORU._"]);
    within(server.shutdown()).await;
}

/// With the NATS server stopped, messages are answered AE with ERR-3 207 (never AA) and the
/// store reports itself failing; once the server is back the same receiver stores and
/// acknowledges again, and every AA'd message is in the stream exactly once.
#[tokio::test]
async fn log_down_answers_ae_and_recovers_when_it_is_back() {
    let mut nats = NatsServer::start();
    let store = open(&nats).await;
    let server = receiver(store.clone()).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    assert_eq!(
        field(&peer.call(hl7("ADT^A01", "BEFORE", "2.5")).await, "MSA-1"),
        "AA"
    );

    nats.stop();
    for i in 0..3 {
        let reply = peer.call(hl7("ADT^A01", &format!("DOWN-{i}"), "2.5")).await;
        assert_eq!(
            field(&reply, "MSA-1"),
            "AE",
            "message {i} while NATS is down"
        );
        assert_eq!(field(&reply, "ERR-3.1"), "207");
    }
    assert_eq!(store.health(), StoreHealth::Failing);

    nats.restart();
    // A sender resends until it gets AA; the client reconnects on its own (backing off).
    let mut attempts = 0;
    within(async {
        loop {
            attempts += 1;
            let reply = peer.call(hl7("ADT^A01", "AFTER", "2.5")).await;
            match field(&reply, "MSA-1").as_str() {
                "AA" => break,
                "AE" => tokio::task::yield_now().await,
                other => panic!("unexpected {other}"),
            }
        }
    })
    .await;
    assert_eq!(store.health(), StoreHealth::Ok);

    let ids = control_ids(&stream_messages(&nats).await);
    assert_eq!(ids.iter().filter(|id| *id == "BEFORE").count(), 1);
    assert_eq!(
        ids.iter().filter(|id| *id == "AFTER").count(),
        1,
        "{attempts} attempts"
    );
    within(server.shutdown()).await;
}

/// The same message resent to another receiver (behind a balancer) is stored once: the
/// stream recognises its `Nats-Msg-Id`, and both senders get AA.
#[tokio::test]
async fn duplicate_across_two_receivers_is_stored_once_and_both_get_aa() {
    let nats = NatsServer::start();
    let (a, b) = (open(&nats).await, open(&nats).await);
    let (server_a, server_b) = (receiver(a.clone()).await, receiver(b.clone()).await);
    let first = hl7("ADT^A01", "SAME-1", "2.5");
    // The resend carries a new MSH-7, as many senders stamp one on each try.
    let resend = Bytes::from(String::from_utf8(first.to_vec()).unwrap().replacen(
        "20261122120000",
        "20261122120500",
        1,
    ));
    assert_ne!(first, resend);
    let mut peer_a = Peer::connect(server_a.local_addr()).await;
    let mut peer_b = Peer::connect(server_b.local_addr()).await;
    assert_eq!(field(&peer_a.call(first.clone()).await, "MSA-1"), "AA");
    assert_eq!(field(&peer_b.call(resend).await, "MSA-1"), "AA");

    let stored = stream_messages(&nats).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].payload, first);
    assert_eq!((a.stats().stored, b.stats().duplicates), (1, 1));
    within(server_a.shutdown()).await;
    within(server_b.shutdown()).await;
}

/// A duplicate's receipt names the stream sequence of the first copy.
#[tokio::test]
async fn duplicate_receipt_names_the_first_copy() {
    let nats = NatsServer::start();
    let store = open(&nats).await;
    let message = mllp::hl7::Message::parse(hl7("ORU^R01", "R-1", "2.5")).unwrap();
    let record = || {
        mllp::store::Record::from_message(
            &message,
            std::time::SystemTime::now(),
            "127.0.0.1:2575".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
            None,
        )
    };
    let other = mllp::hl7::Message::parse(hl7("ORU^R01", "R-2", "2.5")).unwrap();
    let first = store.append(record()).await.unwrap();
    let second = store
        .append(mllp::store::Record::from_message(
            &other,
            std::time::SystemTime::now(),
            "127.0.0.1:2575".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
            None,
        ))
        .await
        .unwrap();
    let again = store.append(record()).await.unwrap();
    assert!(matches!(first, Receipt::Stored { .. }));
    assert_eq!(first.id().as_u64(), Some(1));
    assert_eq!(second.id().as_u64(), Some(2));
    assert_eq!(
        again,
        Receipt::Duplicate {
            of: first.id().clone()
        }
    );
}

/// Many appends at once are all in flight together (one shared connection, pipelined), and
/// each gets its own sequence.
#[tokio::test]
async fn concurrent_appends_each_get_their_own_confirmation() {
    let nats = NatsServer::start();
    let store = open(&nats).await;
    let appends = (0..200).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let message =
                mllp::hl7::Message::parse(hl7("ADT^A08", &format!("P-{i}"), "2.5")).unwrap();
            let record = mllp::store::Record::from_message(
                &message,
                std::time::SystemTime::now(),
                "127.0.0.1:2575".parse().unwrap(),
                "127.0.0.1:40000".parse().unwrap(),
                None,
            );
            store.append(record).await.unwrap().id().as_u64().unwrap()
        })
    });
    let mut seqs = Vec::new();
    for append in appends {
        seqs.push(within(append).await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
}

/// A stream whose `max_msg_size` is below the receiver's max message size is refused at open
/// with an error that names both sizes and what to change.
#[tokio::test]
async fn stream_max_msg_size_below_max_message_size_is_a_startup_error() {
    let nats = NatsServer::start();
    js(&nats)
        .await
        .create_stream(Config {
            name: STREAM.into(),
            subjects: vec!["hl7.>".into()],
            max_message_size: 64 * 1024,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = JetStreamStore::open(&spec(&nats), config())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LimitTooSmall { .. }), "{err:?}");
    assert!(err.is_startup());
    let text = err.to_string();
    assert!(
        text.contains("the stream's max_msg_size is 65536 bytes"),
        "{text}"
    );
    assert!(
        text.contains("lower the max message size to 61440"),
        "{text}"
    );
    // The same stream takes a receiver whose largest message fits.
    let fits = config().max_message_size(60 * 1024);
    within(JetStreamStore::open(&spec(&nats), fits))
        .await
        .unwrap();
}

/// A server `max_payload` below the receiver's max message size is refused at open too.
#[tokio::test]
async fn server_max_payload_below_max_message_size_is_a_startup_error() {
    let nats = NatsServer::start_with("max_payload: 65536");
    let err = JetStreamStore::open(&spec(&nats), config())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the server's max_payload is 65536 bytes"),
        "{err}"
    );
}

/// A missing stream is a startup error that says how to create it; a stream that does not
/// capture `hl7.>` is one too.
#[tokio::test]
async fn missing_or_mismatched_stream_is_a_startup_error() {
    let nats = NatsServer::start();
    let no_create = config().create_stream(None);
    let err = JetStreamStore::open(&spec(&nats), no_create.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::StreamNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("--create-stream"), "{err}");

    js(&nats)
        .await
        .create_stream(Config {
            name: STREAM.into(),
            subjects: vec!["hl7.ADT.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = JetStreamStore::open(&spec(&nats), no_create)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::StreamSubjects { .. }), "{err:?}");
    assert!(err.to_string().contains("hl7.>"), "{err}");
}

/// No server at the address: a startup error naming it, within the connect timeout.
#[tokio::test]
async fn unreachable_server_is_a_startup_error() {
    let port = nats_server::free_port();
    let spec: StoreSpec = format!("nats://127.0.0.1:{port}/{STREAM}").parse().unwrap();
    let StoreSpec::Nats(spec) = spec else {
        unreachable!()
    };
    let err = within(JetStreamStore::open(&spec, config()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// With TLS on the NATS server (client certificates required): the store connects with the CA
/// and a client certificate, and refuses to start without the certificate or with another CA.
#[tokio::test]
async fn tls_to_nats_with_a_ca_and_a_client_certificate() {
    let pki = pki::Pki::new();
    let nats = NatsServer::start_with(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}",
        pki.server.cert, pki.server.key, pki.ca.cert
    ));
    let with = |options: NatsOptions| config().nats(options);
    let good = NatsOptions::default()
        .tls_ca(&pki.ca.cert)
        .tls_client_cert(&pki.client.cert, &pki.client.key);
    let store = within(JetStreamStore::open(&spec(&nats), with(good)))
        .await
        .expect("open over TLS");
    let message = mllp::hl7::Message::parse(hl7("ADT^A01", "TLS-1", "2.5")).unwrap();
    let record = mllp::store::Record::from_message(
        &message,
        std::time::SystemTime::now(),
        "127.0.0.1:2575".parse().unwrap(),
        "127.0.0.1:40000".parse().unwrap(),
        None,
    );
    assert!(matches!(
        store.append(record).await.unwrap(),
        Receipt::Stored { .. }
    ));

    let no_cert = NatsOptions::default().tls_ca(&pki.ca.cert);
    let err = within(JetStreamStore::open(&spec(&nats), with(no_cert)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let other_ca = NatsOptions::default()
        .tls_ca(&pki.other_ca.cert)
        .tls_client_cert(&pki.client.cert, &pki.client.key);
    let err = within(JetStreamStore::open(&spec(&nats), with(other_ca)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

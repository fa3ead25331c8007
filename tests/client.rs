//! The MLLP client against real receivers on loopback: correlation, reply timeouts, pipelining.

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::app::{Request, Router};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use mllp::tls::{HandshakeError, TlsClientConfig, TlsConfig};
use mllp::{Backoff, Client, ClientConfig, ClientError, Server};
use rustls::CertificateError;
use support::{hl7, start, within};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;

/// An ACK for `message` with MSA-2 = `msa2`.
fn ack_for(msa2: &str) -> Bytes {
    Bytes::from(format!(
        "MSH|^~\\&|R|R|S|S|20261122120000||ACK^A01^ACK|A1|P|2.5\rMSA|AA|{msa2}\r"
    ))
}

fn control_id(frame: &Bytes) -> String {
    Message::parse(frame.clone())
        .unwrap()
        .control_id()
        .unwrap()
        .to_owned()
}

/// A reply timeout closes the connection: the receiver sees it end, the next message goes on a
/// new connection and is paired with its own ACK, never with the late one.
#[tokio::test(start_paused = true)]
async fn reply_timeout_closes_the_connection_and_the_next_send_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = tokio::spawn(async move {
        // First connection: take the message, never answer, and report when the client hangs up.
        let (first, _) = listener.accept().await.unwrap();
        let mut first = Framed::new(first, MllpCodec::new());
        let got = first.next().await.unwrap().unwrap();
        assert_eq!(control_id(&got), "SLOW");
        let closed_by_client = first.next().await.is_none();
        // Second connection: answer properly.
        let (second, _) = listener.accept().await.unwrap();
        let mut second = Framed::new(second, MllpCodec::new());
        let got = second.next().await.unwrap().unwrap();
        second.send(ack_for(&control_id(&got))).await.unwrap();
        closed_by_client
    });
    let config = ClientConfig::default()
        .reply_timeout(Duration::from_secs(2))
        .max_retries(0);
    let mut client = Client::with_config(addr.to_string(), config);
    let err = within(client.send(hl7("ADT^A01", "SLOW", "2.5")))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    assert!(
        !client.is_connected(),
        "the timed-out connection is dropped"
    );
    let ack = within(client.send(hl7("ADT^A01", "NEXT", "2.5")))
        .await
        .unwrap()
        .expect("an ACK (original mode)");
    assert_eq!(ack.acknowledged_control_id().as_deref(), Some("NEXT"));
    assert!(
        within(receiver).await.unwrap(),
        "the receiver saw the first connection closed"
    );
}

/// An ACK whose MSA-2 is another message's control id is an error, never a success, and the
/// connection is dropped.
#[tokio::test]
async fn mismatched_msa2_is_an_error_and_drops_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(socket, MllpCodec::new());
        let _ = framed.next().await;
        let _ = framed.send(ack_for("SOMEONE-ELSE")).await;
        let _ = framed.next().await;
    });
    let mut client = Client::with_config(addr.to_string(), ClientConfig::default().max_retries(0));
    match within(client.send(hl7("ADT^A01", "MINE", "2.5"))).await {
        Err(ClientError::Mismatch { expected, received }) => {
            assert_eq!(
                (expected.as_str(), received.as_str()),
                ("MINE", "SOMEONE-ELSE")
            );
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(!client.is_connected());
}

/// `send_all` keeps up to `max_in_flight` messages outstanding and pairs every ACK in order.
#[tokio::test]
async fn send_all_pipelines_and_correlates_in_order() {
    let server = start(
        Server::builder()
            .router(Router::new().route("*", |_r: Request| async {}))
            .max_in_flight(4),
    )
    .await;
    let mut client = Client::with_config(
        server.local_addr().to_string(),
        ClientConfig::default().max_in_flight(4),
    );
    let ids: Vec<String> = (0..10).map(|i| format!("PIPE-{i}")).collect();
    let results = within(client.send_all(ids.iter().map(|id| hl7("ADT^A01", id, "2.5")))).await;
    assert_eq!(results.len(), ids.len());
    for (result, id) in results.into_iter().zip(&ids) {
        let ack = result.expect("accepted").expect("an ack");
        assert_eq!(ack.acknowledged_control_id().as_deref(), Some(id.as_str()));
    }
    within(server.shutdown()).await;
}

fn accept_or_fail() -> Router {
    Router::new()
        .route("ADT^A02", |_r: Request| async {
            Err::<(), _>(mllp::app::HandlerError::internal("nope"))
        })
        .route("*", |_r: Request| async {})
}

/// The client follows the message's MSH-15 as the receiver does: `NE` is not waited for, `ER`
/// is accepted by silence (and answered CE on error), and the connection keeps correlating.
#[tokio::test(start_paused = true)]
async fn client_follows_msh_15_of_the_message_it_sends() {
    let server = start(Server::builder().router(accept_or_fail())).await;
    let config = ClientConfig::default()
        .reply_timeout(Duration::from_secs(2))
        .max_retries(0);
    let mut client = Client::with_config(server.local_addr().to_string(), config);
    let ne = within(client.send(support::hl7_with("ADT^A01", "NE-1", "2.5", "NE"))).await;
    assert!(matches!(ne, Ok(None)), "{ne:?}");
    let er_ok = within(client.send(support::hl7_with("ADT^A01", "ER-1", "2.5", "ER"))).await;
    assert!(matches!(er_ok, Ok(None)), "{er_ok:?}");
    assert!(
        client.is_connected(),
        "silence is ER's success: the connection stays"
    );
    let er_bad = within(client.send(support::hl7_with("ADT^A02", "ER-2", "2.5", "ER"))).await;
    assert!(
        matches!(&er_bad, Err(ClientError::Negative { code, .. }) if code.as_str() == "CE"),
        "{er_bad:?}"
    );
    let al = within(client.send(support::hl7_with("ADT^A01", "AL-1", "2.5", "AL")))
        .await
        .unwrap()
        .expect("AL always gets an ACK");
    assert_eq!(
        (al.code().as_str(), al.acknowledged_control_id().as_deref()),
        ("CA", Some("AL-1"))
    );
    let mixed = within(client.send_all([
        support::hl7_with("ADT^A01", "M-1", "2.5", "NE"),
        hl7("ADT^A01", "M-2", "2.5"),
        support::hl7_with("ADT^A01", "M-3", "2.5", "ER"),
        hl7("ADT^A01", "M-4", "2.5"),
    ]))
    .await;
    let summary: Vec<Option<String>> = mixed
        .into_iter()
        .map(|r| r.unwrap().and_then(|a| a.acknowledged_control_id()))
        .collect();
    assert_eq!(
        summary,
        [None, Some("M-2".into()), None, Some("M-4".into())]
    );
    within(server.shutdown()).await;
}

/// A receiver that takes the connection but never reads cannot hold `send`: the write gives up
/// after `write_timeout` with a typed error, and the connection is dropped.
#[tokio::test(start_paused = true)]
async fn write_to_a_receiver_that_never_reads_times_out_and_drops_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let receiver = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let _ = stopped.await;
        drop(socket);
    });
    // Far more than the socket buffers on both sides hold.
    let mut big = b"MSH|^~\\&|S|S|R|R|20261122120000||ORU^R01|BIG-1|P|2.5\rOBX|1|ED|PDF||".to_vec();
    big.extend(std::iter::repeat_n(b'A', 32 * 1024 * 1024));
    big.push(b'\r');
    let config = ClientConfig::default()
        .write_timeout(Duration::from_secs(2))
        .max_retries(0);
    let mut client = Client::with_config(addr.to_string(), config);
    let outcome = within(client.send(Bytes::from(big))).await;
    let _ = stop.send(());
    within(receiver).await.unwrap();
    assert!(
        matches!(outcome, Err(ClientError::WriteTimeout(t)) if t == Duration::from_secs(2)),
        "{:?}",
        outcome.map(|_| ())
    );
    assert!(
        !client.is_connected(),
        "a half-written connection is dropped"
    );
}

/// A TLS receiver that accepts TCP but never answers the ClientHello: `connect_timeout` bounds
/// the whole connect, handshake included, and the error is a timed-out `Connect`.
#[tokio::test(start_paused = true)]
async fn tls_handshake_to_a_silent_receiver_is_bounded_by_connect_timeout() {
    let pki = pki::Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let receiver = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let _ = stopped.await;
        drop(socket);
    });
    let config = ClientConfig::default()
        .connect_timeout(Duration::from_secs(2))
        .max_retries(0);
    let mut client = Client::with_tls(
        addr.to_string(),
        config,
        TlsClientConfig::new(pki.path("ca.pem")).server_name("localhost"),
    )
    .unwrap();
    let outcome = within(client.connect()).await;
    let _ = stop.send(());
    within(receiver).await.unwrap();
    match outcome {
        Err(ClientError::Connect { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{source}");
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    assert!(!client.is_connected());
}

/// In `send_all`, a reply that is not an ACK drops the connection, and the messages still
/// pending on it fail as abandoned: none is paired with a reply read on the next connection.
#[tokio::test(start_paused = true)]
async fn send_all_fails_messages_pending_on_a_dropped_connection_without_reading_another() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let receiver = tokio::spawn(async move {
        let (first, _) = listener.accept().await.unwrap();
        let mut first = Framed::new(first, MllpCodec::new());
        let a = first.next().await.unwrap().unwrap();
        let b = first.next().await.unwrap().unwrap();
        // Garbage for the first; the second is never answered on this connection.
        first.send(Bytes::from_static(b"garbage")).await.unwrap();
        let (second, _) = listener.accept().await.unwrap();
        let mut second = Framed::new(second, MllpCodec::new());
        let c = second.next().await.unwrap().unwrap();
        second.send(ack_for(&control_id(&c))).await.unwrap();
        let _ = stopped.await;
        vec![control_id(&a), control_id(&b), control_id(&c)]
    });
    let mut client =
        Client::with_config(addr.to_string(), ClientConfig::default().max_in_flight(2));
    let results = within(client.send_all([
        hl7("ADT^A01", "P0", "2.5"),
        hl7("ADT^A01", "P1", "2.5"),
        hl7("ADT^A01", "P2", "2.5"),
    ]))
    .await;
    let _ = stop.send(());
    assert_eq!(within(receiver).await.unwrap(), ["P0", "P1", "P2"]);
    assert!(
        matches!(results[0], Err(ClientError::NotAnAck(_))),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(results[1], Err(ClientError::Abandoned)),
        "P1 was never answered: {:?}",
        results[1]
    );
    match &results[2] {
        Ok(Some(ack)) => assert_eq!(ack.acknowledged_control_id().as_deref(), Some("P2")),
        other => panic!("P2 was answered AA on the new connection, got {other:?}"),
    }
}

/// A message holding an MLLP reserved byte is refused before anything is written, for that
/// message only: the messages in flight keep their connection and get their own ACKs.
#[tokio::test]
async fn send_all_refuses_an_unframeable_message_and_keeps_the_connection() {
    let bad = Bytes::from(
        "MSH|^~\\&|S|S|R|R|20261122120000||ADT^A01|BAD|P|2.5\rPID|1||X\u{1c}Y\r".to_owned(),
    );
    assert!(Message::parse(bad.clone()).is_ok(), "valid HL7 otherwise");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let receiver = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(socket, MllpCodec::new());
        let mut seen = Vec::new();
        for _ in 0..2 {
            let m = framed.next().await.unwrap().unwrap();
            seen.push(control_id(&m));
            framed.send(ack_for(&control_id(&m))).await.unwrap();
        }
        let _ = stopped.await;
        seen
    });
    let mut client =
        Client::with_config(addr.to_string(), ClientConfig::default().max_in_flight(3));
    let results =
        within(client.send_all([hl7("ADT^A01", "A", "2.5"), bad, hl7("ADT^A01", "C", "2.5")]))
            .await;
    assert!(
        client.is_connected(),
        "an encode error does not drop the connection"
    );
    let _ = stop.send(());
    assert_eq!(
        within(receiver).await.unwrap(),
        ["A", "C"],
        "one connection"
    );
    assert!(
        matches!(results[1], Err(ClientError::Unframeable(_))),
        "{:?}",
        results[1]
    );
    for (result, id) in [(&results[0], "A"), (&results[2], "C")] {
        match result {
            Ok(Some(ack)) => assert_eq!(ack.acknowledged_control_id().as_deref(), Some(id)),
            other => panic!("{id} was acknowledged AA, got {other:?}"),
        }
    }
}

/// A receiver that accepts and hangs up at once makes every attempt fail: reconnects back off
/// (doubling to the cap) though each TCP connect succeeds, and a successful exchange resets it.
#[tokio::test(start_paused = true)]
async fn reconnects_back_off_when_the_receiver_hangs_up_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = tokio::spawn(async move {
        // Six connections that take a message and hang up.
        for _ in 0..6 {
            let (socket, _) = listener.accept().await.unwrap();
            let mut framed = Framed::new(socket, MllpCodec::new());
            let _ = framed.next().await;
        }
        // Then one good exchange, one hang-up, and one more good exchange.
        let (socket, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(socket, MllpCodec::new());
        let m = framed.next().await.unwrap().unwrap();
        framed.send(ack_for(&control_id(&m))).await.unwrap();
        let _ = framed.next().await;
        drop(framed);
        let (socket, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(socket, MllpCodec::new());
        let m = framed.next().await.unwrap().unwrap();
        framed.send(ack_for(&control_id(&m))).await.unwrap();
        let _ = framed.next().await;
    });
    let config = ClientConfig::default()
        .max_retries(5)
        .reconnect(Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(800),
        ));
    let mut client = Client::with_config(addr.to_string(), config);
    let started = tokio::time::Instant::now();
    let err = within(client.send(hl7("ADT^A01", "FLAP", "2.5")))
        .await
        .unwrap_err();
    let flapping = started.elapsed();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    // Five reconnects: 100 + 200 + 400 + 800 + 800 ms.
    assert!(
        flapping >= Duration::from_millis(2300),
        "six attempts in {flapping:?}: reconnects did not back off"
    );
    within(client.send(hl7("ADT^A01", "GOOD", "2.5")))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    within(client.send(hl7("ADT^A01", "AGAIN", "2.5")))
        .await
        .unwrap();
    let after_success = started.elapsed();
    assert!(
        after_success >= Duration::from_millis(100) && after_success < Duration::from_millis(200),
        "after a success one failure waits the initial delay, waited {after_success:?}"
    );
    client.close().await;
    within(receiver).await.unwrap();
}

/// A control id with an escape sequence correlates with our own receiver, which copies MSH-10
/// into MSA-2 verbatim: both are compared as raw bytes.
#[tokio::test]
async fn control_id_with_escape_sequence_correlates_with_our_own_start() {
    let server =
        start(Server::builder().router(Router::new().route("*", |_r: Request| async {}))).await;
    let mut client = Client::with_config(
        server.local_addr().to_string(),
        ClientConfig::default().max_retries(0),
    );
    let result = within(client.send(hl7("ADT^A01", "ID\\E\\1", "2.5"))).await;
    within(server.shutdown()).await;
    match result {
        Ok(Some(ack)) => assert_eq!(ack.acknowledged_control_id().as_deref(), Some("ID\\E\\1")),
        other => panic!("expected an AA for ID\\E\\1, got {other:?}"),
    }
}

/// A negative ACK's text (ERR, outside MSH: may be patient data) is not in the error's Display
/// or Debug, yet stays readable in the `text` field.
#[tokio::test]
async fn negative_ack_text_stays_out_of_display_and_debug() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(socket, MllpCodec::new());
        let m = framed.next().await.unwrap().unwrap();
        let id = control_id(&m);
        framed
            .send(Bytes::from(format!(
                "MSH|^~\\&|R|R|S|S|20261122120000||ACK^A01^ACK|A1|P|2.5\rMSA|AE|{id}\r\
                 ERR||PID^1^5|103|E||||patient {} unknown\r",
                support::SENTINEL
            )))
            .await
            .unwrap();
        let _ = framed.next().await;
    });
    let mut client = Client::with_config(addr.to_string(), ClientConfig::default().max_retries(0));
    let err = within(client.send(hl7("ADT^A01", "NEG", "2.5")))
        .await
        .unwrap_err();
    client.close().await;
    within(receiver).await.unwrap();
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains(support::SENTINEL), "{shown}");
    assert_eq!(err.to_string(), "receiver answered AE");
    match err {
        ClientError::Negative { text, .. } => {
            assert_eq!(text, format!("patient {} unknown", support::SENTINEL));
        }
        other => panic!("expected a negative ack, got {other:?}"),
    }
}

/// A `send` cancelled after its message went out (the caller's own timeout, a `select!`) leaves
/// its reply on the wire: the next `send` must not read it as its own. The client drops the
/// interrupted connection and sends the next message on a new one.
#[tokio::test]
async fn cancelled_send_never_lends_its_reply_to_the_next_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_slow, slow_arrived) = oneshot::channel();
    let (cancelled, send_cancelled) = oneshot::channel::<()>();
    let (acked, slow_acked) = oneshot::channel();
    let receiver = tokio::spawn(async move {
        let (first, _) = listener.accept().await.unwrap();
        let mut first = Framed::new(first, MllpCodec::new());
        let got = first.next().await.unwrap().unwrap();
        assert_eq!(control_id(&got), "SLOW");
        got_slow.send(()).unwrap();
        // Answer only once the client gave up waiting: the reply is then stale.
        send_cancelled.await.unwrap();
        first.send(ack_for("SLOW")).await.unwrap();
        acked.send(()).unwrap();
        // NEXT comes either on the old connection (then its reader finds the stale ACK first)
        // or on a new one; answer it properly either way. Reports whether it came on a new one.
        let mut first_open = true;
        loop {
            tokio::select! {
                frame = first.next(), if first_open => match frame {
                    Some(Ok(got)) => {
                        first.send(ack_for(&control_id(&got))).await.unwrap();
                        return false;
                    }
                    // The client dropped the old connection.
                    _ => first_open = false,
                },
                accepted = listener.accept() => {
                    let mut second = Framed::new(accepted.unwrap().0, MllpCodec::new());
                    let got = second.next().await.unwrap().unwrap();
                    second.send(ack_for(&control_id(&got))).await.unwrap();
                    return true;
                }
            }
        }
    });
    let mut client = Client::with_config(addr.to_string(), ClientConfig::default().max_retries(0));
    tokio::select! {
        result = client.send(hl7("ADT^A01", "SLOW", "2.5")) => panic!("SLOW was answered: {result:?}"),
        () = async { slow_arrived.await.unwrap() } => {}
    }
    cancelled.send(()).unwrap();
    within(slow_acked).await.unwrap();
    let ack = within(client.send(hl7("ADT^A01", "NEXT", "2.5")))
        .await
        .expect("NEXT gets its own ACK")
        .expect("an ACK (original mode)");
    assert_eq!(ack.acknowledged_control_id().as_deref(), Some("NEXT"));
    assert!(
        within(receiver).await.unwrap(),
        "NEXT went on a new connection"
    );
}

/// `send_all` to a receiver that is down fails the whole batch with the connect error at once:
/// it does not dial again for each message, waiting out the reconnect backoff every time.
#[tokio::test(start_paused = true)]
async fn send_all_to_an_unreachable_receiver_fails_the_batch_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
    let config = ClientConfig::default().reconnect(backoff).max_in_flight(2);
    let mut client = Client::with_config(addr.to_string(), config);
    let messages = ["U1", "U2", "U3", "U4", "U5"].map(|id| hl7("ADT^A01", id, "2.5"));
    let started = tokio::time::Instant::now();
    let results = within(client.send_all(messages)).await;
    assert_eq!(results.len(), 5);
    for result in &results {
        assert!(
            matches!(result, Err(ClientError::Connect { .. })),
            "{result:?}"
        );
        // Nobody listening may change: a retry may help.
        assert!(result.as_ref().unwrap_err().is_transient(), "{result:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3600),
        "no reconnect backoff was waited out"
    );
}

/// A line feed inside a field of a CR-terminated message (report text) is data: the client
/// sends the message and correlates its ACK, where reading the LF as a segment end would have
/// refused it as malformed.
#[tokio::test]
async fn line_feed_inside_a_field_is_sent_as_data() {
    let server =
        start(Server::builder().router(Router::new().route("*", |_r: Request| async {}))).await;
    let message = Bytes::from_static(
        b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20261122120000||ORU^R01|LF-1|P|2.5\r\
          OBX|1|TX|TEXT||first line\nsecond line||||||F\r",
    );
    assert_eq!(Client::check(&message).unwrap(), "LF-1");
    let mut client = Client::new(server.local_addr().to_string());
    let ack = within(client.send(message))
        .await
        .expect("sent and accepted")
        .expect("an ACK (original mode)");
    assert_eq!(ack.acknowledged_control_id().as_deref(), Some("LF-1"));
    within(server.shutdown()).await;
}

/// Many receivers ignore MSH-15 and acknowledge every message. An ACK for a message sent with
/// MSH-15 = NE (for which the client waits for nothing) is skipped, not read as the reply to
/// the next message, with `send` and with `send_all`.
#[tokio::test]
async fn acks_of_messages_that_asked_for_none_are_skipped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(socket, MllpCodec::new());
        // Acknowledges everything, MSH-15 or not.
        while let Some(Ok(frame)) = framed.next().await {
            framed.send(ack_for(&control_id(&frame))).await.unwrap();
        }
    });
    let never = |id: &str| {
        Bytes::from(format!(
            "MSH|^~\\&|S|S|R|R|20261122120000||ADT^A01|{id}|P|2.5|||NE\rPID|1||X\r"
        ))
    };
    let config = ClientConfig::default().max_retries(0).max_in_flight(4);
    let mut client = Client::with_config(addr.to_string(), config);
    assert!(within(client.send(never("N1"))).await.unwrap().is_none());
    let ack = within(client.send(hl7("ADT^A01", "A1", "2.5")))
        .await
        .expect("A1 gets its own ACK, N1's is skipped")
        .expect("an ACK");
    assert_eq!(ack.acknowledged_control_id().as_deref(), Some("A1"));
    let results = within(client.send_all([
        never("N2"),
        never("N3"),
        hl7("ADT^A01", "A2", "2.5"),
        never("N4"),
        hl7("ADT^A01", "A3", "2.5"),
    ]))
    .await;
    let acked: Vec<Option<String>> = results
        .into_iter()
        .map(|r| {
            r.expect("no error")
                .and_then(|a| a.acknowledged_control_id())
        })
        .collect();
    assert_eq!(
        acked,
        [None, None, Some("A2".into()), None, Some("A3".into())]
    );
    assert!(client.is_connected(), "no mismatch dropped the connection");
    client.close().await;
    within(receiver).await.unwrap();
}

/// A connection the receiver closed while it was idle (its idle timeout) is noticed before the
/// next write: with retries off, the next message goes out on a fresh connection and succeeds.
#[tokio::test(start_paused = true)]
async fn idle_connection_closed_by_the_receiver_is_replaced_before_the_next_send() {
    use support::{Recorder, Seen, next_matching};
    let (recorder, mut events) = Recorder::new();
    let router = Router::new().route("*", |_req: Request| async {});
    let server = start(
        Server::builder()
            .router(router)
            .idle_timeout(Some(Duration::from_secs(1)))
            .observer(recorder),
    )
    .await;
    let mut client = Client::with_config(
        server.local_addr().to_string(),
        ClientConfig::default().max_retries(0),
    );
    let ack = within(client.send(hl7("ADT^A01", "FIRST", "2.5"))).await;
    assert!(ack.unwrap().is_some());
    let stop = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStop { .. })).await;
    assert!(
        matches!(&stop, Seen::ConnectionStop { reason, .. } if reason == "idle"),
        "{stop:?}"
    );
    let ack = within(client.send(hl7("ADT^A01", "SECOND", "2.5"))).await;
    assert_eq!(
        ack.expect("sent on a fresh connection")
            .expect("an ACK")
            .acknowledged_control_id()
            .as_deref(),
        Some("SECOND")
    );
    // The same through the pipeline.
    let stop = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStop { .. })).await;
    assert!(matches!(&stop, Seen::ConnectionStop { reason, .. } if reason == "idle"));
    let results = within(client.send_all([hl7("ADT^A01", "THIRD", "2.5")])).await;
    assert!(results[0].is_ok(), "{results:?}");
    within(server.shutdown()).await;
}

/// The certificate error inside a failed connect, if that is what it is.
fn certificate_error(error: &ClientError) -> Option<&CertificateError> {
    match error {
        ClientError::Connect { source, .. } => match HandshakeError::from_io(source)? {
            HandshakeError::CertificateRejected(e) => Some(e),
            _ => None,
        },
        _ => None,
    }
}

/// A receiver whose certificate the client does not trust fails every handshake the same way
/// until a certificate changes: the error says it is not transient, `max_retries` does not
/// dial again (no reconnect backoff is waited out), and every message of a `send_all` carries
/// the same verdict.
#[tokio::test(start_paused = true)]
async fn refused_server_certificate_is_not_retried() {
    let pki = pki::Pki::new();
    let tls = TlsConfig::new(&pki.server.cert, &pki.server.key)
        .build()
        .unwrap();
    let server = start(Server::builder().router(accept_or_fail()).transport(tls)).await;
    let client = || {
        let backoff = Backoff::new(Duration::from_secs(600), Duration::from_secs(600));
        Client::with_tls(
            server.local_addr().to_string(),
            ClientConfig::default().max_retries(3).reconnect(backoff),
            TlsClientConfig::new(&pki.other_ca.cert).server_name("localhost"),
        )
        .unwrap()
    };
    let started = tokio::time::Instant::now();
    let err = client()
        .send(hl7("ADT^A01", "UNTRUSTED", "2.5"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(600),
        "a refused certificate was retried after the reconnect backoff"
    );
    assert_eq!(
        certificate_error(&err),
        Some(&CertificateError::UnknownIssuer),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err:?}");
    // A fresh client (a failed one waits its backoff before it dials again, whatever the
    // error): the messages after the first repeat its error, verdict included.
    let started = tokio::time::Instant::now();
    let results = client()
        .send_all(["U1", "U2", "U3"].map(|id| hl7("ADT^A01", id, "2.5")))
        .await;
    assert!(started.elapsed() < Duration::from_secs(600));
    for result in &results {
        let err = result.as_ref().unwrap_err();
        assert_eq!(
            certificate_error(err),
            Some(&CertificateError::UnknownIssuer),
            "{err:?}"
        );
        assert!(!err.is_transient(), "{err:?}");
    }
    within(server.shutdown()).await;
}

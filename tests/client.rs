//! The MLLP client against real receivers on loopback: correlation, reply timeouts, pipelining.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::app::{Request, Router};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use mllp::{Client, ClientConfig, ClientError, Server};
use support::{hl7, within};
use tokio::net::TcpListener;
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
    let server = Server::builder()
        .router(Router::new().route("*", |_r: Request| async {}))
        .max_in_flight(4)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap();
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
    let server = Server::builder()
        .router(accept_or_fail())
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap();
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

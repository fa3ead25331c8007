//! HL7 batches (FHS/BHS … BTS/FTS in one frame) over real loopback sockets: split, each message
//! routed and stored on its own, answered with a batch acknowledgment (HL7 v2.5 §2.10.3).

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mllp::ack::ErrorCode;
use mllp::app::{HandlerError, Request, Router};
use mllp::hl7::{Batch, Message, ParseOptions};
use mllp::store::{DirStore, StoreLayer};
use mllp::{Client, ClientError, Server};
use support::{Peer, field, start, within};

fn fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/tests/fixtures/partner/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(path).unwrap())
}

/// A router that records every MSH-10 it handles and rejects ADT^A08 (AR 201).
fn recording(seen: Arc<Mutex<Vec<String>>>) -> Router {
    Router::new()
        .route("ORU^R01", move |req: Request| {
            let seen = seen.clone();
            async move {
                let id = req.message().control_id().unwrap_or_default().to_owned();
                seen.lock().unwrap().push(id);
            }
        })
        .route("ADT^A08", |_r: Request| async {
            Err::<(), _>(HandlerError::reject(
                ErrorCode::UnsupportedEventCode,
                "updates are not taken here",
            ))
        })
}

/// Sends `payload` raw and reads the reply as a batch.
async fn call_batch(peer: &mut Peer, payload: Bytes) -> Batch {
    peer.send(payload).await;
    let reply = within(futures_util::StreamExt::next(&mut peer.framed))
        .await
        .expect("a reply")
        .unwrap();
    Batch::parse(reply, &ParseOptions::default()).expect("a batch acknowledgment")
}

fn header(segment: &[u8], n: usize) -> String {
    String::from_utf8_lossy(segment.split(|&b| b == b'|').nth(n - 1).unwrap_or_default())
        .into_owned()
}

/// A file batch (FHS, BHS, three messages, BTS, FTS): every message goes through the router
/// and the store on its own, and the answer is FHS / BHS / one ACK per message / BTS|3 / FTS|1,
/// each header answering its own (reference control IDs in FHS-12 and BHS-12).
#[tokio::test]
async fn a_file_batch_is_split_routed_stored_and_answered_as_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let router =
        recording(seen.clone()).layer(StoreLayer::new(DirStore::open(dir.path()).unwrap()));
    let server = start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;

    let reply = call_batch(&mut peer, fixture("batch_fhs.hl7")).await;
    let fhs = reply.file_header().expect("an FHS, as the batch had one");
    assert_eq!(header(fhs, 3), "EHR", "sender and receiver swapped");
    assert_eq!(header(fhs, 5), "LAB");
    assert_eq!(header(fhs, 12), "F0001");
    assert_ne!(header(fhs, 11), "F0001");
    let group = &reply.groups()[0];
    assert_eq!(group.header_field(12), b"B0001");
    let acks: Vec<Message> = group
        .messages()
        .iter()
        .map(|m| Message::parse(m.clone()).unwrap())
        .collect();
    let answered: Vec<(String, String)> = acks
        .iter()
        .map(|a| (field(a, "MSA-2"), field(a, "MSA-1")))
        .collect();
    assert_eq!(
        answered,
        [
            ("B1-M1".to_owned(), "AA".to_owned()),
            ("B1-M2".to_owned(), "AA".to_owned()),
            ("B1-M3".to_owned(), "AR".to_owned()),
        ]
    );
    assert_eq!(field(&acks[2], "ERR-3.1"), "201");
    let bytes = reply.as_bytes();
    assert!(
        bytes.ends_with(b"BTS|3\rFTS|1\r"),
        "{:?}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(*seen.lock().unwrap(), ["B1-M1", "B1-M2"]);
    // Stored one by one: the store layer runs before the router's handler, for each message.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    within(server.shutdown()).await;
}

/// A batch without FHS is answered without FHS/FTS, and with lenient line endings an
/// LF-separated batch is answered the same.
#[tokio::test]
async fn a_batch_without_a_file_header_is_answered_without_one() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = start(
        Server::builder()
            .router(recording(seen.clone()))
            .parse_options(ParseOptions::default().lenient_line_endings(true)),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for name in ["batch_bhs.hl7", "batch_bhs_lf.hl7"] {
        let reply = call_batch(&mut peer, fixture(name)).await;
        assert!(reply.file_header().is_none(), "{name}");
        assert!(
            reply
                .as_bytes()
                .starts_with(b"BHS|^~\\&|EHR|WARD|LAB|HOSP|")
        );
        assert!(reply.as_bytes().ends_with(b"BTS|2\r"));
        assert_eq!(reply.message_count(), 2);
    }
    assert_eq!(seen.lock().unwrap().len(), 4);
    within(server.shutdown()).await;
}

/// A malformed envelope (BTS-1 says 5, the batch holds 1) is one AR naming the fault, with
/// MSA-2 = BHS-11, and no message is routed; so is an LF-separated batch under the wire rules.
#[tokio::test]
async fn a_malformed_envelope_is_one_clear_ar() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = start(Server::builder().router(recording(seen.clone()))).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let ack = peer.call(fixture("batch_bad_count.hl7")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR");
    assert_eq!(field(&ack, "MSA-2"), "B0003");
    assert_eq!(field(&ack, "MSH-9"), "ACK^^ACK");
    assert_eq!(field(&ack, "ERR-3.1"), "100");
    assert!(
        field(&ack, "ERR-8").contains("BTS-1"),
        "{}",
        field(&ack, "ERR-8")
    );
    let ack = peer.call(fixture("batch_bhs_lf.hl7")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR");
    assert!(
        field(&ack, "ERR-8").contains("line feeds"),
        "{}",
        field(&ack, "ERR-8")
    );
    assert!(seen.lock().unwrap().is_empty());
    within(server.shutdown()).await;
}

/// `Client::send_batch` matches each ACK of the batch acknowledgment to its message; a
/// malformed batch is refused before anything is sent.
#[tokio::test]
async fn client_sends_a_batch_and_reports_each_message() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = start(Server::builder().router(recording(seen))).await;
    let mut client = Client::new(server.local_addr().to_string());
    let items = within(client.send_batch(fixture("batch_fhs.hl7")))
        .await
        .unwrap();
    let outcomes: Vec<(&str, bool)> = items
        .iter()
        .map(|i| (i.control_id.as_str(), i.result.is_ok()))
        .collect();
    assert_eq!(
        outcomes,
        [("B1-M1", true), ("B1-M2", true), ("B1-M3", false)]
    );
    assert!(matches!(
        items[2].result,
        Err(ClientError::Negative {
            code: mllp::ack::AckCode::AR,
            ..
        })
    ));
    let bad = fixture("batch_bad_count.hl7");
    let refused = client.send_batch(bad).await;
    assert!(
        matches!(refused, Err(ClientError::InvalidBatch(_))),
        "checked before sending"
    );
    within(server.shutdown()).await;
}

/// A receiver that reads a batch as one message (python-hl7's server does) answers one ACK
/// for its first MSH-10: `send_batch` gives that message the ACK and reports the others
/// unanswered, rather than taking one AA for all.
#[tokio::test]
async fn a_single_ack_for_one_message_does_not_answer_the_whole_batch() {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut framed = tokio_util::codec::Framed::new(stream, mllp::frame::MllpCodec::new());
        while let Some(Ok(_batch)) = framed.next().await {
            let ack = "MSH|^~\\&|R|R|S|S|20260101||ACK^R01^ACK|X1|P|2.5\rMSA|AA|B2-M1\r";
            let _ = framed.send(Bytes::from_static(ack.as_bytes())).await;
        }
    });
    let mut client = Client::new(addr.to_string());
    let items = within(client.send_batch(fixture("batch_bhs.hl7")))
        .await
        .unwrap();
    assert!(items[0].result.is_ok(), "{:?}", items[0].result);
    assert!(
        matches!(items[1].result, Err(ClientError::Unanswered)),
        "{:?}",
        items[1].result
    );
}

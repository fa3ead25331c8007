//! Handlers that answer with a message of their own (RSP to a query) instead of the automatic
//! ACK, over real loopback sockets.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use mllp::Server;
use mllp::ack::{AckCode, AckOptions, Reply};
use mllp::app::{Request, Response, Router};
use mllp::hl7::Message;
use support::{Peer, field, hl7, start, within};
use tokio::sync::Notify;

fn fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/tests/fixtures/partner/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(path).unwrap())
}

/// The RSP^K22 a find-candidates query gets: header by the ACK rules, MSA, QAK, the QPD echoed,
/// and one PID.
fn find_candidates(req: &Request) -> Reply {
    let query = req.message();
    let qpd = query.segment("QPD").expect("a QPD");
    let tag = query
        .get("QPD-2")
        .ok()
        .flatten()
        .and_then(|v| v.to_str())
        .unwrap_or_default()
        .to_owned();
    Reply::builder(query, "RSP^K22^RSP_K21", &AckOptions::default())
        .msa(AckCode::AA)
        .segment("QAK", [tag.as_str(), "OK"])
        .raw_segment(qpd.as_bytes())
        .segment(
            "PID",
            ["1", "", "MRN0001^^^HOSP^MR", "", "TESTPATIENT^ALEX"],
        )
        .build()
}

fn query_router() -> Router {
    Router::new().route(
        "QBP^Q22",
        |req: Request| async move { find_candidates(&req) },
    )
}

/// A QBP^Q22 is answered with the handler's RSP^K22: MSH-9 as given, sender and receiver
/// swapped, a new MSH-10, MSA-2 = the query's MSH-10, the query's QPD echoed.
#[tokio::test]
async fn a_query_is_answered_with_the_handlers_response() {
    let server = start(Server::builder().router(query_router())).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let rsp = peer.call(fixture("qbp_q22.hl7")).await;
    assert_eq!(field(&rsp, "MSH-9"), "RSP^K22^RSP_K21");
    assert_eq!(field(&rsp, "MSH-3"), "MPI");
    assert_eq!(field(&rsp, "MSH-5"), "EHR");
    assert_ne!(field(&rsp, "MSH-10"), "Q0001");
    assert_eq!(field(&rsp, "MSH-12"), "2.5");
    assert_eq!(field(&rsp, "MSA-1"), "AA");
    assert_eq!(field(&rsp, "MSA-2"), "Q0001");
    assert_eq!(field(&rsp, "QAK-1"), "QRY0001");
    assert_eq!(field(&rsp, "QPD-3"), "@PID.5.1^TESTPATIENT~@PID.7^19800101");
    assert_eq!(field(&rsp, "PID-5.1"), "TESTPATIENT");
    let ids: Vec<&str> = rsp.segments().map(|s| s.id()).collect();
    assert_eq!(ids, ["MSH", "MSA", "QAK", "QPD", "PID"]);
    within(server.shutdown()).await;
}

/// The built reply uses the sender's delimiters; a raw reply written with `|^~\&` is rewritten
/// with them when asked, and sent as written when not.
#[tokio::test]
async fn replies_keep_the_senders_delimiters() {
    let router = query_router().route("QBP^Q23", |req: Request| async move {
        let id = req.message().control_id().unwrap_or_default().to_owned();
        let raw = format!(
            "MSH|^~\\&|MPI|HOSP|EHR|WARD|20260101||RSP^K23^RSP_K23|R-{id}|P|2.5\r\
             MSA|AA|{id}\rQAK|Q#1|OK\r"
        );
        Reply::raw(raw).keep_sender_delimiters(id.ends_with("KEEP"))
    });
    let server = start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;

    let rsp = peer.call(fixture("qbp_q22_custom_delimiters.hl7")).await;
    assert_eq!(rsp.as_bytes()[3], b'#', "built in the sender's delimiters");
    assert_eq!(field(&rsp, "MSH-9.2"), "K22");
    assert_eq!(field(&rsp, "MSA-2"), "Q0002");
    assert_eq!(field(&rsp, "QPD-3.2"), "TESTPATIENT");

    let custom = |id: &str| {
        Bytes::from(format!(
            "MSH#$*@!#EHR#WARD#MPI#HOSP#20260101##QBP$Q23$QBP_Q21#{id}#P#2.5\r"
        ))
    };
    let kept = peer.call(custom("Q-KEEP")).await;
    assert!(kept.as_bytes().starts_with(b"MSH#$*@!#MPI"), "rewritten");
    assert_eq!(field(&kept, "MSH-9"), "RSP$K23$RSP_K23");
    assert_eq!(
        field(&kept, "QAK-1"),
        "Q#1",
        "a data # is escaped, not a separator"
    );
    assert_eq!(field(&kept, "MSA-2"), "Q-KEEP");
    let as_written = peer.call(custom("Q-ASIS")).await;
    assert!(as_written.as_bytes().starts_with(b"MSH|^~\\&|MPI"));
    within(server.shutdown()).await;
}

/// A reply that is not HL7 (or cannot be framed) is never sent: the message is answered AE
/// with ERR-3 = 207, and the connection goes on.
#[tokio::test]
async fn a_reply_that_is_not_hl7_is_answered_ae_207() {
    let router = Router::new()
        .route("ADT^A01", |_r: Request| async {
            Response::reply(Reply::raw("this is not HL7"))
        })
        .route("ADT^A02", |_r: Request| async {
            Reply::raw(&b"MSH|^~\\&|A|B|C|D|1||ACK|X|P|2.5\rMSA|AA|\x1c\r"[..])
        })
        .route("ADT^A03", |_r: Request| async {});
    let server = start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for (kind, id) in [("ADT^A01", "BAD-1"), ("ADT^A02", "BAD-2")] {
        let ack = peer.call(hl7(kind, id, "2.5")).await;
        assert_eq!(field(&ack, "MSA-1"), "AE", "{kind}");
        assert_eq!(field(&ack, "MSA-2"), id);
        assert_eq!(field(&ack, "ERR-3.1"), "207");
    }
    let ack = peer.call(hl7("ADT^A03", "GOOD-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    within(server.shutdown()).await;
}

/// Replies go out in the order the messages came in, even when a later handler finishes
/// first: the first handler waits until the second one has run.
#[tokio::test]
async fn replies_are_written_in_arrival_order() {
    let second_ran = Arc::new(Notify::new());
    let (wait, signal) = (second_ran.clone(), second_ran);
    let router = Router::new().route("QBP^*", move |req: Request| {
        let (wait, signal) = (wait.clone(), signal.clone());
        async move {
            let message: &Message = req.message();
            if message.control_id() == Some("FIRST") {
                wait.notified().await;
            } else {
                signal.notify_one();
            }
            Reply::builder(message, "RSP^K22^RSP_K21", &AckOptions::default())
                .msa(AckCode::AA)
                .build()
        }
    });
    let server = start(Server::builder().router(router).max_in_flight(2)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send(hl7("QBP^Q22", "FIRST", "2.5")).await;
    peer.send(hl7("QBP^Q22", "SECOND", "2.5")).await;
    let first = within(peer.recv()).await.unwrap();
    let second = within(peer.recv()).await.unwrap();
    assert_eq!(field(&first, "MSA-2"), "FIRST");
    assert_eq!(field(&second, "MSA-2"), "SECOND");
    within(server.shutdown()).await;
}

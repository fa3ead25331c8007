//! End to end over loopback: one test per row of DESIGN.md's error-to-ACK table, routing,
//! middleware, enhanced mode and pipelining.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mllp::ack::{AckCode, Diagnostic, ErrorCode};
use mllp::app::{HandlerError, Next, Request, Response, Router, from_fn, handler_service};
use mllp::hl7::Message;
use mllp::{HandlerFailurePolicy, Server, ServerHandle};
use support::{Peer, field, hl7, hl7_with, start, within};

async fn serve(router: Router) -> ServerHandle {
    start(Server::builder().router(router)).await
}

fn accept_all() -> Router {
    Router::new().route("*", |_req: Request| async {})
}

/// A handler that panics (a bug in user code).
async fn boom(_req: Request) {
    panic!("boom")
}

fn code(reply: &Message) -> String {
    field(reply, "MSA-1")
}

/// A routed message whose handler returns `Ok(())` is answered AA, MSA-2 echoing MSH-10.
#[tokio::test]
async fn handled_message_is_answered_aa() {
    let server = serve(accept_all()).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let reply = peer.call(hl7("ADT^A01^ADT_A01", "CTRL-1", "2.5.1")).await;
    assert_eq!(code(&reply), "AA");
    assert_eq!(field(&reply, "MSA-2"), "CTRL-1");
    assert_eq!(field(&reply, "MSH-9"), "ACK^A01^ACK");
    assert_eq!(field(&reply, "MSH-3"), "RECVAPP");
    assert_eq!(field(&reply, "MSH-5"), "SENDAPP");
    assert_eq!(field(&reply, "MSH-12"), "2.5.1");
    within(server.shutdown()).await;
}

/// A payload that is not HL7 gets AR with ERR-3 100/102, and the connection stays open.
#[tokio::test]
async fn non_hl7_payload_gets_ar_and_connection_stays_open() {
    let server = serve(accept_all()).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let reply = peer.call(Bytes::from_static(b"hello, not hl7")).await;
    assert_eq!(code(&reply), "AR");
    let err = field(&reply, "ERR-3.1");
    assert!(err == "100" || err == "102", "ERR-3.1 was {err:?}");
    assert_eq!(field(&reply, "MSA-2"), "");
    let again = peer.call(hl7("ADT^A01", "C2", "2.5")).await;
    assert_eq!(code(&again), "AA");
    within(server.shutdown()).await;
}

/// A message without MSH-10 is refused with AR 101 by the default plugin; it never reaches the
/// handler.
#[tokio::test]
async fn missing_control_id_gets_ar_101() {
    let calls = Arc::new(Mutex::new(0));
    let seen = calls.clone();
    let router = Router::new().route("*", move |_r: Request| {
        let seen = seen.clone();
        async move { *seen.lock().unwrap() += 1 }
    });
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let reply = peer.call(hl7("ADT^A01", "", "2.5")).await;
    assert_eq!(code(&reply), "AR");
    assert_eq!(field(&reply, "ERR-3.1"), "101");
    assert!(field(&reply, "ERR-8").contains("MSH-10"));
    assert_eq!(*calls.lock().unwrap(), 0);
    within(server.shutdown()).await;
}

/// Configured version and processing-id checks answer AR 203 and AR 202.
#[tokio::test]
async fn unsupported_version_and_processing_id_get_ar() {
    let server = start(
        Server::builder()
            .router(accept_all())
            .plugin(mllp::app::plugin::AllowedVersions::new(["2.5.1"]))
            .plugin(mllp::app::plugin::AllowedProcessingIds::new(["T"])),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let reply = peer.call(hl7("ADT^A01", "V1", "2.3")).await;
    assert_eq!(
        (code(&reply), field(&reply, "ERR-1.4.1")),
        ("AR".into(), "203".into())
    );
    let reply = peer.call(hl7("ADT^A01", "P1", "2.5.1")).await;
    assert_eq!(
        (code(&reply), field(&reply, "ERR-3.1")),
        ("AR".into(), "202".into())
    );
    // A version that is not UTF-8 (Latin-1 `2.5ü`) is named as read, not called empty.
    let latin1 = Bytes::from_static(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|V3|T|2.5\xfc\rPID|1\r");
    let reply = peer.call(latin1).await;
    assert_eq!(code(&reply), "AR");
    let text = String::from_utf8_lossy(reply.as_bytes()).into_owned();
    assert!(
        text.contains("unsupported version ID \"2.5\u{fffd}\" in MSH-12"),
        "{text:?}"
    );
    within(server.shutdown()).await;
}

/// No route: AR 200 when no route names the message code, AR 201 when one does but not the
/// event; the text names the trigger.
#[tokio::test]
async fn unrouted_messages_get_ar_200_or_201() {
    let router = Router::new().route("ADT^A01", |_r: Request| async {});
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let reply = peer.call(hl7("ORU^R01", "U1", "2.5")).await;
    assert_eq!(code(&reply), "AR");
    assert_eq!(field(&reply, "ERR-3.1"), "200");
    assert!(field(&reply, "ERR-8").contains("ORU^R01"));
    let reply = peer.call(hl7("ADT^A99", "U2", "2.5")).await;
    assert_eq!(field(&reply, "ERR-3.1"), "201");
    assert!(field(&reply, "ERR-8").contains("ADT^A99"));
    within(server.shutdown()).await;
}

/// A route for any message code with one event (`*^A01`) supports every type, so a message
/// with another event is AR 201 (unsupported event code), not 200.
#[tokio::test]
async fn unrouted_event_under_a_wildcard_code_route_gets_ar_201() {
    let router = Router::new().route("*^A01", |_r: Request| async {});
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let reply = peer.call(hl7("ORU^A01", "W1", "2.5")).await;
    assert_eq!(code(&reply), "AA");
    let reply = peer.call(hl7("ADT^A08", "W2", "2.5")).await;
    assert_eq!(code(&reply), "AR");
    assert_eq!(field(&reply, "ERR-3.1"), "201");
    assert!(field(&reply, "ERR-8").contains("ADT^A08"));
    within(server.shutdown()).await;
}

/// A handler error is AE 207 by default, or AE with the code it carries; a reject is AR.
#[tokio::test]
async fn handler_errors_map_to_ae_and_rejects_to_ar() {
    let router = Router::new()
        .route("ADT^A01", |_r: Request| async {
            Err::<(), _>(HandlerError::internal("store unavailable"))
        })
        .route("ADT^A02", |_r: Request| async {
            Err::<(), _>(HandlerError::new(
                ErrorCode::TableValueNotFound,
                "unknown ward",
            ))
        })
        .route("ADT^A03", |_r: Request| async {
            Response::reject(ErrorCode::RequiredFieldMissing, "PID-3 required")
        });
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A01", "E1", "2.5")).await;
    assert_eq!(
        (code(&r), field(&r, "ERR-3.1")),
        ("AE".into(), "207".into())
    );
    assert_eq!(field(&r, "ERR-8"), "store unavailable");
    let r = peer.call(hl7("ADT^A02", "E2", "2.5")).await;
    assert_eq!(
        (code(&r), field(&r, "ERR-3.1")),
        ("AE".into(), "103".into())
    );
    let r = peer.call(hl7("ADT^A03", "E3", "2.5")).await;
    assert_eq!(
        (code(&r), field(&r, "ERR-3.1")),
        ("AR".into(), "101".into())
    );
    within(server.shutdown()).await;
}

/// Warning diagnostics on an accepted message give AA with an ERR segment of severity W.
#[tokio::test]
async fn warnings_give_aa_with_err_severity_w() {
    let router = Router::new().route("*", |_r: Request| async {
        Response::accept().with_diagnostic(Diagnostic::warning(
            ErrorCode::TableValueNotFound,
            "unknown ward code, stored anyway",
        ))
    });
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A01", "W1", "2.5")).await;
    assert_eq!(code(&r), "AA");
    assert_eq!(field(&r, "ERR-4"), "W");
    within(server.shutdown()).await;
}

/// A handler that panics is answered AE 207, and the next message on the connection gets AA.
#[tokio::test]
async fn panicking_handler_gets_ae_and_connection_goes_on() {
    let router = Router::new()
        .route("ADT^A01", boom)
        .route("*", |_r: Request| async {});
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A01", "P1", "2.5")).await;
    assert_eq!(
        (code(&r), field(&r, "ERR-3.1")),
        ("AE".into(), "207".into())
    );
    assert!(
        !field(&r, "ERR-8").contains("boom"),
        "panic text must not reach the partner"
    );
    let r = peer.call(hl7("ADT^A08", "P2", "2.5")).await;
    assert_eq!(code(&r), "AA");
    within(server.shutdown()).await;
}

/// A handler that never finishes is answered AE 207 at the handler timeout; the connection
/// goes on.
#[tokio::test(start_paused = true)]
async fn stuck_handler_gets_ae_at_the_deadline() {
    let router = Router::new()
        .route("ADT^A01", |_r: Request| std::future::pending::<()>())
        .route("*", |_r: Request| async {});
    let server = start(
        Server::builder()
            .router(router)
            .handler_timeout(Duration::from_secs(2)),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A01", "T1", "2.5")).await;
    assert_eq!(
        (code(&r), field(&r, "ERR-3.1")),
        ("AE".into(), "207".into())
    );
    let r = peer.call(hl7("ADT^A08", "T2", "2.5")).await;
    assert_eq!(code(&r), "AA");
    within(server.shutdown()).await;
}

/// With the `NoResponse` handler-failure policy a panicking handler gets no answer, and the
/// connection still serves the next message.
#[tokio::test]
async fn no_response_policy_sends_nothing_for_a_failed_handler() {
    let router = Router::new()
        .route("ADT^A01", boom)
        .route("*", |_r: Request| async {});
    let server = start(
        Server::builder()
            .router(router)
            .handler_failure(HandlerFailurePolicy::NoResponse),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send(hl7("ADT^A01", "N1", "2.5")).await;
    let r = peer.call(hl7("ADT^A08", "N2", "2.5")).await;
    assert_eq!((code(&r), field(&r, "MSA-2")), ("AA".into(), "N2".into()));
    within(server.shutdown()).await;
}

/// Bytes outside a frame close the connection without an answer under the strict policy.
#[tokio::test]
async fn bytes_outside_a_frame_close_the_connection() {
    let server = serve(accept_all()).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send_raw(b"garbage before any frame").await;
    peer.expect_closed().await;
    within(server.shutdown()).await;
}

/// A frame larger than `max_message_size` closes the connection without an answer.
#[tokio::test]
async fn oversized_frame_closes_connection() {
    let server = start(
        Server::builder()
            .router(accept_all())
            .max_message_size(1024),
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

/// A frame started and not finished within `frame_timeout` closes the connection.
#[tokio::test(start_paused = true)]
async fn unfinished_frame_times_out() {
    let server = start(
        Server::builder()
            .router(accept_all())
            .frame_timeout(Duration::from_secs(3)),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send_raw(b"\x0bMSH|^~\\&|half a frame").await;
    peer.expect_closed().await;
    within(server.shutdown()).await;
}

/// Routes are tried in registration order, first match wins, wildcards on either side.
#[tokio::test]
async fn first_matching_route_wins() {
    fn tag(name: &'static str) -> impl Fn(Request) -> std::future::Ready<Response> + Clone {
        move |_r: Request| {
            std::future::ready(
                Response::accept()
                    .with_diagnostic(Diagnostic::information(ErrorCode::MessageAccepted, name)),
            )
        }
    }
    let router = Router::new()
        .route("ADT^A01", tag("exact"))
        .route("ADT^*", tag("code"))
        .route("*^R01", tag("event"))
        .route("*", tag("any"));
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for (mt, want) in [
        ("ADT^A01", "exact"),
        ("ADT^A08", "code"),
        ("ORU^R01", "event"),
        ("ORM^O01", "any"),
    ] {
        let r = peer.call(hl7(mt, "R", "2.5")).await;
        assert_eq!(field(&r, "ERR-8"), want, "route for {mt}");
    }
    within(server.shutdown()).await;
}

/// Middleware runs in registration order on the way in and reverse on the way out.
#[tokio::test]
async fn middleware_runs_in_order_in_and_reverse_out() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let mw = |name: &'static str, log: Arc<Mutex<Vec<String>>>| {
        from_fn(move |req: Request, next: Next| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(format!("{name} in"));
                let resp = next.run(req).await;
                log.lock().unwrap().push(format!("{name} out"));
                resp
            }
        })
    };
    let handler_log = log.clone();
    let router = Router::new()
        .route("*", move |_r: Request| {
            let log = handler_log.clone();
            async move { log.lock().unwrap().push("handler".into()) }
        })
        .layer(mw("first", log.clone()))
        .layer(mw("second", log.clone()));
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    assert_eq!(code(&peer.call(hl7("ADT^A01", "M1", "2.5")).await), "AA");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "first in",
            "second in",
            "handler",
            "second out",
            "first out"
        ]
    );
    within(server.shutdown()).await;
}

/// A middleware that does not call `next` answers for the handler; one on the way out can
/// rewrite the response.
#[tokio::test]
async fn middleware_short_circuits_and_rewrites() {
    let router = Router::new()
        .route("*", |_r: Request| async {})
        .layer(from_fn(|req: Request, next: Next| async move {
            let mut resp = next.run(req).await;
            resp.diagnostics_mut().push(Diagnostic::information(
                ErrorCode::MessageAccepted,
                "seen by outer",
            ));
            resp
        }))
        .layer(from_fn(|req: Request, next: Next| async move {
            if req.message().trigger_event() == Some("A04") {
                return Response::reject(ErrorCode::UnsupportedEventCode, "A04 refused here");
            }
            next.run(req).await
        }));
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A04", "S1", "2.5")).await;
    assert_eq!(code(&r), "AR");
    assert_eq!(field(&r, "ERR(2)-8"), "seen by outer");
    let r = peer.call(hl7("ADT^A01", "S2", "2.5")).await;
    assert_eq!(code(&r), "AA");
    within(server.shutdown()).await;
}

/// Data set by middleware in the request's extensions reaches the handler.
#[tokio::test]
async fn middleware_passes_typed_data_to_the_handler() {
    #[derive(Clone)]
    struct Partner(&'static str);
    let router = Router::new()
        .route("*", |req: Request| async move {
            match req.extensions().get::<Partner>() {
                Some(Partner("lab-a")) => Ok(()),
                _ => Err(HandlerError::internal("no partner")),
            }
        })
        .layer(from_fn(|mut req: Request, next: Next| async move {
            req.extensions_mut().insert(Partner("lab-a"));
            next.run(req).await
        }));
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    assert_eq!(code(&peer.call(hl7("ADT^A01", "X1", "2.5")).await), "AA");
    within(server.shutdown()).await;
}

/// Per-route middleware wraps only its route (here a tower timeout, answered AE 207).
#[tokio::test(start_paused = true)]
async fn per_route_tower_layer_applies_to_its_route_only() {
    let slow = tower::ServiceBuilder::new()
        .timeout(Duration::from_secs(1))
        .service(handler_service(|_r: Request| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }));
    let router = Router::new()
        .route_service("ORU^R01", slow)
        .route("*", |_r: Request| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ORU^R01", "L1", "2.5")).await;
    assert_eq!(
        (code(&r), field(&r, "ERR-3.1")),
        ("AE".into(), "207".into())
    );
    let r = peer.call(hl7("ADT^A01", "L2", "2.5")).await;
    assert_eq!(code(&r), "AA");
    within(server.shutdown()).await;
}

/// A global tower `LoadShed` + `ConcurrencyLimit` sheds a second concurrent message with AE
/// while the first is still being handled.
#[tokio::test]
async fn tower_load_shed_answers_ae_when_busy() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let (g, e) = (gate.clone(), entered.clone());
    let router = Router::new()
        .route("*", move |_r: Request| {
            let (g, e) = (g.clone(), e.clone());
            async move {
                e.notify_one();
                g.notified().await;
            }
        })
        .layer(tower::load_shed::LoadShedLayer::new())
        .layer(tower::limit::ConcurrencyLimitLayer::new(1));
    let server = serve(router).await;
    let mut first = Peer::connect(server.local_addr()).await;
    first.send(hl7("ADT^A01", "F1", "2.5")).await;
    within(entered.notified()).await;
    let mut second = Peer::connect(server.local_addr()).await;
    let r = second.call(hl7("ADT^A01", "F2", "2.5")).await;
    assert_eq!(
        (code(&r), field(&r, "ERR-3.1")),
        ("AE".into(), "207".into())
    );
    gate.notify_one();
    let r = within(first.recv()).await.unwrap();
    assert_eq!((code(&r), field(&r, "MSA-2")), ("AA".into(), "F1".into()));
    within(server.shutdown()).await;
}

/// Enhanced mode: MSH-15 AL always answers (CA), NE never, ER only on error (CE), SU only on
/// success; the connection goes on after a message that got no answer.
#[tokio::test]
async fn enhanced_mode_follows_msh_15() {
    let router = Router::new()
        .route("ADT^A01", |_r: Request| async {})
        .route("ADT^A02", |_r: Request| async {
            Err::<(), _>(HandlerError::internal("nope"))
        });
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7_with("ADT^A01", "AL1", "2.5", "AL")).await;
    assert_eq!((code(&r), field(&r, "MSA-2")), ("CA".into(), "AL1".into()));
    peer.send(hl7_with("ADT^A01", "NE1", "2.5", "NE")).await;
    peer.send(hl7_with("ADT^A01", "ER1", "2.5", "ER")).await;
    let r = peer.call(hl7_with("ADT^A02", "ER2", "2.5", "ER")).await;
    assert_eq!((code(&r), field(&r, "MSA-2")), ("CE".into(), "ER2".into()));
    peer.send(hl7_with("ADT^A02", "SU1", "2.5", "SU")).await;
    let r = peer.call(hl7_with("ADT^A01", "SU2", "2.5", "SU")).await;
    assert_eq!((code(&r), field(&r, "MSA-2")), ("CA".into(), "SU2".into()));
    within(server.shutdown()).await;
}

/// The ACK reuses the inbound message's delimiters and copies its version, never upgrading it.
#[tokio::test]
async fn ack_follows_incoming_delimiters_and_version() {
    let server = serve(accept_all()).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let msg = Bytes::from_static(
        b"MSH#$*@!#SND#SF#RCV#RF#20261122120000##ADT$A01#D1#P#2.3\rPID#1##ID1\r",
    );
    let r = peer.call(msg).await;
    let raw = r.as_bytes();
    assert!(
        raw.starts_with(b"MSH#$*@!#RCV#RF#SND#SF#"),
        "{:?}",
        String::from_utf8_lossy(raw)
    );
    assert_eq!(field(&r, "MSH-9"), "ACK$A01", "v2.3 has no MSH-9.3");
    assert_eq!(field(&r, "MSH-12"), "2.3");
    assert_eq!((code(&r), field(&r, "MSA-2")), ("AA".into(), "D1".into()));
    within(server.shutdown()).await;
}

/// Pipelined messages with a slow first handler are answered in arrival order.
#[tokio::test(start_paused = true)]
async fn pipelined_messages_are_answered_in_order() {
    let router = Router::new().route("*", |req: Request| async move {
        if req.message().control_id() == Some("Q1") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    let server = start(Server::builder().router(router).max_in_flight(4)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for id in ["Q1", "Q2", "Q3"] {
        peer.send(hl7("ADT^A01", id, "2.5")).await;
    }
    for id in ["Q1", "Q2", "Q3"] {
        let r = within(peer.recv()).await.unwrap();
        assert_eq!(field(&r, "MSA-2"), id);
    }
    within(server.shutdown()).await;
}

/// The client checks MSA-2 and surfaces AE as a typed negative acknowledgment.
#[tokio::test]
async fn client_reports_negative_acks_with_code_and_text() {
    let router = Router::new().route("*", |_r: Request| async {
        Err::<(), _>(HandlerError::internal("disk full"))
    });
    let server = serve(router).await;
    let mut client = mllp::Client::new(server.local_addr().to_string());
    match within(client.send(hl7("ADT^A01", "C1", "2.5"))).await {
        Err(mllp::ClientError::Negative { code, text, .. }) => {
            assert_eq!(code, AckCode::AE);
            assert_eq!(text, "disk full");
        }
        other => panic!("expected a negative ack, got {other:?}"),
    }
    within(server.shutdown()).await;
}

/// A start block and then silence is a frame in progress: `frame_timeout` closes it even with
/// no idle timeout (the framer consumes the start block, so the read buffer is empty).
#[tokio::test(start_paused = true)]
async fn lone_start_block_is_closed_by_the_frame_timeout() {
    let server = start(
        Server::builder()
            .router(accept_all())
            .idle_timeout(None)
            .frame_timeout(Duration::from_secs(3)),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send_raw(b"\x0b").await;
    peer.expect_closed().await;
    within(server.shutdown()).await;
}

/// A well-behaved peer beside hostile ones: 100 valid messages, each answered AA with its own
/// MSH-10.
async fn good_peer(addr: std::net::SocketAddr) {
    let mut peer = Peer::connect(addr).await;
    for i in 0..100 {
        let control_id = format!("GOOD-{i}");
        let reply = peer.call(hl7("ADT^A01", &control_id, "2.5")).await;
        assert_eq!(code(&reply), "AA");
        assert_eq!(field(&reply, "MSA-2"), control_id);
    }
}

/// Bad input never gets an ACK that claims success and never disturbs other connections: eight
/// peers send mutated and truncated copies of a real ADT and random bytes (seeded, so every run
/// sends the same frames) while a ninth sends valid messages. A success (AA/CA) only ever
/// answers a payload that parses and carries MSH-9 and MSH-10, and acknowledges that MSH-10;
/// a payload that does not parse gets AR; every reply is HL7; the good peer gets AA for every
/// message throughout, and the server still serves a new connection afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_never_get_a_success_ack_and_never_disturb_others() {
    const FIXTURE: &[u8] = include_bytes!("fixtures/adt_a01.hl7");
    /// Any byte but the MLLP block characters, which the framer rightly refuses as content.
    fn content_byte(rng: &mut fastrand::Rng) -> u8 {
        loop {
            let b = rng.u8(..);
            if b != 0x0B && b != 0x1C {
                return b;
            }
        }
    }
    fn hostile_payload(rng: &mut fastrand::Rng) -> Bytes {
        loop {
            let payload: Vec<u8> = match rng.u8(0..3) {
                0 => {
                    let mut p = FIXTURE.to_vec();
                    for _ in 0..rng.usize(1..=8) {
                        let at = rng.usize(..p.len());
                        p[at] = content_byte(rng);
                    }
                    p
                }
                1 => FIXTURE[..rng.usize(1..FIXTURE.len())].to_vec(),
                _ => (0..rng.usize(1..300)).map(|_| content_byte(rng)).collect(),
            };
            // MSH-15 other than AL may rightly ask for no answer; such frames are left out so
            // that every frame sent has exactly one reply.
            let silent = Message::parse(Bytes::from(payload.clone())).is_ok_and(|m| {
                m.accept_ack_type()
                    .is_some_and(|t| t != mllp::hl7::AckRequirement::Always)
            });
            if !silent {
                return Bytes::from(payload);
            }
        }
    }

    let server = serve(accept_all()).await;
    let addr = server.local_addr();
    let mut rng = fastrand::Rng::with_seed(0x4D4C_4C50);
    let hostile: Vec<_> = (0..8)
        .map(|_| {
            (0..40)
                .map(|_| hostile_payload(&mut rng))
                .collect::<Vec<_>>()
        })
        .map(|payloads| {
            tokio::spawn(async move {
                let mut peer = Peer::connect(addr).await;
                let (mut accepted, mut rejected) = (0, 0);
                for payload in payloads {
                    let reply = peer.call(payload.clone()).await;
                    let code = code(&reply);
                    match Message::parse(payload) {
                        Ok(sent) if code == "AA" || code == "CA" => {
                            // Present in any character set: a mutated byte may make them
                            // non-UTF-8, which is not missing.
                            assert!(sent.message_code_bytes().is_some(), "{code} without MSH-9");
                            let control_id =
                                sent.control_id_bytes().expect("success without MSH-10");
                            let msa2 = reply.get("MSA-2").unwrap().unwrap();
                            assert_eq!(msa2.as_bytes(), control_id);
                            accepted += 1;
                        }
                        Ok(_) => rejected += 1,
                        Err(_) => {
                            assert_eq!(code, "AR", "an unparseable payload got {code}");
                            rejected += 1;
                        }
                    }
                    assert!(!code.is_empty(), "a reply without MSA-1");
                }
                (accepted, rejected)
            })
        })
        .collect();
    let good = tokio::spawn(good_peer(addr));
    let (mut accepted, mut rejected) = (0, 0);
    for peer in hostile {
        let (a, r) = within(peer).await.expect("hostile peer task");
        accepted += a;
        rejected += r;
    }
    within(good).await.expect("good peer task");
    // Both outcomes happened, so both assertions above were exercised.
    assert!(
        accepted > 0 && rejected > 0,
        "accepted {accepted}, rejected {rejected}"
    );
    let mut late = Peer::connect(addr).await;
    assert_eq!(code(&late.call(hl7("ADT^A01", "LATE", "2.5")).await), "AA");
    within(server.shutdown()).await;
}

/// Raw garbage streams never disturb other connections: each hostile connection sends one frame
/// of random bytes (and waits for its AR), then more such frames mixed with broken framing
/// (stray block characters, bytes outside a frame) at random points. Every such connection
/// ends, every reply it got is an AR, and a good peer gets AA for every message throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_garbage_streams_never_disturb_other_connections() {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    /// Random frame content: any byte but the block characters.
    fn random_content(rng: &mut fastrand::Rng) -> Vec<u8> {
        (0..rng.usize(1..200))
            .map(|_| match rng.u8(..) {
                0x0B | 0x1C => b'x',
                b => b,
            })
            .collect()
    }

    let server = serve(accept_all()).await;
    let addr = server.local_addr();
    let mut rng = fastrand::Rng::with_seed(0x4741_5242);
    let peers: Vec<(Vec<u8>, Vec<u8>)> = (0..8)
        .map(|_| {
            let first = random_content(&mut rng);
            let mut rest = Vec::new();
            for _ in 0..20 {
                if rng.u8(0..4) == 0 {
                    rest.extend((0..rng.usize(1..200)).map(|_| rng.u8(..)));
                } else {
                    rest.push(0x0B);
                    rest.extend(random_content(&mut rng));
                    rest.extend_from_slice(b"\x1c\r");
                }
            }
            (first, rest)
        })
        .collect();
    let hostile: Vec<_> = peers
        .into_iter()
        .map(|(first, rest)| {
            tokio::spawn(async move {
                let mut peer = Peer::connect(addr).await;
                assert_eq!(code(&peer.call(Bytes::from(first)).await), "AR");
                // The server may close mid-stream (a framing error): a failed write is fine.
                let socket = peer.framed.get_mut();
                let _ = socket.write_all(&rest).await;
                let _ = socket.shutdown().await;
                // Whatever else comes back, up to the close (or a reset), is an AR.
                while let Some(Ok(frame)) = peer.framed.next().await {
                    let reply = Message::parse(frame).expect("every reply is HL7");
                    assert_eq!(code(&reply), "AR");
                }
            })
        })
        .collect();
    let good = tokio::spawn(good_peer(addr));
    for peer in hostile {
        within(peer).await.expect("hostile peer task");
    }
    within(good).await.expect("good peer task");
    let mut late = Peer::connect(addr).await;
    assert_eq!(code(&late.call(hl7("ADT^A01", "LATE", "2.5")).await), "AA");
    within(server.shutdown()).await;
}

/// A user plugin that attaches its diagnostics to the request.
struct Attach(Vec<Diagnostic>);

impl mllp::app::plugin::Plugin for Attach {
    fn name(&self) -> &'static str {
        "attach"
    }

    fn inspect(&self, request: &mut Request) -> Result<(), Response> {
        for diagnostic in &self.0 {
            request.add_diagnostic(diagnostic.clone());
        }
        Ok(())
    }
}

/// A plugin that attaches an error without returning a rejection still refuses the message: AR
/// carrying its error, and the handler is never called (never AA with an error in ERR).
#[tokio::test]
async fn plugin_error_without_a_reject_refuses_the_message() {
    let calls = Arc::new(Mutex::new(0));
    let seen = calls.clone();
    let router = Router::new().route("*", move |_r: Request| {
        *seen.lock().unwrap() += 1;
        async {}
    });
    let plugin = Attach(vec![Diagnostic::error(
        ErrorCode::RequiredFieldMissing,
        "PID-3 missing",
    )]);
    let server = start(Server::builder().router(router).plugin(plugin)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A01", "E1", "2.5")).await;
    assert_eq!(code(&r), "AR");
    assert_eq!(field(&r, "ERR-3.1"), "101");
    assert_eq!(field(&r, "ERR-4"), "E");
    assert_eq!(*calls.lock().unwrap(), 0);
    within(server.shutdown()).await;
}

/// The handler's error comes first in the ACK, before a plugin's earlier warning: MSA-3 and the
/// first ERR, which senders read, say what went wrong.
#[tokio::test]
async fn handler_error_comes_before_plugin_warnings() {
    let router = Router::new().route("*", |_r: Request| async {
        Err::<(), _>(HandlerError::internal("disk full"))
    });
    let plugin = Attach(vec![Diagnostic::warning(
        ErrorCode::TableValueNotFound,
        "odd ward",
    )]);
    let server = start(Server::builder().router(router).plugin(plugin)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A01", "E2", "2.5")).await;
    assert_eq!(code(&r), "AE");
    assert_eq!(field(&r, "ERR-3.1"), "207");
    assert_eq!(field(&r, "ERR-4"), "E");
    assert_eq!(field(&r, "ERR(2)-4"), "W");
    let r = peer.call(hl7("ADT^A01", "E3", "2.3")).await;
    assert_eq!(field(&r, "MSA-3"), "disk full");
    within(server.shutdown()).await;
}

/// `+` as a delimiter (any punctuation is allowed) does not shift the ACK's header: its time
/// is written without the UTC offset, so MSH-9 and MSH-12 stay where they belong.
#[tokio::test]
async fn ack_header_survives_a_plus_delimiter() {
    let server = serve(accept_all()).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let message = Bytes::from_static(b"MSH+^~\\&+SND+SF+RCV+RF+20240101++ADT^A01+C1+P+2.5\r");
    let r = peer.call(message).await;
    assert_eq!(code(&r), "AA");
    assert_eq!(field(&r, "MSH-9"), "ACK^A01^ACK");
    assert_eq!(field(&r, "MSH-12"), "2.5");
    assert_eq!(field(&r, "MSA-2"), "C1");
    within(server.shutdown()).await;
}

/// A diagnostic text holding an MLLP block character (0x0B, 0x1C) is escaped, so the ACK can
/// still be framed: the sender gets its AE, and the connection goes on.
#[tokio::test]
async fn block_characters_in_a_diagnostic_text_are_escaped() {
    let router = Router::new().route("*", |_r: Request| async {
        Err::<(), _>(HandlerError::internal("bad\u{1c}byte\u{0b}"))
    });
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A01", "X1", "2.5")).await;
    assert_eq!(code(&r), "AE");
    assert_eq!(field(&r, "ERR-8"), "bad\u{1c}byte\u{0b}");
    let again = peer.call(hl7("ADT^A01", "X2", "2.5")).await;
    assert_eq!(code(&again), "AE");
    within(server.shutdown()).await;
}

/// A diagnostic that middleware attaches to the request reaches the ACK (after the plugins',
/// before the handler's), and the handler sees it on its request.
#[tokio::test]
async fn middleware_diagnostics_reach_the_ack() {
    let seen = Arc::new(Mutex::new(0));
    let count = seen.clone();
    let router = Router::new()
        .route("*", move |req: Request| {
            *count.lock().unwrap() = req.diagnostics().len();
            async {
                Response::accept().with_diagnostic(Diagnostic::warning(
                    ErrorCode::TableValueNotFound,
                    "from the handler",
                ))
            }
        })
        .layer(from_fn(|mut req: Request, next: Next| async move {
            req.add_diagnostic(Diagnostic::warning(
                ErrorCode::TableValueNotFound,
                "from middleware",
            ));
            next.run(req).await
        }));
    let server = serve(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let r = peer.call(hl7("ADT^A01", "M1", "2.5")).await;
    assert_eq!(code(&r), "AA");
    assert_eq!(field(&r, "ERR-8"), "from middleware");
    assert_eq!(field(&r, "ERR(2)-8"), "from the handler");
    assert_eq!(r.segments_by_id("ERR").count(), 2);
    assert_eq!(*seen.lock().unwrap(), 1);
    within(server.shutdown()).await;
}

//! Handler ergonomics over a real server: what a handler may return and how each becomes an
//! ACK, closures that only panic, and the router's state.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mllp::Server;
use mllp::app::{HandlerError, Request, Router, State};
use mllp::hl7::Message;
use support::{Peer, SENTINEL, field, hl7, within};

/// Serves `router`, sends one message of each type in `types`, returns (MSA-1, ERR-3.1,
/// ERR-8 or MSA-3 text) for each.
async fn answers(router: Router, types: &[&str]) -> Vec<(String, String, String)> {
    let server = support::start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let mut out = Vec::new();
    for (i, message_type) in types.iter().enumerate() {
        let ack = peer.call(hl7(message_type, &format!("H{i}"), "2.5")).await;
        let text = format!("{} {}", field(&ack, "MSA-3"), field(&ack, "ERR-8"));
        assert!(!text.contains(SENTINEL), "{text}");
        out.push((field(&ack, "MSA-1"), field(&ack, "ERR-3.1"), text));
    }
    drop(peer);
    within(server.shutdown()).await;
    out
}

/// `Err(String)`, `Err(&str)`, `Err(Box<dyn Error>)`, `?` on `anyhow` and on a boxed error are
/// all AE 207 with the generic text: the error's own text never reaches the partner.
#[tokio::test]
async fn every_error_shape_is_ae_207_with_a_generic_text() {
    async fn boxed(_req: Request) -> Result<(), HandlerError> {
        let failed: Result<(), Box<dyn std::error::Error + Send + Sync>> =
            Err(format!("{SENTINEL} locked").into());
        failed?;
        Ok(())
    }
    async fn with_anyhow(_req: Request) -> Result<(), HandlerError> {
        let failed: anyhow::Result<()> = Err(anyhow::anyhow!("{SENTINEL} locked"));
        failed?;
        Ok(())
    }
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {
            Err::<(), _>(format!("{SENTINEL} locked"))
        })
        .route("ADT^A02", |_req: Request| async { Err::<(), _>("locked") })
        .route("ADT^A03", |_m: Message| async {
            Err::<(), Box<dyn std::error::Error + Send + Sync>>(SENTINEL.into())
        })
        .route("ADT^A04", boxed)
        .route("ADT^A05", with_anyhow)
        .route("ADT^A06", |_req: Request| async {
            Err::<(), _>(anyhow::anyhow!("{SENTINEL}"))
        });
    let got = answers(
        router,
        &[
            "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A06",
        ],
    )
    .await;
    for (code, err3, text) in got {
        assert_eq!((code.as_str(), err3.as_str()), ("AE", "207"));
        assert!(text.contains("application internal error"), "{text}");
    }
}

/// The error a handler returned reaches a middleware as `Response::error_source`, for logging
/// it there, while the partner still gets only the generic text.
#[tokio::test]
async fn a_middleware_sees_the_cause_of_a_handler_error() {
    use std::sync::Mutex;

    use mllp::app::{Next, Response, from_fn};

    let causes: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = causes.clone();
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {
            Err::<(), _>(std::io::Error::other("results table locked by pid 4242"))
        })
        .route("ADT^A02", |_req: Request| async {})
        .layer(from_fn(move |req: Request, next: Next| {
            let seen = seen.clone();
            async move {
                let response: Response = next.run(req).await;
                if let Some(cause) = response.error_source() {
                    seen.lock().unwrap().push(cause.to_string());
                }
                response
            }
        }));
    let got = answers(router, &["ADT^A01", "ADT^A02"]).await;
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("AE", "207"));
    assert!(!got[0].2.contains("locked"), "{got:?}");
    assert_eq!(got[1].0, "AA");
    assert_eq!(
        causes.lock().unwrap().as_slice(),
        ["results table locked by pid 4242"]
    );
}

/// A reject returned with `?` can say where the problem is: ERR-2 of the answer.
#[tokio::test]
async fn a_located_reject_names_its_location_in_err_2() {
    use mllp::ack::ErrorCode;
    use mllp::hl7::Location;

    let router = Router::new().route("ADT^A01", |_req: Request| async {
        Err::<(), _>(
            HandlerError::reject(ErrorCode::RequiredFieldMissing, "PID-3 is empty")
                .at(Location::new("PID", 1).field(3)),
        )
    });
    let server = support::start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let ack = peer.call(hl7("ADT^A01", "LOC-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR");
    assert_eq!(field(&ack, "ERR-2"), "PID^1^3");
    assert_eq!(field(&ack, "ERR-3.1"), "101");
    drop(peer);
    within(server.shutdown()).await;
}

/// An explicit text is sent when asked for: `HandlerError::internal`, `new` and `reject`.
#[tokio::test]
async fn explicit_texts_are_sent() {
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {
            Err::<(), _>(HandlerError::internal("bed service down"))
        })
        .route("ADT^A02", |_req: Request| async {
            Err::<(), _>(HandlerError::reject(
                mllp::ack::ErrorCode::RequiredFieldMissing,
                "no PID-3",
            ))
        });
    let got = answers(router, &["ADT^A01", "ADT^A02"]).await;
    assert_eq!(got[0].0, "AE");
    assert!(got[0].2.contains("bed service down"));
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("AR", "101"));
    assert!(got[1].2.contains("no PID-3"));
}

/// A closure whose body only panics is a handler; it is answered per the handler-failure
/// policy (AE 207 by default), and the connection goes on.
#[tokio::test]
async fn a_closure_that_only_panics_is_a_handler() {
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async { panic!("not yet") })
        .route("ADT^A02", |_m: Message| async { unimplemented!() })
        .route("ADT^A03", |_req: Request| async {});
    let got = answers(router, &["ADT^A01", "ADT^A02", "ADT^A03"]).await;
    let codes: Vec<_> = got.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(codes, ["AE", "AE", "AA"]);
}

#[derive(Clone, Default)]
struct Lab {
    admitted: Arc<AtomicU64>,
    results: Arc<AtomicU64>,
}

async fn admit(State(lab): State<Lab>, _req: Request) {
    lab.admitted.fetch_add(1, Ordering::Relaxed);
}

/// The router's state reaches every handler that takes `State<S>`, by request or by message,
/// and the fallback; handlers without it still work on a router with state.
#[tokio::test]
async fn state_reaches_the_handlers_that_take_it() {
    let lab = Lab::default();
    let router = Router::new()
        .route("ACK", |_req: Request| async {}) // registered before the state: no state
        .with_state(lab.clone())
        .route("ADT^A01", admit)
        .route(
            "ORU^R01",
            |State(lab): State<Lab>, _m: Message| async move {
                lab.results.fetch_add(1, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            },
        )
        .route("ADT^A08", |_req: Request| async {})
        .fallback(|lab: State<Lab>, _req: Request| async move {
            lab.results.fetch_add(100, Ordering::Relaxed);
        });
    let got = answers(
        router.without_state(),
        &[
            "ADT^A01", "ADT^A01", "ORU^R01", "ADT^A08", "ACK^A01", "SIU^S12",
        ],
    )
    .await;
    assert!(got.iter().all(|(code, _, _)| code == "AA"), "{got:?}");
    assert_eq!(lab.admitted.load(Ordering::Relaxed), 2);
    assert_eq!(lab.results.load(Ordering::Relaxed), 101);
}

/// A route's deadline follows the handler-failure policy like `handler_timeout` (here
/// `NoResponse`: no answer, a timeout exception carrying the route's limit), and may be longer
/// than the server's `handler_timeout`.
#[tokio::test(start_paused = true)]
async fn route_deadlines_follow_the_failure_policy_and_may_be_longer() {
    use std::time::Duration;
    use support::{Recorder, Seen, next_matching};
    let (recorder, mut events) = Recorder::new();
    let slow = |secs: u64| {
        move |_req: Request| async move { tokio::time::sleep(Duration::from_secs(secs)).await }
    };
    let router = Router::new()
        .route_with_timeout("ADT^A01", slow(5), Duration::from_secs(2))
        .route_with_timeout("ADT^A02", slow(5), Duration::from_secs(10))
        .route("ADT^A03", slow(5));
    let server = support::start(
        Server::builder()
            .router(router)
            .handler_timeout(Duration::from_secs(3))
            .handler_failure(mllp::HandlerFailurePolicy::NoResponse)
            .observer(recorder),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send(hl7("ADT^A01", "1", "2.5")).await;
    let exception =
        next_matching(&mut events, |s| matches!(s, Seen::MessageException { .. })).await;
    assert_eq!(
        exception,
        Seen::MessageException {
            kind: "timeout".into(),
            ack: None
        }
    );
    // Longer than handler_timeout (3 s): the 5 s handler finishes within its route's 10 s.
    let ack = peer.call(hl7("ADT^A02", "2", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    assert_eq!(field(&ack, "MSA-2"), "2", "the A01 got no answer");
    // No deadline of its own: the server's 3 s.
    peer.send(hl7("ADT^A03", "3", "2.5")).await;
    let exception =
        next_matching(&mut events, |s| matches!(s, Seen::MessageException { .. })).await;
    assert!(matches!(exception, Seen::MessageException { ref kind, .. } if kind == "timeout"));
    drop(peer);
    within(server.shutdown()).await;

    // A zero deadline is refused when the server is built.
    let zero = Router::new().route_with_timeout("*", slow(0), Duration::ZERO);
    let error = Server::builder()
        .router(zero)
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    assert!(
        matches!(error, mllp::Error::Config(mllp::ConfigError::Runtime(_))),
        "{error:?}"
    );
}

//! Handler failures (timeout, panic) under each policy, and panics in the runtime's own code.

mod support;

use std::time::Duration;

use mllp_actors::{CloseReason, Failure, HandlerFailurePolicy, ServerConfig};
use support::{Lines, Rec, TestServer};

fn exceptions(server: &TestServer) -> Vec<(String, Failure, Option<String>)> {
    server
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Rec::MsgException {
                command,
                failure,
                response,
                ..
            } => Some((command, failure, response)),
            _ => None,
        })
        .collect()
}

/// A handler past `handler_timeout` is aborted (its future is dropped before the answer goes
/// out), answered with the protocol's failure response, and the connection goes on.
#[tokio::test(start_paused = true)]
async fn stuck_handler_is_aborted_and_answered() {
    let limit = Duration::from_secs(1);
    let server = TestServer::start(ServerConfig::default().handler_timeout(limit)).await;
    let (mut client, id) = server.connect_registered().await;
    assert_eq!(client.request("hang").await, "failed: timeout");
    assert_eq!(
        server.dropped(),
        1,
        "the timed-out handler is still running"
    );
    assert_eq!(client.request("after").await, "after");
    assert_eq!(
        exceptions(&server),
        [(
            "hang".into(),
            Failure::TimedOut(limit),
            Some("failed: timeout".into())
        )]
    );
    drop(client);
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::PeerClosed, 2)
    );
    server.finish().await;
}

/// A panicking handler is answered with the failure response and the connection goes on,
/// whether it panics in its future (`panic`) or before returning it, in `handle` itself as
/// `std::future::ready(f())` does (`eager`).
#[tokio::test]
async fn panicking_handler_is_answered_and_connection_goes_on() {
    for (command, text) in [("panic", "boom"), ("eager", "eager boom")] {
        let server = TestServer::start(ServerConfig::default()).await;
        let (mut client, id) = server.connect_registered().await;
        assert_eq!(client.request(command).await, "failed: panic");
        assert_eq!(client.request("after").await, "after");
        assert_eq!(
            exceptions(&server),
            [(
                command.into(),
                Failure::Panicked(text.into()),
                Some("failed: panic".into())
            )]
        );
        drop(client);
        assert_eq!(
            server.recorder.stop_of(id).await,
            (CloseReason::PeerClosed, 2)
        );
        server.finish().await;
        server.recorder.assert_consistent();
    }
}

/// Under `NoResponse` a failed handler gets no answer and the next request is answered.
#[tokio::test(start_paused = true)]
async fn no_response_policy_skips_the_failed_request() {
    let server = TestServer::start(
        ServerConfig::default()
            .handler_timeout(Duration::from_secs(1))
            .handler_failure(HandlerFailurePolicy::NoResponse),
    )
    .await;
    let (mut client, id) = server.connect_registered().await;
    client.send("panic").await;
    client.send("hang").await;
    assert_eq!(client.request("after").await, "after");
    assert_eq!(
        exceptions(&server),
        [
            ("panic".into(), Failure::Panicked("boom".into()), None),
            (
                "hang".into(),
                Failure::TimedOut(Duration::from_secs(1)),
                None
            ),
        ]
    );
    drop(client);
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::PeerClosed, 3)
    );
    server.finish().await;
}

/// Under `Close` a failed handler closes the connection after the answers due before it; the
/// requests behind it are aborted.
#[tokio::test]
async fn close_policy_closes_after_earlier_answers() {
    let server = TestServer::start(
        ServerConfig::default()
            .max_in_flight(3)
            .handler_failure(HandlerFailurePolicy::Close),
    )
    .await;
    let (mut client, id) = server.connect_registered().await;
    client.send_raw(b"block\npanic\nhang\n").await.unwrap();
    server.recorder.message_starts(3).await;
    server.release(1);
    assert_eq!(client.recv().await.as_deref(), Some("unblocked"));
    client.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::HandlerFailure, 3)
    );
    assert_eq!(
        exceptions(&server),
        [
            ("panic".into(), Failure::Panicked("boom".into()), None),
            ("hang".into(), Failure::Aborted, None),
        ]
    );
    server.shutdown().await;
    // `block` finished, `hang` was aborted: both futures are gone.
    assert_eq!(server.dropped(), 2, "the aborted handler is still running");
    server.recorder.assert_consistent();
}

/// A panic in the connection's own code (here, its codec) fails the connection actor: its
/// supervisor reports exactly one stop with the panic, frees the slot and forgets it, and other
/// connections carry on.
#[tokio::test]
async fn runtime_panic_is_one_stop_and_frees_the_slot() {
    let mut protocol = Lines::new();
    protocol.codec_panics_on = Some("crash".into());
    let server = TestServer::start_with(
        protocol,
        mllp_actors::PlainTcp,
        ServerConfig::default().max_connections(2),
    )
    .await;
    let (mut other, other_id) = server.connect_registered().await;
    let (mut client, id) = server.connect_registered().await;
    assert_eq!(client.request("fine").await, "fine");
    client.send("crash").await;
    client.expect_eof().await;
    let (reason, messages) = server.recorder.stop_of(id).await;
    assert!(
        matches!(&reason, CloseReason::Panicked(text) if text.contains("codec bug triggered")),
        "{reason:?}"
    );
    assert_eq!(messages, 1);
    let connections = server.handle.connections().await;
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].id, other_id);
    assert_eq!(server.handle.slots_in_use(), 1);
    // The freed slot is usable, and the neighbour never noticed.
    let (mut third, _) = server.connect_registered().await;
    assert_eq!(third.request("hello").await, "hello");
    assert_eq!(other.request("still here").await, "still here");
    drop((other, third));
    server.shutdown().await;
    let stops = server
        .recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Rec::Stop { id: i, .. } if *i == id))
        .count();
    assert_eq!(stops, 1);
    server.recorder.assert_consistent();
}

/// A panic on the connection's task (here, its codec) while a handler is in flight still ends
/// that message: it is reported once, as aborted, before the connection's stop, and counted.
#[tokio::test]
async fn runtime_panic_still_ends_the_messages_in_flight() {
    let mut protocol = Lines::new();
    protocol.codec_panics_on = Some("crash".into());
    let server = TestServer::start_with(
        protocol,
        mllp_actors::PlainTcp,
        ServerConfig::default().max_in_flight(2),
    )
    .await;
    let (mut client, id) = server.connect_registered().await;
    client.send("block").await;
    server
        .recorder
        .wait_for(|events| events.iter().any(|e| matches!(e, Rec::MsgStart { .. })))
        .await;
    client.send("crash").await;
    client.expect_eof().await;
    let (reason, messages) = server.recorder.stop_of(id).await;
    assert!(matches!(reason, CloseReason::Panicked(_)), "{reason:?}");
    assert_eq!(messages, 1);
    assert_eq!(
        exceptions(&server),
        [("block".into(), Failure::Aborted, None)]
    );
    server.shutdown().await;
    assert_eq!(server.dropped(), 1, "the in-flight handler was not aborted");
    server.recorder.assert_consistent();
}

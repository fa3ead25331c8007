//! Runtime control of a running server, as Ranch offers it: the connection limit, suspending
//! and resuming the acceptor, closing one connection, and the escalation event; each on a real
//! loopback server.

mod support;

use std::time::Duration;

use mllp_actors::{CloseReason, ConfigError, RestartPolicy, ServerConfig, ServerError};
use support::{Rec, TestServer, within};

/// Raising the limit lets a waiting peer in at once; lowering it below the live connections
/// closes none of them, and a new peer waits until the server is under the new limit.
#[tokio::test(start_paused = true)]
async fn max_connections_changes_at_runtime() {
    let server = TestServer::start(ServerConfig::default().max_connections(1)).await;
    assert_eq!(server.handle.max_connections(), 1);
    let (mut a, a_id) = server.connect_registered().await;
    assert_eq!(a.request("a").await, "a");

    // B waits in the backlog at the limit of 1...
    let mut b = server.connect().await;
    b.send("b").await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), b.recv())
            .await
            .is_err(),
        "B is not served at the limit"
    );
    // ...and is served as soon as the limit is raised.
    server.handle.set_max_connections(2).unwrap();
    assert_eq!(within(b.recv()).await.as_deref(), Some("b"));

    // Lowered to 1 with two live connections: both live on.
    server.handle.set_max_connections(1).unwrap();
    assert_eq!(server.handle.max_connections(), 1);
    assert_eq!(a.request("a2").await, "a2");
    assert_eq!(b.request("b2").await, "b2");
    assert_eq!(server.handle.connections().await.len(), 2);

    // A leaves: still at the new limit (B), so C waits; once B leaves, C is served.
    drop(a);
    server.recorder.stop_of(a_id).await;
    let mut c = server.connect().await;
    c.send("c").await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), c.recv())
            .await
            .is_err(),
        "C is not served while B holds the one slot"
    );
    drop(b);
    assert_eq!(within(c.recv()).await.as_deref(), Some("c"));

    assert_eq!(
        server.handle.set_max_connections(0),
        Err(ConfigError::Zero {
            setting: "max_connections"
        })
    );
    assert_eq!(server.handle.max_connections(), 1);
    drop(c);
    server.finish().await;
}

/// While accepting is suspended, live connections are served and new peers wait in the
/// backlog; after resume they are served.
#[tokio::test]
async fn suspend_stops_accepting_and_resume_starts_again() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut live, _) = server.connect_registered().await;
    assert!(!server.handle.is_suspended());

    within(server.handle.suspend()).await;
    assert!(server.handle.is_suspended());
    assert_eq!(live.request("still here").await, "still here");
    // The port stays bound: the kernel completes the connect, but nobody accepts it.
    let mut waiting = server.connect().await;
    waiting.send("waiting").await;
    assert_eq!(live.request("again").await, "again");
    assert_eq!(server.handle.connections().await.len(), 1);
    assert_eq!(server.recorder.started().len(), 1);

    within(server.handle.resume()).await;
    assert!(!server.handle.is_suspended());
    assert_eq!(within(waiting.recv()).await.as_deref(), Some("waiting"));
    assert_eq!(server.handle.connections().await.len(), 2);
    // Suspend and resume are idempotent, and no restart was counted.
    within(server.handle.resume()).await;
    within(server.handle.suspend()).await;
    within(server.handle.suspend()).await;
    within(server.handle.resume()).await;
    let (mut fresh, _) = server.connect_registered().await;
    assert_eq!(fresh.request("fresh").await, "fresh");
    assert!(
        !server
            .recorder
            .events()
            .iter()
            .any(|e| matches!(e, Rec::AcceptorRestart { .. }))
    );
    drop((live, waiting, fresh));
    server.finish().await;
}

/// Shutting down a suspended server works as usual.
#[tokio::test]
async fn a_suspended_server_shuts_down() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut live, _) = server.connect_registered().await;
    within(server.handle.suspend()).await;
    assert_eq!(live.request("x").await, "x");
    let report = server.shutdown().await;
    assert_eq!(report.drained, 1);
    live.expect_eof().await;
    server.recorder.assert_consistent();
}

/// Closing one connection by id answers what it has in flight, then closes it as
/// `server_closed`; the others are untouched, and an unknown id is reported as such.
#[tokio::test]
async fn close_connection_drains_that_connection_only() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut target, target_id) = server.connect_registered().await;
    let (mut other, _) = server.connect_registered().await;
    assert_eq!(target.request("one").await, "one");

    target.send("block").await;
    server
        .recorder
        .wait_for(|events| {
            events
                .iter()
                .any(|e| matches!(e, Rec::MsgStart { id, command } if *id == target_id && command == "block"))
        })
        .await;
    assert!(server.handle.close_connection(target_id));
    assert!(!server.handle.close_connection(u64::MAX));
    server.release(1);
    assert_eq!(within(target.recv()).await.as_deref(), Some("unblocked"));
    target.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(target_id).await,
        (CloseReason::ServerClosed, 2)
    );
    assert_eq!(CloseReason::ServerClosed.as_str(), "server_closed");
    assert_eq!(other.request("fine").await, "fine");
    assert!(!server.handle.close_connection(target_id), "already gone");
    drop(other);
    server.finish().await;
}

/// Escalation is reported to observers before `wait()` returns the error.
#[tokio::test]
async fn escalation_is_an_event_before_wait_returns() {
    let server = TestServer::start(ServerConfig::default().restart(RestartPolicy::Never)).await;
    server.handle.inject_acceptor_failure();
    let error = within(server.handle.wait()).await.expect_err("escalated");
    assert!(matches!(
        error,
        ServerError::AcceptorFailed { failures: 1, .. }
    ));
    let escalations: Vec<String> = server
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Rec::Escalation { error } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(escalations, [error.to_string()]);
}

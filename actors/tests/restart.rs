//! Acceptor failures: restarts under the policy, and escalation past it.

mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mllp_actors::{CloseReason, Established, RestartPolicy, ServerConfig, ServerError, Transport};
use support::{Lines, Rec, TestServer, within};
use tokio::net::TcpStream;

fn restarts(server: &TestServer) -> Vec<u32> {
    server
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Rec::AcceptorRestart { restarts, .. } => Some(restarts),
            _ => None,
        })
        .collect()
}

/// Fails the current acceptor, waits for the server's restart event, and then until a new
/// acceptor is serving.
async fn fail_and_recover(server: &TestServer) {
    let before = restarts(server).len();
    server.handle.inject_acceptor_failure();
    server
        .recorder
        .wait_for(|events| {
            events
                .iter()
                .filter(|e| matches!(e, Rec::AcceptorRestart { .. }))
                .count()
                > before
        })
        .await;
    // Accepted once the restarted acceptor runs (the backoff passes in virtual time).
    let (mut probe, _) = server.connect_registered().await;
    assert_eq!(probe.request("probe").await, "probe");
}

/// A failed acceptor is restarted on the same listening socket; live connections never notice.
#[tokio::test(start_paused = true)]
async fn failed_acceptor_is_restarted_and_connections_live_on() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut live, live_id) = server.connect_registered().await;
    assert_eq!(live.request("before").await, "before");

    fail_and_recover(&server).await;
    assert_eq!(live.request("after").await, "after");
    let events = server.recorder.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Rec::AcceptorRestart { error, .. } if error.contains("injected"))),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Rec::Stop { id, .. } if *id == live_id))
    );

    drop(live);
    server.shutdown().await;
    assert!(within(server.handle.wait()).await.is_ok());
    server.recorder.assert_consistent();
}

/// Restarts older than the window do not count: failures spread out are restarted for ever.
#[tokio::test(start_paused = true)]
async fn failures_outside_the_window_are_forgotten() {
    let server = TestServer::start(ServerConfig::default().restart(RestartPolicy::backoff(
        1,
        Duration::from_secs(5),
        Duration::from_millis(100),
        Duration::from_secs(1),
    )))
    .await;
    for _ in 0..3 {
        fail_and_recover(&server).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert_eq!(restarts(&server), [1, 1, 1]);
    server.shutdown().await;
    assert!(within(server.handle.wait()).await.is_ok());
}

/// Past `max_restarts` within the window the server stops everything and `wait()` reports the
/// acceptor's error; live connections are drained as in a shutdown.
#[tokio::test(start_paused = true)]
async fn restart_limit_exceeded_stops_the_server() {
    let server = TestServer::start(ServerConfig::default().restart(RestartPolicy::backoff(
        2,
        Duration::from_secs(5),
        Duration::from_millis(100),
        Duration::from_secs(1),
    )))
    .await;
    let (mut live, live_id) = server.connect_registered().await;
    assert_eq!(live.request("hello").await, "hello");
    fail_and_recover(&server).await;
    fail_and_recover(&server).await;
    server.handle.inject_acceptor_failure();

    let error = within(server.handle.wait()).await.expect_err("escalated");
    match &error {
        ServerError::AcceptorFailed { failures, source } => {
            assert_eq!(*failures, 3);
            assert!(source.to_string().contains("injected"));
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(restarts(&server), [1, 2]);
    live.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(live_id).await,
        (CloseReason::Shutdown, 1)
    );
    // The listening socket is closed, and shutdown() reports the same end.
    assert!(tokio::net::TcpStream::connect(server.addr()).await.is_err());
    let report = server.shutdown().await;
    assert_eq!(report.aborted, 0);
    assert!(server.handle.connections().await.is_empty());
    server.recorder.assert_consistent();
}

/// Under `RestartPolicy::Never` the first acceptor failure stops the server.
#[tokio::test]
async fn never_policy_escalates_the_first_failure() {
    let server = TestServer::start(ServerConfig::default().restart(RestartPolicy::Never)).await;
    server.handle.inject_acceptor_failure();
    let error = within(server.handle.wait()).await.expect_err("escalated");
    assert!(
        matches!(error, ServerError::AcceptorFailed { failures: 1, .. }),
        "{error:?}"
    );
    assert!(restarts(&server).is_empty());
    assert_eq!(server.shutdown().await.drained, 0);
}

/// Plain TCP whose admission check panics the first time (a bug in user code).
struct PanicsOnce(AtomicBool);

impl Transport for PanicsOnce {
    type Stream = TcpStream;

    fn admit(&self, _peer: SocketAddr) -> bool {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("admission bug");
        }
        true
    }

    async fn handshake(&self, socket: TcpStream) -> io::Result<Established<TcpStream>> {
        Ok(Established::new(socket))
    }
}

/// A panic in the accept loop (here in `Transport::admit`) is an acceptor failure: reported as a
/// restart naming the panic, and the restarted acceptor serves the next peers.
#[tokio::test(start_paused = true)]
async fn panic_in_the_accept_loop_restarts_the_acceptor() {
    let server = TestServer::start_with(
        Lines::new(),
        PanicsOnce(AtomicBool::new(false)),
        ServerConfig::default(),
    )
    .await;
    let mut first = server.connect().await;
    first.expect_eof().await;
    let (mut second, _) = server.connect_registered().await;
    assert_eq!(second.request("hello").await, "hello");
    let events = server.recorder.events();
    assert!(
        events.iter().any(
            |e| matches!(e, Rec::AcceptorRestart { error, .. } if error.contains("admission bug"))
        ),
        "{events:?}"
    );
    drop(second);
    server.shutdown().await;
    assert!(within(server.handle.wait()).await.is_ok());
    server.recorder.assert_consistent();
}

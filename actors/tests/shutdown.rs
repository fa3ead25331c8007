//! Graceful shutdown: drain, grace deadline, report, and nothing left running.

mod support;

use std::time::Duration;

use mllp_actors::{CloseReason, Failure, ServerConfig, ShutdownReport};
use support::{Rec, TestServer, within};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Shutdown closes idle connections at once, lets busy ones answer before closing, aborts a
/// stuck handler at the grace deadline, reports the counts, and returns only once every task of
/// the server has ended.
#[tokio::test(start_paused = true)]
async fn shutdown_drains_then_aborts_at_the_grace_deadline() {
    let baseline = alive_tasks();
    let grace = Duration::from_secs(5);
    let server = TestServer::start(ServerConfig::default().shutdown_grace(grace)).await;
    let (mut idle, idle_id) = server.connect_registered().await;
    let (mut busy, busy_id) = server.connect_registered().await;
    let (mut stuck, stuck_id) = server.connect_registered().await;
    busy.send("block").await;
    stuck.send("hang").await;
    server.recorder.message_starts(2).await;

    let began = tokio::time::Instant::now();
    let handle = server.handle.clone();
    let shutdown = tokio::spawn(async move { handle.shutdown().await });

    idle.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(idle_id).await,
        (CloseReason::Shutdown, 0)
    );
    // The listening socket is closed while connections drain.
    assert!(tokio::net::TcpStream::connect(server.addr()).await.is_err());

    server.release(1);
    assert_eq!(busy.recv().await.as_deref(), Some("unblocked"));
    busy.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(busy_id).await,
        (CloseReason::Shutdown, 1)
    );

    stuck.expect_eof().await;
    assert!(began.elapsed() >= grace);
    assert_eq!(
        server.recorder.stop_of(stuck_id).await,
        (CloseReason::Aborted, 1)
    );
    let report = within(shutdown).await.unwrap();
    assert_eq!(
        (report.drained, report.aborted),
        (2, 1),
        "unexpected {report:?}"
    );
    assert!(server.recorder.events().iter().any(|e| matches!(
        e,
        Rec::MsgException { command, failure: Failure::Aborted, response: None, .. } if command == "hang"
    )));
    // Both handler futures are gone: the stuck one was aborted, not left running.
    assert_eq!(server.dropped(), 2);
    assert!(server.handle.connections().await.is_empty());
    assert_eq!(server.handle.slots_in_use(), 0);
    assert_eq!(alive_tasks(), baseline, "tasks outlived the shutdown");
    server.recorder.assert_consistent();
}

/// Shutdown may be called concurrently and again afterwards; every call gets the same report,
/// and `wait()` sees a clean stop.
#[tokio::test]
async fn shutdown_is_idempotent() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut client, _) = server.connect_registered().await;
    assert_eq!(client.request("hi").await, "hi");
    let (first, second) = tokio::join!(server.handle.shutdown(), server.handle.shutdown());
    assert_eq!(first, second);
    assert_eq!(server.shutdown().await, first);
    assert_eq!((first.drained, first.aborted), (1, 0));
    assert!(within(server.handle.wait()).await.is_ok());
    client.expect_eof().await;
    server.recorder.assert_consistent();
}

/// With zero grace, busy connections are aborted at once but idle ones still close cleanly.
#[tokio::test]
async fn zero_grace_aborts_busy_and_closes_idle_cleanly() {
    let server = TestServer::start(ServerConfig::default().shutdown_grace(Duration::ZERO)).await;
    let (_idle, idle_id) = server.connect_registered().await;
    let (mut stuck, stuck_id) = server.connect_registered().await;
    stuck.send("hang").await;
    server.recorder.message_starts(1).await;
    let report = server.shutdown().await;
    assert_eq!(
        server.recorder.stop_of(idle_id).await.0,
        CloseReason::Shutdown
    );
    assert_eq!(
        server.recorder.stop_of(stuck_id).await.0,
        CloseReason::Aborted
    );
    assert_eq!(report, expected(1, 1));
    assert_eq!(server.dropped(), 1);
    server.recorder.assert_consistent();
}

/// A server with no connections shuts down with an empty report, and stops its tasks.
#[tokio::test]
async fn empty_server_shuts_down_cleanly() {
    let baseline = alive_tasks();
    let server = TestServer::start(ServerConfig::default()).await;
    assert_eq!(server.shutdown().await, ShutdownReport::default());
    assert_eq!(alive_tasks(), baseline);
}

fn expected(drained: usize, aborted: usize) -> ShutdownReport {
    let mut report = ShutdownReport::default();
    report.drained = drained;
    report.aborted = aborted;
    report
}

/// A connection part-way through a request when the drain begins gets to finish it: the rest
/// arrives, it is answered, and the connection closes as drained. One whose request never
/// completes is aborted at the grace deadline, not counted as drained.
#[tokio::test(start_paused = true)]
async fn a_request_part_way_in_when_the_drain_begins_is_finished() {
    let grace = Duration::from_secs(5);
    let server = TestServer::start(ServerConfig::default().shutdown_grace(grace)).await;
    let (mut half, half_id) = server.connect_registered().await;
    let (mut stalled, stalled_id) = server.connect_registered().await;
    half.send_raw(b"hel").await.unwrap();
    stalled.send_raw(b"par").await.unwrap();
    // Both have been read: the drain finds them part-way in.
    let handle = server.handle.clone();
    support::eventually(|| {
        let handle = handle.clone();
        async move {
            let conns = handle.connections().await;
            [half_id, stalled_id]
                .iter()
                .all(|id| conns.iter().any(|c| c.id == *id && c.bytes_in == 3))
        }
    })
    .await;

    let handle = server.handle.clone();
    let shutdown = tokio::spawn(async move { handle.shutdown().await });
    half.send_raw(b"lo\n").await.unwrap();
    assert_eq!(half.recv().await.as_deref(), Some("hello"));
    half.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(half_id).await,
        (CloseReason::Shutdown, 1)
    );

    stalled.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(stalled_id).await,
        (CloseReason::Aborted, 0)
    );
    let report = within(shutdown).await.unwrap();
    assert_eq!((report.drained, report.aborted), (1, 1), "{report:?}");
    server.recorder.assert_consistent();
}

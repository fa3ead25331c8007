//! `max_buffered_bytes`: read buffers and requests in flight share one server-wide budget; at
//! the limit connections stop reading (TCP pushes back), and nothing is lost once memory is
//! given back.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use mllp_actors::{PlainTcp, ServerConfig};
use support::{Lines, Rec, TestServer, eventually, within};
use tokio::io::AsyncWriteExt;

const BUDGET: usize = 256 * 1024;

/// Requests held by busy handlers keep their bytes drawn: once they fill the budget, a further
/// large request is not read whole (its handler never starts) and the budget is never
/// exceeded; when the handlers finish, it is read and answered.
#[tokio::test]
async fn full_budget_stops_reading_until_memory_is_given_back() {
    let server = TestServer::start(
        ServerConfig::default()
            .max_buffered_bytes(Some(BUDGET))
            .idle_timeout(None)
            .frame_timeout(Duration::from_secs(3600)),
    )
    .await;
    let padding = "p".repeat(60 * 1024);
    let mut blocked = Vec::new();
    // Each request holds its buffer's allocation (a little over its 60 KiB, up to twice that
    // with the buffer's growth) while its handler waits at the gate.
    // One after the other: a buffer that grows holds its old allocation and its new one while it
    // copies, and three growing at once would not fit.
    for n in 1..=3 {
        let (mut client, _) = server.connect_registered().await;
        client.send(&format!("block {padding}")).await;
        blocked.push(client);
        server.recorder.message_starts(n).await;
    }
    let used = server.handle.buffered_bytes().unwrap();
    assert!(used > 3 * 60 * 1024 && used <= BUDGET, "{used}");

    // A fourth large request: the budget has no room for the buffer it needs.
    let (mut late, late_id) = server.connect_registered().await;
    let line = format!("{}\n", "q".repeat(60 * 1024));
    let writer = tokio::spawn(async move {
        late.send_raw(line.as_bytes()).await.unwrap();
        late
    });
    // The late connection's buffer waits for room: the budget is drawn to its last byte (the
    // semaphore sets aside for the waiter what is given back, so nothing else barges in).
    eventually(|| async { server.handle.buffered_bytes() == Some(BUDGET) }).await;
    let snapshot = server.handle.connections().await;
    let late_entry = snapshot.iter().find(|c| c.id == late_id).unwrap();
    assert_eq!(
        late_entry.in_flight, 0,
        "the large request was read past the budget"
    );
    let starts = server
        .recorder
        .events()
        .iter()
        .filter(|e| matches!(e, Rec::MsgStart { .. }))
        .count();
    assert_eq!(starts, 3);

    server.release(3);
    for mut client in blocked {
        assert_eq!(client.recv().await.as_deref(), Some("unblocked"));
    }
    let mut late = within(writer).await.unwrap();
    assert_eq!(late.recv().await.map(|l| l.len()), Some(60 * 1024));
    drop(late);
    server.finish().await;
}

/// Once a connection is idle again, what it drew for a large request is given back, save the
/// small buffer it keeps for its next read; once it is gone, all of it.
#[tokio::test]
async fn budget_is_given_back_when_requests_end() {
    let server = TestServer::start(ServerConfig::default().max_buffered_bytes(Some(BUDGET))).await;
    let (mut client, _) = server.connect_registered().await;
    let big = "b".repeat(50 * 1024);
    assert_eq!(client.request(&big).await.len(), big.len());
    eventually(|| async { server.handle.buffered_bytes().unwrap() <= 4 * 1024 }).await;
    let mut raw = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    raw.write_all(b"x\n").await.unwrap();
    drop((client, raw));
    server.finish().await;
    assert_eq!(server.handle.buffered_bytes(), Some(0));
}

/// A request's overhead is counted exactly (which may cost a pass over it) only when the
/// budget cannot spare the protocol's free ceiling: a ceiling that fits is drawn as it is,
/// one larger than the whole budget or than what is left of it falls back to the exact count.
/// Every request is answered either way, and all of it is given back.
#[tokio::test]
async fn overhead_is_counted_only_when_the_budget_cannot_spare_its_ceiling() {
    let mut protocol = Lines::new();
    protocol.overhead_ceiling_factor = Some(8);
    let exact = std::sync::Arc::clone(&protocol.exact_overheads);
    let config = ServerConfig::default()
        .max_buffered_bytes(Some(BUDGET))
        .idle_timeout(None);
    let server = TestServer::start_with(protocol, PlainTcp, config).await;
    let counted = || exact.load(Ordering::SeqCst);

    // 8 KiB: its 64 KiB ceiling fits the idle budget, nothing is counted.
    let (mut client, _) = server.connect_registered().await;
    let small = "s".repeat(8 * 1024);
    assert_eq!(client.request(&small).await, small);
    assert_eq!(counted(), 0);

    // 40 KiB: its 320 KiB ceiling is more than the whole budget.
    let large = "l".repeat(40 * 1024);
    assert_eq!(client.request(&large).await, large);
    assert_eq!(counted(), 1);

    // Two handlers hold 30 KiB requests (their bytes and their overhead): what is left cannot
    // take the ceiling of a request that would fit an idle budget, but takes its exact cost.
    let padding = "p".repeat(30 * 1024);
    let mut blocked = Vec::new();
    for n in 1..=2 {
        let (mut client, _) = server.connect_registered().await;
        client.send(&format!("block {padding}")).await;
        blocked.push(client);
        // After the two requests above.
        server.recorder.message_starts(2 + n).await;
    }
    let left = BUDGET - server.handle.buffered_bytes().unwrap();
    let len = left / 6;
    // The ceiling is more than is left, though with this request's buffer it fits the budget.
    assert!(8 * len > left && 10 * len <= BUDGET, "left {left}");
    let before = counted();
    let squeezed = "q".repeat(len);
    assert_eq!(client.request(&squeezed).await, squeezed);
    assert_eq!(counted(), before + 1);

    server.release(2);
    for mut client in blocked {
        assert_eq!(client.recv().await.as_deref(), Some("unblocked"));
    }
    drop(client);
    server.finish().await;
    assert_eq!(server.handle.buffered_bytes(), Some(0));
}

//! Work a handler hands off keeps its request counted against the limits (`max_in_flight`,
//! `max_concurrent_handlers`) until it ends, even after the handler itself timed out.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mllp_actors::{ConnectionInfo, Failure, Lease, PlainTcp, Protocol, Server, ServerConfig};
use support::{LineClient, eventually, within};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::codec::{LinesCodec, LinesCodecError};

/// Lines: `handoff` gives a clone of its lease to a task that waits for the gate (a write the
/// runtime cannot abort, standing in for a blocking store write) and then never answers
/// itself, so it times out; anything else is echoed. `started` counts handlers started.
#[derive(Clone)]
struct Handoff {
    gate: Arc<Semaphore>,
    started: Arc<AtomicUsize>,
    /// Handed-off tasks that have finished (and let their lease go).
    finished: Arc<AtomicUsize>,
}

impl Protocol for Handoff {
    type Request = String;
    type Response = String;
    type Meta = ();
    type Error = LinesCodecError;
    type Codec = LinesCodec;

    fn codec(&self) -> LinesCodec {
        LinesCodec::new()
    }

    fn meta(&self, _line: &String) {}

    fn handle(
        &self,
        _line: String,
        _meta: &(),
        _connection: &ConnectionInfo,
    ) -> impl Future<Output = Option<String>> + Unpin + Send + 'static {
        std::future::ready(None)
    }

    fn handle_leased(
        &self,
        line: String,
        _meta: &(),
        _connection: &ConnectionInfo,
        lease: &Lease,
    ) -> impl Future<Output = Option<String>> + Unpin + Send + 'static {
        self.started.fetch_add(1, Ordering::SeqCst);
        if line == "handoff" {
            let (gate, finished, lease) = (
                Arc::clone(&self.gate),
                Arc::clone(&self.finished),
                lease.clone(),
            );
            tokio::spawn(async move {
                gate.acquire().await.expect("gate open").forget();
                finished.fetch_add(1, Ordering::SeqCst);
                drop(lease);
            });
            Box::pin(std::future::pending()) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>
        } else {
            Box::pin(std::future::ready(Some(line)))
        }
    }

    fn on_failure(&self, _meta: &(), failure: &Failure) -> Option<String> {
        Some(format!("failed: {}", failure.kind()))
    }
}

async fn start(config: ServerConfig) -> (mllp_actors::ServerHandle, Handoff) {
    let protocol = Handoff {
        gate: Arc::new(Semaphore::new(0)),
        started: Arc::default(),
        finished: Arc::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = Server::start(listener, protocol.clone(), PlainTcp, config, vec![])
        .await
        .unwrap();
    (handle, protocol)
}

/// After its handler timed out, a request whose handed-off work is still running keeps its
/// place in `max_in_flight`: the connection answers it (the failure answer) but reads nothing
/// more until that work lets its lease go.
#[tokio::test(start_paused = true)]
async fn timed_out_request_keeps_its_in_flight_place_while_its_work_runs() {
    let config = ServerConfig::default().handler_timeout(Duration::from_secs(1));
    let (server, protocol) = start(config).await;
    let mut client = LineClient::connect(server.local_addr()).await;
    assert_eq!(client.request("handoff").await, "failed: timeout");
    client.send("next").await;
    // A second connection's round trip is the barrier: on this single-threaded runtime, once
    // it completes, the first connection's task has run since its bytes arrived.
    let mut probe = LineClient::connect(server.local_addr()).await;
    assert_eq!(probe.request("probe").await, "probe");
    assert_eq!(
        protocol.started.load(Ordering::SeqCst),
        2,
        "the connection read past max_in_flight while the timed-out request's work ran"
    );
    protocol.gate.add_permits(1);
    assert_eq!(client.recv().await.as_deref(), Some("next"));
    assert_eq!(protocol.finished.load(Ordering::SeqCst), 1);
    drop((client, probe));
    within(server.shutdown()).await;
}

/// The server-wide handler permit of a timed-out request is held by its handed-off work: the
/// next request, on another connection, waits for it instead of starting past the limit.
#[tokio::test(start_paused = true)]
async fn timed_out_request_keeps_its_handler_permit_while_its_work_runs() {
    let config = ServerConfig::default()
        .handler_timeout(Duration::from_secs(1))
        .max_concurrent_handlers(Some(1));
    let (server, protocol) = start(config).await;
    let mut first = LineClient::connect(server.local_addr()).await;
    assert_eq!(first.request("handoff").await, "failed: timeout");
    let mut second = LineClient::connect(server.local_addr()).await;
    second.send("waits").await;
    eventually(|| async {
        let connections = server.connections().await;
        connections.iter().any(|c| c.in_flight == 1)
    })
    .await;
    assert_eq!(
        protocol.started.load(Ordering::SeqCst),
        1,
        "a handler started past max_concurrent_handlers while handed-off work held a permit"
    );
    protocol.gate.add_permits(1);
    assert_eq!(second.recv().await.as_deref(), Some("waits"));
    drop((first, second));
    within(server.shutdown()).await;
}

/// Shutdown does not wait for handed-off work: a connection whose only request was answered
/// closes at once, and the lease outlives it harmlessly.
#[tokio::test(start_paused = true)]
async fn lingering_work_does_not_hold_up_shutdown() {
    let config = ServerConfig::default().handler_timeout(Duration::from_secs(1));
    let (server, protocol) = start(config).await;
    let mut client = LineClient::connect(server.local_addr()).await;
    assert_eq!(client.request("handoff").await, "failed: timeout");
    let report = within(server.shutdown()).await;
    assert_eq!((report.drained, report.aborted), (1, 0));
    assert_eq!(client.recv().await, None);
    protocol.gate.add_permits(1);
}

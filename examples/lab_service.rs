//! A lab service that embeds an MLLP receiver the way a production service does: routes for ADT
//! and ORU with shared state, a middleware, every policy tuned, a per-route deadline, its own
//! periodic task, an observer, OpenTelemetry traces and metrics (here into in-memory
//! exporters), Ranch-style runtime control, a drain on SIGTERM/SIGINT, and escalation to `main`
//! when the server stops by itself. It also sends to itself with the pipelining client.
//!
//! Run with: `cargo run --example lab_service` (serves on 127.0.0.1:2576 until Ctrl-C; poke it
//! with `cargo run -- send --to 127.0.0.1:2576 tests/fixtures/`)
//! or `cargo run --example lab_service -- --self-test` (a scripted run on a free port that
//! checks what it sees and exits; `cargo test` runs the same script as this example's test).

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mllp::app::{HandlerError, Next, Request, Response, Router, State, from_fn};
use mllp::bytes::Bytes;
use mllp::hl7::Message;
use mllp::otel::OtelOptions;
use mllp::{Client, ClientConfig, Event, HandlerFailurePolicy, RestartPolicy, Server, observer_fn};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::InMemoryMetricExporter;
use opentelemetry_sdk::trace::InMemorySpanExporter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

type BoxError = Box<dyn Error + Send + Sync>;

/// The application's state, shared by every handler through `State<Lab>`.
#[derive(Clone, Default)]
struct Lab {
    admissions: Arc<AtomicU64>,
    results: Arc<AtomicU64>,
    /// Told when a slow ORU (control id `SLOW…`) is being processed: the self-test drains the
    /// server while one is in flight.
    slow_started: Arc<Notify>,
}

/// ADT: count the admission. A message without PID is refused (AR), not retried.
async fn admit(State(lab): State<Lab>, message: Message) -> Result<(), HandlerError> {
    message.segment("PID").ok_or_else(|| {
        HandlerError::reject(mllp::ack::ErrorCode::SegmentSequenceError, "PID required")
    })?;
    lab.admissions.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// ORU: store the results. `STUCK…` control ids never finish (the route's deadline answers
/// them AE), `SLOW…` ones take a moment, `FAIL…` ones fail with a store error.
async fn store_results(State(lab): State<Lab>, message: Message) -> Result<(), HandlerError> {
    let control_id = message.control_id().unwrap_or_default().to_owned();
    if control_id.starts_with("STUCK") {
        std::future::pending::<()>().await;
    }
    if control_id.starts_with("SLOW") {
        lab.slow_started.notify_one();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if control_id.starts_with("FAIL") {
        // Any error converts: AE 207, and its text stays here (it may name a patient).
        Err(std::io::Error::other("results table locked"))?;
    }
    lab.results.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Middleware: every message passes here on the way in and out.
async fn audit(request: Request, next: Next) -> Response {
    let trigger = format!(
        "{}^{}",
        request.message().message_code().unwrap_or("?"),
        request.message().trigger_event().unwrap_or("?")
    );
    let response = next.run(request).await;
    tracing::debug!(%trigger, accepted = response.is_accepted(), "audited");
    response
}

/// What the observer saw, for the self-test.
#[derive(Debug, Default)]
struct Seen {
    messages: AtomicU64,
    exceptions: AtomicU64,
    connections: AtomicU64,
    /// Connections closed so far, to wait on.
    closed: tokio::sync::watch::Sender<u64>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let self_test = std::env::args().any(|arg| arg == "--self-test");
    run(self_test).await
}

/// The service. With `self_test`, it binds a free port, runs a script against itself, checks
/// the outcome, and returns; otherwise it serves until SIGTERM/SIGINT.
async fn run(self_test: bool) -> Result<(), BoxError> {
    // Telemetry first: the server takes its instruments when it is built. In-memory exporters
    // stand in for OTLP here; `mllp::otel::providers` takes any exporter.
    let spans = InMemorySpanExporter::default();
    let metrics = InMemoryMetricExporter::default();
    let options = OtelOptions::default()
        .service_name("lab-service")
        .metrics_interval(Duration::from_secs(60));
    let (tracer, meter_provider) = mllp::otel::providers(spans.clone(), metrics.clone(), &options);
    // A subscriber of our own, with mllp's layer: the mllp.* events on as span events, logs to
    // stderr only when serving for real.
    let filter = if self_test {
        "warn,mllp=info,mllp::events=debug,ractor=off"
    } else {
        "info,ractor=warn,mllp::events=debug"
    };
    let logs = (!self_test).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    // `try_init`: under `cargo test` another test of this binary may have installed one.
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(logs)
        .with(mllp::otel::layer(&tracer))
        .try_init();

    let lab = Lab::default();
    let router = Router::new()
        .with_state(lab.clone())
        .route("ADT^*", admit)
        .route_with_timeout("ORU^R01", store_results, Duration::from_millis(300))
        .layer(from_fn(audit));

    let seen = Arc::new(Seen::default());
    let observed = Arc::clone(&seen);
    let observer = observer_fn(move |event: &Event<'_>| match event {
        Event::ConnectionStart { .. } => {
            observed.connections.fetch_add(1, Ordering::Relaxed);
        }
        Event::MessageStop { .. } => {
            observed.messages.fetch_add(1, Ordering::Relaxed);
        }
        Event::MessageException { .. } => {
            observed.exceptions.fetch_add(1, Ordering::Relaxed);
        }
        Event::ConnectionStop { .. } => observed.closed.send_modify(|n| *n += 1),
        Event::Escalation { error } => tracing::error!(%error, "receiver is stopping"),
        _ => {}
    });

    let addr = if self_test {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:2576"
    };
    // SIGTERM/SIGINT handlers before the server starts: a signal from then on drains it.
    let shutdown = mllp::shutdown_signal();
    let server = Server::builder()
        .router(router)
        .observer(observer)
        .meter(&meter_provider.meter("mllp"))
        // Every policy, tuned for this lab's partners (docs/configuration.md has the defaults).
        .idle_timeout(Some(Duration::from_secs(300)))
        .frame_timeout(Duration::from_secs(10))
        .handler_timeout(Duration::from_secs(5))
        .write_timeout(Duration::from_secs(10))
        .max_connections(4)
        .max_in_flight(8)
        .max_concurrent_handlers(Some(32))
        .max_message_size(4 << 20)
        .handler_failure(HandlerFailurePolicy::RespondWithFailure)
        .restart(
            RestartPolicy::builder()
                .max_restarts(3)
                .window(Duration::from_secs(30))
                .backoff(Duration::from_millis(50)),
        )
        .shutdown_grace(Duration::from_secs(5))
        .message_trace_limit(Some(500))
        .bind(addr)
        .await?
        .spawn()
        .await?;
    let local = server.local_addr();
    tracing::info!(%local, "lab service listening");

    // The service's own periodic task: a status line from its state and the live connections.
    let stop = CancellationToken::new();
    let status = tokio::spawn({
        let (stop, server, lab) = (stop.clone(), server.clone(), lab.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = every.tick() => {
                        let connections = server.connections().await;
                        tracing::debug!(
                            connections = connections.len(),
                            admissions = lab.admissions.load(Ordering::Relaxed),
                            results = lab.results.load(Ordering::Relaxed),
                            "status"
                        );
                    }
                }
            }
        }
    });

    // What stops the service: SIGTERM/SIGINT, or (self-test) the script's end.
    let script_done = CancellationToken::new();
    let script = self_test.then(|| {
        tokio::spawn(script(
            local.to_string(),
            server.clone(),
            lab.clone(),
            seen.closed.subscribe(),
            script_done.clone(),
        ))
    });
    let signal = async {
        tokio::select! {
            () = shutdown => {}
            () = script_done.cancelled() => {}
        }
    };

    // Serve until the signal, or until the server stops by itself (escalation to `main`).
    let outcome = tokio::select! {
        () = signal => Ok(server.shutdown().await),
        stopped = server.wait() => Err(stopped.err().map_or_else(
            || BoxError::from("server stopped"),
            |error| BoxError::from(error),
        )),
    };
    stop.cancel();
    status.await?;
    let report = outcome?;
    tracing::info!(
        drained = report.drained,
        aborted = report.aborted,
        "lab service stopped"
    );

    if let Some(script) = script {
        script.await??;
        // Everything was answered and seen three ways: observer, state, OpenTelemetry.
        assert_eq!(report.aborted, 0, "the drain finished the work in flight");
        assert!(report.drained >= 1, "{report:?}");
        tracer.force_flush()?;
        meter_provider.force_flush()?;
        let exported = spans.get_finished_spans()?;
        let messages = exported.iter().filter(|s| s.name == "mllp.message").count();
        assert!(messages >= 10, "message spans exported: {messages}");
        let events: Vec<_> = exported
            .iter()
            .flat_map(|s| s.events.iter().map(|e| e.name.to_string()))
            .collect();
        for name in [
            "mllp.connection.start",
            "mllp.connection.stop",
            "mllp.message.start",
            "mllp.message.stop",
            "mllp.message.exception",
        ] {
            assert!(events.iter().any(|e| e == name), "{name} exported");
        }
        let collected = metrics.get_finished_metrics()?;
        let names: Vec<String> = collected
            .iter()
            .flat_map(|m| m.scope_metrics())
            .flat_map(|s| s.metrics())
            .map(|m| m.name().to_owned())
            .collect();
        assert!(
            names.iter().any(|n| n == "mllp.server.messages"),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n == "mllp.server.handler.exceptions"));
        assert!(seen.exceptions.load(Ordering::Relaxed) >= 1);
        assert!(seen.messages.load(Ordering::Relaxed) >= 10);
        assert!(seen.connections.load(Ordering::Relaxed) >= 3);
        println!(
            "lab service self-test passed: {} messages, {} message spans, {} connections",
            seen.messages.load(Ordering::Relaxed),
            messages,
            seen.connections.load(Ordering::Relaxed)
        );
    }
    // Flush and stop the exporters off the runtime's workers.
    tokio::task::spawn_blocking(move || {
        let _ = tracer.shutdown();
        let _ = meter_provider.shutdown();
    })
    .await?;
    Ok(())
}

/// One HL7 message of type `trigger` with control id `id`.
fn hl7(trigger: &str, id: &str) -> Bytes {
    Bytes::from(format!(
        "MSH|^~\\&|ANALYZER|LAB|LIS|HOSP|20260101120000||{trigger}|{id}|P|2.5.1\r\
         PID|1||12345^^^HOSP^MR||DOE^JANE\r\
         OBR|1|||GLU\r\
         OBX|1|NM|GLU||5.4|mmol/L\r"
    ))
}

/// The self-test: pipelined sends, a route deadline, runtime control, then a drain with a
/// message in flight.
async fn script(
    addr: String,
    server: mllp::ServerHandle,
    lab: Lab,
    mut closed: tokio::sync::watch::Receiver<u64>,
    done: CancellationToken,
) -> Result<(), BoxError> {
    // Pipelining: up to 8 messages awaiting their ACKs on one connection.
    let mut client = Client::with_config(addr.clone(), ClientConfig::default().max_in_flight(8));
    let batch: Vec<Bytes> = (0..12)
        .map(|i| match i % 3 {
            0 => hl7("ADT^A01", &format!("ADT{i}")),
            _ => hl7("ORU^R01", &format!("ORU{i}")),
        })
        .collect();
    let results = client.send_all(batch).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(lab.admissions.load(Ordering::Relaxed), 4);
    assert_eq!(lab.results.load(Ordering::Relaxed), 8);

    // The route's 300 ms deadline answers a stuck handler AE, as handler_timeout would; a store
    // error is AE too, with a generic text.
    for id in ["STUCK1", "FAIL1"] {
        match client.send(hl7("ORU^R01", id)).await {
            Err(mllp::ClientError::Negative { code, .. }) => {
                assert_eq!(code, mllp::ack::AckCode::AE, "{id}");
            }
            other => return Err(format!("{id}: expected AE, got {other:?}").into()),
        }
    }

    // Ranch-style control: suspend (live connections go on), resume, close one connection.
    server.suspend().await;
    client.send(hl7("ADT^A08", "LIVE1")).await?;
    server.resume().await;
    let mut second = Client::new(addr.clone());
    second.send(hl7("ADT^A02", "SECOND1")).await?;
    let ids: Vec<u64> = server.connections().await.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let before = *closed.borrow();
    assert!(server.close_connection(ids[0]));
    closed.wait_for(|n| *n > before).await?;
    // The first client's connection was the one closed: it notices before it writes, and the
    // message goes out on a fresh connection.
    client.send(hl7("ADT^A03", "AFTER-CLOSE")).await?;
    server.set_max_connections(8)?;

    // Drain: a slow message is in flight when the "signal" comes; it is still answered.
    let mut slow = Client::new(addr);
    let slow_started = lab.slow_started.notified();
    let in_flight = tokio::spawn(async move { slow.send(hl7("ORU^R01", "SLOW1")).await });
    slow_started.await;
    done.cancel();
    let answered = in_flight.await?;
    assert!(
        answered.is_ok(),
        "the message in flight was answered: {answered:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The example's self-test, run by `cargo test` (the example is built with `test = true`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lab_service_self_test() {
        super::run(true).await.expect("self-test passes");
    }
}

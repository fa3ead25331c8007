//! Routing by trigger event, with a logging middleware, a rejecting validation middleware and a
//! tower rate limit.
//!
//! Run with: `cargo run --example adt_router`
//! (It uses tower's `buffer` and `limit` features for the rate limit: a service of your own needs
//! `tower = { version = "0.5", features = ["buffer", "limit"] }`.)
//! Then send it messages: `cargo run -- send --to 127.0.0.1:2575 tests/fixtures/`
//! (ADT messages are accepted; the other types have no route and are answered AR or CR, so `send`
//! exits with status 1. `adt_a08.hl7` asks for an ACK only on error (MSH-15 = `ER`), so `send`
//! waits `--timeout`, 30 s, for it before counting it accepted.)

use std::time::Duration;

use mllp::Server;
use mllp::ack::ErrorCode;
use mllp::app::{HandlerError, Next, Request, Response, Router, from_fn};
use tower::ServiceBuilder;

/// A01: admit. The handler knows only the business outcome; the ACK is built for it.
async fn admit(req: Request) -> Result<(), HandlerError> {
    let pid = req.message().segment("PID").ok_or_else(|| {
        HandlerError::reject(ErrorCode::SegmentSequenceError, "PID segment required")
    })?;
    let _ = pid; // store the patient here
    Ok(())
}

/// A08: update.
async fn update(_req: Request) {}

/// Other ADT events are accepted and ignored.
async fn other_adt(_req: Request) {}

/// Logs MSH metadata only: no field outside MSH ever goes into a log.
async fn log(req: Request, next: Next) -> Response {
    let kind = format!(
        "{}^{}",
        req.message().message_code().unwrap_or("?"),
        req.message().trigger_event().unwrap_or("?")
    );
    let control_id = req.message().control_id().unwrap_or("").to_owned();
    let response = next.run(req).await;
    tracing::info!(hl7.message_type = %kind, hl7.control_id = %control_id, status = ?response.status(), "handled");
    response
}

/// Rejects messages that do not say who sent them (MSH-4) before they reach a handler.
async fn require_sending_facility(req: Request, next: Next) -> Response {
    if req.message().sending_facility().is_empty() {
        return Response::reject(
            ErrorCode::RequiredFieldMissing,
            "MSH-4 (sending facility) is required",
        );
    }
    next.run(req).await
}

#[tokio::main]
async fn main() -> Result<(), mllp::Error> {
    tracing_subscriber::fmt()
        .with_env_filter("info,ractor=warn")
        .init();
    let router = Router::new()
        .route("ADT^A01", admit)
        .route("ADT^A08", update)
        .route("ADT^*", other_adt)
        .layer(from_fn(log))
        .layer(from_fn(require_sending_facility))
        // At most 100 messages per second across all connections; the rest wait their turn.
        .layer(
            ServiceBuilder::new()
                .buffer(1024)
                .rate_limit(100, Duration::from_secs(1))
                .into_inner(),
        );
    for route in router.routes() {
        println!("route {route}");
    }
    // SIGTERM/SIGINT handlers before the address is announced: a signal from then on drains.
    let shutdown = mllp::shutdown_signal();
    // 127.0.0.1:2575, or MLLP_ADDR (tests/examples.rs runs this example on a free port).
    let addr = std::env::var("MLLP_ADDR").unwrap_or_else(|_| "127.0.0.1:2575".to_owned());
    let server = Server::builder().router(router).bind(addr).await?;
    println!("listening on {}", server.local_addr());
    let report = server.serve_with_shutdown(shutdown).await?;
    println!("drained {}, aborted {}", report.drained, report.aborted);
    Ok(())
}

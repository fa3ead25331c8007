//! `mllp`: an MLLP (HL7 v2 over TCP) receiver and sender, on an OTP-style supervision tree.
//!
//! Bytes arrive through a strict [framer](frame), become a zero-copy [HL7 v2 message](hl7), run
//! through [parser plugins, middleware and a router](app) to your handler, and are answered with
//! exactly one standard-conformant [acknowledgment](ack) (AA/AE/AR, CA/CE/CR, ERR by version).
//! Each connection is a supervised actor, each message runs in its own task under a deadline,
//! and everything is visible as `tracing` spans and OpenTelemetry metrics ([`telemetry`]).
//!
//! ```text
//! Server                       root supervisor (rest_for_one)
//! ├── ConnectionSupervisor     connection slots (max_connections) and the registry
//! │   └── Connection × N       one per socket, never restarted
//! │       └── handler task     one per message, under handler_timeout
//! └── Acceptor                 accept loop in its own task, restarted under RestartPolicy
//! ```
//!
//! # Quick start
//!
//! ```no_run
//! use mllp::app::{HandlerError, Request, Router};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mllp::Error> {
//!     let router = Router::new()
//!         .route("ADT^A01", |req: Request| async move {
//!             // Ok(()) is acknowledged AA; Err(..) AE; HandlerError::reject(..) AR.
//!             req.message().segment("PID").map(|_| ()).ok_or_else(|| {
//!                 HandlerError::reject(mllp::ack::ErrorCode::SegmentSequenceError, "no PID")
//!             })
//!         })
//!         .route("ADT^*", |_req: Request| async {});
//!     let shutdown = mllp::shutdown_signal(); // from here on, SIGTERM/SIGINT drains
//!     let server = mllp::Server::builder().router(router).bind("127.0.0.1:2575").await?;
//!     println!("listening on {}", server.local_addr());
//!     let report = server.serve_with_shutdown(shutdown).await?;
//!     println!("drained {}, aborted {}", report.drained, report.aborted);
//!     Ok(())
//! }
//! ```
//!
//! Sending is [`Client`]: it checks every ACK's MSA-2 against the MSH-10 it sent, and closes
//! the connection on a reply timeout so that a late ACK is never paired with the next message.
//!
//! # Cancel safety
//!
//! [`ServerHandle::shutdown`] may be dropped: shutdown, once started, completes in the
//! background. A handler future is dropped (and its task aborted) when it passes
//! `handler_timeout` or when the shutdown grace ends; write handlers so that an abort between
//! two awaits leaves nothing half-done that was acknowledged (nothing is acknowledged before
//! the handler returns). [`Client::send`] may be dropped; the connection is then in an unknown
//! state and is closed before the next send.
//!
//! # Features
//!
//! - `otlp` (default): `mllp::otel`, opt-in OTLP/HTTP export wiring for traces and metrics.
//! - `sqlite` (default): [`store::SqliteStore`], the embedded message store (SQLite compiled in).
//! - `nats` (off by default): `store::JetStreamStore`, the NATS JetStream store for several
//!   receivers behind a balancer, and the relay's JetStream source (async-nats).
//! - `admin` (off by default): `mllp::admin`, the HTTP admin endpoint (health, readiness, Prometheus
//!   metrics, JSON status) on axum.
//!
//! The `mllp` command-line tool (`serve`, `send`, `bench`, `inbox`, `relay`, `top`) is a
//! separate package of the workspace, `mllp-cli`, with all four features on, so this library's
//! dependencies never include the CLI's.
//!
//! Minimum supported Rust version: 1.89.
//!
//! # Further reading
//!
//! - [`docs::architecture`]: the tree, the life of a message, internals.
//! - [`docs::configuration`]: every setting, its default and why.
//! - [`docs::telemetry`]: the telemetry contract.
//! - [`docs::tls`]: TLS, mutual TLS, admission, reload.
//! - [`docs::operations`]: running `mllp serve`, `mllp send`, `mllp inbox` and `mllp relay`.
//! - [`docs::scale_out`]: N receivers on a replicated JetStream log, behind haproxy.

pub mod ack;
#[cfg(feature = "admin")]
pub mod admin;
pub mod app;
pub mod client;
pub mod forward;
pub mod frame;
pub mod hl7;
pub mod inbox;
#[cfg(feature = "otlp")]
pub mod otel;
// The HL7 `Protocol` for mllp-actors; its public types are re-exported from `server`.
mod protocol;
#[cfg(any(feature = "sqlite", feature = "nats"))]
pub mod relay;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;

/// The `bytes` crate, re-exported: messages and payloads are `Bytes` (`Client::send_all`,
/// `Message::parse`, `Ack::into_bytes`), so no separate dependency is needed to build them.
pub use bytes;
pub use client::{Acknowledgment, Backoff, Client, ClientConfig, ClientError};
/// The `opentelemetry` API crate this one is built with, re-exported: `ServerBuilder::meter` and
/// `StoreLayer::meter` take its `Meter`, and one from another version would not fit them.
pub use opentelemetry;
/// The OpenTelemetry SDK this one is built with (features `admin`, `otlp`), re-exported: the
/// admin endpoint's Prometheus reader joins an `SdkMeterProvider` of exactly this version.
#[cfg(any(feature = "admin", feature = "otlp"))]
pub use opentelemetry_sdk;
pub use server::{
    ConfigError, ConnectionInfo, ConnectionSnapshot, Error, HandlerFailurePolicy, RestartPolicy,
    RestartPolicyBuilder, Server, ServerBuilder, ServerConfig, ServerHandle, ServerState,
    ShutdownReport, Snapshot, shutdown_signal,
};
pub use telemetry::{Event, Hl7, Observer, observer_fn};

/// Long-form documentation, rendered from `docs/`.
pub mod docs {
    #[doc = include_str!("../docs/architecture.md")]
    pub mod architecture {}
    #[doc = include_str!("../docs/configuration.md")]
    pub mod configuration {}
    #[doc = include_str!("../docs/telemetry.md")]
    pub mod telemetry {}
    #[doc = include_str!("../docs/tls.md")]
    pub mod tls {}
    #[doc = include_str!("../docs/operations.md")]
    pub mod operations {}
    #[doc = include_str!("../docs/scale-out.md")]
    pub mod scale_out {}
}

/// The README's code blocks, compiled as doctests so the quick start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

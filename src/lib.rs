//! `mllp`: an MLLP (HL7 v2 over TCP) server library.

pub mod ack;
pub mod app;
mod client;
pub mod frame;
pub mod hl7;
pub mod inbox;
#[cfg(feature = "otlp")]
pub mod otel;
pub mod server;
pub mod telemetry;

pub use client::{Acknowledgment, Backoff, Client, ClientConfig, ClientError};
pub use server::{
    ConfigError, ConnectionInfo, ConnectionSnapshot, Error, HandlerFailurePolicy, RestartPolicy,
    Server, ServerBuilder, ServerHandle, ShutdownReport, shutdown_signal,
};
pub use telemetry::{Event, Observer};

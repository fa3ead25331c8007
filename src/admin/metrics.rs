//! `/metrics`: the server's OpenTelemetry instruments in the Prometheus text format.
//!
//! The exporter is `opentelemetry-prometheus` (the OpenTelemetry project's own, released with
//! every SDK version: 0.33 here), a metric reader that a meter provider collects from on each
//! scrape; the text comes from the `prometheus` crate's encoder. Names follow the
//! OpenTelemetry-to-Prometheus rules: dots become underscores, the unit is appended
//! (`_seconds`, `_bytes`; annotations such as `{message}` are dropped), counters end in
//! `_total`, and each series has an `otel_scope_name="mllp"` label. docs/operations.md lists
//! every name.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, Registry, TextEncoder};

use super::AdminState;

/// The Prometheus exporter's metric reader: give it to the meter provider the server records
/// into (`SdkMeterProvider::builder().with_reader(reader)`).
pub type PrometheusReader = opentelemetry_prometheus::PrometheusExporter;

/// The registry `/metrics` encodes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PrometheusMetrics {
    registry: Registry,
}

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl PrometheusMetrics {
    /// A registry and the reader that feeds it. Add the reader to the meter provider whose
    /// meter the server records into ([`ServerBuilder::meter`](crate::ServerBuilder::meter),
    /// or the global provider), and the metrics to [`AdminState::metrics`].
    ///
    /// # Errors
    /// The exporter could not register with its registry (it never does with a new one).
    pub fn new() -> Result<(Self, PrometheusReader), opentelemetry_sdk::error::OTelSdkError> {
        let registry = Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()?;
        Ok((Self { registry }, reader))
    }

    /// Collects every instrument now and encodes the text exposition.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    let Some(metrics) = state.metrics.clone() else {
        return (StatusCode::NOT_FOUND, "no metrics exporter configured\n").into_response();
    };
    // Collecting runs every instrument's callbacks: off the async workers.
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(text)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
        }
        Ok(Err(error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {error}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "collection failed\n").into_response(),
    }
}

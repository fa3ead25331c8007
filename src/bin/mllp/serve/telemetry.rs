//! Logs, and with the `otlp` feature trace and metric export, for `serve`.

use mllp::admin::PrometheusReader;

use super::settings::TelemetrySettings;
use crate::logging;

/// What was installed; [`Telemetry::shutdown`] flushes the exporters.
pub(super) struct Telemetry {
    #[cfg(feature = "otlp")]
    guard: mllp::otel::OtelGuard,
    /// The meter provider of the admin endpoint's exporter, when the logs-only wiring installed
    /// it (without the `otlp` feature).
    #[cfg(not(feature = "otlp"))]
    meter: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

/// Installs the global subscriber (and exporters when `--otlp-endpoint` or the
/// `OTEL_EXPORTER_OTLP_*` variables ask for them).
#[cfg(feature = "otlp")]
///
/// # Errors
/// The reason, naming the flag or variable at fault.
pub(super) fn init(
    settings: &TelemetrySettings,
    prometheus: Option<PrometheusReader>,
) -> Result<Telemetry, String> {
    use mllp::otel::{Export, LogFormat, OtelError, OtelOptions};

    let mut options = OtelOptions::default()
        .filter(logging::SERVE_FILTER)
        .log_writer(logging::batched())
        .log_format(match settings.log_format {
            crate::config::LogFormat::Text => LogFormat::Text,
            crate::config::LogFormat::Json => LogFormat::Json,
        });
    if let Some(endpoint) = &settings.otlp_endpoint {
        options = options.endpoint(endpoint.clone());
    }
    let installed = match prometheus {
        Some(reader) => mllp::otel::init_with_metric_reader(options, reader),
        None => mllp::otel::init(options),
    };
    let guard = installed.map_err(|e| {
        let text = crate::exit::chain(&e);
        match e {
            OtelError::Endpoint { .. } | OtelError::Exporter { .. } => {
                format!("invalid --otlp-endpoint (or OTEL_EXPORTER_OTLP_* variable): {text}")
            }
            OtelError::Filter { .. } => format!("invalid RUST_LOG: {text}"),
            _ => format!("cannot set up logging and telemetry: {text}"),
        }
    })?;
    match guard.export() {
        Export::Otlp { endpoint } => tracing::info!(
            endpoint = endpoint
                .as_deref()
                .unwrap_or("from OTEL_EXPORTER_OTLP_* variables"),
            "exporting traces and metrics over OTLP/HTTP"
        ),
        Export::Stdout => tracing::info!("exporting traces and metrics to stdout"),
        _ => {}
    }
    Ok(Telemetry { guard })
}

/// Installs the global subscriber, and the admin endpoint's meter provider as the global one.
#[cfg(not(feature = "otlp"))]
pub(super) fn init(
    settings: &TelemetrySettings,
    prometheus: Option<PrometheusReader>,
) -> Result<Telemetry, String> {
    logging::init(settings.log_format, logging::SERVE_FILTER)?;
    let meter = prometheus.map(|reader| {
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_reader(reader)
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        provider
    });
    Ok(Telemetry { meter })
}

impl Telemetry {
    /// Exports what is still buffered (the spans of the last messages) and stops the
    /// exporters. A failed export is reported, not fatal: the messages themselves are safe.
    pub(super) async fn shutdown(self) {
        #[cfg(not(feature = "otlp"))]
        if let Some(meter) = self.meter {
            let _ = meter.shutdown();
        }
        #[cfg(feature = "otlp")]
        {
            let guard = self.guard;
            // Blocks until the exporters finish (bounded by their timeouts).
            match tokio::task::spawn_blocking(move || guard.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    error = %crate::exit::chain(&e),
                    "telemetry export did not finish"
                ),
                Err(e) => tracing::warn!(error = %e, "telemetry shutdown task failed"),
            }
        }
    }
}

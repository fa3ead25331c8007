//! Run with: `OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 cargo run --example otel`
//! (or without the variable: traces and metrics are then printed to stdout, as text).
//!
//! An MLLP receiver exporting its traces and metrics over OTLP/HTTP (protobuf) to an
//! OpenTelemetry Collector, Jaeger or Tempo. Poke it with any MLLP sender on 127.0.0.1:2575
//! (`mllp send`, or a few lines of Python). `RUST_LOG` overrides the log filter (default
//! `info,ractor=warn`: ractor's per-actor spans are noise here); `OTEL_SERVICE_NAME` the
//! service name. Ctrl-C stops the server, then the telemetry pipeline is flushed and shut down.
//!
//! Already have your own providers and subscriber? Skip `mllp::otel::init` and attach mllp:
//!
//! ```ignore
//! let meter = my_meter_provider.meter("mllp");
//! let server = mllp::Server::builder().meter(&meter).router(router).bind(addr).await?;
//! // ...and in your subscriber, next to your other layers:
//! tracing_subscriber::registry()
//!     .with(EnvFilter::new("info,ractor=warn"))
//!     .with(tracing_opentelemetry::layer().with_tracer(my_tracer_provider.tracer("mllp")))
//!     .init();
//! ```
//!
//! (With your meter provider installed globally before the server is built,
//! `ServerBuilder::meter` is not even needed: the server records into the global provider.)

use std::time::Duration;

use mllp::app::{HandlerError, Request, Router};
use mllp::otel::{Fallback, OtelOptions};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First thing: the server takes its metric instruments from the global meter provider
    // when it is built, so the provider must be installed before.
    let telemetry = mllp::otel::init(
        OtelOptions::default()
            .service_name("mllp-example")
            .filter("info,ractor=warn")
            // Without OTEL_EXPORTER_OTLP_ENDPOINT, show the telemetry on stdout.
            .fallback(Fallback::Stdout)
            .metrics_interval(Duration::from_secs(10)),
    )?;

    let router = Router::new()
        .route("ADT^*", |req: Request| {
            // The handler's own spans nest under the `mllp.message` span of its message.
            async move {
                tracing::info!(
                    hl7.control_id = req.message().control_id(),
                    "admission stored"
                );
            }
            .instrument(tracing::info_span!("store_admission"))
        })
        .route("ORU^R01", |_req: Request| async {
            Err::<(), _>(HandlerError::internal("results store unavailable"))
        });

    // SIGTERM/SIGINT handlers before the address is announced: a signal from then on drains.
    let shutdown = mllp::shutdown_signal();
    // 127.0.0.1:2575, or MLLP_ADDR (tests/examples.rs runs this example on a free port).
    let addr = std::env::var("MLLP_ADDR").unwrap_or_else(|_| "127.0.0.1:2575".to_owned());
    let server = mllp::Server::builder().router(router).bind(addr).await?;
    tracing::info!(addr = %server.local_addr(), "listening");
    let report = server.serve_with_shutdown(shutdown).await?;
    tracing::info!(
        drained = report.drained,
        aborted = report.aborted,
        "server stopped"
    );

    // Export what is still buffered and stop the exporter threads. Blocking: off the runtime.
    telemetry.shutdown_async().await?;
    Ok(())
}

//! Opt-in OpenTelemetry wiring: one call that installs logging, OTLP trace export and OTLP
//! metric export for a process that embeds an mllp server (and for `mllp serve`).
//!
//! The core library never installs anything by itself: it only emits `tracing` spans and
//! records metrics through the `opentelemetry` API (docs/telemetry.md). This module is the
//! usual wiring, for services that have none of their own. Call [`init`] first thing in `main`,
//! **before** building the server (the server takes its instruments from the global meter
//! provider when it is built), keep the returned [`OtelGuard`] alive, and shut it down after the
//! server stopped so the last spans and metrics are exported:
//!
//! ```no_run
//! use mllp::otel::{OtelOptions, init};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = init(OtelOptions::default().service_name("lab-receiver"))?;
//! let server = mllp::Server::builder().bind("0.0.0.0:2575").await?;
//! server.serve_with_shutdown(mllp::shutdown_signal()).await?;
//! // Not `shutdown()` here: it blocks the thread until the exporters are done, and this is
//! // async code. `shutdown_async` runs it on tokio's blocking pool.
//! telemetry.shutdown_async().await?;
//! # Ok(()) }
//! ```
//!
//! **Composing it with your own telemetry.** The parts of [`init`] are public:
//! [`providers`] builds the tracer and meter providers around exporters you choose (OTLP with
//! your own settings, an in-memory exporter in tests, any other);
//! [`init_with`] installs the usual subscriber and the globals around providers you built; and
//! [`layer`] is the tracing-opentelemetry layer as `init` configures it, to add to a
//! subscriber of your own:
//!
//! ```
//! use mllp::otel::{OtelOptions, layer, providers};
//! use opentelemetry_sdk::metrics::InMemoryMetricExporter;
//! use opentelemetry_sdk::trace::InMemorySpanExporter;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let spans = InMemorySpanExporter::default();
//! let metrics = InMemoryMetricExporter::default();
//! let (tracer, meter) = providers(spans.clone(), metrics.clone(), &OtelOptions::default());
//! let subscriber = tracing_subscriber::registry().with(layer(&tracer));
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::info_span!("mllp.example").in_scope(|| {});
//! });
//! tracer.force_flush()?;
//! assert_eq!(spans.get_finished_spans()?.len(), 1);
//! // Pass `&meter.meter("mllp")` to `ServerBuilder::meter`, or set it globally.
//! # drop(meter);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What [`init`] installs:
//!
//! - a global `tracing` subscriber: a registry with an [`EnvFilter`] (`RUST_LOG` when set, else
//!   [`OtelOptions::filter`], default `info,ractor=warn`), a `fmt` layer writing text or JSON
//!   lines to stderr, and a `tracing-opentelemetry` layer feeding the tracer provider;
//! - an `SdkTracerProvider` with a batch span processor (its own thread) and an OTLP/HTTP
//!   protobuf span exporter posting to `<endpoint>/v1/traces`, set as the global tracer provider;
//! - an `SdkMeterProvider` with a periodic reader (its own thread) and an OTLP/HTTP protobuf
//!   metric exporter posting to `<endpoint>/v1/metrics`, set as the global meter provider.
//!
//! **Without an endpoint** ([`OtelOptions::endpoint`] unset and none of
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` set), [`OtelOptions::fallback`] decides:
//! [`Fallback::LogsOnly`] (the default) installs the subscriber with its `fmt` layer only and no
//! provider, so a plain `mllp serve` prints logs and pays nothing for traces;
//! [`Fallback::Stdout`] exports traces and metrics to stdout instead, in `opentelemetry-stdout`'s
//! human-readable text format (logs stay on stderr), which is handy to see the telemetry while
//! developing.
//!
//! The exporters use `reqwest`'s blocking client without TLS: endpoints must be `http://`
//! (a collector on the same host or a sidecar). An `https://` endpoint is refused by [`init`]
//! with [`OtelError::Endpoint`] rather than failing every export later.
//!
//! To attach mllp to telemetry you already have, skip this module: pass your meter to
//! [`ServerBuilder::meter`](crate::ServerBuilder::meter) (or install your meter provider
//! globally before building the server), and add `tracing_opentelemetry::layer()` with your
//! tracer to your own subscriber.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{MeterProviderBuilder, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt as tfmt};

/// The filter used when `RUST_LOG` is unset and [`OtelOptions::filter`] was not changed:
/// `info` for everything, `warn` for ractor, whose per-actor spans and debug events are noise
/// for an MLLP operator.
pub const DEFAULT_FILTER: &str = "info,ractor=warn";

/// The service name used when `OTEL_SERVICE_NAME` is unset and
/// [`OtelOptions::service_name`] was not changed.
pub const DEFAULT_SERVICE_NAME: &str = "mllp";

const ENDPOINT_VARS: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How [`init`] sets up logging and telemetry export.
///
/// Build one with [`OtelOptions::default`] and the setters (or assign the public fields).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtelOptions {
    /// Base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector, Jaeger, Tempo...), such as
    /// `http://localhost:4318`; traces go to `<endpoint>/v1/traces` and metrics to
    /// `<endpoint>/v1/metrics`. Must be `http://`. Default is `None`: the standard
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables decide, and without them [`fallback`] applies.
    ///
    /// [`fallback`]: OtelOptions::fallback
    pub endpoint: Option<String>,
    /// `service.name` of the exported resource. `OTEL_SERVICE_NAME`, when set, wins (the
    /// operator's choice at run time). Default is `"mllp"`.
    pub service_name: String,
    /// How log lines are written to stderr. Default is [`LogFormat::Text`].
    pub log_format: LogFormat,
    /// Where log lines go. Default is [`LogWriter::stderr`]: each line written to stderr at
    /// once, in one `write`.
    pub log_writer: LogWriter,
    /// `EnvFilter` directives for logs and exported spans; `RUST_LOG`, when set, wins.
    /// Default is [`DEFAULT_FILTER`] (`info,ractor=warn`).
    pub filter: String,
    /// What to do when no OTLP endpoint is configured. Default is [`Fallback::LogsOnly`].
    pub fallback: Fallback,
    /// How often metrics are exported. Default is `None`: `OTEL_METRIC_EXPORT_INTERVAL`, else
    /// the SDK's 60 s.
    pub metrics_interval: Option<Duration>,
}

impl Default for OtelOptions {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            log_format: LogFormat::Text,
            log_writer: LogWriter::stderr(),
            filter: DEFAULT_FILTER.to_owned(),
            fallback: Fallback::LogsOnly,
            metrics_interval: None,
        }
    }
}

impl OtelOptions {
    /// Sets [`endpoint`](OtelOptions::endpoint). Default is `None` (the `OTEL_EXPORTER_OTLP_*`
    /// variables, else [`fallback`](OtelOptions::fallback)).
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets [`service_name`](OtelOptions::service_name). Default is `"mllp"`.
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Sets [`log_format`](OtelOptions::log_format). Default is [`LogFormat::Text`].
    #[must_use]
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = format;
        self
    }

    /// Sets [`log_writer`](OtelOptions::log_writer). Default is [`LogWriter::stderr`].
    #[must_use]
    pub fn log_writer(mut self, writer: LogWriter) -> Self {
        self.log_writer = writer;
        self
    }

    /// Sets [`filter`](OtelOptions::filter). Default is [`DEFAULT_FILTER`] (`info,ractor=warn`).
    #[must_use]
    pub fn filter(mut self, directives: impl Into<String>) -> Self {
        self.filter = directives.into();
        self
    }

    /// Sets [`fallback`](OtelOptions::fallback). Default is [`Fallback::LogsOnly`].
    #[must_use]
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Sets [`metrics_interval`](OtelOptions::metrics_interval). Default is `None`
    /// (`OTEL_METRIC_EXPORT_INTERVAL`, else the SDK's 60 s).
    #[must_use]
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = Some(interval);
        self
    }
}

/// Where [`init`] writes log lines: stderr, or a function of yours that takes each whole line
/// (with its newline), such as one that batches lines into fewer writes.
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
/// let sink = lines.clone();
/// let options = mllp::otel::OtelOptions::default().log_writer(mllp::otel::LogWriter::new(
///     move |line: &[u8]| sink.lock().unwrap().extend_from_slice(line),
/// ));
/// # drop(options);
/// ```
#[derive(Clone, Default)]
pub struct LogWriter(Option<Arc<WriteLine>>);

/// A function that takes one whole log line.
type WriteLine = dyn Fn(&[u8]) + Send + Sync;

impl LogWriter {
    /// Each line written to stderr at once, in one `write` (the default).
    #[must_use]
    pub fn stderr() -> Self {
        LogWriter(None)
    }

    /// Each line handed to `write`, whole, with its newline. It runs on the thread that logs,
    /// so it should not block for long; a line it drops is lost.
    pub fn new(write: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        LogWriter(Some(Arc::new(write)))
    }
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "LogWriter(custom)"
        } else {
            "LogWriter(stderr)"
        })
    }
}

/// Two writers are equal when both are stderr, or both the same function (one `Arc`).
impl PartialEq for LogWriter {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for LogWriter {}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self.0.as_deref())
    }
}

/// The writer of one line, made by [`LogWriter`] for the `fmt` layer.
pub struct LineWriter<'a>(Option<&'a WriteLine>);

impl fmt::Debug for LineWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineWriter").finish_non_exhaustive()
    }
}

impl std::io::Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        match self.0 {
            Some(write) => {
                write(line);
                Ok(line.len())
            }
            None => std::io::stderr().write(line),
        }
    }

    fn write_all(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self.0 {
            Some(write) => {
                write(line);
                Ok(())
            }
            None => std::io::stderr().write_all(line),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines (`tracing-subscriber`'s full format), coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the current span and its parents.
    Json,
}

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    /// Parses `text` or `json` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("text") {
            Ok(LogFormat::Text)
        } else if s.eq_ignore_ascii_case("json") {
            Ok(LogFormat::Json)
        } else {
            Err(UnknownLogFormat)
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A log format other than `text` or `json` was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format, expected text or json")]
#[non_exhaustive]
pub struct UnknownLogFormat;

/// What [`init`] does when no OTLP endpoint is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fallback {
    /// Logs only: no tracer or meter provider is installed, spans and metrics go nowhere.
    #[default]
    LogsOnly,
    /// Traces and metrics are printed to stdout in `opentelemetry-stdout`'s human-readable text
    /// format (logs stay on stderr).
    Stdout,
}

/// Where telemetry goes, as decided by [`init`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Export {
    /// OTLP/HTTP protobuf. `endpoint` is the base URL given in the options, or `None` when the
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables decided.
    Otlp {
        /// The configured base URL, if it came from [`OtelOptions::endpoint`].
        endpoint: Option<String>,
    },
    /// Text to stdout ([`Fallback::Stdout`]).
    Stdout,
    /// Nothing: logs only ([`Fallback::LogsOnly`]).
    LogsOnly,
    /// Providers given to [`init_with`].
    Custom,
}

/// Why [`init`] or [`OtelGuard::shutdown`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The log filter (`RUST_LOG`, or [`OtelOptions::filter`] when it is unset) is not a valid
    /// list of `EnvFilter` directives.
    #[error("invalid log filter {directives:?}")]
    Filter {
        /// The directives that did not parse.
        directives: String,
        /// The parser's complaint.
        #[source]
        source: BoxError,
    },
    /// The OTLP endpoint (from the options or an `OTEL_EXPORTER_OTLP_*ENDPOINT` variable) is
    /// not a plain `http://` URL: TLS is not built in.
    #[error("unsupported otlp endpoint {endpoint:?}: only http:// is supported")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
    },
    /// An OTLP exporter could not be built (a malformed endpoint, header or timeout in the
    /// options or the `OTEL_EXPORTER_OTLP_*` variables).
    #[error("could not build the otlp {signal} exporter")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The exporter's complaint.
        #[source]
        source: BoxError,
    },
    /// A global `tracing` subscriber was already installed (by the embedding service or an
    /// earlier [`init`]); nothing was changed.
    #[error("a global tracing subscriber is already installed")]
    SubscriberInstalled(#[source] BoxError),
    /// Flushing or shutting down a provider failed (an export timed out or was refused); what
    /// could be exported was.
    #[error("could not flush or shut down the {signal} provider")]
    Shutdown {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's complaint.
        #[source]
        source: BoxError,
    },
}

/// Keeps the telemetry pipeline installed by [`init`] alive; flushes and shuts it down on
/// [`shutdown`](OtelGuard::shutdown) or when dropped.
///
/// Shut it down after the server has stopped, so the spans of the last messages are exported.
/// Shutdown blocks the calling thread until the exporters have finished (bounded by the
/// exporters' timeouts, 10 s by default); from async code, call it from
/// `tokio::task::spawn_blocking` or at the very end of `main`.
#[must_use = "dropping the guard shuts telemetry down at once"]
pub struct OtelGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    export: Export,
}

impl fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelGuard")
            .field("export", &self.export)
            .field("running", &(self.tracer.is_some() || self.meter.is_some()))
            .finish()
    }
}

impl OtelGuard {
    /// Where telemetry goes.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// The tracer provider, unless logs only. Also installed as the global tracer provider.
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.tracer.as_ref()
    }

    /// The meter provider, unless logs only. Also installed as the global meter provider.
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.meter.as_ref()
    }

    /// Exports every finished span and the current metrics now, and waits for it.
    ///
    /// # Errors
    /// [`OtelError::Shutdown`] when an export failed or timed out.
    pub fn force_flush(&self) -> Result<(), OtelError> {
        let traces = match &self.tracer {
            Some(provider) => provider
                .force_flush()
                .map_err(|e| shutdown_error("traces", e)),
            None => Ok(()),
        };
        let metrics = match &self.meter {
            Some(provider) => provider
                .force_flush()
                .map_err(|e| shutdown_error("metrics", e)),
            None => Ok(()),
        };
        traces.and(metrics)
    }

    /// Flushes what is pending and shuts both providers down. Spans and metrics recorded
    /// afterwards are dropped; logs keep going to stderr.
    ///
    /// Blocks the calling thread until the exporters are done: from async code, use
    /// [`shutdown_async`](Self::shutdown_async) instead.
    ///
    /// # Errors
    /// [`OtelError::Shutdown`] when the final export failed or timed out.
    pub fn shutdown(mut self) -> Result<(), OtelError> {
        self.close()
    }

    /// [`shutdown`](Self::shutdown) for async code: runs it on tokio's blocking pool
    /// (`spawn_blocking`), so no runtime worker is blocked while the exporters finish. Must be
    /// called within a tokio runtime.
    ///
    /// # Errors
    /// [`OtelError::Shutdown`] when the final export failed or timed out, or the blocking task
    /// could not run.
    pub async fn shutdown_async(self) -> Result<(), OtelError> {
        match tokio::task::spawn_blocking(move || self.shutdown()).await {
            Ok(result) => result,
            Err(error) => Err(OtelError::Shutdown {
                signal: "traces and metrics",
                source: Box::new(error),
            }),
        }
    }

    fn close(&mut self) -> Result<(), OtelError> {
        let traces = match self.tracer.take() {
            Some(provider) => provider.shutdown().map_err(|e| shutdown_error("traces", e)),
            None => Ok(()),
        };
        let metrics = match self.meter.take() {
            Some(provider) => provider
                .shutdown()
                .map_err(|e| shutdown_error("metrics", e)),
            None => Ok(()),
        };
        traces.and(metrics)
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::warn!(error = %error, "telemetry shutdown failed");
        }
    }
}

fn shutdown_error(
    signal: &'static str,
    error: opentelemetry_sdk::error::OTelSdkError,
) -> OtelError {
    OtelError::Shutdown {
        signal,
        source: Box::new(error),
    }
}

/// Installs logging, trace export and metric export for this process (see the
/// [module docs](self)) and returns the guard that keeps them running.
///
/// Call it once, first thing in `main`, before building the server.
///
/// # Errors
/// [`OtelError::Filter`] for a bad `RUST_LOG` or filter, [`OtelError::Endpoint`] for a
/// non-`http://` endpoint, [`OtelError::Exporter`] when an exporter cannot be built,
/// [`OtelError::SubscriberInstalled`] when a global subscriber already exists. On error nothing
/// was installed.
pub fn init(options: OtelOptions) -> Result<OtelGuard, OtelError> {
    init_extra(options, None)
}

/// [`init`], with one more metric reader on the meter provider: the Prometheus exporter of
/// the admin endpoint ([`crate::admin::PrometheusMetrics`]), so that `/metrics` and OTLP export
/// the same instruments. Without an OTLP endpoint (logs only), a meter provider with this
/// reader alone is installed as the global one, so the server still records its metrics.
///
/// # Errors
/// As [`init`].
#[cfg(feature = "admin")]
pub fn init_with_metric_reader(
    options: OtelOptions,
    reader: impl opentelemetry_sdk::metrics::reader::MetricReader,
) -> Result<OtelGuard, OtelError> {
    init_extra(
        options,
        Some(Box::new(move |builder: MeterProviderBuilder| {
            builder.with_reader(reader)
        })),
    )
}

/// Adds readers to a meter provider being built.
type ExtraReaders = Box<dyn FnOnce(MeterProviderBuilder) -> MeterProviderBuilder>;

fn init_extra(options: OtelOptions, extra: Option<ExtraReaders>) -> Result<OtelGuard, OtelError> {
    let filter = env_filter(&options.filter)?;
    let export = decide_export(&options)?;
    let resource = resource(&options.service_name);
    let (tracer, meter) = match &export {
        Export::Otlp { endpoint } => {
            let (tracer, meter) = otlp_providers(endpoint.as_deref(), &options, resource, extra)?;
            (Some(tracer), Some(meter))
        }
        Export::Stdout => {
            let tracer = SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_batch_exporter(opentelemetry_stdout::SpanExporter::default())
                .build();
            let reader = periodic(opentelemetry_stdout::MetricExporter::default(), &options);
            let meter = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_reader(reader);
            let meter = match extra {
                Some(add) => add(meter),
                None => meter,
            };
            (Some(tracer), Some(meter.build()))
        }
        Export::LogsOnly | Export::Custom => (
            None,
            extra.map(|add| add(SdkMeterProvider::builder().with_resource(resource)).build()),
        ),
    };
    install(&options, filter, tracer, meter, export)
}

/// Like [`init`], around providers you built (from your own exporters, with [`providers`] or
/// the SDK's builders): installs the global subscriber (filter, `fmt` layer, and the
/// tracing-opentelemetry [`layer`] when `tracer` is given) and sets the providers as the
/// global tracer and meter providers. The endpoint and fallback options are not used;
/// [`OtelGuard::export`] says [`Export::Custom`].
///
/// # Errors
/// [`OtelError::Filter`] for a bad `RUST_LOG` or filter, [`OtelError::SubscriberInstalled`]
/// when a global subscriber already exists. On error nothing was installed.
pub fn init_with(
    options: OtelOptions,
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
) -> Result<OtelGuard, OtelError> {
    let filter = env_filter(&options.filter)?;
    install(&options, filter, tracer, meter, Export::Custom)
}

/// A tracer provider (batch span processor) and a meter provider (periodic reader, every
/// [`OtelOptions::metrics_interval`]) around the given exporters, with the service name of
/// `options` as their resource: the providers [`init`] builds for OTLP, with exporters of your
/// choice. Nothing is installed; hand them to [`init_with`], or use them yourself.
pub fn providers<T, M>(
    spans: T,
    metrics: M,
    options: &OtelOptions,
) -> (SdkTracerProvider, SdkMeterProvider)
where
    T: opentelemetry_sdk::trace::SpanExporter + 'static,
    M: opentelemetry_sdk::metrics::exporter::PushMetricExporter,
{
    let resource = resource(&options.service_name);
    let tracer = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(spans)
        .build();
    let meter = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(periodic(metrics, options))
        .build();
    (tracer, meter)
}

/// The tracing-opentelemetry layer as [`init`] configures it, for a subscriber of your own:
/// spans go to `provider`'s tracer (scope `mllp`), without thread, source-location or
/// busy/idle attributes and without context activation (docs/telemetry.md says why), and the
/// spans of the exporters' own HTTP stack are left out (so exporting never makes spans to
/// export).
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber
        + for<'span> tracing_subscriber::registry::LookupSpan<'span>
        + Send
        + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(crate::telemetry::METER_NAME))
        // Thread and source-location attributes say nothing useful about async message
        // handling (the span name is the location), and busy/idle timing costs two clock
        // reads per poll: off, for throughput (benches/otel.rs). Context activation (making
        // each entered span `opentelemetry::Context::current()`) costs a context attach on
        // every poll of every instrumented future; code that needs a span's context for
        // propagation takes it with `OpenTelemetrySpanExt::context()` (docs/telemetry.md).
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            !is_exporter_stack(metadata.target())
        }))
}

/// Installs the global subscriber and providers; what [`init`] and [`init_with`] share.
fn install(
    options: &OtelOptions,
    filter: EnvFilter,
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    export: Export,
) -> Result<OtelGuard, OtelError> {
    let (text, json) = match options.log_format {
        LogFormat::Text => (
            Some(
                tfmt::layer()
                    .with_writer(options.log_writer.clone())
                    .with_ansi(std::io::stderr().is_terminal())
                    .fmt_fields(crate::telemetry::TextFields)
                    .event_format(crate::telemetry::TextFormat::new()),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tfmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(options.log_writer.clone()),
            ),
        ),
    };
    let otel = tracer.as_ref().map(layer);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init();
    let guard = OtelGuard {
        tracer,
        meter,
        export,
    };
    if let Err(error) = installed {
        // Nothing global was touched yet; the guard's drop stops the exporter threads.
        return Err(OtelError::SubscriberInstalled(Box::new(error)));
    }
    // The SDK announces each global at info level; that is noise in an operator's log.
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        if let Some(provider) = &guard.tracer {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        if let Some(provider) = &guard.meter {
            opentelemetry::global::set_meter_provider(provider.clone());
        }
    });
    match &guard.export {
        Export::Otlp {
            endpoint: Some(endpoint),
        } => tracing::info!(endpoint = %endpoint, "exporting traces and metrics over otlp/http"),
        Export::Otlp { endpoint: None } => {
            tracing::info!(
                "exporting traces and metrics over otlp/http (endpoint from environment)"
            )
        }
        Export::Stdout => {
            tracing::info!("no otlp endpoint: exporting traces and metrics to stdout")
        }
        Export::LogsOnly => {
            tracing::info!("no otlp endpoint: traces and metrics are not exported")
        }
        Export::Custom => tracing::info!("exporting traces and metrics to the given providers"),
    }
    Ok(guard)
}

/// `RUST_LOG` when set (even to an invalid value: a typo must not silently fall back), else the
/// configured directives.
fn env_filter(configured: &str) -> Result<EnvFilter, OtelError> {
    let directives = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(from_env) if !from_env.trim().is_empty() => from_env,
        _ => configured.to_owned(),
    };
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(&directives)
        .map_err(|source| OtelError::Filter {
            directives,
            source: Box::new(source),
        })
}

fn decide_export(options: &OtelOptions) -> Result<Export, OtelError> {
    if let Some(endpoint) = options.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        check_scheme(endpoint)?;
        return Ok(Export::Otlp {
            endpoint: Some(endpoint.trim().to_owned()),
        });
    }
    let mut from_env = false;
    for var in ENDPOINT_VARS {
        if let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
        {
            check_scheme(value.trim())?;
            from_env = true;
        }
    }
    Ok(match (from_env, options.fallback) {
        (true, _) => Export::Otlp { endpoint: None },
        (false, Fallback::Stdout) => Export::Stdout,
        (false, _) => Export::LogsOnly,
    })
}

fn check_scheme(endpoint: &str) -> Result<(), OtelError> {
    let plain_http = endpoint
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    if plain_http {
        Ok(())
    } else {
        Err(OtelError::Endpoint {
            endpoint: endpoint.to_owned(),
        })
    }
}

/// `<base>/v1/<signal>`, whether or not the base ends in a slash.
fn signal_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

fn resource(service_name: &str) -> Resource {
    let builder = Resource::builder();
    // `Resource::builder` already read OTEL_SERVICE_NAME; only fill in ours when it is unset.
    match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.trim().is_empty() => builder.build(),
        _ => builder.with_service_name(service_name.to_owned()).build(),
    }
}

fn otlp_providers(
    endpoint: Option<&str>,
    options: &OtelOptions,
    resource: Resource,
    extra: Option<ExtraReaders>,
) -> Result<(SdkTracerProvider, SdkMeterProvider), OtelError> {
    let mut spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    let mut metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(base) = endpoint {
        spans = spans.with_endpoint(signal_url(base, "traces"));
        metrics = metrics.with_endpoint(signal_url(base, "metrics"));
    }
    let spans = spans.build().map_err(|e| OtelError::Exporter {
        signal: "traces",
        source: Box::new(e),
    })?;
    let metrics = metrics.build().map_err(|e| OtelError::Exporter {
        signal: "metrics",
        source: Box::new(e),
    })?;
    let tracer = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(spans)
        .build();
    let meter = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(periodic(metrics, options));
    let meter = match extra {
        Some(add) => add(meter),
        None => meter,
    };
    Ok((tracer, meter.build()))
}

fn periodic<E>(exporter: E, options: &OtelOptions) -> PeriodicReader<E>
where
    E: opentelemetry_sdk::metrics::exporter::PushMetricExporter,
{
    let builder = PeriodicReader::builder(exporter);
    match options.metrics_interval {
        Some(interval) => builder.with_interval(interval).build(),
        None => builder.build(),
    }
}

/// The crates of the exporters' own HTTP stack.
const EXPORTER_STACK: [&str; 9] = [
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry-otlp",
];

/// Whether `target` belongs to one of [`EXPORTER_STACK`]'s crates: spans from them are kept out
/// of the export (a span created while exporting would be exported in turn, and so on). Whole
/// crate names only (`tower` and `tower::buffer`, not `tower_http`): a prefix match, as
/// `Targets` does, would also drop the embedding service's `tower_http` or `reqwest_tracing`
/// spans.
fn is_exporter_stack(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    EXPORTER_STACK.contains(&krate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exporters' own crates are kept out of the export, and only they: crates whose names
    /// merely start the same (`tower_http`, `reqwest_tracing`, `hyperactive`) are exported.
    #[test]
    fn exporter_stack_is_matched_by_whole_crate_name() {
        for target in [
            "hyper",
            "hyper::client",
            "tower::buffer",
            "opentelemetry_sdk::trace",
            "h2",
        ] {
            assert!(is_exporter_stack(target), "{target}");
        }
        for target in [
            "tower_http::trace",
            "reqwest_tracing",
            "hyperactive",
            "mllp::server",
        ] {
            assert!(!is_exporter_stack(target), "{target}");
        }
    }

    /// The per-signal URLs are the base plus the standard OTLP/HTTP paths, with or without a
    /// trailing slash on the base.
    #[test]
    fn signal_urls_append_standard_paths() {
        assert_eq!(
            signal_url("http://collector:4318", "traces"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            signal_url("http://collector:4318/", "metrics"),
            "http://collector:4318/v1/metrics"
        );
    }

    /// Only plain http endpoints are accepted: TLS is not built in.
    #[test]
    fn only_http_endpoints_are_accepted() {
        assert!(check_scheme("http://127.0.0.1:4318").is_ok());
        assert!(check_scheme("HTTP://collector").is_ok());
        for bad in ["https://collector:4318", "collector:4318", "grpc://x", ""] {
            assert!(
                matches!(check_scheme(bad), Err(OtelError::Endpoint { .. })),
                "{bad} was accepted"
            );
        }
    }

    /// An endpoint given in the options selects OTLP whatever the fallback.
    #[test]
    fn configured_endpoint_selects_otlp() {
        let options = OtelOptions::default()
            .endpoint("http://127.0.0.1:4318")
            .fallback(Fallback::Stdout);
        assert_eq!(
            decide_export(&options).unwrap(),
            Export::Otlp {
                endpoint: Some("http://127.0.0.1:4318".to_owned())
            }
        );
    }

    /// Log formats parse from their CLI spelling and print back the same.
    #[test]
    fn log_format_round_trips_through_text() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("yaml".parse::<LogFormat>(), Err(UnknownLogFormat));
    }

    /// The default filter parses and keeps ractor at warn.
    #[test]
    fn default_filter_parses() {
        let filter = EnvFilter::builder().parse(DEFAULT_FILTER).unwrap();
        assert!(filter.to_string().contains("ractor=warn"));
    }
}

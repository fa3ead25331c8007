//! The telemetry contract (docs/telemetry.md) as exported through OpenTelemetry: span tree,
//! attributes and their types, statuses, metric values, for every way a message or a
//! connection can end; and patient data never reaching spans, metrics or logs.
//!
//! Each test installs its own subscriber with `set_default` (scoped to the test's thread) and
//! runs on tokio's current-thread runtime, so the server's tasks record into it; metrics go to
//! the test's own meter through `ServerBuilder::meter`. Nothing global is touched.

mod support;

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mllp::app::{HandlerError, Request, Router};
use mllp::hl7::Message;
use mllp::{HandlerFailurePolicy, Server, ServerBuilder, ServerHandle};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::{Peer, SENTINEL, field, within};
use tracing::Instrument;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, fmt};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A log sink shared between the fmt layer and the test.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

/// In-memory span and metric exporters, a log buffer, and the subscriber feeding them,
/// installed as this thread's default until dropped.
struct Telemetry {
    spans: InMemorySpanExporter,
    tracer_provider: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
    logs: LogBuffer,
    _default: tracing::subscriber::DefaultGuard,
}

impl Telemetry {
    fn install() -> Telemetry {
        let spans = InMemorySpanExporter::default();
        // The simple processor exports each span as it ends: nothing is pending at assertion
        // time once the server has shut down.
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        let logs = LogBuffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("test")))
            .with(
                fmt::layer()
                    .with_writer(logs.clone())
                    .with_ansi(false)
                    .with_filter(LevelFilter::TRACE),
            );
        let default = tracing::subscriber::set_default(subscriber);
        Telemetry {
            spans,
            tracer_provider,
            metrics,
            meter_provider,
            logs,
            _default: default,
        }
    }

    /// Binds and starts a server recording metrics on this harness's meter.
    async fn start(&self, builder: ServerBuilder) -> ServerHandle {
        builder
            .meter(&self.meter_provider.meter("mllp"))
            .bind("127.0.0.1:0")
            .await
            .expect("bind")
            .spawn()
            .await
            .expect("start")
    }

    /// Serves one message on a fresh server, shuts it down (so every span is exported) and
    /// returns the ACK code the message got.
    async fn answer_one(&self, builder: ServerBuilder, message: Bytes) -> String {
        let server = self.start(builder).await;
        let mut peer = Peer::connect(server.local_addr()).await;
        let code = ack_code(&peer.call(message).await);
        drop(peer);
        within(server.shutdown()).await;
        code
    }

    /// Every span exported so far (all of them once the server has shut down).
    fn spans(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().expect("flush spans");
        self.spans.get_finished_spans().expect("spans")
    }

    /// The current cumulative value of every metric.
    fn metrics(&self) -> Metrics {
        self.meter_provider.force_flush().expect("flush metrics");
        let mut all = self.metrics.get_finished_metrics().expect("metrics");
        Metrics(all.pop().expect("one collection"))
    }
}

/// One metrics collection, with lookups by name and attributes.
struct Metrics(ResourceMetrics);

impl Metrics {
    fn names(&self) -> BTreeSet<String> {
        self.0
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .map(|m| m.name().to_owned())
            .collect()
    }

    fn unit(&self, name: &str) -> String {
        self.find(name)
            .map(|m| m.unit().to_owned())
            .unwrap_or_default()
    }

    fn find(&self, name: &str) -> Option<&opentelemetry_sdk::metrics::data::Metric> {
        self.0
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == name)
    }

    /// Sum of a counter's (or up-down counter's) data points carrying all of `attrs`; 0 when
    /// the metric was never recorded.
    fn sum(&self, name: &str, attrs: &[(&str, &str)]) -> i64 {
        let Some(metric) = self.find(name) else {
            return 0;
        };
        match metric.data() {
            AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
                .data_points()
                .filter(|p| has_all(p.attributes(), attrs))
                .map(|p| p.value() as i64)
                .sum(),
            AggregatedMetrics::I64(MetricData::Sum(sum)) => sum
                .data_points()
                .filter(|p| has_all(p.attributes(), attrs))
                .map(|p| p.value())
                .sum(),
            other => panic!("{name} is not a sum: {other:?}"),
        }
    }

    /// (count, sum) of a histogram's data points carrying all of `attrs`.
    fn histogram(&self, name: &str, attrs: &[(&str, &str)]) -> (u64, f64) {
        let Some(metric) = self.find(name) else {
            return (0, 0.0);
        };
        match metric.data() {
            AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                .data_points()
                .filter(|p| has_all(p.attributes(), attrs))
                .fold((0, 0.0), |(c, s), p| (c + p.count(), s + p.sum())),
            AggregatedMetrics::U64(MetricData::Histogram(h)) => h
                .data_points()
                .filter(|p| has_all(p.attributes(), attrs))
                .fold((0, 0.0), |(c, s), p| (c + p.count(), s + p.sum() as f64)),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    /// Every attribute key used on any data point of `name`.
    fn attribute_keys(&self, name: &str) -> BTreeSet<String> {
        let Some(metric) = self.find(name) else {
            return BTreeSet::new();
        };
        let keys = |it: &mut dyn Iterator<Item = &KeyValue>| -> Vec<String> {
            it.map(|kv| kv.key.as_str().to_owned()).collect()
        };
        let mut out = BTreeSet::new();
        match metric.data() {
            AggregatedMetrics::U64(MetricData::Sum(s)) => s
                .data_points()
                .for_each(|p| out.extend(keys(&mut p.attributes()))),
            AggregatedMetrics::I64(MetricData::Sum(s)) => s
                .data_points()
                .for_each(|p| out.extend(keys(&mut p.attributes()))),
            AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                .data_points()
                .for_each(|p| out.extend(keys(&mut p.attributes()))),
            AggregatedMetrics::U64(MetricData::Histogram(h)) => h
                .data_points()
                .for_each(|p| out.extend(keys(&mut p.attributes()))),
            other => panic!("unexpected aggregation for {name}: {other:?}"),
        }
        out
    }
}

fn has_all<'a>(got: impl Iterator<Item = &'a KeyValue>, want: &[(&str, &str)]) -> bool {
    let got: Vec<&KeyValue> = got.collect();
    want.iter().all(|(k, v)| {
        got.iter()
            .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
    })
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn only<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "exactly one {name} span, got {found:#?}");
    found[0]
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn int(span: &SpanData, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::I64(v)) => *v,
        other => panic!("{} attribute {key} is not an i64: {other:?}", span.name),
    }
}

fn string(span: &SpanData, key: &str) -> String {
    match attr(span, key) {
        Some(Value::String(v)) => v.as_str().to_owned(),
        other => panic!("{} attribute {key} is not a string: {other:?}", span.name),
    }
}

fn error_description(span: &SpanData) -> String {
    match &span.status {
        Status::Error { description } => description.to_string(),
        other => panic!("{} status is not an error: {other:?}", span.name),
    }
}

/// A message of type `message_type` (MSH-9) whose PID, OBX and NTE hold [`SENTINEL`] in place
/// of patient data.
fn phi_message(message_type: &str, control_id: &str) -> Bytes {
    Bytes::from(format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20261122120000||{message_type}|{control_id}|P|2.5.1\r\
         EVN|A01|20261122120000\r\
         PID|1||{SENTINEL}-MRN^^^HOSP^MR||{SENTINEL}^JOHN||19700101|M\r\
         OBX|1|ST|GLU^Glucose^LN||{SENTINEL} 5.4 mmol/L||||||F\r\
         NTE|1||{SENTINEL} patient says hello\r"
    ))
}

/// A handler that panics (a bug in user code).
async fn boom(_req: Request) {
    panic!("boom")
}

/// A handler that panics with patient data in its panic text.
async fn panic_with_patient_name(req: Request) {
    let name = field(req.message(), "PID-5.1");
    panic!("bad patient {name}")
}

fn ack_code(reply: &Message) -> String {
    field(reply, "MSA-1")
}

/// Attributes tracing-opentelemetry adds by itself (source location, thread, timings).
fn is_layer_attribute(key: &str) -> bool {
    key.starts_with("code.")
        || key.starts_with("thread.")
        || matches!(key, "busy_ns" | "idle_ns" | "target" | "level")
}

// ---------------------------------------------------------------------------------------------
// Spans and metrics per outcome
// ---------------------------------------------------------------------------------------------

/// A handled message is its own trace: a server-kind root span linked to the connection span,
/// with the handler's own span nested under it, integer sizes and ports, and AA recorded;
/// the message, size and byte metrics count it.
#[tokio::test]
async fn handled_message_is_a_root_span_linked_to_its_connection() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |_req: Request| {
        async { tracing::info!("stored") }.instrument(tracing::info_span!("handler.store"))
    });
    let server = telemetry.start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let payload = phi_message("ADT^A01^ADT_A01", "CTRL-1");
    let reply = peer.call(payload.clone()).await;
    assert_eq!(ack_code(&reply), "AA");
    drop(peer);
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    let connection = only(&spans, "mllp.connection");
    let message = only(&spans, "mllp.message");
    let handler = only(&spans, "handler.store");

    // The tree: message is a root of its own trace, linked to the connection span.
    assert_eq!(
        message.parent_span_id,
        SpanId::INVALID,
        "message span is a root"
    );
    assert_ne!(
        message.span_context.trace_id(),
        connection.span_context.trace_id(),
        "one trace per message, not per connection"
    );
    let links: Vec<_> = message
        .links
        .iter()
        .map(|l| l.span_context.clone())
        .collect();
    assert_eq!(
        links,
        vec![connection.span_context.clone()],
        "follows_from link"
    );
    assert_eq!(message.span_kind, SpanKind::Server);
    assert_eq!(connection.span_kind, SpanKind::Internal);
    // The handler's span nests under the message span across the task boundary.
    assert_eq!(handler.parent_span_id, message.span_context.span_id());
    assert_eq!(
        handler.span_context.trace_id(),
        message.span_context.trace_id()
    );

    // Attributes and their types.
    let id = int(connection, "mllp.connection.id");
    assert_eq!(int(message, "mllp.connection.id"), id);
    for span in [connection, message] {
        assert_eq!(string(span, "network.peer.address"), "127.0.0.1");
        assert!(int(span, "network.peer.port") > 0);
        assert_eq!(
            int(span, "server.port"),
            i64::from(server.local_addr().port())
        );
        assert_eq!(string(span, "network.transport"), "tcp");
    }
    assert_eq!(attr(connection, "tls"), Some(&Value::Bool(false)));
    assert_eq!(int(connection, "messages"), 1);
    assert!(attr(connection, "close_reason").is_some());
    // The `connection closed` event's counts are integers too, not strings.
    let closed = connection
        .events
        .iter()
        .find(|e| e.name == "connection closed")
        .expect("a connection closed event");
    for key in ["messages", "connection.id"] {
        let value = closed.attributes.iter().find(|kv| kv.key.as_str() == key);
        assert!(
            matches!(value.map(|kv| &kv.value), Some(Value::I64(_))),
            "{key}: {value:?}"
        );
    }
    assert_eq!(string(message, "hl7.message_type"), "ADT");
    assert_eq!(string(message, "hl7.trigger_event"), "A01");
    assert_eq!(string(message, "hl7.control_id"), "CTRL-1");
    assert_eq!(string(message, "hl7.version"), "2.5.1");
    assert_eq!(string(message, "hl7.ack_code"), "AA");
    assert_eq!(int(message, "mllp.message.size"), payload.len() as i64);
    let response_size = int(message, "mllp.response.size");
    assert!(response_size > 0);
    assert!(attr(message, "error.type").is_none());
    assert_eq!(message.status, Status::Unset);

    // No attribute beyond the contract (docs/telemetry.md), apart from the layer's own.
    let contract_message: BTreeSet<&str> = [
        "mllp.connection.id",
        "network.peer.address",
        "network.peer.port",
        "server.port",
        "network.transport",
        "mllp.message.size",
        "mllp.response.size",
        "hl7.message_type",
        "hl7.trigger_event",
        "hl7.control_id",
        "hl7.version",
        "hl7.ack_code",
        "error.type",
    ]
    .into();
    for kv in &message.attributes {
        let key = kv.key.as_str();
        assert!(
            contract_message.contains(key) || is_layer_attribute(key),
            "message span attribute {key} is not in the contract"
        );
    }

    let metrics = telemetry.metrics();
    let aa = [
        ("hl7.message_type", "ADT"),
        ("hl7.trigger_event", "A01"),
        ("hl7.ack_code", "AA"),
    ];
    assert_eq!(metrics.sum("mllp.server.messages", &aa), 1);
    assert_eq!(metrics.histogram("mllp.server.message.duration", &aa).0, 1);
    assert_eq!(
        metrics.histogram("mllp.server.message.size", &[]),
        (1, payload.len() as f64)
    );
    assert_eq!(
        metrics.sum("mllp.server.received", &[]),
        payload.len() as i64
    );
    assert_eq!(metrics.sum("mllp.server.sent", &[]), response_size);
    assert_eq!(metrics.sum("mllp.server.connections.opened", &[]), 1);
    assert_eq!(metrics.sum("mllp.server.connections.closed", &[]), 1);
    assert_eq!(metrics.sum("mllp.server.active_connections", &[]), 0);
    assert_eq!(metrics.sum("mllp.server.handler.exceptions", &[]), 0);
    assert_eq!(metrics.unit("mllp.server.message.duration"), "s");
    assert_eq!(metrics.unit("mllp.server.message.size"), "By");
    assert_eq!(
        metrics.attribute_keys("mllp.server.messages"),
        ["hl7.ack_code", "hl7.message_type", "hl7.trigger_event"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        metrics.attribute_keys("mllp.server.connections.closed"),
        ["mllp.close_reason".to_owned()].into()
    );
}

/// A handler error is answered AE: the message span gets error status described `AE`, and
/// the message counter records AE (no handler exception: the handler answered).
#[tokio::test]
async fn handler_error_gives_error_status_and_ae_metric() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |_req: Request| async {
        Err::<(), _>(HandlerError::internal("store unavailable"))
    });
    assert_eq!(
        telemetry
            .answer_one(
                Server::builder().router(router),
                phi_message("ADT^A01", "E1")
            )
            .await,
        "AE"
    );

    let spans = telemetry.spans();
    let message = only(&spans, "mllp.message");
    assert_eq!(string(message, "hl7.ack_code"), "AE");
    assert_eq!(error_description(message), "AE");
    assert!(attr(message, "error.type").is_none());

    let metrics = telemetry.metrics();
    let ae = [("hl7.message_type", "ADT"), ("hl7.ack_code", "AE")];
    assert_eq!(metrics.sum("mllp.server.messages", &ae), 1);
    assert_eq!(metrics.sum("mllp.server.handler.exceptions", &[]), 0);
}

/// With `message_trace_ratio(0.0)` a message gets no `mllp.message` span, and still its ACK,
/// its connection span and its metrics; a ratio outside 0..=1 is a configuration error.
#[tokio::test]
async fn messages_left_out_by_the_trace_ratio_get_no_span_but_are_counted() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |_req: Request| async {});
    let builder = Server::builder().router(router).message_trace_ratio(0.0);
    assert_eq!(
        telemetry
            .answer_one(builder, phi_message("ADT^A01", "S1"))
            .await,
        "AA"
    );
    let spans = telemetry.spans();
    assert!(named(&spans, "mllp.message").is_empty());
    assert_eq!(named(&spans, "mllp.connection").len(), 1);
    let aa = [("hl7.message_type", "ADT"), ("hl7.ack_code", "AA")];
    assert_eq!(telemetry.metrics().sum("mllp.server.messages", &aa), 1);

    let error = Server::builder()
        .message_trace_ratio(1.5)
        .bind("127.0.0.1:0")
        .await
        .expect_err("a ratio above 1 is refused");
    assert!(
        matches!(error, mllp::Error::Config(mllp::ConfigError::TraceRatio(r)) if r == 1.5),
        "{error:?}"
    );
}

/// A handler that fails on a message whose MSH-15 is NE gets no ACK sent (as asked), yet its
/// span carries an error status, described by the ACK code it would have had (CE).
#[tokio::test]
async fn failure_without_an_ack_under_msh15_ne_is_an_error_on_the_span() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |req: Request| async move {
        if req.message().control_id() == Some("NE1") {
            Err(HandlerError::internal("store unavailable"))
        } else {
            Ok(())
        }
    });
    let server = telemetry.start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send(support::hl7_with("ADT^A01", "NE1", "2.5", "NE"))
        .await;
    // Answered in order: once this one is, the silent one was handled.
    assert_eq!(
        ack_code(&peer.call(phi_message("ADT^A01", "OK1")).await),
        "AA"
    );
    drop(peer);
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    let silent = named(&spans, "mllp.message")
        .into_iter()
        .find(|span| string(span, "hl7.control_id") == "NE1")
        .expect("the NE message has a span");
    assert_eq!(string(silent, "hl7.ack_code"), "none");
    assert_eq!(error_description(silent), "CE");
}

/// With `message_trace_limit(Some(2))` at most two messages per second (of tokio's paused
/// clock) get an `mllp.message` span; the others are still answered and counted.
#[tokio::test(start_paused = true)]
async fn trace_limit_caps_message_spans_per_second() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |_req: Request| async {});
    // No idle timer, so the paused clock moves only when the test advances it.
    let builder = Server::builder()
        .router(router)
        .idle_timeout(None)
        .message_trace_limit(Some(2));
    let server = telemetry.start(builder).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for i in 0..10 {
        if i == 5 {
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let reply = peer.call(phi_message("ADT^A01", &format!("L{i}"))).await;
        assert_eq!(ack_code(&reply), "AA");
    }
    drop(peer);
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    let mut traced: Vec<String> = named(&spans, "mllp.message")
        .into_iter()
        .map(|span| string(span, "hl7.control_id"))
        .collect();
    traced.sort();
    assert_eq!(traced, ["L0", "L1", "L5", "L6"]);
    let aa = [("hl7.message_type", "ADT"), ("hl7.ack_code", "AA")];
    assert_eq!(telemetry.metrics().sum("mllp.server.messages", &aa), 10);
}

/// By default at most 1000 messages per second get an `mllp.message` span: 1005 messages in
/// one second (of tokio's paused clock) give 1000 spans, and the next second traces again.
#[tokio::test(start_paused = true)]
async fn default_trace_limit_is_a_thousand_message_spans_per_second() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |_req: Request| async {});
    // No idle timer, so the paused clock moves only when the test advances it.
    let builder = Server::builder().router(router).idle_timeout(None);
    let server = telemetry.start(builder).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for i in 0..1005 {
        let reply = peer.call(phi_message("ADT^A01", &format!("D{i}"))).await;
        assert_eq!(ack_code(&reply), "AA");
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let reply = peer.call(phi_message("ADT^A01", "NEXT")).await;
    assert_eq!(ack_code(&reply), "AA");
    drop(peer);
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    let traced: Vec<String> = named(&spans, "mllp.message")
        .into_iter()
        .map(|span| string(span, "hl7.control_id"))
        .collect();
    assert_eq!(
        traced.len(),
        1001,
        "1000 in the first second, 1 in the next"
    );
    assert!(traced.iter().any(|id| id == "NEXT"));
    assert!(!traced.iter().any(|id| id == "D1000"));
    let aa = [("hl7.message_type", "ADT"), ("hl7.ack_code", "AA")];
    assert_eq!(telemetry.metrics().sum("mllp.server.messages", &aa), 1006);
}

/// A sender cycling through message types cannot grow `mllp.server.messages` without bound:
/// past 1024 (type, event, ACK) combinations, messages are counted in one series marked
/// `otel.metric.overflow = true`, and every message is still counted once.
#[tokio::test]
async fn message_counter_series_are_bounded() {
    let telemetry = Telemetry::install();
    let server = telemetry
        .start(Server::builder().router(Router::new().route("*", |_req: Request| async {})))
        .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let combinations = 1200;
    for i in 0..combinations {
        // Codes of three letters and digits are kept as they are: each message is a new series.
        let (code, event) = (format!("Z{:02}", i / 100), format!("E{:02}", i % 100));
        peer.send(phi_message(&format!("{code}^{event}"), &format!("B{i}")))
            .await;
        assert_eq!(ack_code(&peer.recv().await.expect("ack")), "AA");
    }
    drop(peer);
    within(server.shutdown()).await;
    let metrics = telemetry.metrics();
    let total = metrics.sum("mllp.server.messages", &[]);
    let overflow = metrics.sum("mllp.server.messages", &[("otel.metric.overflow", "true")]);
    assert_eq!(total, combinations);
    assert!(overflow >= combinations - 1024, "overflow {overflow}");
    assert_eq!(
        metrics.sum(
            "mllp.server.messages",
            &[("hl7.message_type", "Z00"), ("hl7.trigger_event", "E07")]
        ),
        1
    );
}

/// A message no route matches is answered AR: error status described `AR`, AR counted.
#[tokio::test]
async fn unrouted_message_gives_error_status_and_ar_metric() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |_req: Request| async {});
    assert_eq!(
        telemetry
            .answer_one(
                Server::builder().router(router),
                phi_message("ORU^R01", "U1")
            )
            .await,
        "AR"
    );

    let spans = telemetry.spans();
    let message = only(&spans, "mllp.message");
    assert_eq!(string(message, "hl7.message_type"), "ORU");
    assert_eq!(string(message, "hl7.ack_code"), "AR");
    assert_eq!(error_description(message), "AR");

    let metrics = telemetry.metrics();
    let ar = [
        ("hl7.message_type", "ORU"),
        ("hl7.trigger_event", "R01"),
        ("hl7.ack_code", "AR"),
    ];
    assert_eq!(metrics.sum("mllp.server.messages", &ar), 1);
}

/// A handler past `handler_timeout` is aborted and answered AE: `error.type = timeout` and
/// error status `timeout` on the span, a timeout exception and an AE message in the metrics.
#[tokio::test(start_paused = true)]
async fn handler_timeout_records_timeout_exception() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |_req: Request| std::future::pending::<()>());
    assert_eq!(
        telemetry
            .answer_one(
                Server::builder()
                    .router(router)
                    .handler_timeout(Duration::from_secs(2)),
                phi_message("ADT^A01", "T1")
            )
            .await,
        "AE"
    );

    let spans = telemetry.spans();
    let message = only(&spans, "mllp.message");
    assert_eq!(string(message, "error.type"), "timeout");
    assert_eq!(string(message, "hl7.ack_code"), "AE");
    assert_eq!(error_description(message), "timeout");

    let metrics = telemetry.metrics();
    assert_eq!(
        metrics.sum(
            "mllp.server.handler.exceptions",
            &[("error.type", "timeout")]
        ),
        1
    );
    assert_eq!(
        metrics.sum("mllp.server.messages", &[("hl7.ack_code", "AE")]),
        1
    );
    let (count, seconds) =
        metrics.histogram("mllp.server.message.duration", &[("hl7.ack_code", "AE")]);
    assert_eq!(count, 1);
    assert!(seconds >= 2.0, "duration covers the timeout, got {seconds}");
}

/// A panicking handler is answered AE: `error.type = panic` and error status `panic` on the
/// span, a panic exception in the metrics.
#[tokio::test]
async fn handler_panic_records_panic_exception() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", boom);
    assert_eq!(
        telemetry
            .answer_one(
                Server::builder().router(router),
                phi_message("ADT^A01", "P1")
            )
            .await,
        "AE"
    );

    let spans = telemetry.spans();
    let message = only(&spans, "mllp.message");
    assert_eq!(string(message, "error.type"), "panic");
    assert_eq!(error_description(message), "panic");

    let metrics = telemetry.metrics();
    assert_eq!(
        metrics.sum("mllp.server.handler.exceptions", &[("error.type", "panic")]),
        1
    );
    assert_eq!(
        metrics.sum("mllp.server.messages", &[("hl7.ack_code", "AE")]),
        1
    );
}

/// Under the `NoResponse` policy a timed-out handler gets no answer, and its span still says
/// so: `error.type = timeout`, `hl7.ack_code = none`, error status; the metrics count a
/// timeout and a message answered `none`.
#[tokio::test(start_paused = true)]
async fn unanswered_timeout_still_marks_the_span() {
    let telemetry = Telemetry::install();
    let router = Router::new()
        .route("ADT^A01", |_req: Request| std::future::pending::<()>())
        .route("*", |_req: Request| async {});
    let server = telemetry
        .start(
            Server::builder()
                .router(router)
                .handler_timeout(Duration::from_secs(2))
                .handler_failure(HandlerFailurePolicy::NoResponse),
        )
        .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send(phi_message("ADT^A01", "N1")).await;
    // The next message's AA proves the first one was given up on.
    let reply = peer.call(phi_message("ADT^A08", "N2")).await;
    assert_eq!(
        (ack_code(&reply), field(&reply, "MSA-2")),
        ("AA".into(), "N2".into())
    );
    drop(peer);
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    let failed = named(&spans, "mllp.message")
        .into_iter()
        .find(|s| string(s, "hl7.control_id") == "N1")
        .expect("span of the timed-out message");
    assert_eq!(string(failed, "error.type"), "timeout");
    assert_eq!(string(failed, "hl7.ack_code"), "none");
    assert!(attr(failed, "mllp.response.size").is_none());
    assert_eq!(error_description(failed), "timeout");

    let metrics = telemetry.metrics();
    assert_eq!(
        metrics.sum(
            "mllp.server.handler.exceptions",
            &[("error.type", "timeout")]
        ),
        1
    );
    assert_eq!(
        metrics.sum("mllp.server.messages", &[("hl7.ack_code", "none")]),
        1
    );
}

/// A handler still running when the shutdown grace runs out is aborted: `error.type =
/// aborted` and no ACK on its span, an aborted exception, and the connection closed as
/// `aborted`.
#[tokio::test(start_paused = true)]
async fn handler_running_past_shutdown_grace_is_aborted() {
    let telemetry = Telemetry::install();
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = started.clone();
    let router = Router::new().route("*", move |_req: Request| {
        let signal = signal.clone();
        async move {
            signal.notify_one();
            std::future::pending::<()>().await
        }
    });
    let server = telemetry
        .start(
            Server::builder()
                .router(router)
                .shutdown_grace(Duration::from_secs(1)),
        )
        .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send(phi_message("ADT^A01", "G1")).await;
    within(started.notified()).await;
    let report = within(server.shutdown()).await;
    assert_eq!(report.aborted, 1);
    drop(peer);

    let spans = telemetry.spans();
    let message = only(&spans, "mllp.message");
    assert_eq!(string(message, "error.type"), "aborted");
    assert_eq!(string(message, "hl7.ack_code"), "none");
    assert_eq!(error_description(message), "aborted");
    assert_eq!(
        string(only(&spans, "mllp.connection"), "close_reason"),
        "aborted"
    );

    let metrics = telemetry.metrics();
    assert_eq!(
        metrics.sum(
            "mllp.server.handler.exceptions",
            &[("error.type", "aborted")]
        ),
        1
    );
    assert_eq!(
        metrics.sum(
            "mllp.server.connections.closed",
            &[("mllp.close_reason", "aborted")]
        ),
        1
    );
}

/// Bytes outside a frame close the connection: `close_reason = framing` on the connection
/// span, a framing fault and a framing close in the metrics, no message span.
#[tokio::test]
async fn garbage_bytes_close_the_connection_as_a_framing_fault() {
    let telemetry = Telemetry::install();
    let server = telemetry.start(Server::builder()).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send_raw(b"garbage before any frame").await;
    peer.expect_closed().await;
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    let connection = only(&spans, "mllp.connection");
    assert_eq!(string(connection, "close_reason"), "framing");
    assert_eq!(int(connection, "messages"), 0);
    assert!(named(&spans, "mllp.message").is_empty());

    let metrics = telemetry.metrics();
    assert_eq!(
        metrics.sum("mllp.server.framing.faults", &[("mllp.fault", "framing")]),
        1
    );
    assert_eq!(
        metrics.sum(
            "mllp.server.connections.closed",
            &[("mllp.close_reason", "framing")]
        ),
        1
    );
    assert_eq!(metrics.sum("mllp.server.active_connections", &[]), 0);
}

/// A connection silent for `idle_timeout` is closed: `close_reason = idle`, an idle close in
/// the metrics, no framing fault.
#[tokio::test(start_paused = true)]
async fn silent_connection_closes_as_idle() {
    let telemetry = Telemetry::install();
    let server = telemetry
        .start(Server::builder().idle_timeout(Some(Duration::from_secs(1))))
        .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.expect_closed().await;
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    let connection = only(&spans, "mllp.connection");
    assert_eq!(string(connection, "close_reason"), "idle");

    let metrics = telemetry.metrics();
    assert_eq!(
        metrics.sum(
            "mllp.server.connections.closed",
            &[("mllp.close_reason", "idle")]
        ),
        1
    );
    assert_eq!(metrics.sum("mllp.server.framing.faults", &[]), 0);
    assert_eq!(metrics.sum("mllp.server.active_connections", &[]), 0);
}

// ---------------------------------------------------------------------------------------------
// Patient data
// ---------------------------------------------------------------------------------------------

/// Messages whose PID, OBX and NTE carry a sentinel, sent down every path (AA, AE, AR,
/// timeout, panic, not HL7, bytes outside a frame), leave no trace of it in any exported span
/// (name, attribute, event, link, status), metric, or log line at any level. The handlers
/// themselves put the sentinel in their error and panic texts: the library must not repeat them.
#[tokio::test(start_paused = true)]
async fn patient_data_never_reaches_spans_metrics_or_logs() {
    let telemetry = Telemetry::install();
    let router = Router::new()
        .route("ADT^A01", |req: Request| async move {
            tracing::info!(control_id = req.message().control_id(), "admitted");
        })
        .route("ADT^A02", |req: Request| async move {
            let name = field(req.message(), "PID-5.1");
            Err::<(), _>(HandlerError::internal(format!("cannot store {name}")))
        })
        .route("ADT^A03", |_req: Request| std::future::pending::<()>())
        .route("ADT^A04", panic_with_patient_name);
    let server = telemetry
        .start(
            Server::builder()
                .router(router)
                .handler_timeout(Duration::from_secs(2)),
        )
        .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for (message_type, want) in [
        ("ADT^A01", "AA"),
        ("ADT^A02", "AE"),
        ("ORU^R01", "AR"),
        ("ADT^A03", "AE"),
        ("ADT^A04", "AE"),
    ] {
        let reply = peer.call(phi_message(message_type, "PHI-1")).await;
        assert_eq!(ack_code(&reply), want, "{message_type}");
    }
    let not_hl7 = Bytes::from(format!("NOT HL7 AT ALL {SENTINEL} 1970-01-01"));
    assert_eq!(ack_code(&peer.call(not_hl7).await), "AR");
    // And a framing fault whose stray bytes carry the sentinel.
    peer.send_raw(format!("{SENTINEL} outside any frame").as_bytes())
        .await;
    peer.expect_closed().await;
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    assert_eq!(
        named(&spans, "mllp.message").len(),
        6,
        "every path was taken"
    );
    for span in &spans {
        let text = format!("{span:?}");
        assert!(
            !text.contains(SENTINEL),
            "patient data in span {}: {text}",
            span.name
        );
    }
    let metrics = telemetry.metrics();
    let text = format!("{:?}", metrics.0);
    assert!(!text.contains(SENTINEL), "patient data in metrics: {text}");
    let logs = telemetry.logs.text();
    assert!(logs.contains("admitted"), "the log capture works: {logs}");
    for line in logs.lines() {
        assert!(
            !line.contains(SENTINEL),
            "patient data in a log line: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The contract document
// ---------------------------------------------------------------------------------------------

/// Backticked names in the first column of the table that follows `heading` in
/// docs/telemetry.md.
fn documented(heading: &str) -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/telemetry.md"))
        .expect("docs/telemetry.md");
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in the doc"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|row| {
            let first = row.split('|').nth(1)?.trim();
            Some(first.trim_matches('`').to_owned())
        })
        .collect()
}

/// Every metric docs/telemetry.md lists is produced with that name, and nothing else is:
/// the table is the contract.
#[tokio::test]
#[cfg(feature = "sqlite")]
async fn documented_metrics_are_exactly_the_exported_ones() {
    let telemetry = Telemetry::install();
    let meter = telemetry.meter_provider.meter("mllp");
    // The two events no loopback test can cause cheaply, fed straight to the observer.
    let observer = mllp::telemetry::Metrics::new(&meter);
    use mllp::Observer as _;
    observer.on_event(&mllp::Event::AcceptorRestart {
        error: "listener closed",
        restarts: 1,
    });
    observer.on_event(&mllp::Event::ConnectionRefused {
        peer: "192.0.2.1:40000".parse().unwrap(),
    });
    // A store, for its two counters: a duplicate, and a control id reused with other content.
    let dir = tempfile::tempdir().unwrap();
    let store = mllp::store::SqliteStore::open(dir.path().join("inbox.db"), Default::default())
        .await
        .unwrap();
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {})
        .route("ADT^A08", |_req: Request| async {})
        .route("ADT^A04", boom)
        .layer(mllp::store::StoreLayer::new(store).meter(&meter));
    let server = telemetry.start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for _ in 0..2 {
        assert_eq!(
            ack_code(&peer.call(phi_message("ADT^A01", "D1")).await),
            "AA"
        );
    }
    assert_eq!(
        ack_code(&peer.call(phi_message("ADT^A08", "D1")).await),
        "AA"
    );
    assert_eq!(
        ack_code(&peer.call(phi_message("ADT^A04", "D2")).await),
        "AE"
    );
    peer.send_raw(b"stray").await;
    peer.expect_closed().await;
    within(server.shutdown()).await;

    let exported = telemetry.metrics().names();
    assert_eq!(exported, documented("## Metrics"));
}

/// A store with a duplicate (D1 twice) and a reused control id (D1 again, other content), behind
/// `layer` on a server of `telemetry`'s, which is shut down after.
#[cfg(feature = "sqlite")]
async fn duplicate_and_reuse(
    telemetry: &Telemetry,
    layer: impl FnOnce(mllp::store::SqliteStore) -> mllp::store::StoreLayer,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = mllp::store::SqliteStore::open(dir.path().join("inbox.db"), Default::default())
        .await
        .unwrap();
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {})
        .route("ADT^A08", |_req: Request| async {})
        .layer(layer(store));
    let server = telemetry.start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for message_type in ["ADT^A01", "ADT^A01", "ADT^A08"] {
        assert_eq!(
            ack_code(&peer.call(phi_message(message_type, "D1")).await),
            "AA"
        );
    }
    drop(peer);
    within(server.shutdown()).await;
}

/// `StoreLayer::new` without `.meter()` counts where the server it runs in counts: one
/// `ServerBuilder::meter` call is enough.
#[tokio::test]
#[cfg(feature = "sqlite")]
async fn store_layer_counts_into_its_servers_meter_without_being_given_it() {
    let telemetry = Telemetry::install();
    duplicate_and_reuse(&telemetry, mllp::store::StoreLayer::new).await;
    let metrics = telemetry.metrics();
    assert_eq!(
        metrics.sum("mllp.server.duplicates", &[("hl7.message_type", "ADT")]),
        1
    );
    assert_eq!(
        metrics.sum(
            "mllp.server.reused_control_ids",
            &[("hl7.message_type", "ADT")]
        ),
        1
    );
}

/// A `StoreLayer` given a meter of its own counts there, and not into the server's.
#[tokio::test]
#[cfg(feature = "sqlite")]
async fn store_layer_given_a_meter_counts_there_not_into_the_servers() {
    let telemetry = Telemetry::install();
    let own = InMemoryMetricExporter::default();
    let own_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(own.clone()).build())
        .build();
    let meter = own_provider.meter("mine");
    duplicate_and_reuse(&telemetry, |store| {
        mllp::store::StoreLayer::new(store).meter(&meter)
    })
    .await;
    let servers = telemetry.metrics();
    assert_eq!(servers.sum("mllp.server.duplicates", &[]), 0);
    assert_eq!(servers.sum("mllp.server.reused_control_ids", &[]), 0);
    assert!(
        servers.sum("mllp.server.messages", &[]) >= 3,
        "the server counted its messages"
    );
    own_provider.force_flush().expect("flush metrics");
    let ours = Metrics(
        own.get_finished_metrics()
            .expect("metrics")
            .pop()
            .expect("one"),
    );
    assert_eq!(ours.sum("mllp.server.duplicates", &[]), 1);
    assert_eq!(ours.sum("mllp.server.reused_control_ids", &[]), 1);
}

/// Every span attribute docs/telemetry.md lists is exported under that name (except those
/// only TLS or the layer's status mapping produce), and nothing else is.
#[tokio::test]
async fn documented_span_attributes_are_exactly_the_exported_ones() {
    let telemetry = Telemetry::install();
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {})
        .route("ADT^A04", boom);
    let server = telemetry.start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    assert_eq!(
        ack_code(&peer.call(phi_message("ADT^A01", "D1")).await),
        "AA"
    );
    assert_eq!(
        ack_code(&peer.call(phi_message("ADT^A04", "D2")).await),
        "AE"
    );
    drop(peer);
    within(server.shutdown()).await;

    let spans = telemetry.spans();
    let exported: BTreeSet<String> = spans
        .iter()
        .filter(|s| s.name.starts_with("mllp."))
        .flat_map(|s| s.attributes.iter().map(|kv| kv.key.as_str().to_owned()))
        .filter(|k| !is_layer_attribute(k))
        .collect();
    let mut expected = documented("### Attributes");
    // Consumed by tracing-opentelemetry as the span status, not exported as attributes.
    expected.remove("otel.status_code");
    expected.remove("otel.status_description");
    // Only set on mutual TLS connections.
    expected.remove("tls.client.subject");
    assert_eq!(exported, expected);
}

/// The documented events reach OpenTelemetry as span events, by name: the connection's start
/// and stop on `mllp.connection`, the message's start and stop on `mllp.message`.
#[tokio::test]
async fn documented_events_are_span_events() {
    let telemetry = Telemetry::install();
    let router = Router::new().route("ADT^A01", |_req: Request| async {});
    assert_eq!(
        telemetry
            .answer_one(
                Server::builder().router(router),
                phi_message("ADT^A01", "E1")
            )
            .await,
        "AA"
    );
    let spans = telemetry.spans();
    let names = |span: &SpanData| -> Vec<String> {
        span.events
            .iter()
            .map(|e| e.name.to_string())
            .filter(|n| n.starts_with("mllp."))
            .collect()
    };
    assert_eq!(
        names(only(&spans, "mllp.connection")),
        ["mllp.connection.start", "mllp.connection.stop"]
    );
    let message = only(&spans, "mllp.message");
    assert_eq!(names(message), ["mllp.message.start", "mllp.message.stop"]);
    let stop = message
        .events
        .iter()
        .find(|e| e.name == "mllp.message.stop")
        .expect("stop event");
    let code = stop
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "hl7.ack_code");
    assert_eq!(
        code.map(|kv| kv.value.as_str().into_owned()),
        Some("AA".to_owned())
    );
}

/// A route's own deadline is a handler timeout in every respect: AE 207 under the default
/// policy, `error.type = timeout` and the error status on the span, a timeout exception in the
/// metrics; the server's (longer) `handler_timeout` does not apply to that route.
#[tokio::test(start_paused = true)]
async fn route_deadline_records_a_timeout_exception() {
    let telemetry = Telemetry::install();
    let router = Router::new().route_with_timeout(
        "ADT^A01",
        |_req: Request| std::future::pending::<()>(),
        Duration::from_secs(2),
    );
    assert_eq!(
        telemetry
            .answer_one(
                Server::builder().router(router),
                phi_message("ADT^A01", "T1")
            )
            .await,
        "AE"
    );
    let spans = telemetry.spans();
    let message = only(&spans, "mllp.message");
    assert_eq!(string(message, "error.type"), "timeout");
    assert_eq!(error_description(message), "timeout");
    let exception = message
        .events
        .iter()
        .find(|e| e.name == "mllp.message.exception")
        .expect("exception event");
    assert!(
        exception
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "error.type" && kv.value.as_str() == "timeout")
    );
    let metrics = telemetry.metrics();
    assert_eq!(
        metrics.sum(
            "mllp.server.handler.exceptions",
            &[("error.type", "timeout")]
        ),
        1
    );
    let (count, seconds) =
        metrics.histogram("mllp.server.message.duration", &[("hl7.ack_code", "AE")]);
    assert_eq!(count, 1);
    assert!(
        (2.0..60.0).contains(&seconds),
        "the route's 2 s, not 60 s: {seconds}"
    );
}

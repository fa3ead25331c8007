//! Server throughput with the full OpenTelemetry pipeline against telemetry off, in the same
//! run: closed loop (each connection sends a message and waits for its ACK), 1 and 16
//! connections, the ~1 KiB ADT^A01 of `tests/fixtures/adt_a01.hl7`.
//!
//! "otel" is what `mllp::otel::init` installs, minus the network, with the server's defaults
//! (at most 1000 `mllp.message` spans per second): an `info,ractor=warn` filter, the
//! tracing-opentelemetry layer with init's options feeding a batch span processor, and a
//! periodic metrics reader (1 s) on the server's meter, both exporting to no-op sinks that only
//! count. "otel_every_message" is the same with `message_trace_limit(None)`: a span for every
//! message. "off" is no subscriber and the global no-op meter. Each configuration runs on its
//! own current-thread runtime (server and clients on one thread) with its subscriber as that
//! thread's default, so both are measured the same way and nothing global is installed.
//!
//! Run with: `cargo bench --bench otel -- --warm-up-time 1 --measurement-time 3`
//!
//! For the ratio (throughput / "off" throughput), robust to a noisy machine, run
//! `MLLP_BENCH_RATIO=1 cargo bench --bench otel`: interleaved rounds per configuration, best
//! round of each, plus "otel_sampled_10" (`message_trace_ratio(0.1)` and no limit: one message
//! in ten gets a span) and two breakdown configurations ("metrics_only": the meter without a
//! subscriber; "layer_noop": the tracing-opentelemetry layer on a no-op tracer, the floor of
//! span export through `tracing`). `MLLP_BENCH_ROUNDS` sets the rounds (7);
//! `MLLP_BENCH_CONFIGS=otel` runs only the named configurations (comma-separated), for
//! profiling. `MLLP_BENCH_MESSAGES` sets the messages per round (20 000). The limit's windows
//! are whole seconds from server start and a 20 000-message round lasts a fraction of one (its
//! warm-up already uses up the first second's spans), so "otel" is only representative of a
//! steady load with rounds of several seconds:
//! `MLLP_BENCH_MESSAGES=400000 MLLP_BENCH_ROUNDS=3 MLLP_BENCH_CONFIGS=off,otel,otel_every_message,metrics_only`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use futures_util::{SinkExt, StreamExt};
use mllp::app::{Request, Router};
use mllp::frame::MllpCodec;
use mllp::{Server, ServerHandle};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;

/// A span sink that only counts what it is given.
#[derive(Debug, Clone, Default)]
struct CountingSpans(Arc<AtomicU64>);

impl SpanExporter for CountingSpans {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        std::future::ready(Ok(()))
    }
}

/// A metric sink that only counts exports.
#[derive(Debug, Clone, Default)]
struct CountingMetrics(Arc<AtomicU64>);

impl PushMetricExporter for CountingMetrics {
    fn export(&self, _metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok(()))
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// `tests/fixtures/adt_a01.hl7` when present, else a synthetic ADT^A01 of the same shape.
fn adt_a01() -> Bytes {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adt_a01.hl7");
    if let Ok(bytes) = std::fs::read(fixture) {
        return Bytes::from(bytes);
    }
    Bytes::from_static(
        b"MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|GHH LAB, INC.|GOOD HEALTH HOSPITAL|20260101120000||ADT^A01^ADT_A01|MSG00001|P|2.5.1\r\
EVN|A01|20260101120000|||C006^WOLF^PATRICIA^^^DR^^^^L\r\
PID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR~123456789^^^USSSA^SS||EVERYMAN^ADAM^A^III||19610615|M||2106-3^White^HL70005|2222 HOME STREET^^GREENSBORO^NC^27401-1020^USA||^PRN^PH^^1^555^5552004|^WPN^PH^^1^955^5551009|ENG^English^ISO6392|S^Single^HL70002||PATID12345001^2^M10^ADT1^AN^A|123456789|987654^NC\r\
NK1|1|NUCLEAR^NELDA^W|SPO^Spouse^HL70063|2222 HOME STREET^^GREENSBORO^NC^27401-1020^USA|^PRN^PH^^1^555^5552004\r\
PV1|1|I|2000^2012^01^GOOD HEALTH HOSPITAL||||004777^ATTEND^AARON^A^^^DR|||SUR||||ADM|A0|||||||||||||||||||||||||20260101120000\r\
OBX|1|NM|29463-7^Body weight^LN||79|kg^kilogram^UCUM|||||F\r\
OBX|2|NM|8302-2^Body height^LN||180|cm^centimeter^UCUM|||||F\r\
AL1|1|DA|1605^PENICILLIN^L|MO|HIVES\r\
DG1|1|I10|K35.80^Unspecified acute appendicitis^I10|||A\r\
IN1|1|0|BC1^BLUE CROSS|BC|PO BOX 1234^^ANYTOWN^NC^27401||^PRN^PH^^1^800^5551234|9876543|||||||||EVERYMAN^ADAM^A|SEL|19610615\r",
    )
}

/// The telemetry of one configuration: the subscriber for the runtime's thread, and the meter
/// provider the server records into (`None`: the global no-op one).
struct Telemetry {
    dispatch: Dispatch,
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    /// `ServerBuilder::message_trace_ratio`.
    trace_ratio: f64,
    /// `ServerBuilder::message_trace_limit`.
    trace_limit: Option<u32>,
}

impl Telemetry {
    fn off() -> Telemetry {
        Telemetry {
            dispatch: Dispatch::none(),
            tracer: None,
            meter: None,
            trace_ratio: 1.0,
            trace_limit: None,
        }
    }

    fn otel() -> Telemetry {
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(CountingSpans::default())
            .build();
        let meter = SdkMeterProvider::builder()
            .with_reader(
                PeriodicReader::builder(CountingMetrics::default())
                    .with_interval(Duration::from_secs(1))
                    .build(),
            )
            .build();
        // The layer options `mllp::otel::init` uses.
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info,ractor=warn"))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer.tracer("mllp"))
                    .with_threads(false)
                    .with_location(false)
                    .with_tracked_inactivity(false)
                    .with_context_activation(false),
            );
        Telemetry {
            dispatch: Dispatch::new(subscriber),
            tracer: Some(tracer),
            meter: Some(meter),
            trace_ratio: 1.0,
            trace_limit: Some(mllp::server::DEFAULT_MESSAGE_TRACE_LIMIT),
        }
    }

    /// The full pipeline with a span for every message (`message_trace_limit(None)`).
    fn otel_every_message() -> Telemetry {
        Telemetry {
            trace_limit: None,
            ..Telemetry::otel()
        }
    }

    /// The full pipeline, one message in ten traced (`message_trace_ratio(0.1)`, no limit).
    fn otel_sampled() -> Telemetry {
        Telemetry {
            trace_ratio: 0.1,
            ..Telemetry::otel_every_message()
        }
    }

    /// The server's metrics into a periodic reader, no subscriber.
    fn metrics_only() -> Telemetry {
        Telemetry {
            dispatch: Dispatch::none(),
            ..Telemetry::otel()
        }
    }

    /// The tracing-opentelemetry layer with init's options on a no-op tracer, no metrics.
    fn layer_noop() -> Telemetry {
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info,ractor=warn"))
            .with(
                tracing_opentelemetry::layer()
                    .with_threads(false)
                    .with_location(false)
                    .with_tracked_inactivity(false)
                    .with_context_activation(false),
            );
        Telemetry {
            dispatch: Dispatch::new(subscriber),
            tracer: None,
            meter: None,
            trace_ratio: 1.0,
            trace_limit: None,
        }
    }

    fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            tracer.shutdown().expect("tracer shutdown");
        }
        if let Some(meter) = self.meter {
            meter.shutdown().expect("meter shutdown");
        }
    }
}

async fn start(telemetry: &Telemetry) -> ServerHandle {
    let router = Router::new().route("ADT^*", |_req: Request| async {});
    let mut builder = Server::builder()
        .router(router)
        .message_trace_ratio(telemetry.trace_ratio)
        .message_trace_limit(telemetry.trace_limit);
    if let Some(provider) = &telemetry.meter {
        builder = builder.meter(&provider.meter("mllp"));
    }
    builder
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn()
        .await
        .expect("start")
}

/// Sends `messages` messages over `connections` connections, closed loop; returns the time
/// the sending took (connecting excluded).
async fn run(server: &ServerHandle, payload: &Bytes, connections: u64, messages: u64) -> Duration {
    let mut peers = Vec::new();
    for _ in 0..connections {
        let stream = TcpStream::connect(server.local_addr())
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        peers.push(Framed::new(stream, MllpCodec::new()));
    }
    let started = Instant::now();
    let tasks: Vec<_> = peers
        .into_iter()
        .enumerate()
        .map(|(i, mut peer)| {
            let share = messages / connections + u64::from((i as u64) < messages % connections);
            let payload = payload.clone();
            tokio::spawn(async move {
                for _ in 0..share {
                    peer.send(payload.clone()).await.expect("send");
                    peer.next().await.expect("ack").expect("ack frame");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    started.elapsed()
}

fn throughput(c: &mut Criterion) {
    let payload = adt_a01();
    let mut group = c.benchmark_group("server_throughput");
    group.throughput(Throughput::Elements(1));
    for connections in [1u64, 16] {
        for (name, make) in [
            ("off", Telemetry::off as fn() -> Telemetry),
            ("otel", Telemetry::otel),
            ("otel_every_message", Telemetry::otel_every_message),
        ] {
            let telemetry = make();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            tracing::dispatcher::with_default(&telemetry.dispatch, || {
                let server = runtime.block_on(start(&telemetry));
                group.bench_with_input(
                    BenchmarkId::new(name, connections),
                    &connections,
                    |b, &connections| {
                        b.iter_custom(|messages| {
                            runtime.block_on(run(&server, &payload, connections, messages))
                        });
                    },
                );
                runtime.block_on(server.shutdown());
            });
            drop(runtime);
            telemetry.shutdown();
        }
    }
    group.finish();
}

/// A configuration of the ratio report: its name and how to build its telemetry.
type Config = (&'static str, fn() -> Telemetry);

/// Interleaved rounds of each configuration; prints the best round of each as messages per
/// second and as a ratio to "off".
fn ratio_report() {
    let payload = adt_a01();
    let rounds: usize = std::env::var("MLLP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let messages: u64 = std::env::var("MLLP_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let configs: Vec<Config> = vec![
        ("off", Telemetry::off),
        ("otel", Telemetry::otel),
        ("otel_every_message", Telemetry::otel_every_message),
        ("otel_sampled_10", Telemetry::otel_sampled),
        ("metrics_only", Telemetry::metrics_only),
        ("layer_noop", Telemetry::layer_noop),
    ];
    // `MLLP_BENCH_CONFIGS=otel,off` keeps only the named configurations (for profiling one).
    let configs: Vec<Config> = match std::env::var("MLLP_BENCH_CONFIGS") {
        Ok(names) => configs
            .into_iter()
            .filter(|(name, _)| names.split(',').any(|n| n == *name))
            .collect(),
        Err(_) => configs,
    };

    for connections in [1u64, 16] {
        let mut best = vec![Duration::MAX; configs.len()];
        for _ in 0..rounds {
            for (i, (_, make)) in configs.iter().enumerate() {
                let telemetry = make();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let took = tracing::dispatcher::with_default(&telemetry.dispatch, || {
                    runtime.block_on(async {
                        let server = start(&telemetry).await;
                        run(&server, &payload, connections, 2_000).await;
                        let took = run(&server, &payload, connections, messages).await;
                        server.shutdown().await;
                        took
                    })
                });
                drop(runtime);
                telemetry.shutdown();
                best[i] = best[i].min(took);
            }
        }
        let rate = |d: Duration| messages as f64 / d.as_secs_f64();
        let base = rate(best[0]);
        for ((name, _), took) in configs.iter().zip(&best) {
            println!(
                "{connections:>2} conn {name:>16}: {:>9.0} msg/s  ratio {:.3}",
                rate(*took),
                rate(*took) / base
            );
        }
    }
}

criterion_group!(benches, throughput);

fn main() {
    if std::env::var_os("MLLP_BENCH_RATIO").is_some() {
        ratio_report();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

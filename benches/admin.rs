//! What watching a server costs: the snapshot at 10,000 idle connections, and throughput with
//! the admin endpoint on and scraped every second against the same server without it.
//!
//! Run with: `cargo bench --bench admin` (options: `--connections 10000`, `--messages 200000`,
//! `--rounds 5`, `--only snapshot|throughput`).
//!
//! - **snapshot**: a server with `--connections` idle connections (held by a child process,
//!   this bench re-run with `--hold`, so neither process needs more than 10,000 descriptors),
//!   then `ServerHandle::snapshot()`, `summary()`, and the admin routes (`/status`, all of
//!   `/connections`, the 300 rows `mllp top` asks for, `/metrics`) timed 50 times each.
//! - **throughput**: 16 connections, closed loop, the built-in ADT fixture. `off` and `on`
//!   record into the same kind of OpenTelemetry meter provider (an SDK provider with a manual
//!   reader that nobody reads, as a service that exports metrics would have); `on` adds the
//!   Prometheus reader, the admin endpoint, and a scraper that GETs `/metrics`, `/status` and
//!   `/connections` every second. Rounds interleave; the best round of each side is reported,
//!   with the ratio on/off. A third line, `off, no-op metrics`, shows the server without any
//!   meter provider, for reference.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::admin::{AdminState, PrometheusMetrics};
use mllp::app::{Request, Router};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

const ADT: &[u8] = include_bytes!("../tests/fixtures/adt_a01.hl7");

fn message(control_id: &str) -> Bytes {
    let parsed = Message::parse(Bytes::from_static(ADT)).expect("fixture parses");
    let old = parsed.control_id().expect("fixture has MSH-10");
    let text = String::from_utf8_lossy(ADT);
    Bytes::from(text.replacen(&format!("|{old}|"), &format!("|{control_id}|"), 1))
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The child: opens `n` connections to `addr`, says `ready`, and holds them until killed.
async fn hold(addr: SocketAddr, n: usize) {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(TcpStream::connect(addr).await.expect("connect"));
    }
    println!("ready");
    std::future::pending::<()>().await;
}

async fn server(meter: Option<&opentelemetry::metrics::Meter>, max: usize) -> mllp::ServerHandle {
    let router = Router::new().route("*", |_req: Request| async {});
    let mut builder = mllp::Server::builder()
        .router(router)
        .max_connections(max)
        .idle_timeout(None);
    if let Some(meter) = meter {
        builder = builder.meter(meter);
    }
    builder
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap()
}

async fn admin(state: AdminState) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(mllp::admin::serve(listener, state, std::future::pending()));
    addr
}

/// `GET path` over a fresh connection; the body's length.
async fn get(addr: SocketAddr, path: &str) -> usize {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"), "{path} failed");
    body.len()
}

fn summary(name: &str, mut times: Vec<Duration>, size: Option<usize>) {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let size = size.map_or(String::new(), |s| {
        format!("   body {:.1} KiB", s as f64 / 1024.0)
    });
    println!(
        "{name:<34} mean {mean:>9.2?}   p50 {:>9.2?}   max {:>9.2?}{size}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

async fn snapshot_cost(connections: usize) {
    let server = server(None, connections + 100).await;
    let (metrics, reader) = PrometheusMetrics::new().unwrap();
    let _provider = SdkMeterProvider::builder().with_reader(reader).build();
    let admin = admin(AdminState::new(server.clone()).metrics(metrics)).await;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--hold", &server.local_addr().to_string()])
        .args(["--connections", &connections.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    // Every socket the child connected is accepted and registered (the acceptor works through
    // the backlog at its own pace).
    let start = Instant::now();
    while server.snapshot().await.connections.len() < connections {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "connections never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("snapshot at {connections} idle connections");
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let snapshot = server.snapshot().await;
        times.push(t.elapsed());
        assert_eq!(snapshot.connections.len(), connections);
    }
    summary("ServerHandle::snapshot()", times, None);
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let connections = server.connections().await;
        times.push(t.elapsed());
        assert_eq!(connections.len(), connections.len());
    }
    summary("  of which the registry copy", times, None);
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let summary = server.summary().await;
        times.push(t.elapsed());
        assert_eq!(summary.active_connections, connections);
    }
    summary("ServerHandle::summary()", times, None);
    for path in [
        "/status",
        "/connections",
        "/connections?sort=messages&order=desc&limit=300",
        "/metrics",
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..50 {
            let t = Instant::now();
            size = get(admin, path).await;
            times.push(t.elapsed());
        }
        summary(&format!("GET {path}"), times, Some(size));
    }
    let _ = child.kill().await;
    server.shutdown().await;
}

/// 16 connections, closed loop: messages per second.
async fn drive(addr: SocketAddr, per_connection: usize) -> f64 {
    let batches: Vec<Vec<Bytes>> = (0..16)
        .map(|c| {
            (0..per_connection)
                .map(|i| message(&format!("B{c}-{i}")))
                .collect()
        })
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for batch in batches {
        tasks.push(tokio::spawn(async move {
            let socket = TcpStream::connect(addr).await.unwrap();
            socket.set_nodelay(true).unwrap();
            let mut framed = Framed::new(socket, MllpCodec::new());
            for m in batch {
                framed.send(m).await.unwrap();
                let reply = framed.next().await.unwrap().unwrap();
                assert!(reply.windows(4).any(|w| w == b"|AA|" || w == b"|CA|"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (16 * per_connection) as f64 / start.elapsed().as_secs_f64()
}

async fn throughput(messages: usize, rounds: usize) {
    let per_connection = messages / 16;
    // `off`: an SDK meter provider whose reader nobody reads.
    let off_provider = SdkMeterProvider::builder()
        .with_reader(ManualReader::builder().build())
        .build();
    let off = server(Some(&off_provider.meter("mllp")), 4096).await;
    // `on`: the Prometheus reader, the endpoint, and a scraper every second.
    let (metrics, reader) = PrometheusMetrics::new().unwrap();
    let on_provider = SdkMeterProvider::builder().with_reader(reader).build();
    let on = server(Some(&on_provider.meter("mllp")), 4096).await;
    let admin = admin(AdminState::new(on.clone()).metrics(metrics)).await;
    let scrape_time = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let scrapes = std::sync::Arc::clone(&scrape_time);
    let scraper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let t = Instant::now();
            for path in ["/metrics", "/status", "/connections"] {
                get(admin, path).await;
            }
            scrapes.lock().unwrap().push(t.elapsed());
        }
    });
    let noop = server(None, 4096).await;
    let (mut best_off, mut best_on, mut best_noop) = (0f64, 0f64, 0f64);
    let mut ratios = Vec::new();
    // Warm-up, then interleaved rounds, alternating which side goes first.
    drive(off.local_addr(), per_connection / 4).await;
    drive(on.local_addr(), per_connection / 4).await;
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = drive(off.local_addr(), per_connection).await;
            (a, drive(on.local_addr(), per_connection).await)
        } else {
            let b = drive(on.local_addr(), per_connection).await;
            (drive(off.local_addr(), per_connection).await, b)
        };
        let c = drive(noop.local_addr(), per_connection).await;
        println!("round {round}: off {a:>8.0}   on {b:>8.0}   no-op metrics {c:>8.0} msg/s");
        best_off = best_off.max(a);
        best_on = best_on.max(b);
        best_noop = best_noop.max(c);
        ratios.push(b / a);
    }
    scraper.abort();
    ratios.sort_by(f64::total_cmp);
    let scrapes = scrape_time.lock().unwrap().clone();
    let scrape_mean = scrapes.iter().sum::<Duration>() / scrapes.len().max(1) as u32;
    println!("throughput, 16 connections closed loop, {rounds} rounds of {messages}");
    println!("  admin off (SDK meter provider) best {best_off:>10.0} msg/s");
    println!(
        "  admin on, scraped every second best {best_on:>10.0} msg/s   best on/best off {:.3}",
        best_on / best_off
    );
    println!("  off, no-op metrics             best {best_noop:>10.0} msg/s");
    println!(
        "  on/off per round: median {:.3}, min {:.3}, max {:.3}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    println!(
        "  one scrape (/metrics + /status + /connections, wall time under load): mean {scrape_mean:.2?} over {} scrapes",
        scrapes.len()
    );
    for s in [off, on, noop] {
        s.shutdown().await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let connections: usize = arg("--connections", 10_000);
    if let Some(addr) = flag("--hold") {
        runtime.block_on(hold(addr.parse().unwrap(), connections));
        return;
    }
    let only = flag("--only");
    runtime.block_on(async {
        if only.as_deref() != Some("throughput") {
            snapshot_cost(connections).await;
        }
        if only.as_deref() != Some("snapshot") {
            throughput(arg("--messages", 200_000), arg("--rounds", 5)).await;
        }
    });
}

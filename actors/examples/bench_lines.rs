//! Run with: cargo run --release -p mllp-actors --example bench_lines
//!
//! A line-echo protocol served by the full actor tree and by a bare tokio accept loop (same
//! codec, a task per connection, no actors, no per-message task), in the same run:
//! - closed-loop throughput with 1 and 64 connections (messages/s and the ratio actors/bare);
//! - idle memory per connection: the server process's RSS growth while 10,000 idle
//!   connections (opened by a child process, so client sockets are not counted) are open.
//!
//! `BENCH_SECS` sets the seconds per throughput run (default 1, five rounds per server), `BENCH_CONNS` the connection
//! counts (default `1,64`), `BENCH_IDLE` the number of idle connections (default 10000). Both processes need that many file descriptors:
//! `ulimit -n 20000` first if `ulimit -n` is lower.

use std::future::Future;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mllp_actors::{ConnectionInfo, Failure, PlainTcp, Protocol, Server, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

const MAX_LINE: usize = 64 * 1024;
const PAYLOAD: &str = "MSH|^~\\&|BENCH|LAB|RECV|HOSP|20240101000000||ADT^A01|1|P|2.5";

struct Echo;

impl Protocol for Echo {
    type Request = String;
    type Response = String;
    type Meta = ();
    type Error = LinesCodecError;
    type Codec = LinesCodec;

    fn codec(&self) -> LinesCodec {
        LinesCodec::new_with_max_length(MAX_LINE)
    }

    fn meta(&self, _line: &String) {}

    // An echo needs no waiting: a ready future, polled in place by the runtime.
    fn handle(
        &self,
        line: String,
        _meta: &(),
        _connection: &ConnectionInfo,
    ) -> impl Future<Output = Option<String>> + Unpin + Send + 'static {
        std::future::ready(Some(line))
    }

    fn on_failure(&self, _meta: &(), _failure: &Failure) -> Option<String> {
        Some("error".to_owned())
    }
}

async fn listener() -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    socket.listen(4096).expect("listen")
}

/// The baseline: accept, one task per connection, decode, answer inline, encode.
async fn bare_server() -> SocketAddr {
    let listener = listener().await;
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut framed = Framed::new(socket, LinesCodec::new_with_max_length(MAX_LINE));
                while let Some(Ok(line)) = framed.next().await {
                    if framed.send(line).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// `connections` clients, each sending a line and waiting for its echo, until `duration` ends.
async fn closed_loop(addr: SocketAddr, connections: usize, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut clients = Vec::new();
    for _ in 0..connections {
        let done = Arc::clone(&done);
        clients.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let request = format!("{PAYLOAD}\n");
            let mut answer = String::new();
            let mut count = 0;
            while Instant::now() < deadline {
                write.write_all(request.as_bytes()).await.expect("write");
                answer.clear();
                read.read_line(&mut answer).await.expect("read");
                assert_eq!(answer.len(), request.len());
                count += 1;
            }
            done.fetch_add(count, Ordering::Relaxed);
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

const ROUNDS: usize = 5;

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Child-process mode: open `n` idle connections, say "ready", hold them until stdin closes.
fn idle_client(addr: SocketAddr, n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(TcpStream::connect(addr).await.expect("connect"));
        }
        println!("ready");
        std::io::stdout().flush().expect("flush");
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        })
        .await;
        drop(held);
    });
}

/// Opens `idle` connections to `addr` from a child process; returns the child once they are
/// all connected, and the RSS before they were opened.
async fn open_idle(addr: SocketAddr, idle: usize) -> (std::process::Child, u64) {
    // Warm the allocator and the server with a few connections first.
    let _ = closed_loop(addr, 16, Duration::from_millis(200)).await;
    let before = rss_bytes();
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--idle-client", &addr.to_string(), &idle.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .expect("join");
    assert_eq!(ready.expect("child output").trim(), "ready");
    (child, before)
}

fn report_idle(name: &str, idle: usize, before: u64) {
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / idle as f64;
    println!(
        "{name:>7}: {idle} idle connections, RSS {:.1} MiB -> {:.1} MiB, {:.2} KiB per connection",
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64,
        per / 1024.0
    );
}

/// Server-process mode: serve with `kind`, let a child open `idle` connections, report the
/// RSS growth of this (fresh) process.
async fn idle_memory(kind: &str, idle: usize) {
    if kind == "bare" {
        let bare = bare_server().await;
        let (mut child, before) = open_idle(bare, idle).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        report_idle("bare", idle, before);
        drop(child.stdin.take());
        let _ = child.wait();
        return;
    }
    let config = ServerConfig::default()
        .max_connections(idle + 16)
        .idle_timeout(None);
    let server = Server::start(listener().await, Echo, PlainTcp, config, vec![])
        .await
        .expect("server");
    let (mut child, before) = open_idle(server.local_addr(), idle).await;
    while server.connections().await.len() < idle {
        tokio::task::yield_now().await;
    }
    // Let every connection reach its first read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    report_idle("actors", idle, before);
    drop(child.stdin.take());
    let _ = child.wait();
    server.shutdown().await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--idle-client") {
        let addr = args[2].parse().expect("address");
        let n = args[3].parse().expect("count");
        idle_client(addr, n);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--idle-server") {
        let n = args[3].parse().expect("count");
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(idle_memory(&args[2], n));
        return;
    }
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let idle: usize = std::env::var("BENCH_IDLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let duration = Duration::from_secs_f64(secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bare = bare_server().await;
        let config = ServerConfig::default().idle_timeout(None);
        let actors = Server::start(listener().await, Echo, PlainTcp, config, vec![])
            .await
            .expect("server");
        let counts: Vec<usize> = std::env::var("BENCH_CONNS")
            .ok()
            .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 64]);
        println!(
            "closed loop, {ROUNDS} alternating rounds of {secs} s per server, median messages/s:"
        );
        println!(
            "{:>12} {:>12} {:>12} {:>8}",
            "connections", "bare", "actors", "ratio"
        );
        for connections in counts {
            let _ = closed_loop(bare, connections, Duration::from_millis(300)).await;
            let _ = closed_loop(actors.local_addr(), connections, Duration::from_millis(300)).await;
            // Alternate the two servers so that drift in the machine's load hits both alike.
            let mut bare_rates = Vec::new();
            let mut actors_rates = Vec::new();
            for _ in 0..ROUNDS {
                bare_rates.push(closed_loop(bare, connections, duration).await);
                actors_rates.push(closed_loop(actors.local_addr(), connections, duration).await);
            }
            let (bare_rate, actors_rate) = (median(bare_rates), median(actors_rates));
            println!(
                "{connections:>12} {bare_rate:>12.0} {actors_rate:>12.0} {:>8.2}",
                actors_rate / bare_rate
            );
        }
        actors.shutdown().await;
    });
    println!("idle memory (RSS growth of a fresh server process; goal for actors <= 12 KiB):");
    for kind in ["bare", "actors"] {
        let status = Command::new(std::env::current_exe().expect("exe"))
            .args(["--idle-server", kind, &idle.to_string()])
            .status()
            .expect("server process");
        assert!(status.success());
    }
}

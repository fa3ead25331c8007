//! Full server (parse + route + middleware + ACK through the actor runtime) against a bare tokio
//! baseline doing the same HL7 work (frame, parse, build the ACK) with no actors, no handler
//! task, no router and no middleware, in the same run.
//!
//! Run with: `cargo bench --bench server` (optionally `-- --messages 20000`).
//! Prints messages/s, p50/p99 latency and the ratio full/bare per scenario.
//!
//! Each scenario runs `--rounds` (5) interleaved rounds per side and reports the best round of
//! each (robust to a noisy machine).
//!
//! For profiling one side (under `perf` or `valgrind --tool=callgrind`): `--only bare` or
//! `--only full` runs just that server, and `--scenario 1x1` (connections x depth) just that
//! load.
//!
//! Both sides enforce the same idle-timeout policy (60 s, the server's default): the bare
//! baseline holds one timer per connection and re-arms it only when it fires, the cheapest way
//! hand-written tokio code can. That matters at one connection, closed loop, where client and
//! server take turns on one worker and every park of a worker thread is on the critical path:
//! while any tokio timer is registered, tokio parks every worker with a timeout (a clock read
//! and a timed wait per park), where a runtime without timers waits untimed. Ablations:
//! - `--no-idle-timeout`: neither side has an idle timeout (the server runs with
//!   `idle_timeout(None)`).
//! - `--bare-without-idle-timeout`: the server keeps its default, the baseline has none (the
//!   comparison of earlier releases; it charges the server for the timer alone).
//! - `--no-memory-budget`: the server runs without `max_buffered_bytes` (its default draws
//!   every read buffer and parse index from one budget).
//! - `--runtime-timer` registers one far-off tokio timer for the whole run, so both sides run on
//!   a runtime with a timer, as in any service that has one (an OpenTelemetry periodic reader, a
//!   request timeout).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::ack::{Ack, AckCode, AckOptions};
use mllp::app::{Next, Request, Router, from_fn};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

const ADT: &[u8] = include_bytes!("../tests/fixtures/adt_a01.hl7");

/// The fixture with MSH-10 replaced, so every message carries its own control id.
fn message(control_id: &str) -> Bytes {
    let parsed = Message::parse(Bytes::from_static(ADT)).expect("fixture parses");
    let old = parsed.control_id().expect("fixture has MSH-10");
    let text = String::from_utf8_lossy(ADT);
    Bytes::from(text.replacen(&format!("|{old}|"), &format!("|{control_id}|"), 1))
}

/// The idle timeout both sides enforce by default (the server's default, DESIGN.md: 60 s).
const IDLE: Duration = Duration::from_secs(60);

/// The bare baseline: frame, parse, build the ACK, answer. With `idle`, it also enforces the
/// server's idle-timeout policy the cheapest way hand-written tokio code can: one timer per
/// connection, re-armed only when it fires (the same lazy re-arm the server uses).
async fn bare_server(idle: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let options = Arc::new(AckOptions::default());
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let options = options.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(socket, MllpCodec::new());
                let mut last_activity = tokio::time::Instant::now();
                // Created always, registered only when first polled (with `idle`).
                let timer = tokio::time::sleep(IDLE);
                tokio::pin!(timer);
                loop {
                    let frame = if idle {
                        tokio::select! {
                            biased;
                            frame = framed.next() => frame,
                            () = &mut timer => {
                                let due = last_activity + IDLE;
                                if due <= tokio::time::Instant::now() {
                                    break;
                                }
                                timer.as_mut().reset(due);
                                continue;
                            }
                        }
                    } else {
                        framed.next().await
                    };
                    let Some(Ok(frame)) = frame else { break };
                    let message = Message::parse(frame).unwrap();
                    // The same ACK rule as the server: enhanced mode (CA) when MSH-15 is set.
                    let code = if message.accept_ack_type().is_some() {
                        AckCode::CA
                    } else {
                        AckCode::AA
                    };
                    let ack = Ack::build(&message, code, &[], &options);
                    if framed.send(ack.into_bytes()).await.is_err() {
                        break;
                    }
                    if idle {
                        last_activity = tokio::time::Instant::now();
                    }
                }
            });
        }
    });
    addr
}

/// The full server; `no_idle_timeout` turns the idle timeout off (default: 60 s),
/// `no_memory_budget` the memory budget (default: a quarter of the memory).
async fn full_server(no_idle_timeout: bool, no_memory_budget: bool) -> mllp::ServerHandle {
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {})
        .route("*", |_req: Request| async {})
        .layer(from_fn(|req: Request, next: Next| next.run(req)));
    let mut builder = mllp::Server::builder()
        .router(router)
        .max_in_flight(16)
        .max_connections(4096);
    if no_idle_timeout {
        builder = builder.idle_timeout(None);
    }
    if no_memory_budget {
        builder = builder.max_buffered_bytes(None);
    }
    builder
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap()
}

struct Outcome {
    messages: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// `connections` clients, each sending `per_connection` messages with `depth` in flight.
async fn drive(
    addr: SocketAddr,
    connections: usize,
    per_connection: usize,
    depth: usize,
) -> Outcome {
    // Messages are made before the clock starts: the bench measures the servers, not the client.
    let batches: Vec<Vec<Bytes>> = (0..connections)
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
            let mut latencies = Vec::with_capacity(batch.len());
            let mut sent_at = std::collections::VecDeque::new();
            let mut queue = batch.into_iter();
            let mut outstanding = true;
            while outstanding {
                while sent_at.len() < depth {
                    let Some(message) = queue.next() else { break };
                    framed.feed(message).await.unwrap();
                    sent_at.push_back(Instant::now());
                }
                if sent_at.is_empty() {
                    outstanding = false;
                    continue;
                }
                framed.flush().await.unwrap();
                let reply = framed.next().await.unwrap().unwrap();
                assert!(
                    reply.windows(4).any(|w| w == b"|AA|" || w == b"|CA|"),
                    "not accepted: {}",
                    String::from_utf8_lossy(&reply)
                );
                latencies.push(sent_at.pop_front().unwrap().elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Outcome {
        messages: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, o: &mut Outcome) -> f64 {
    o.latencies.sort();
    let rate = o.messages as f64 / o.elapsed.as_secs_f64();
    println!(
        "{name:<28} {rate:>10.0} msg/s   p50 {:>8.1?}   p99 {:>8.1?}",
        percentile(&o.latencies, 0.50),
        percentile(&o.latencies, 0.99)
    );
    rate
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no flag: keep that
    // quick so the bench stays compile-checked without becoming a CI soak.
    let total = if args.iter().any(|a| a == "--bench") {
        total
    } else {
        64
    };
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only = flag("--only");
    let scenarios: Vec<(usize, usize)> = match flag("--scenario") {
        Some(s) => {
            let (c, d) = s.split_once('x').expect("--scenario CxD");
            vec![(c.parse().expect("connections"), d.parse().expect("depth"))]
        }
        None => vec![(1, 1), (16, 1), (64, 1), (1, 16), (16, 16)],
    };
    let rounds: usize = if args.iter().any(|a| a == "--bench") {
        flag("--rounds").map_or(5, |r| r.parse().expect("--rounds N"))
    } else {
        1
    };
    let no_idle_timeout = args.iter().any(|a| a == "--no-idle-timeout");
    let bare_idle = !no_idle_timeout && !args.iter().any(|a| a == "--bare-without-idle-timeout");
    let runtime_timer = args.iter().any(|a| a == "--runtime-timer");
    let no_memory_budget = args.iter().any(|a| a == "--no-memory-budget");
    let run_bare = only.as_deref() != Some("full");
    let run_full = only.as_deref() != Some("bare");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bare = bare_server(bare_idle).await;
        let full = full_server(no_idle_timeout, no_memory_budget).await;
        // Registered for the whole run and dropped with the runtime.
        let _timer = runtime_timer.then(|| tokio::spawn(tokio::time::sleep(Duration::from_secs(3600))));
        println!(
            "{total} messages per scenario and round, best of {rounds} rounds, ADT^A01 fixture of {} bytes",
            ADT.len()
        );
        println!(
            "idle timeout: server {}, bare {}; extra runtime timer: {}",
            if no_idle_timeout { "off" } else { "default (60 s)" },
            if bare_idle { "60 s" } else { "off" },
            if runtime_timer { "yes" } else { "no" }
        );
        for (connections, depth) in scenarios {
            let per = (total / connections).max(1);
            let label = format!("c={connections} depth={depth}");
            // Interleaved rounds (bare, server, bare, server...), each warmed up; the best round
            // of each side is reported, so a burst of noise on a shared machine hits one round,
            // not one side.
            let sides = [
                ("bare  ", bare, run_bare),
                ("server", full.local_addr(), run_full),
            ];
            let mut best: [Option<Outcome>; 2] = [None, None];
            for _ in 0..rounds {
                for (i, (_, addr, wanted)) in sides.iter().enumerate() {
                    if !wanted {
                        continue;
                    }
                    drive(*addr, connections, per.min(100), depth).await;
                    let outcome = drive(*addr, connections, per, depth).await;
                    if best[i].as_ref().is_none_or(|b| outcome.elapsed < b.elapsed) {
                        best[i] = Some(outcome);
                    }
                }
            }
            let mut rates = Vec::new();
            for ((name, _, _), outcome) in sides.iter().zip(&mut best) {
                if let Some(outcome) = outcome {
                    rates.push(report(&format!("{name} {label}"), outcome));
                }
            }
            if let [b, f] = rates[..] {
                println!("{:<28} ratio full/bare = {:.2}", "", f / b);
            }
        }
        full.shutdown().await;
    });
}

//! The message store under load: a server that stores every message before its AA, with the
//! SQLite store, the directory store and no store, at 1, 16 and 64 connections (closed loop),
//! against the disk's own speed in the same run: one writer appending a message-sized record
//! and calling `fdatasync` after each, as fast as it can (the physical reference).
//!
//! Run with: `cargo bench --bench store` (optionally `-- --messages 4000 --rounds 3`).
//! Prints messages/s, p50/p99 latency per store and load, and the ratios the store issue sets
//! goals for: SQLite at 64 connections against no store, SQLite at one connection against the
//! fdatasync loop. Beside the 64-connection figures it prints 64 such loops at once, a file
//! each: what the disk gives that many independent durable writers. Between the two
//! one-writer figures it prints the SQLite store alone (one task awaiting each
//! `Store::append` in turn: no socket, no parse), which splits the one-connection gap into
//! what the commit costs and what the round trip adds.
//!
//! The files go under `target/bench-store/` (the disk the project lives on; `/tmp` may be a
//! RAM disk), and are removed after each round. Server and load run in one process on the
//! same runtime, so the figures are for the whole machine, not one core each.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::app::{Request, Router};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use mllp::store::{DirStore, Record, SqliteConfig, SqliteStore, Store, StoreLayer};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const ADT: &[u8] = include_bytes!("../tests/fixtures/adt_a01.hl7");

/// The fixture with MSH-10 replaced, so every message is new to the duplicate check.
fn message(control_id: &str) -> Bytes {
    let parsed = Message::parse(Bytes::from_static(ADT)).expect("fixture parses");
    let old = parsed.control_id().expect("fixture has MSH-10");
    let text = String::from_utf8_lossy(ADT);
    Bytes::from(text.replacen(&format!("|{old}|"), &format!("|{control_id}|"), 1))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sqlite,
    Dir,
    None,
}

async fn server(kind: Kind, dir: &Path) -> mllp::ServerHandle {
    let store: Option<std::sync::Arc<dyn Store>> = match kind {
        Kind::Sqlite => Some(std::sync::Arc::new(
            SqliteStore::open(dir.join("inbox.db"), SqliteConfig::default())
                .await
                .unwrap(),
        )),
        Kind::Dir => Some(std::sync::Arc::new(
            DirStore::open(dir.join("inbox")).unwrap(),
        )),
        Kind::None => None,
    };
    let router = Router::new().route("*", |_req: Request| async {});
    let router = match store {
        Some(store) => router.layer(StoreLayer::shared(store)),
        None => router,
    };
    mllp::Server::builder()
        .router(router)
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

impl Outcome {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

async fn drive(addr: SocketAddr, connections: usize, total: usize, tag: &str) -> Outcome {
    let per = total.div_ceil(connections);
    let batches: Vec<Vec<Bytes>> = (0..connections)
        .map(|c| {
            (0..per)
                .map(|i| message(&format!("{tag}{c}-{i}")))
                .collect()
        })
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            tokio::spawn(async move {
                let socket = TcpStream::connect(addr).await.unwrap();
                socket.set_nodelay(true).unwrap();
                let mut framed = Framed::new(socket, MllpCodec::new());
                let mut latencies = Vec::with_capacity(batch.len());
                for m in batch {
                    let sent = Instant::now();
                    framed.send(m).await.unwrap();
                    let reply = framed.next().await.unwrap().unwrap();
                    assert!(
                        reply.windows(4).any(|w| w == b"|AA|" || w == b"|CA|"),
                        "not accepted: {}",
                        String::from_utf8_lossy(&reply)
                    );
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    latencies.sort();
    Outcome {
        messages: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One writer: append a message-sized record, `fdatasync`, repeat, for `count` records.
fn fdatasync_loop(dir: &Path, count: usize) -> f64 {
    let path = dir.join("append.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let record = message("REF");
    let start = Instant::now();
    for _ in 0..count {
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}

/// `writers` threads at once, each appending message-sized records to a file of its own and
/// calling `fdatasync` after each, `count` records in all: what the disk gives as many
/// independent durable writers as there are connections (the physical reference for the
/// 64-connection figure; the file system may merge their syncs into one journal commit).
fn parallel_fdatasync_loops(dir: &Path, writers: usize, count: usize) -> f64 {
    let per = count.div_ceil(writers);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            scope.spawn(move || {
                let path = dir.join(format!("append-{w}.log"));
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap();
                let record = message("REF");
                for _ in 0..per {
                    file.write_all(&record).unwrap();
                    file.sync_data().unwrap();
                }
            });
        }
    });
    (per * writers) as f64 / start.elapsed().as_secs_f64()
}

/// The SQLite store alone: one task appends `count` distinct messages, each awaited (durable)
/// before the next, as one connection's handler does; no socket and no server.
async fn store_alone(dir: &Path, count: usize) -> f64 {
    let store = SqliteStore::open(dir.join("inbox.db"), SqliteConfig::default())
        .await
        .unwrap();
    let addr: SocketAddr = "127.0.0.1:2575".parse().unwrap();
    let records: Vec<Record> = (0..count)
        .map(|n| {
            let parsed = Message::parse(message(&format!("ALONE{n}"))).unwrap();
            Record::from_message(&parsed, std::time::SystemTime::now(), addr, addr, None)
        })
        .collect();
    let start = Instant::now();
    for record in records {
        store.append(record).await.unwrap();
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let messages = arg("--messages", 3000);
    let rounds = arg("--rounds", 3);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-store");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fresh = |name: &str| {
        let dir = base.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };

    let reference = (0..rounds)
        .map(|_| fdatasync_loop(&fresh("ref"), messages.min(2000)))
        .fold(0.0, f64::max);
    println!("append+fdatasync loop (one writer, same disk): {reference:.0} /s");
    let reference64 = (0..rounds)
        .map(|_| parallel_fdatasync_loops(&fresh("ref64"), 64, messages.min(8000)))
        .fold(0.0, f64::max);
    println!("append+fdatasync loops (64 writers, a file each): {reference64:.0} /s");
    // Best of the rounds of the store alone, awaited from this thread or, where a server's
    // handler runs, from a task on the runtime's workers (what the hand-off between a parked
    // worker and the writer thread adds).
    let store_alone_best = |on_worker: bool| {
        (0..rounds)
            .map(|round| {
                let dir = fresh(&format!("alone-{on_worker}-{round}"));
                let count = messages.min(2000);
                let rate = if on_worker {
                    let task_dir = dir.clone();
                    runtime
                        .block_on(runtime.spawn(async move { store_alone(&task_dir, count).await }))
                        .unwrap()
                } else {
                    runtime.block_on(store_alone(&dir, count))
                };
                let _ = std::fs::remove_dir_all(&dir);
                rate
            })
            .fold(0.0, f64::max)
    };
    let alone = store_alone_best(false);
    println!(
        "sqlite store alone (one writer awaiting each append): {alone:.0} /s ({:.2} of the loop)",
        alone / reference
    );
    let alone_task = store_alone_best(true);
    println!(
        "sqlite store alone, from a runtime worker: {alone_task:.0} /s ({:.2} of the loop)",
        alone_task / reference
    );
    println!(
        "{:<8} {:>5} {:>10} {:>10} {:>10}",
        "store", "conns", "msg/s", "p50", "p99"
    );
    let mut best = std::collections::HashMap::new();
    for connections in [1, 16, 64] {
        for kind in [Kind::None, Kind::Sqlite, Kind::Dir] {
            let mut top: Option<Outcome> = None;
            for round in 0..rounds {
                let dir = fresh(&format!("{kind:?}-{connections}-{round}"));
                let outcome = runtime.block_on(async {
                    let handle = server(kind, &dir).await;
                    let outcome = drive(
                        handle.local_addr(),
                        connections,
                        messages,
                        &format!("R{round}-"),
                    )
                    .await;
                    handle.shutdown().await;
                    outcome
                });
                let _ = std::fs::remove_dir_all(&dir);
                if top.as_ref().is_none_or(|t| outcome.rate() > t.rate()) {
                    top = Some(outcome);
                }
            }
            let top = top.unwrap();
            println!(
                "{:<8} {:>5} {:>10.0} {:>10.2?} {:>10.2?}",
                format!("{kind:?}").to_lowercase(),
                connections,
                top.rate(),
                percentile(&top.latencies, 0.50),
                percentile(&top.latencies, 0.99)
            );
            best.insert(
                (kind == Kind::Sqlite, kind == Kind::Dir, connections),
                top.rate(),
            );
        }
    }
    let sqlite = |c| best[&(true, false, c)];
    let none = |c| best[&(false, false, c)];
    let dir = |c| best[&(false, true, c)];
    println!();
    println!(
        "sqlite / no store at 64 connections: {:.2} (goal >= 0.5)",
        sqlite(64) / none(64)
    );
    println!(
        "sqlite at 64 connections / 64 fdatasync loops: {:.2}; dir / 64 loops: {:.2}",
        sqlite(64) / reference64,
        dir(64) / reference64
    );
    println!(
        "sqlite at 1 connection / fdatasync loop: {:.2} (goal >= 0.7); / store alone: {:.2}",
        sqlite(1) / reference,
        sqlite(1) / alone
    );
    for c in [1, 16, 64] {
        println!(
            "{c:>2} connections: sqlite / dir {:.2}, sqlite / none {:.2}, dir / none {:.2}",
            sqlite(c) / dir(c),
            sqlite(c) / none(c),
            dir(c) / none(c)
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

//! The JetStream store under load, against what the same NATS server does without `mllp`:
//! at 1 and 64 connections (closed loop, one message in flight per connection),
//!
//! - `jetstream`: a server with `JetStreamStore` (every message published with its headers and
//!   `Nats-Msg-Id`, AA after the PubAck);
//! - `raw`: async-nats alone, one task per "connection" publishing a message of the same size
//!   with the same number of headers and a `Nats-Msg-Id`, awaiting each PubAck;
//! - `sqlite`: a server with `SqliteStore` on the same disk, for comparison.
//!
//! The NATS server is the pinned one (`.ci/nats-server`), with `sync_interval: always`, its store
//! under `target/bench-nats/` like the SQLite file. Server, load and NATS share the machine.
//!
//! Run with: `cargo bench --bench nats` (optionally `-- --messages 5000 --rounds 3`). Prints
//! messages/s and p50/p99 per case, and the ratios the scale-out issue sets a goal for:
//! jetstream / raw at the same concurrency (goal >= 0.8).

#[path = "../tests/support/nats.rs"]
mod nats_server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::app::{Request, Router};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use mllp::store::nats::{JetStreamConfig, JetStreamStore, StreamSettings};
use mllp::store::{SqliteConfig, SqliteStore, Store, StoreLayer, StoreSpec};
use nats_server::NatsServer;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const ADT: &[u8] = include_bytes!("../tests/fixtures/adt_a01.hl7");

/// The fixture with MSH-10 replaced, so every message is new to the duplicate checks.
fn message(control_id: &str) -> Bytes {
    let parsed = Message::parse(Bytes::from_static(ADT)).expect("fixture parses");
    let old = parsed.control_id().expect("fixture has MSH-10");
    let text = String::from_utf8_lossy(ADT);
    Bytes::from(text.replacen(&format!("|{old}|"), &format!("|{control_id}|"), 1))
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `connections` MLLP connections, each sending its share one at a time and checking AA.
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
    collect(start, tasks).await
}

async fn collect(start: Instant, tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>) -> Outcome {
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Outcome {
        messages: latencies.len() as u64,
        elapsed,
        latencies,
    }
}

/// Thirteen headers of the sizes the store sends, `Nats-Msg-Id` unique per message.
fn headers(control_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("{control_id:0>32}").as_str());
    h.insert("Mllp-Received-At", "2026-12-04T17:01:42.123456Z");
    h.insert("Mllp-Listener", "127.0.0.1:2575");
    h.insert("Mllp-Peer", "127.0.0.1:40000");
    h.insert(
        "Mllp-Digest",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    h.insert("Hl7-Sending-Application", "SENDAPP");
    h.insert("Hl7-Sending-Facility", "SENDFAC");
    h.insert("Hl7-Receiving-Application", "RECVAPP");
    h.insert("Hl7-Receiving-Facility", "RECVFAC");
    h.insert("Hl7-Message-Type", "ADT^A01^ADT_A01");
    h.insert("Hl7-Control-Id", control_id);
    h.insert("Hl7-Processing-Id", "P");
    h.insert("Hl7-Version", "2.5.1");
    h
}

async fn receiver(store: Arc<dyn Store>) -> mllp::ServerHandle {
    let router = Router::new()
        .route("*", |_req: Request| async {})
        .layer(StoreLayer::shared(store));
    mllp::Server::builder()
        .router(router)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap()
}

async fn jetstream_store(nats: &NatsServer, stream: &str) -> JetStreamStore {
    let spec: StoreSpec = format!("{}/{stream}", nats.url()).parse().unwrap();
    let StoreSpec::Nats(spec) = spec else {
        unreachable!()
    };
    let config = JetStreamConfig::default()
        .max_message_size(512 * 1024)
        .subject_prefix(format!("hl7{stream}"))
        .create_stream(Some(StreamSettings::default()));
    JetStreamStore::open(&spec, config).await.unwrap()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn main() {
    let messages = arg("--messages", 4000);
    let rounds = arg("--rounds", 3);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-nats");
    std::fs::create_dir_all(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let nats = NatsServer::start_in(&base, "");
    println!(
        "nats-server with sync_interval: always, store under {}",
        base.display()
    );
    println!(
        "{:<10} {:>5} {:>10} {:>10} {:>10}",
        "case", "conns", "msg/s", "p50", "p99"
    );
    let mut best = std::collections::HashMap::new();
    let mut stream_no = 0;
    for connections in [1, 64] {
        for case in ["raw", "jetstream", "sqlite"] {
            let mut top: Option<Outcome> = None;
            for round in 0..rounds {
                stream_no += 1;
                let stream = format!("B{stream_no}");
                let tag = format!("R{round}-");
                let outcome = runtime.block_on(async {
                    match case {
                        "raw" => {
                            // The stream a JetStreamStore would use, made the same way.
                            let store = jetstream_store(&nats, &stream).await;
                            drop(store);
                            let client = async_nats::connect(nats.url()).await.unwrap();
                            let js = jetstream::ContextBuilder::new()
                                .timeout(Duration::from_secs(5))
                                .backpressure_on_inflight(true)
                                .build(client);
                            raw_on(js, &stream, connections, messages, &tag).await
                        }
                        "jetstream" => {
                            let store = jetstream_store(&nats, &stream).await;
                            let handle = receiver(Arc::new(store)).await;
                            let outcome =
                                drive(handle.local_addr(), connections, messages, &tag).await;
                            handle.shutdown().await;
                            outcome
                        }
                        _ => {
                            let dir = fresh(&base, &format!("sqlite-{connections}-{round}"));
                            let store =
                                SqliteStore::open(dir.join("inbox.db"), SqliteConfig::default())
                                    .await
                                    .unwrap();
                            let handle = receiver(Arc::new(store)).await;
                            let outcome =
                                drive(handle.local_addr(), connections, messages, &tag).await;
                            handle.shutdown().await;
                            let _ = std::fs::remove_dir_all(&dir);
                            outcome
                        }
                    }
                });
                if top.as_ref().is_none_or(|t| outcome.rate() > t.rate()) {
                    top = Some(outcome);
                }
            }
            let top = top.unwrap();
            println!(
                "{:<10} {:>5} {:>10.0} {:>10.2?} {:>10.2?}",
                case,
                connections,
                top.rate(),
                percentile(&top.latencies, 0.50),
                percentile(&top.latencies, 0.99)
            );
            best.insert((case, connections), top.rate());
        }
    }
    println!();
    for c in [1, 64] {
        println!(
            "{c:>2} connections: jetstream / raw {:.2} (goal >= 0.8), jetstream / sqlite {:.2}",
            best[&("jetstream", c)] / best[&("raw", c)],
            best[&("jetstream", c)] / best[&("sqlite", c)],
        );
    }
    drop(nats);
    let _ = std::fs::remove_dir_all(&base);
}

/// async-nats alone: `concurrency` tasks on one connection, each publishing to the subjects
/// of `stream` (created with prefix `hl7<stream>`) with headers like the store's, and awaiting
/// its PubAck before the next.
async fn raw_on(
    js: jetstream::Context,
    stream: &str,
    concurrency: usize,
    total: usize,
    tag: &str,
) -> Outcome {
    let subject = format!("hl7{stream}.ADT.A01");
    let per = total.div_ceil(concurrency);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let js = js.clone();
            let tag = tag.to_owned();
            let subject = subject.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per);
                for i in 0..per {
                    let control_id = format!("{tag}{c}-{i}");
                    let payload = message(&control_id);
                    let sent = Instant::now();
                    let publish = PublishMessage::build()
                        .payload(payload)
                        .headers(headers(&control_id));
                    js.send_publish(subject.clone(), publish)
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    collect(start, tasks).await
}

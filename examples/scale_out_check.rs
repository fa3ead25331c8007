//! Run with: `deploy/scale-out/run.sh check` (or, against your own topology,
//! `cargo run --release --example scale_out_check -- --to 127.0.0.1:2575
//! --nats nats://127.0.0.1:4222 --stream HL7 --messages 20000 --connections 16`).
//!
//! Sends unique messages through a balancer to receivers that store in a JetStream stream,
//! like a sender that insists: a message answered AE, or whose connection broke before its ACK,
//! is sent again (same bytes, same MSH-10) until it gets AA. Then it reads the stream and checks
//! that every MSH-10 that got AA is in it exactly once. Exit status 0 when it is.
//!
//! Progress (`progress: acknowledged N`) goes to stderr every 500 messages, the report to
//! stderr at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use bytes::Bytes;
use mllp::{Backoff, Client, ClientConfig, ClientError};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn message(control_id: &str) -> Bytes {
    Bytes::from(format!(
        "MSH|^~\\&|SCALE|OUT|EHR|HOSP|20261204120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r\
         EVN|A01|20261204120000\r\
         PID|1||{control_id}^^^HOSP^MR||DOE^JANE||19700101|F\r"
    ))
}

#[derive(Default)]
struct Counters {
    acknowledged: AtomicU64,
    negative: AtomicU64,
    transport: AtomicU64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let to = arg("--to", "127.0.0.1:2575");
    let nats = arg("--nats", "nats://127.0.0.1:4222");
    let stream = arg("--stream", "HL7");
    let total: u64 = arg("--messages", "20000").parse().expect("--messages N");
    let connections: u64 = arg("--connections", "16").parse().expect("--connections N");
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let tag = format!("SO{run}-");

    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (to, tag, counters) = (to.clone(), tag.clone(), counters.clone());
            tokio::spawn(async move {
                let config = ClientConfig::default()
                    .reply_timeout(Duration::from_secs(10))
                    .connect_timeout(Duration::from_secs(2))
                    .max_retries(0)
                    .reconnect(Backoff::new(
                        Duration::from_millis(20),
                        Duration::from_millis(500),
                    ));
                let mut client = Client::with_config(to, config);
                let mut acked = Vec::new();
                for i in (c..total).step_by(connections as usize) {
                    let id = format!("{tag}{i:06}");
                    let payload = message(&id);
                    let deadline = Instant::now() + Duration::from_secs(120);
                    loop {
                        match client.send(payload.clone()).await {
                            Ok(_) => break,
                            Err(ClientError::Negative { .. }) => {
                                counters.negative.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Err(_) => {
                                counters.transport.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        assert!(Instant::now() < deadline, "{id} never acknowledged");
                    }
                    acked.push(id);
                    let n = counters.acknowledged.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % 500 == 0 {
                        eprintln!("progress: acknowledged {n}");
                    }
                }
                client.close().await;
                acked
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("sender task"));
    }
    let elapsed = started.elapsed();

    // Every message of this run in the stream, by MSH-10.
    let hosts = nats.split_once("://").map_or(nats.as_str(), |(_, h)| h);
    let addrs: Vec<async_nats::ServerAddr> = hosts
        .split(',')
        .map(|h| format!("nats://{h}").parse().expect("a NATS address"))
        .collect();
    let client = async_nats::connect(addrs).await.expect("connect to NATS");
    let js = jetstream::new(client);
    let mut handle = js.get_stream(&stream).await.expect("stream");
    let info = handle.info().await.expect("stream info").clone();
    let mut in_stream: HashMap<String, u32> = HashMap::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let Ok(m) = handle.get_raw_message(seq).await else {
            continue;
        };
        let text = String::from_utf8_lossy(&m.payload);
        let id = text.split('|').nth(9).unwrap_or_default().to_owned();
        if id.starts_with(&tag) {
            *in_stream.entry(id).or_default() += 1;
        }
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !in_stream.contains_key(*id))
        .collect();
    let twice: Vec<(&String, &u32)> = in_stream.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "sent {total} messages over {connections} connections in {:.1} s ({:.0} msg/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    eprintln!(
        "acknowledged AA: {}; answers AE on the way: {}; tries lost to a broken connection: {}",
        acknowledged.len(),
        counters.negative.load(Ordering::Relaxed),
        counters.transport.load(Ordering::Relaxed)
    );
    eprintln!(
        "in the stream: {} of this run's MSH-10s; missing: {}; more than once: {}",
        in_stream.len(),
        missing.len(),
        twice.len()
    );
    if missing.is_empty() && twice.is_empty() && acknowledged.len() as u64 == total {
        eprintln!("OK: every acknowledged MSH-10 is in the stream exactly once");
        std::process::ExitCode::SUCCESS
    } else {
        for id in missing.iter().take(10) {
            eprintln!("missing: {id}");
        }
        for (id, n) in twice.iter().take(10) {
            eprintln!("{n} copies: {id}");
        }
        std::process::ExitCode::FAILURE
    }
}

//! The chaos soak: a receiver storing into SQLite (the stack of `mllp serve`: `StoreLayer` over
//! `SqliteStore`, with the reliability limits on) under load from many connections, while
//! everything that can go wrong does, at random:
//!
//! - handlers panic and pass their deadline (after storing, so the sender gets AE for a stored
//!   message and must resend it);
//! - the disk is slow (writes that outlive the handler timeout) and fails (commits refused);
//! - hostile peers reset connections mid-frame and send frames a byte at a time (slowloris);
//! - the server is killed with SIGKILL and restarted on the same store.
//!
//! Every sender resends its message until it is answered AA. At the end the report compares
//! what was acknowledged with what is stored (each acknowledged message exactly once, byte for
//! byte; a message stored but never acknowledged only when its sender was cut off by the end of
//! the run), and shows the server's memory (RSS) over time and the tasks and connections left
//! once every peer has gone.
//!
//! A test without the libtest harness: `cargo test --test soak` runs it for 30 seconds with 16
//! connections (CI). On demand, longer and wider:
//!
//! ```text
//! cargo test --release --test soak -- --soak-secs 600 --soak-connections 64 --soak-pace-ms 50
//! ```
//!
//! `--soak-pace-ms` is each sender's pause between messages: flat out (the default), a release
//! build stores thousands of messages a second, and a long run fills the disk (the store keeps
//! every message, so that the end can check them all).
//!
//! The server is this same binary, started again with `--soak-serve DIR`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mllp::app::{Next, Request, Response, Router, from_fn};
use mllp::store::sqlite::{Filter, SqliteReader};
use mllp::store::{AppendFuture, Record, SqliteConfig, SqliteStore, Store, StoreError, StoreLayer};
use mllp::{Client, ClientConfig, ClientError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// How long the server takes to answer a handler that hangs: the deadline the chaos aims at.
const HANDLER_TIMEOUT: Duration = Duration::from_millis(200);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(dir) = flag(&args, "--soak-serve") {
        return serve(PathBuf::from(dir));
    }
    if args.iter().any(|a| a == "--list") {
        println!("soak: test");
        return;
    }
    // A test filter that does not name the soak skips it, as libtest would.
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"soak".contains(a.as_str()) && !is_flag_value(&args, a))
    {
        return;
    }
    let secs = flag(&args, "--soak-secs").map_or(30, |s| s.parse().expect("--soak-secs N"));
    let connections =
        flag(&args, "--soak-connections").map_or(16, |s| s.parse().expect("--soak-connections N"));
    let pace = flag(&args, "--soak-pace-ms").map_or(0, |s| s.parse().expect("--soak-pace-ms N"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(soak(
        Duration::from_secs(secs),
        connections,
        Duration::from_millis(pace),
    ));
    println!("{report}");
    report.check();
    println!("soak ... ok");
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).map(String::as_str)
}

fn is_flag_value(args: &[String], value: &str) -> bool {
    args.windows(2)
        .any(|w| w[0].starts_with("--soak-") && w[1] == value)
}

// ===== the server (a child process) =====

/// A store over SQLite that is slow and fails at random, like a bad disk: a slow write holds
/// its record (and the request's lease) in a task of its own until it is done, as a real
/// blocking write does after a handler timeout.
struct ChaosStore(SqliteStore);

impl Store for ChaosStore {
    fn append(&self, record: Record) -> AppendFuture {
        let store = self.0.clone();
        match fastrand::u32(..100) {
            0 => Box::pin(async {
                Err(StoreError::Commit(
                    "chaos: the disk refused the write".into(),
                ))
            }),
            1..=2 => {
                let (done, answer) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    tokio::time::sleep(HANDLER_TIMEOUT + Duration::from_millis(100)).await;
                    let _ = done.send(store.append(record).await);
                });
                Box::pin(async move { answer.await.map_err(|_| StoreError::Closed)? })
            }
            _ => store.append(record),
        }
    }

    fn describe(&self) -> String {
        format!("chaos over {}", self.0.describe())
    }
}

/// After the store: a handler that sometimes panics, sometimes hangs past its deadline.
async fn chaos_handler(request: Request, next: Next) -> Response {
    match fastrand::u32(..100) {
        0 => panic!("chaos: the handler panicked"),
        1 => std::future::pending().await,
        _ => next.run(request).await,
    }
}

fn serve(dir: PathBuf) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteStore::open(dir.join("inbox.db"), SqliteConfig::default())
            .await
            .expect("open the store");
        let router = Router::new()
            .route("*", |_req: Request| async {})
            .layer(from_fn(chaos_handler))
            .layer(StoreLayer::new(ChaosStore(store)));
        let server = mllp::Server::builder()
            .router(router)
            .handler_timeout(HANDLER_TIMEOUT)
            .frame_timeout(Duration::from_secs(2))
            .max_concurrent_handlers(Some(32))
            .max_message_size(1 << 20)
            .max_buffered_bytes(Some(64 << 20))
            .shutdown_grace(Duration::from_secs(5))
            .bind("127.0.0.1:0")
            .await
            .expect("bind")
            .spawn()
            .await
            .expect("start");
        let stats = server.clone();
        tokio::spawn(async move {
            loop {
                let tasks = tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks();
                println!(
                    "soak-stats connections={} tasks={tasks} buffered={}",
                    stats.connections().await.len(),
                    stats.buffered_bytes().unwrap_or(0)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        // Before any peer can connect: the idle server's tasks (this stats task included), the
        // baseline of the leak check. The server's actors start their tasks after `spawn`
        // returns (a count taken at once was one short now and then, and the end of a run then
        // looked like a leak): the baseline is the count once it has held for 100 ms.
        let alive = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let mut idle = alive();
        let mut held = 0;
        while held < 10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = alive();
            held = if now == idle { held + 1 } else { 0 };
            idle = now;
        }
        println!("soak-idle tasks={idle}");
        println!("listening on {}", server.local_addr());
        mllp::shutdown_signal().await;
        let report = server.shutdown().await;
        println!(
            "soak-drained drained={} aborted={}",
            report.drained, report.aborted
        );
        if report.aborted > 0 {
            std::process::exit(1);
        }
    });
}

// ===== the driver =====

/// One life of the server process.
struct Life {
    child: Child,
    addr: SocketAddr,
    /// (seconds since the soak began, RSS in KiB)
    rss: Vec<(u64, u64)>,
    stats: Arc<Mutex<Stats>>,
}

#[derive(Default, Clone, Copy)]
struct Stats {
    connections: usize,
    tasks: usize,
    buffered: usize,
    /// The tasks of the idle server, before it listened.
    idle_tasks: Option<usize>,
}

async fn start(dir: &Path) -> Life {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--soak-serve", &dir.to_string_lossy()])
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut idle_tasks = None;
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the server exited before listening");
        if let Some(tasks) = line.strip_prefix("soak-idle tasks=") {
            idle_tasks = tasks.parse().ok();
        }
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.parse().unwrap();
        }
    };
    let stats = Arc::new(Mutex::new(Stats {
        idle_tasks,
        ..Stats::default()
    }));
    let sink = stats.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(rest) = line.strip_prefix("soak-stats ") else {
                continue;
            };
            let value = |key: &str| -> usize {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let mut stats = sink.lock().unwrap();
            stats.connections = value("connections=");
            stats.tasks = value("tasks=");
            stats.buffered = value("buffered=");
        }
    });
    Life {
        child,
        addr,
        rss: Vec::new(),
        stats,
    }
}

/// The resident memory of process `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the senders know: every message answered AA, and every message ever sent, each by its
/// control id and a hash of its bytes (a long run sends millions: the bytes are not kept).
#[derive(Default)]
struct Ledger {
    acked: Mutex<HashMap<String, u64>>,
    sent: Mutex<HashMap<String, u64>>,
    resends: AtomicU64,
    negative: AtomicU64,
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn message(id: &str, n: u64) -> Bytes {
    // Sizes vary: most messages are small, some carry a few hundred KiB.
    let body = if n % 200 == 7 {
        "B".repeat(200 * 1024 + fastrand::usize(..50_000))
    } else {
        "X".repeat(fastrand::usize(50..2000))
    };
    Bytes::from(format!(
        "MSH|^~\\&|SOAK|HOSP|EHR|HOSP|20261204120000||ORU^R01|{id}|P|2.5\rPID|1||{id}^^^H^MR\rOBX|1|TX|||{body}\r"
    ))
}

/// One sender: each message is resent until it is answered AA, then, after `pace`, the next.
async fn sender(
    addr: Arc<Mutex<SocketAddr>>,
    c: usize,
    pace: Duration,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut config = ClientConfig::default();
    config.max_retries = 0;
    config.reply_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    config.reconnect = mllp::Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
    // One connection per sender, kept across messages; a new one when the server was restarted
    // on another port (the client reconnects by itself after a reset).
    let mut to = *addr.lock().unwrap();
    let mut client = Client::with_config(to.to_string(), config.clone());
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("S{c}-{n}");
        let payload = message(&id, n);
        let hash = digest(&payload);
        ledger.sent.lock().unwrap().insert(id.clone(), hash);
        loop {
            let now = *addr.lock().unwrap();
            if now != to {
                client.close().await;
                to = now;
                client = Client::with_config(to.to_string(), config.clone());
            }
            let result = client.send(payload.clone()).await;
            match result {
                Ok(_) => {
                    ledger.acked.lock().unwrap().insert(id.clone(), hash);
                    break;
                }
                Err(ClientError::Negative { .. }) => {
                    ledger.negative.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
            }
            if stop.load(Ordering::Relaxed) {
                client.close().await;
                return;
            }
            ledger.resends.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n += 1;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    client.close().await;
}

/// A hostile peer: half a frame, then a reset; or a frame a byte at a time.
async fn hostile(addr: Arc<Mutex<SocketAddr>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let to = *addr.lock().unwrap();
        let Ok(mut stream) = tokio::net::TcpStream::connect(to).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let frame = [&[0x0B][..], &message("HOSTILE", 1)[..], &[0x1C, 0x0D]].concat();
        if fastrand::bool() {
            let cut = fastrand::usize(1..frame.len());
            let _ = stream.write_all(&frame[..cut]).await;
            // A reset (RST), not a polite close.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
        } else {
            for byte in frame.iter().take(40) {
                if stream.write_all(&[*byte]).await.is_err() || stop.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Report {
    secs: u64,
    connections: usize,
    restarts: usize,
    acked: usize,
    sent: usize,
    stored: usize,
    resends: u64,
    negative: u64,
    missing: Vec<String>,
    duplicated: Vec<(String, usize)>,
    altered: Vec<String>,
    unacked_stored: usize,
    rss: Vec<Vec<(u64, u64)>>,
    end: Stats,
    drained: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "soak: {} s, {} senders + 4 hostile peers, {} restart(s) after SIGKILL",
            self.secs, self.connections, self.restarts
        )?;
        writeln!(
            f,
            "  messages: {} sent, {} acknowledged AA ({} a second), {} stored ({} stored without \
             an AA: cut off by the end of the run); {} resends, {} negative answers (AE)",
            self.sent,
            self.acked,
            self.acked as u64 / self.secs.max(1),
            self.stored,
            self.unacked_stored,
            self.resends,
            self.negative
        )?;
        writeln!(
            f,
            "  acknowledged but missing: {}, stored more than once: {}, altered: {}",
            self.missing.len(),
            self.duplicated.len(),
            self.altered.len()
        )?;
        for (life, rss) in self.rss.iter().enumerate() {
            let values: Vec<u64> = rss.iter().map(|(_, kib)| kib / 1024).collect();
            let line = rss
                .iter()
                .step_by((rss.len() / 12).max(1))
                .map(|(at, kib)| format!("{at}s:{}M", kib / 1024))
                .collect::<Vec<_>>()
                .join(" ");
            writeln!(
                f,
                "  RSS, life {}: max {} MiB; {}",
                life + 1,
                values.iter().max().copied().unwrap_or(0),
                line
            )?;
        }
        write!(
            f,
            "  at the end, all peers gone: {} connection(s), {} task(s) (idle server: {}), {} \
             buffered byte(s); {}",
            self.end.connections,
            self.end.tasks,
            self.end.idle_tasks.unwrap_or(0),
            self.end.buffered,
            self.drained
        )
    }
}

impl Report {
    fn check(&self) {
        assert!(self.acked > 0, "nothing was acknowledged");
        assert!(
            self.missing.is_empty(),
            "acknowledged but not stored: {:?}",
            self.missing
        );
        assert!(
            self.duplicated.is_empty(),
            "stored twice: {:?}",
            self.duplicated
        );
        assert!(
            self.altered.is_empty(),
            "stored bytes differ: {:?}",
            self.altered
        );
        assert!(
            self.unacked_stored <= self.connections,
            "{} messages stored without an AA, more than one per sender",
            self.unacked_stored
        );
        assert_eq!(self.end.connections, 0, "connections left over");
        assert_eq!(self.end.buffered, 0, "buffered bytes left over");
        assert!(
            self.end.tasks <= self.end.idle_tasks.unwrap_or(0),
            "tasks left over: {} (idle server {:?})",
            self.end.tasks,
            self.end.idle_tasks
        );
        assert!(self.drained.contains("aborted=0"), "{}", self.drained);
    }
}

async fn soak(duration: Duration, connections: usize, pace: Duration) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let mut life = start(dir.path()).await;
    let addr = Arc::new(Mutex::new(life.addr));
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(sender(addr.clone(), c, pace, ledger.clone(), stop.clone())))
        .collect();
    let hostiles: Vec<_> = (0..4)
        .map(|_| tokio::spawn(hostile(addr.clone(), stop.clone())))
        .collect();

    let mut lives = Vec::new();
    let mut restarts = 0;
    // A SIGKILL every 5 to 15 seconds, none in the last 5.
    let mut next_kill = began + Duration::from_secs(fastrand::u64(5..15));
    while began.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(kib) = life.child.id().and_then(rss_kib) {
            life.rss.push((began.elapsed().as_secs(), kib));
        }
        if Instant::now() >= next_kill && began.elapsed() + Duration::from_secs(5) < duration {
            life.child.kill().await.unwrap();
            lives.push(std::mem::take(&mut life.rss));
            life = start(dir.path()).await;
            *addr.lock().unwrap() = life.addr;
            restarts += 1;
            next_kill = Instant::now() + Duration::from_secs(fastrand::u64(5..15));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in senders.into_iter().chain(hostiles) {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    // Every peer is gone: the server must come back to no connection, no buffered byte, and
    // no more tasks than when it was idle.
    let settle = Instant::now();
    let end = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = *life.stats.lock().unwrap();
        let settled = stats.connections == 0
            && stats.buffered == 0
            && stats.tasks <= stats.idle_tasks.unwrap_or(0);
        if settled || settle.elapsed() > Duration::from_secs(10) {
            break stats;
        }
    };
    lives.push(life.rss);
    let pid = life.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), life.child.wait())
        .await
        .expect("the server drains")
        .unwrap();
    let drained = if status.success() {
        "drained with exit status 0, aborted=0".to_owned()
    } else {
        format!("exit status {status}")
    };

    let acked = ledger.acked.lock().unwrap();
    let sent = ledger.sent.lock().unwrap();
    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut filter = Filter::default();
    filter.oldest_first = true;
    SqliteReader::open(dir.path().join("inbox.db"))
        .unwrap()
        .for_each(&filter, |m| {
            stored
                .entry(m.summary.control_id.clone())
                .or_default()
                .push(digest(&m.payload));
            true
        })
        .unwrap();
    let missing = acked
        .keys()
        .filter(|id| !stored.contains_key(*id))
        .cloned()
        .collect();
    let duplicated = stored
        .iter()
        .filter(|(_, copies)| copies.len() > 1)
        .map(|(id, copies)| (id.clone(), copies.len()))
        .collect();
    let altered = stored
        .iter()
        .filter(|(id, copies)| sent.get(*id).is_none_or(|hash| copies[0] != *hash))
        .map(|(id, _)| id.clone())
        .collect();
    let unacked_stored = stored.keys().filter(|id| !acked.contains_key(*id)).count();
    Report {
        secs: duration.as_secs(),
        connections,
        restarts,
        acked: acked.len(),
        sent: sent.len(),
        stored: stored.values().map(Vec::len).sum(),
        resends: ledger.resends.load(Ordering::Relaxed),
        negative: ledger.negative.load(Ordering::Relaxed),
        missing,
        duplicated,
        altered,
        unacked_stored,
        rss: lives,
        end,
        drained,
    }
}

//! Reliability under abuse (a slow or failing disk, hostile peers), over real sockets and
//! files:
//!
//! - store writes count against the server's limits for as long as they run, even after their
//!   handler timed out, and a store slower than `handler_timeout` answers AE without storing a
//!   message twice;
//! - a failed store leaves nothing a reader would take as stored;
//! - `mllp serve` cleans up after a crash;
//! - one partner cannot take every connection (per-peer limits, mutual-TLS identities), and a
//!   flood of connections does not flood the log.

#[path = "support/cli.rs"]
mod cli_support;
#[path = "../../tests/support/pki.rs"]
mod pki;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use mllp::app::{Request, Router};
use mllp::hl7::Message;
use mllp::store::{
    AppendFuture, DirStore, Receipt, Record, SqliteConfig, SqliteStore, Store, StoreLayer,
};
use support::{Peer, field, hl7, within};
use tokio::sync::Semaphore;

/// A store whose writes of messages with an MSH-10 starting `SLOW` run on their own (as a
/// blocking write does: the runtime cannot abort them) until the test opens the gate; it
/// counts those writes started and the most running at once. Other messages are stored at
/// once.
#[derive(Clone)]
struct GatedStore {
    gate: Arc<Semaphore>,
    started: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Default for GatedStore {
    fn default() -> Self {
        Self {
            gate: Arc::new(Semaphore::new(0)),
            started: Arc::default(),
            running: Arc::default(),
            most: Arc::default(),
        }
    }
}

impl Store for GatedStore {
    fn append(&self, record: Record) -> AppendFuture {
        let this = self.clone();
        if !record.control_id().starts_with(b"SLOW") {
            return Box::pin(std::future::ready(Ok(Receipt::Stored {
                id: mllp::store::StoreId::from(2),
                reused_control_id: false,
            })));
        }
        this.started.fetch_add(1, Ordering::SeqCst);
        let now = this.running.fetch_add(1, Ordering::SeqCst) + 1;
        this.most.fetch_max(now, Ordering::SeqCst);
        let (done, written) = tokio::sync::oneshot::channel();
        // The write holds the record until it has finished, as a real store's does.
        tokio::spawn(async move {
            this.gate.acquire().await.expect("gate open").forget();
            this.running.fetch_sub(1, Ordering::SeqCst);
            let _ = done.send(Receipt::Stored {
                id: mllp::store::StoreId::from(1),
                reused_control_id: false,
            });
            drop(record);
        });
        Box::pin(async move { written.await.map_err(|_| mllp::store::StoreError::Closed) })
    }

    fn describe(&self) -> String {
        "gated".into()
    }
}

/// Waits until a connection of `server` has a message read and decoded, not yet answered
/// (waiting for a handler permit, or being handled). Polls the registry; the short sleeps let
/// paused time reach the hang guard should that never happen.
async fn read_and_decoded(server: &mllp::ServerHandle) {
    within(async {
        while !server.connections().await.iter().any(|c| c.in_flight == 1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn router(store: impl Store) -> Router {
    Router::new()
        .route("*", |_req: Request| async {})
        .layer(StoreLayer::new(store))
}

/// The server-wide handler limit bounds store writes, not only handlers: a write still running
/// after its handler timed out (its sender answered AE) keeps its permit, so the next message
/// waits instead of starting a second write.
#[tokio::test(start_paused = true)]
async fn store_write_past_the_handler_timeout_keeps_its_handler_permit() {
    let store = GatedStore::default();
    let server = support::start(
        mllp::Server::builder()
            .router(router(store.clone()))
            .handler_timeout(Duration::from_secs(1))
            .max_concurrent_handlers(Some(1)),
    )
    .await;
    let mut first = Peer::connect(server.local_addr()).await;
    let ack = first.call(hl7("ADT^A01", "SLOW-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AE");
    let mut second = Peer::connect(server.local_addr()).await;
    second.send(hl7("ADT^A01", "NEXT-1", "2.5")).await;
    // The second message has been read and decoded: it waits for a permit, or is running.
    read_and_decoded(&server).await;
    assert_eq!(
        store.started.load(Ordering::SeqCst),
        1,
        "a second store write started while the timed-out one still ran"
    );
    store.gate.add_permits(2);
    let ack = within(second.recv()).await.expect("an answer");
    assert_eq!(field(&ack, "MSA-1"), "AA");
    assert_eq!(store.most.load(Ordering::SeqCst), 1);
    drop((first, second));
    within(server.shutdown()).await;
}

/// After a handler timeout the connection reads the sender's next message (its resend) only
/// once the timed-out write has finished: one connection never has more store writes running
/// than `max_in_flight`.
#[tokio::test(start_paused = true)]
async fn store_write_past_the_handler_timeout_keeps_its_in_flight_place() {
    let store = GatedStore::default();
    let server = support::start(
        mllp::Server::builder()
            .router(router(store.clone()))
            .handler_timeout(Duration::from_secs(1)),
    )
    .await;
    let mut sender = Peer::connect(server.local_addr()).await;
    let message = hl7("ADT^A01", "SLOW-2", "2.5");
    let ack = sender.call(message.clone()).await;
    assert_eq!(field(&ack, "MSA-1"), "AE");
    sender.send(message).await;
    // A second connection's round trip is the barrier: on this single-threaded runtime, once
    // it completes, the first connection's task has run since its bytes arrived.
    let mut probe = Peer::connect(server.local_addr()).await;
    let ack = probe.call(hl7("ADT^A01", "PROBE", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    assert_eq!(
        store.started.load(Ordering::SeqCst),
        1,
        "the resend was read and written while the timed-out write still ran"
    );
    store.gate.add_permits(2);
    let ack = within(sender.recv()).await.expect("an answer");
    assert_eq!(field(&ack, "MSA-1"), "AA");
    assert_eq!(store.most.load(Ordering::SeqCst), 1);
    drop((sender, probe));
    within(server.shutdown()).await;
}

/// Holds SQLite's write lock from a second connection, as another process (a backup) would.
fn lock_file(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

/// A commit slower than the handler timeout: the sender gets AE, the abandoned job keeps its
/// handler permit while it waits for the writer (no second job queues behind it past the
/// limit), the message is committed once, and its resend is acknowledged AA as a duplicate.
///
/// Real time: the writer is a thread of its own, blocked on a lock the test holds until it has
/// seen the AE, so the timeout cannot be missed.
#[tokio::test]
async fn sqlite_commit_slower_than_the_handler_timeout_stores_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let store = SqliteStore::open(
        &path,
        SqliteConfig::default().busy_timeout(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let server = support::start(
        mllp::Server::builder()
            .router(router(store.clone()))
            .handler_timeout(Duration::from_millis(100))
            .max_concurrent_handlers(Some(1)),
    )
    .await;
    let lock = lock_file(&path);
    let mut first = Peer::connect(server.local_addr()).await;
    let message = hl7("ADT^A01", "SLOW-3", "2.5");
    let ack = first.call(message.clone()).await;
    assert_eq!(field(&ack, "MSA-1"), "AE");
    let mut second = Peer::connect(server.local_addr()).await;
    second.send(hl7("ADT^A01", "NEXT-3", "2.5")).await;
    read_and_decoded(&server).await;
    let stats = store.stats();
    assert_eq!(
        stats.queued + stats.committing,
        1,
        "a second job queued for the writer past max_concurrent_handlers"
    );
    lock.execute_batch("COMMIT").unwrap();
    let ack = within(second.recv()).await.expect("an answer");
    assert_eq!(field(&ack, "MSA-1"), "AA");
    let ack = first.call(message).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    assert_eq!(store.reader().unwrap().count().unwrap(), 2);
    assert_eq!(store.stats().duplicates, 1);
    drop((first, second));
    within(server.shutdown()).await;
}

fn record(message: &Bytes) -> Record {
    Record::from_message(
        &Message::parse(message.clone()).unwrap(),
        SystemTime::now(),
        "127.0.0.1:2575".parse().unwrap(),
        "127.0.0.1:40000".parse().unwrap(),
        None,
    )
}

/// The directory store: a write whose caller gave up (the handler timed out) still finishes,
/// and the resend of that message is answered as a duplicate of its file, not written again.
#[tokio::test]
async fn dir_store_resend_of_an_abandoned_write_is_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path().join("inbox")).unwrap();
    let message = hl7("ADT^A01", "GAVE-UP", "2.5");
    // Polled once (the write starts), then dropped, as at a handler deadline.
    assert!(store.append(record(&message)).now_or_never().is_none());
    let receipt = within(store.append(record(&message))).await.unwrap();
    assert!(receipt.is_duplicate(), "{receipt:?}");
    let files = std::fs::read_dir(dir.path().join("inbox"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            !name.to_string_lossy().starts_with('.')
        })
        .count();
    assert_eq!(files, 1);
    assert!(receipt.id().as_str().ends_with(".hl7"));
}

/// A transaction that fails part-way (the file reaches `max_size` a few messages in) is rolled
/// back whole: every message of it is answered with an error, and none of them is visible.
#[tokio::test]
async fn failed_sqlite_batch_leaves_none_of_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let big = "X".repeat(20_000);
    let message = |n: usize| {
        Bytes::from(format!(
            "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101||ADT^A01|BATCH-{n}|P|2.5\rPID|1||{big}\r"
        ))
    };
    let store = SqliteStore::open(
        &path,
        SqliteConfig::default()
            .max_size(Some(128 * 1024))
            .busy_timeout(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    // While another connection holds the lock, the writer is stuck on the first message and
    // the other nine wait: they make one transaction once the lock goes.
    let lock = lock_file(&path);
    let appends: Vec<_> = (0..10)
        .map(|n| tokio::spawn(store.append(record(&message(n)))))
        .collect();
    within(async {
        while store.stats().queued + store.stats().committing < 10 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    lock.execute_batch("COMMIT").unwrap();
    let mut stored = 0;
    for append in appends {
        if append.await.unwrap().is_ok() {
            stored += 1;
        }
    }
    assert!(stored <= 1, "{stored} of the batch were answered as stored");
    // What was answered as stored is there (the first message, when the writer took it alone
    // before the lock went); nothing of the failed transaction is.
    assert_eq!(store.reader().unwrap().count().unwrap(), stored);
}

/// `mllp serve --store dir:` is killed with SIGKILL while 16 connections send large messages
/// (so writes are under way); started again, it removes every `.tmp-` leftover of the
/// interrupted writes and says how many in one log line, and every message answered AA is
/// there exactly once. One leftover of a dead process is planted, so the count is never zero
/// (on a fast disk the kill rarely lands inside a write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_dir_store_leaves_leftovers_that_the_restart_removes() {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use mllp::{Client, ClientConfig, ClientError};

    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    let store = format!("dir:{}", inbox.display());
    let serve = cli_support::Serve::start(dir.path(), &["--store", &store]).await;
    let to = serve.to();
    let acked: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let kill_after = 50 + fastrand::usize(..100);
    let reached = Arc::new(tokio::sync::Notify::new());
    let body = "B".repeat(256 * 1024);
    let senders: Vec<_> = (0..16)
        .map(|c| {
            let (to, acked, reached, body) =
                (to.clone(), acked.clone(), reached.clone(), body.clone());
            tokio::spawn(async move {
                let mut config = ClientConfig::default();
                config.max_retries = 0;
                let mut client = Client::with_config(to, config);
                for n in 0.. {
                    let id = format!("D{c}-{n}");
                    let message = format!(
                        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101||ADT^A01|{id}|P|2.5\rOBX|1||{body}\r"
                    )
                    .into_bytes();
                    match client.send(Bytes::from(message.clone())).await {
                        Ok(_) => {
                            let mut acked = acked.lock().unwrap();
                            acked.insert(id, message);
                            if acked.len() == kill_after {
                                reached.notify_one();
                            }
                        }
                        Err(ClientError::Negative { .. }) => panic!("{id} refused"),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    within(reached.notified()).await;
    let pid = serve.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for sender in senders {
        within(sender).await.unwrap();
    }
    drop(serve);

    let leftovers = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(".tmp-")
            })
            .count()
    };
    let crashed = leftovers(&inbox);
    std::fs::write(inbox.join(format!(".tmp-{}-0", u32::MAX - 1)), b"MSH|").unwrap();
    eprintln!("leftovers of the killed process: {crashed}");

    let restarted = cli_support::Serve::start(dir.path(), &["--store", &store]).await;
    let (status, _, stderr) = restarted.stop().await;
    assert!(status.success(), "{stderr}");
    assert_eq!(leftovers(&inbox), 0);
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("leftover temporary file"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("removed {} leftover", crashed + 1)),
        "{stderr}"
    );

    let stored = cli_support::stored(&inbox);
    for (id, message) in acked.lock().unwrap().iter() {
        let copies = stored.get(id).map_or(0, Vec::len);
        assert_eq!(
            copies, 1,
            "{id} was acknowledged and is stored {copies} times"
        );
        assert_eq!(&stored[id][0], message, "{id} is not byte-identical");
    }
}

/// A Latin-1 MSH-10 (MSH-18 = `8859/1`) is a control id like any other: the message is
/// accepted and stored (never refused as "required field missing"), the ACK's MSA-2 carries the
/// same bytes, and the store keeps the id as text decoded per MSH-18, so it can be searched.
#[tokio::test]
async fn latin1_control_id_is_accepted_stored_and_acknowledged_with_its_bytes() {
    use mllp::store::sqlite::Filter;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("inbox.db"), SqliteConfig::default())
        .await
        .unwrap();
    let server = support::start(mllp::Server::builder().router(router(store.clone()))).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    // MSH-10 is "Müller-1" in Latin-1: 0xFC is not UTF-8.
    let message = Bytes::from_static(
        b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101||ADT^A01|M\xFCller-1|P|2.5||||||8859/1\rPID|1\r",
    );
    let ack = peer.call(message).await;
    assert_eq!(
        field(&ack, "MSA-1"),
        "AA",
        "MSA-3: {}",
        field(&ack, "MSA-3")
    );
    assert_eq!(
        ack.get("MSA-2").unwrap().unwrap().as_bytes(),
        b"M\xFCller-1".as_slice()
    );
    let mut filter = Filter::default();
    filter.control_id = Some("Müller-1".into());
    let found = store.reader().unwrap().list(&filter).unwrap();
    assert_eq!(found.len(), 1);
    drop(peer);
    within(server.shutdown()).await;
}

/// Messages made only of tiny segments (an index of about 5 times their size) under a small
/// `max_buffered_bytes`: each message's index is drawn from the budget before it is parsed, so
/// once the budget is full the next message waits (its connection stops reading) instead of
/// being parsed past it; when the handlers finish, every message is answered.
#[tokio::test]
async fn separator_flood_waits_for_the_memory_budget() {
    const BUDGET: usize = 4 << 20;
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let (g, s) = (gate.clone(), started.clone());
    let router = Router::new().route("*", move |_req: Request| {
        let (gate, started) = (g.clone(), s.clone());
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.expect("gate open").forget();
        }
    });
    let server = support::start(
        mllp::Server::builder()
            .router(router)
            .max_message_size(256 * 1024)
            .max_buffered_bytes(Some(BUDGET)),
    )
    .await;
    let mut flood = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|FLOOD|P|2.5".to_vec();
    while flood.len() < 250 * 1024 {
        flood.extend_from_slice(b"\rZZZ");
    }
    let flood = Bytes::from(flood);
    let index = Message::parse(flood.clone()).unwrap().index_size();
    assert!(index > 5 * flood.len() / 2, "{index}");
    let mut peers = Vec::new();
    for _ in 0..6 {
        let mut peer = Peer::connect(server.local_addr()).await;
        peer.send(flood.clone()).await;
        peers.push(peer);
    }
    within(async {
        while server.buffered_bytes() != Some(BUDGET) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let handled = started.load(Ordering::SeqCst);
    assert!(
        (1..6).contains(&handled) && handled * (index + flood.len()) <= BUDGET,
        "{handled} messages of {} bytes (index {index}) handled within {BUDGET}",
        flood.len()
    );
    gate.add_permits(6);
    for peer in &mut peers {
        let ack = within(peer.recv()).await.expect("an answer");
        assert_eq!(field(&ack, "MSA-1"), "AA");
    }
    assert_eq!(started.load(Ordering::SeqCst), 6);
    drop(peers);
    within(server.shutdown()).await;
}

/// A `max_buffered_bytes` too small to read a message of `max_message_size` is refused when the
/// server is built.
#[tokio::test]
async fn budget_too_small_for_the_largest_message_is_a_config_error() {
    let error = mllp::Server::builder()
        .max_message_size(1 << 20)
        .max_buffered_bytes(Some(1 << 20))
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            mllp::Error::Config(mllp::server::ConfigError::MaxBufferedBytes { .. })
        ),
        "{error:?}"
    );
}

/// A mutual-TLS client from 127.0.0.`last` presenting `leaf`, with its own stream (so the test
/// chooses the source address).
async fn mtls_connect(
    pki: &pki::Pki,
    leaf: &pki::Leaf,
    last: u8,
    server: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca.cert).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_file_iter(&leaf.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
        .unwrap();
    let stream = within(socket.connect(server)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    within(connector.connect(ServerName::try_from("localhost").unwrap(), stream))
        .await
        .unwrap()
}

/// Under mutual TLS, `max_connections_per_peer` also counts connections by the client
/// certificate's identity: a second connection of the same partner from another address is
/// closed after its handshake (nothing is answered, the close reason is `peer_limit`), while
/// another partner from that address is served.
#[tokio::test]
async fn mtls_identity_counts_against_the_per_peer_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = pki::Pki::new();
    let (recorder, mut events) = support::Recorder::new();
    let server = mllp::Server::builder()
        .router(Router::new().route("*", |_req: Request| async {}))
        .observer(recorder)
        .max_connections_per_peer(Some(1))
        .transport(
            mllp::tls::TlsConfig::new(&pki.server.cert, &pki.server.key)
                .client_ca(&pki.ca.cert)
                .build()
                .unwrap(),
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let framed = |payload: &Bytes| {
        let mut frame = vec![0x0B];
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&[0x1C, 0x0D]);
        frame
    };
    let message = hl7("ADT^A01", "MTLS-LIMIT", "2.5");

    let mut first = mtls_connect(&pki, &pki.client, 1, server.local_addr()).await;
    first.write_all(&framed(&message)).await.unwrap();
    let mut reply = [0u8; 4096];
    let n = within(first.read(&mut reply)).await.unwrap();
    assert!(n > 0 && reply[..n].windows(3).any(|w| w == b"|AA"), "no AA");

    let mut second = mtls_connect(&pki, &pki.client, 2, server.local_addr()).await;
    let _ = second.write_all(&framed(&message)).await;
    let n = within(second.read(&mut reply)).await.unwrap_or(0);
    assert_eq!(n, 0, "the same identity got an answer past the limit");
    let stop = support::next_matching(
        &mut events,
        |s| matches!(s, support::Seen::ConnectionStop { reason, .. } if reason == "peer_limit"),
    )
    .await;
    assert!(
        matches!(&stop, support::Seen::ConnectionStop { identity: Some(id), .. } if id == "lab-sender"),
        "{stop:?}"
    );

    let mut other = mtls_connect(&pki, &pki.intruder, 2, server.local_addr()).await;
    other.write_all(&framed(&message)).await.unwrap();
    let n = within(other.read(&mut reply)).await.unwrap();
    assert!(
        n > 0 && reply[..n].windows(3).any(|w| w == b"|AA"),
        "other partner not served"
    );
    drop((first, second, other));
    within(server.shutdown()).await;
}

/// A flood of connections that open and close at once does not flood the log: `mllp serve`
/// logs at most `--connection-log-rate` (20 by default) connection lines a second and sums up
/// the rest in one line per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_summed_up_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let serve = cli_support::Serve::start(dir.path(), &["--no-store"]).await;
    let started = std::time::Instant::now();
    const CYCLES: usize = 2000;
    for _ in 0..CYCLES {
        let stream = within(tokio::net::TcpStream::connect(serve.addr))
            .await
            .unwrap();
        drop(stream);
    }
    // One round trip after the flood: every earlier connection was accepted before it.
    let mut peer = Peer::connect(serve.addr).await;
    assert_eq!(
        field(&peer.call(hl7("ADT^A01", "AFTER", "2.5")).await, "MSA-1"),
        "AA"
    );
    drop(peer);
    let seconds = started.elapsed().as_secs() + 2;
    let (status, _, stderr) = serve.stop().await;
    assert!(status.success(), "{stderr}");
    let lines = stderr
        .lines()
        .filter(|l| l.contains("connection accepted") || l.contains("connection closed"))
        .count();
    assert!(
        lines as u64 <= 20 * seconds,
        "{lines} connection lines in about {seconds} s for {CYCLES} connections"
    );
    let summed: u64 = stderr
        .lines()
        .filter(|l| l.contains("not logged one by one"))
        .filter_map(|l| {
            let opened = l.split("opened=").nth(1)?.split_whitespace().next()?;
            opened.parse::<u64>().ok()
        })
        .sum();
    assert!(
        summed + lines as u64 >= CYCLES as u64,
        "summary lines account for {summed} opened connections, {lines} logged:\n{stderr}"
    );
}

/// A commit stuck at shutdown (another process holds the SQLite file's lock, longer than the
/// busy timeout lets the writer wait) does not hold the process: once the connections are
/// drained, closing the store is waited for a few seconds, then `serve` exits with status 1,
/// saying why; the stuck message, answered AE, is not in the store.
#[tokio::test]
async fn serve_exits_with_a_commit_stuck_on_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let store = format!("sqlite:{}", path.display());
    let serve = cli_support::Serve::start(
        dir.path(),
        &[
            "--store",
            &store,
            "--store-busy-timeout",
            "10m",
            "--handler-timeout",
            "200ms",
            "--shutdown-grace",
            "1s",
        ],
    )
    .await;
    let lock = lock_file(&path);
    let mut peer = Peer::connect(serve.addr).await;
    // Answered at the handler timeout, while the writer waits for the lock: the commit is stuck.
    let ack = peer.call(hl7("ADT^A01", "STUCK-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AE");
    drop(peer);
    let (status, stdout, stderr) = serve.stop().await;
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("0 aborted"), "{stdout}");
    assert!(
        stderr.contains("the store did not close in time"),
        "{stderr}"
    );
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let reader = mllp::store::sqlite::SqliteReader::open(&path).unwrap();
    assert_eq!(reader.count().unwrap(), 0);
}

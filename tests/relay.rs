//! `mllp::relay` over real SQLite files, a real nats-server and real sockets: order, tailing,
//! a downstream that is down, rejects and errors to the dead letters, and a relay killed
//! mid-run.
#![cfg(feature = "sqlite")]

#[path = "support/nats.rs"]
mod nats_server;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mllp::ack::ErrorCode;
use mllp::app::{HandlerError, Request, Router};
use mllp::hl7::Message;
use mllp::relay::{Relay, RelayConfig, RelayEvent, RelayHandle};
use mllp::store::sqlite::RelayLog;
use mllp::store::{Record, SqliteConfig, SqliteStore, Store, StoreSpec};
use mllp::{Backoff, ClientConfig, Server, ServerHandle};
use support::{hl7, within};
use tokio::sync::mpsc;

/// What the downstream answers for a control id, given how often it has seen it before.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answer {
    Accept,
    Error,
    Reject,
}

/// A downstream MLLP receiver that records the control ids it gets, in order.
struct Downstream {
    handle: ServerHandle,
    seen: Arc<Mutex<Vec<String>>>,
    arrivals: mpsc::UnboundedReceiver<String>,
}

type Policy = Arc<dyn Fn(&str, usize) -> Answer + Send + Sync>;

async fn downstream_on(addr: &str, policy: Policy) -> Downstream {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, arrivals) = mpsc::unbounded_channel();
    let recorded = seen.clone();
    let router = Router::new().route("*", move |req: Request| {
        let control_id = req.message().control_id().unwrap_or_default().to_owned();
        let before = {
            let mut seen = recorded.lock().unwrap();
            let before = seen.iter().filter(|c| **c == control_id).count();
            seen.push(control_id.clone());
            before
        };
        let answer = policy(&control_id, before);
        let _ = tx.send(control_id);
        async move {
            match answer {
                Answer::Accept => Ok(()),
                Answer::Error => Err(HandlerError::internal("busy")),
                Answer::Reject => Err(HandlerError::reject(
                    ErrorCode::UnsupportedEventCode,
                    "not here",
                )),
            }
        }
    });
    let handle = Server::builder()
        .router(router)
        .bind(addr)
        .await
        .expect("bind downstream")
        .spawn()
        .await
        .expect("start downstream");
    Downstream {
        handle,
        seen,
        arrivals,
    }
}

async fn downstream(policy: Policy) -> Downstream {
    downstream_on("127.0.0.1:0", policy).await
}

fn accept_all() -> Policy {
    Arc::new(|_, _| Answer::Accept)
}

impl Downstream {
    fn addr(&self) -> String {
        self.handle.local_addr().to_string()
    }

    /// Waits until `n` more messages arrived; returns their control ids.
    async fn next(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(
                within(self.arrivals.recv())
                    .await
                    .expect("downstream alive"),
            );
        }
        out
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn record(control_id: &str) -> Record {
    let message = Message::parse(hl7("ADT^A01^ADT_A01", control_id, "2.5.1")).unwrap();
    Record::from_message(
        &message,
        SystemTime::now(),
        "127.0.0.1:2575".parse().unwrap(),
        "127.0.0.1:40000".parse().unwrap(),
        None,
    )
}

async fn sqlite_store(dir: &tempfile::TempDir) -> (SqliteStore, StoreSpec) {
    let path = dir.path().join("inbox.db");
    let store = SqliteStore::open(&path, SqliteConfig::default().dedup_window(None))
        .await
        .unwrap();
    (store, StoreSpec::Sqlite(path))
}

async fn append_all(store: &impl Store, ids: impl IntoIterator<Item = String>) {
    for id in ids {
        store.append(record(&id)).await.unwrap();
    }
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:04}")).collect()
}

/// Fast settings for tests: short reconnect backoff and retry waits, frequent polls.
fn config() -> RelayConfig {
    RelayConfig::default()
        .client(
            ClientConfig::default()
                .reply_timeout(Duration::from_secs(5))
                .reconnect(Backoff::new(
                    Duration::from_millis(5),
                    Duration::from_millis(50),
                )),
        )
        .retry_backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(10),
        ))
        .poll_interval(Duration::from_millis(10))
}

/// A relay whose events are forwarded to a channel.
async fn spawn(
    from: &StoreSpec,
    to: &str,
    config: RelayConfig,
) -> (RelayHandle, mpsc::UnboundedReceiver<RelayEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let relay = Relay::open(from, to, config)
        .await
        .expect("open relay")
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        });
    (relay.spawn(), rx)
}

/// Waits for the first event `pick` accepts.
async fn until<T>(
    events: &mut mpsc::UnboundedReceiver<RelayEvent>,
    mut pick: impl FnMut(&RelayEvent) -> Option<T>,
) -> T {
    within(async {
        loop {
            let event = events.recv().await.expect("relay alive");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
}

fn position(spec: &StoreSpec, name: &str) -> u64 {
    let StoreSpec::Sqlite(path) = spec else {
        unreachable!()
    };
    RelayLog::open(path, name).unwrap().position().unwrap()
}

/// The backlog goes downstream in store order, each message once; messages stored while the
/// relay runs follow; the cursor ends on the last one.
#[tokio::test]
async fn relays_the_backlog_in_order_then_tails_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (store, from) = sqlite_store(&dir).await;
    append_all(&store, ids("M", 0..20)).await;
    let mut down = downstream(accept_all()).await;
    let (relay, mut events) = spawn(&from, &down.addr(), config()).await;
    assert_eq!(down.next(20).await, ids("M", 0..20));
    until(&mut events, |e| {
        matches!(e, RelayEvent::CaughtUp { position: 20 }).then_some(())
    })
    .await;

    append_all(&store, ids("N", 0..5)).await;
    assert_eq!(down.next(5).await, ids("N", 0..5));
    until(&mut events, |e| {
        matches!(e, RelayEvent::CaughtUp { position: 25 }).then_some(())
    })
    .await;
    let stats = within(relay.shutdown()).await.unwrap();
    assert_eq!(stats.delivered, 25);
    assert_eq!(down.seen().len(), 25);
    assert_eq!(position(&from, "relay"), 25);
    within(down.handle.shutdown()).await;
}

/// With the downstream down, the relay keeps trying without dead-lettering anything; once it
/// is up, every message arrives once, in order.
#[tokio::test]
async fn downstream_down_then_up_gets_everything_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, from) = sqlite_store(&dir).await;
    append_all(&store, ids("D", 0..30)).await;
    let port = nats_server::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (relay, mut events) = spawn(&from, &addr, config().max_attempts(2)).await;
    // Several refused connections: none counts toward the dead letters.
    for _ in 0..3 {
        let counted = until(&mut events, |e| match e {
            RelayEvent::Retrying { counted, .. } => Some(*counted),
            RelayEvent::DeadLettered { .. } => panic!("dead letter while down"),
            _ => None,
        })
        .await;
        assert!(!counted);
    }
    let mut down = downstream_on(&addr, accept_all()).await;
    assert_eq!(down.next(30).await, ids("D", 0..30));
    let stats = within(relay.shutdown()).await.unwrap();
    assert_eq!((stats.delivered, stats.dead_lettered), (30, 0));
    assert_eq!(down.seen(), ids("D", 0..30));
    within(down.handle.shutdown()).await;
}

/// An AR goes to the dead letters at once with the ACK code and ERR-3 as the reason, and
/// the relay moves on to the next message.
#[tokio::test]
async fn rejected_message_is_dead_lettered_and_the_relay_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, from) = sqlite_store(&dir).await;
    append_all(&store, ["OK1", "BAD", "OK2"].map(String::from)).await;
    let mut down = downstream(Arc::new(|id, _| {
        if id == "BAD" {
            Answer::Reject
        } else {
            Answer::Accept
        }
    }))
    .await;
    let (relay, mut events) = spawn(&from, &down.addr(), config()).await;
    assert_eq!(down.next(3).await, ["OK1", "BAD", "OK2"]);
    let (id, reason, attempts) = until(&mut events, |e| match e {
        RelayEvent::DeadLettered {
            id,
            reason,
            attempts,
            ..
        } => Some((*id, reason.clone(), *attempts)),
        _ => None,
    })
    .await;
    assert_eq!((id, attempts), (2, 1));
    assert_eq!(reason, "rejected: AR, ERR-3 201 Unsupported event code");
    until(&mut events, |e| {
        matches!(e, RelayEvent::CaughtUp { position: 3 }).then_some(())
    })
    .await;
    within(relay.shutdown()).await.unwrap();

    let StoreSpec::Sqlite(path) = &from else {
        unreachable!()
    };
    let dead = RelayLog::open(path, "relay")
        .unwrap()
        .dead_letters()
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].message_id, dead[0].reason.as_str()),
        (2, reason.as_str())
    );
    // Another relay's dead letters are its own.
    assert!(
        RelayLog::open(path, "other")
            .unwrap()
            .dead_letters()
            .unwrap()
            .is_empty()
    );
    within(down.handle.shutdown()).await;
}

/// AE is retried (it may pass); a message answered AE `max_attempts` times is dead-lettered.
#[tokio::test]
async fn errors_are_retried_then_dead_lettered_after_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, from) = sqlite_store(&dir).await;
    append_all(&store, ["FLAKY", "BROKEN", "FINE"].map(String::from)).await;
    let mut down = downstream(Arc::new(|id, before| match id {
        "FLAKY" if before < 2 => Answer::Error,
        "BROKEN" => Answer::Error,
        _ => Answer::Accept,
    }))
    .await;
    let (relay, mut events) = spawn(&from, &down.addr(), config().max_attempts(3)).await;
    assert_eq!(
        down.next(7).await,
        [
            "FLAKY", "FLAKY", "FLAKY", "BROKEN", "BROKEN", "BROKEN", "FINE"
        ]
    );
    let mut outcomes = HashMap::new();
    while outcomes.len() < 3 {
        if let Some((id, what)) = until(&mut events, |e| match e {
            RelayEvent::Delivered {
                control_id,
                attempts,
                ..
            } => Some(Some((
                control_id.clone(),
                format!("delivered after {attempts}"),
            ))),
            RelayEvent::DeadLettered {
                control_id, reason, ..
            } => Some(Some((control_id.clone(), reason.clone()))),
            _ => Some(None),
        })
        .await
        {
            outcomes.insert(id, what);
        }
    }
    assert_eq!(outcomes["FLAKY"], "delivered after 3");
    assert_eq!(
        outcomes["BROKEN"],
        "3 tries failed; last: error: AE, ERR-3 207 Application internal error"
    );
    assert_eq!(outcomes["FINE"], "delivered after 1");
    let stats = within(relay.shutdown()).await.unwrap();
    // FLAKY was sent again twice, BROKEN twice (its third failure is its dead letter).
    assert_eq!(stats.retries, 4, "{stats:?}");
    within(down.handle.shutdown()).await;
}

/// A relay killed mid-run (its task aborted, as a crash would) and started again loses
/// nothing, never re-sends a message it had marked done, and re-sends at most the one message
/// that was in flight at the kill (the documented bound).
#[tokio::test]
async fn killed_relay_resumes_without_loss_and_resends_at_most_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, from) = sqlite_store(&dir).await;
    let all = ids("K", 0..120);
    append_all(&store, all.clone()).await;
    let mut down = downstream(accept_all()).await;
    let mut kills = 0;
    let mut marked_at_kill = Vec::new();
    let mut resumed_at = Vec::new();
    for kill_after in [17, 40, 75] {
        let (relay, mut events) = spawn(&from, &down.addr(), config()).await;
        let start = until(&mut events, |e| match e {
            RelayEvent::Started { position, .. } => Some(*position),
            _ => None,
        })
        .await;
        resumed_at.push(start);
        // Let it deliver up to the kill point, then kill it as soon as the downstream has
        // answered that message: the kill lands before or after the cursor commit.
        while down.seen().len() < kill_after {
            down.next(1).await;
        }
        relay.abort();
        let _ = relay.wait().await;
        kills += 1;
        marked_at_kill.push(position(&from, "relay"));
    }
    let (relay, mut events) = spawn(&from, &down.addr(), config()).await;
    until(&mut events, |e| {
        matches!(e, RelayEvent::CaughtUp { position: 120 }).then_some(())
    })
    .await;
    within(relay.shutdown()).await.unwrap();

    let seen = down.seen();
    // Nothing lost, in order.
    let mut distinct = seen.clone();
    distinct.dedup();
    assert_eq!(distinct, all, "every message, in order");
    // Each restart began right after the last mark: nothing marked was sent again.
    for (marked, next_start) in marked_at_kill.iter().zip(resumed_at.iter().skip(1)) {
        assert_eq!(marked, next_start);
    }
    // At most one message sent twice per kill, and only the one at the kill point.
    let twice: Vec<&String> = all
        .iter()
        .filter(|id| seen.iter().filter(|s| s == id).count() > 1)
        .collect();
    assert!(twice.len() <= kills, "sent twice: {twice:?}");
    assert!(seen.len() - all.len() <= kills);
    for id in twice {
        let n: u64 = id[1..].parse::<u64>().unwrap() + 1; // store id of K0000 is 1
        assert!(
            marked_at_kill.contains(&(n - 1)),
            "{id} was sent twice but not at a kill"
        );
    }
    within(down.handle.shutdown()).await;
}

/// A stop while the first message after a (re)connect awaits its answer finishes that
/// exchange and marks the message, as on a connection that was already open: it went out, so
/// leaving it unmarked would send it again after the restart.
#[tokio::test]
async fn stop_finishes_the_first_message_sent_on_a_new_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (store, from) = sqlite_store(&dir).await;
    append_all(&store, ids("S", 0..3)).await;
    // A downstream that holds its answer until the test lets it go.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let held = gate.clone();
    let router = Router::new().route("*", move |req: Request| {
        let _ = arrived.send(req.message().control_id().unwrap_or_default().to_owned());
        let gate = held.clone();
        async move {
            gate.acquire().await.unwrap().forget();
        }
    });
    let down = support::start(Server::builder().router(router)).await;
    let (relay, _events) = spawn(&from, &down.local_addr().to_string(), config()).await;
    assert_eq!(within(arrivals.recv()).await.unwrap(), "S0000");
    relay.stop();
    gate.add_permits(1);
    let stats = within(relay.wait()).await.unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert_eq!(
        position(&from, "relay"),
        1,
        "the message in flight is marked"
    );
    within(down.shutdown()).await;
}

/// A relay that does not follow stops once caught up; one reading a missing store, a `dir:`
/// store or with a bad name does not start.
#[tokio::test]
async fn no_follow_stops_when_caught_up_and_bad_sources_do_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, from) = sqlite_store(&dir).await;
    append_all(&store, ids("F", 0..3)).await;
    let mut down = downstream(accept_all()).await;
    let (relay, _events) = spawn(&from, &down.addr(), config().follow(false)).await;
    let stats = within(relay.wait()).await.unwrap();
    assert_eq!(stats.delivered, 3);
    assert_eq!(down.next(3).await, ids("F", 0..3));

    let missing = StoreSpec::Sqlite(dir.path().join("nope.db"));
    let err = Relay::open(&missing, "127.0.0.1:1", config())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot open"), "{err}");
    let dir_spec: StoreSpec = "dir:/tmp".parse().unwrap();
    let err = Relay::open(&dir_spec, "127.0.0.1:1", config())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot relay from dir:/tmp"),
        "{err}"
    );
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let err = Relay::open(&StoreSpec::Sqlite(empty.clone()), "127.0.0.1:1", config())
        .await
        .unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("cannot open"), "{text}");
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "left as it was"
    );
    let err = Relay::open(&from, "127.0.0.1:1", config().name("a.b"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid relay name"), "{err}");
    within(down.handle.shutdown()).await;
}

/// One relay per name and store: a second of the same name is refused while the first runs
/// (two would each send every message, and move one cursor back and forth), and starts once it
/// has stopped. Another name runs beside it. The cursor never moves back.
#[tokio::test]
async fn a_second_relay_of_the_same_name_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, from) = sqlite_store(&dir).await;
    append_all(&store, ids("T", 0..3)).await;
    let down = downstream(accept_all()).await;
    let (first, mut events) = spawn(&from, &down.addr(), config()).await;
    until(&mut events, |e| {
        matches!(e, RelayEvent::CaughtUp { position: 3 }).then_some(())
    })
    .await;
    let err = Relay::open(&from, &down.addr(), config())
        .await
        .unwrap_err();
    assert!(
        matches!(err, mllp::relay::RelayError::AlreadyRunning { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("relay \"relay\" is already running on this store"),
        "{err}"
    );
    let other = Relay::open(&from, &down.addr(), config().name("other")).await;
    assert!(other.is_ok(), "another name runs beside it");
    drop(other);
    within(first.shutdown()).await.unwrap();
    let (again, _events) = spawn(&from, &down.addr(), config().follow(false)).await;
    assert_eq!(
        within(again.wait()).await.unwrap().delivered,
        0,
        "it resumes at 3"
    );
    assert_eq!(down.seen(), ids("T", 0..3), "each message once");

    let StoreSpec::Sqlite(path) = &from else {
        unreachable!()
    };
    let log = RelayLog::open(path, "relay").unwrap();
    log.advance(2).unwrap();
    assert_eq!(log.position().unwrap(), 3, "the cursor never moves back");
    within(down.handle.shutdown()).await;
}

#[cfg(feature = "nats")]
mod jetstream {
    use async_nats::jetstream;
    use mllp::store::nats::{JetStreamConfig, JetStreamStore, StreamSettings};

    use super::*;
    use nats_server::NatsServer;

    async fn nats_store(nats: &NatsServer) -> (JetStreamStore, StoreSpec) {
        let spec: StoreSpec = format!("{}/HL7", nats.url()).parse().unwrap();
        let StoreSpec::Nats(nats_spec) = &spec else {
            unreachable!()
        };
        let config = JetStreamConfig::default()
            .max_message_size(256 * 1024)
            .create_stream(Some(StreamSettings::default()));
        (JetStreamStore::open(nats_spec, config).await.unwrap(), spec)
    }

    fn nats_config() -> RelayConfig {
        config()
            .create_dead_letter_stream(true)
            .ack_wait(Duration::from_secs(1))
    }

    /// The durable consumer of the relay named `relay` on the stream `HL7`, as the server
    /// has it now.
    async fn relay_consumer(js: &jetstream::Context) -> jetstream::consumer::Info {
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_stream("HL7")
            .await
            .unwrap()
            .get_consumer("relay")
            .await
            .unwrap();
        consumer.info().await.unwrap().clone()
    }

    /// A relay started again with another `ack_wait` updates its consumer (it was kept as
    /// first made, silently); a subject prefix that no subject of the stream falls under is
    /// refused at start instead of relaying nothing, for ever.
    #[tokio::test]
    async fn a_restart_applies_new_consumer_settings_and_a_prefix_the_stream_lacks_is_refused() {
        let nats = NatsServer::start();
        let (store, from) = nats_store(&nats).await;
        append_all(&store, ids("U", 0..2)).await;
        let down = downstream(accept_all()).await;
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        for wait in [Duration::from_secs(1), Duration::from_secs(7)] {
            let (relay, mut events) =
                spawn(&from, &down.addr(), nats_config().ack_wait(wait)).await;
            until(&mut events, |e| {
                matches!(e, RelayEvent::CaughtUp { position: 2 }).then_some(())
            })
            .await;
            within(relay.shutdown()).await.unwrap();
            assert_eq!(relay_consumer(&js).await.config.ack_wait, wait);
        }
        assert_eq!(down.seen(), ids("U", 0..2), "each message once");

        let err = Relay::open(
            &from,
            &down.addr(),
            nats_config().name("other").subject_prefix("xyz"),
        )
        .await
        .unwrap_err();
        let text = support::chain(&err);
        assert!(text.contains("no subject under xyz.>"), "{text}");
        within(down.handle.shutdown()).await;
    }

    /// From a stream: in order through a durable consumer, acked after the downstream ACK;
    /// an AR is published to the dead-letter subject with the reason, and the relay moves on.
    #[tokio::test]
    async fn relays_a_stream_in_order_and_dead_letters_to_a_subject() {
        let nats = NatsServer::start();
        let (store, from) = nats_store(&nats).await;
        let mut messages = ids("J", 0..10);
        messages[4] = "BAD".into();
        append_all(&store, messages.clone()).await;
        let mut down = downstream(Arc::new(|id, _| {
            if id == "BAD" {
                Answer::Reject
            } else {
                Answer::Accept
            }
        }))
        .await;
        let (relay, mut events) = spawn(&from, &down.addr(), nats_config()).await;
        assert_eq!(down.next(10).await, messages);
        until(&mut events, |e| {
            matches!(e, RelayEvent::CaughtUp { position: 10 }).then_some(())
        })
        .await;
        let stats = within(relay.shutdown()).await.unwrap();
        assert_eq!((stats.delivered, stats.dead_lettered), (9, 1));

        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let info = relay_consumer(&js).await;
        assert_eq!(info.ack_floor.stream_sequence, 10);
        let dead = js
            .get_stream("HL7_DEAD_relay")
            .await
            .unwrap()
            .get_raw_message(1)
            .await
            .unwrap();
        assert_eq!(dead.subject.as_str(), "mllp.dead.relay");
        let h = |n: &str| dead.headers.get(n).unwrap().as_str().to_owned();
        assert_eq!(
            h("Mllp-Dead-Reason"),
            "rejected: AR, ERR-3 201 Unsupported event code"
        );
        assert_eq!(h("Mllp-Dead-Sequence"), "5");
        assert_eq!(h("Hl7-Control-Id"), "BAD");
        within(down.handle.shutdown()).await;
    }

    /// Killed mid-run and restarted, a JetStream relay loses nothing and sends at most the
    /// message in flight twice (it comes back after the ack wait).
    #[tokio::test]
    async fn killed_jetstream_relay_resumes_without_loss() {
        let nats = NatsServer::start();
        let (store, from) = nats_store(&nats).await;
        let all = ids("Q", 0..40);
        append_all(&store, all.clone()).await;
        let mut down = downstream(accept_all()).await;
        let (relay, _events) = spawn(&from, &down.addr(), nats_config()).await;
        while down.seen().len() < 15 {
            down.next(1).await;
        }
        relay.abort();
        let _ = relay.wait().await;

        let (relay, mut events) = spawn(&from, &down.addr(), nats_config()).await;
        until(&mut events, |e| {
            matches!(e, RelayEvent::CaughtUp { position: 40 }).then_some(())
        })
        .await;
        within(relay.shutdown()).await.unwrap();
        let seen = down.seen();
        let mut distinct = seen.clone();
        distinct.dedup();
        assert_eq!(distinct, all);
        assert!(
            seen.len() <= all.len() + 1,
            "{} sent for {}",
            seen.len(),
            all.len()
        );
        within(down.handle.shutdown()).await;
    }

    /// No stream captures the dead-letter subject: a startup error, unless asked to create one.
    #[tokio::test]
    async fn missing_dead_letter_stream_is_a_startup_error() {
        let nats = NatsServer::start();
        let (_store, from) = nats_store(&nats).await;
        let err = Relay::open(&from, "127.0.0.1:1", config())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("mllp.dead.relay"), "{err}");
        let err = Relay::open(
            &from,
            "127.0.0.1:1",
            config().dead_letter_subject(Some("hl7.dead".into())),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("is relayed itself"), "{err}");
    }
}

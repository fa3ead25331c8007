//! [`Activity`]: what the server's snapshot knows beyond the runtime's registry. Answers by ACK
//! code, rejects by kind, the message latency histogram, and each live connection's last
//! message (its type and ACK code), recorded from the runtime's events.
//!
//! Cost per message: two relaxed atomic adds (the ACK code's counter and a latency bucket), a
//! `fetch_max`, and an uncontended lock of one of [`SHARDS`] small maps to note the
//! connection's last message. Reading it ([`Activity::read`]) walks the counters and the maps.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mllp_actors::{CloseReason, Event, Observer};

use crate::ack::{Ack, AckCode};
use crate::protocol::{BatchOutcome, Hl7, Inbound};

/// The maps of last messages are split by connection id, so connections on different worker
/// threads rarely share a lock.
const SHARDS: usize = 32;

/// Slots of the answer counters: the six ACK codes, then "no answer".
const ACK_SLOTS: usize = 7;

/// Latency buckets: four per power of two of microseconds (a bucket's width is at most a
/// quarter of its lower bound), from 0 to about 2^40 µs (12 days).
const LATENCY_BUCKETS: usize = 4 + 4 * 39;

/// Why a message or a connection was refused, as counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// The payload is not HL7 (no MSH, bad delimiters, LF line endings...): AR 100/102.
    NotHl7,
    /// MSH-9 or MSH-10 is missing: AR 101.
    MissingMshField,
    /// Any other AR or CR (unsupported type, event, version or processing id, a handler's
    /// reject).
    Refused,
    /// Bytes outside a frame (strict framing): the connection was closed.
    Framing,
    /// A frame over `max_message_size`: the connection was closed.
    Oversize,
    /// The stream ended inside a frame: the connection was closed.
    Truncated,
    /// A batch whose envelope is malformed (a misplaced segment, a missing trailer, a wrong
    /// count): one AR for the whole batch.
    Batch,
}

impl Reject {
    const ALL: [Reject; 7] = [
        Reject::NotHl7,
        Reject::MissingMshField,
        Reject::Refused,
        Reject::Framing,
        Reject::Oversize,
        Reject::Truncated,
        Reject::Batch,
    ];

    /// The reason as logged (`reject.reason`) and reported.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reject::NotHl7 => "not_hl7",
            Reject::MissingMshField => "missing_msh_field",
            Reject::Refused => "refused",
            Reject::Framing => "framing",
            Reject::Oversize => "oversize",
            Reject::Truncated => "truncated",
            Reject::Batch => "batch",
        }
    }

    /// The reject a message answered `ack` stands for, if it was refused (AR/CR).
    /// The messages of a batch that was handled are each classified on their own
    /// ([`Inbound::batch_outcome`]), so a handled batch is none.
    pub(crate) fn of_message(meta: &Inbound, ack: Option<&Ack>) -> Option<Reject> {
        match meta.batch_outcome() {
            Some(BatchOutcome::Refused(_)) => return Some(Reject::Batch),
            Some(BatchOutcome::Handled { .. }) => return None,
            None => {}
        }
        let code = ack?.code();
        if !matches!(code, AckCode::AR | AckCode::CR) {
            return None;
        }
        Some(if meta.parse_error().is_some() {
            Reject::NotHl7
        } else if meta.message_code().is_none()
            || meta.trigger_event().is_none()
            || meta.control_id().is_none()
        {
            Reject::MissingMshField
        } else {
            Reject::Refused
        })
    }

    /// The reject a connection's close stands for, if the codec refused its bytes.
    pub(crate) fn of_close(reason: &CloseReason) -> Option<Reject> {
        match reason {
            CloseReason::Protocol { kind, .. } => match *kind {
                "oversize" => Some(Reject::Oversize),
                "truncated" => Some(Reject::Truncated),
                _ => Some(Reject::Framing),
            },
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the snapshot shows of a connection's last message: `ADT^A01` (codes that are not 1-3
/// letters or digits read `other`, absent ones `unknown`, as in the metrics) and the ACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastMessage {
    label: [u8; 15],
    len: u8,
    /// An index into [`ACK_NAMES`].
    ack: u8,
}

/// The ACK codes by counter slot; `none` when nothing was sent.
pub(crate) const ACK_NAMES: [&str; ACK_SLOTS] = ["AA", "AE", "AR", "CA", "CE", "CR", "none"];

impl LastMessage {
    fn new(meta: &Inbound, ack: usize) -> Self {
        fn part(code: Option<&[u8]>) -> &[u8] {
            match code {
                None => b"unknown",
                Some(code) if code.len() <= 3 && code.iter().all(u8::is_ascii_alphanumeric) => code,
                Some(_) => b"other",
            }
        }
        let parts: [&[u8]; 3] = if meta.message().is_some() {
            [
                part(meta.message_code_bytes()),
                b"^",
                part(meta.trigger_event_bytes()),
            ]
        } else {
            [b"not HL7", b"", b""]
        };
        let mut label = [0u8; 15];
        let mut len = 0;
        for byte in parts.iter().flat_map(|p| p.iter()) {
            label[len] = *byte;
            len += 1;
        }
        LastMessage {
            label,
            len: len as u8,
            ack: ack as u8,
        }
    }

    /// `ADT^A01`, `ORU^other`, `not HL7`.
    pub(crate) fn message_type(&self) -> &str {
        std::str::from_utf8(&self.label[..usize::from(self.len)]).unwrap_or("other")
    }

    /// `AA` ... `CR`, or `none` when nothing was sent.
    pub(crate) fn ack_code(&self) -> &'static str {
        ACK_NAMES[usize::from(self.ack)]
    }
}

/// Some connections' last messages, by connection id: `None` until a connection's first one.
type Shard = Mutex<HashMap<u64, Option<LastMessage>>>;

/// The counters, histogram and last messages of one server.
#[derive(Debug)]
pub(crate) struct Activity {
    acks: [AtomicU64; ACK_SLOTS],
    rejects: [AtomicU64; 7],
    failures: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_max_us: AtomicU64,
    latency_sum_us: AtomicU64,
    last: Box<[Shard]>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            acks: Default::default(),
            rejects: Default::default(),
            failures: AtomicU64::new(0),
            latency: [const { AtomicU64::new(0) }; LATENCY_BUCKETS],
            latency_max_us: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            last: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// The counters as read at one moment (each exact; the set not one instant).
#[derive(Debug, Clone, Default)]
pub(crate) struct ActivityReading {
    pub(crate) acks: [u64; ACK_SLOTS],
    pub(crate) rejects: Vec<(Reject, u64)>,
    pub(crate) failures: u64,
    /// Non-empty latency buckets: (upper bound, count).
    pub(crate) latency: Vec<(Duration, u64)>,
    pub(crate) latency_max: Duration,
    pub(crate) latency_sum: Duration,
}

fn ack_slot(ack: Option<&Ack>) -> usize {
    ack.map(Ack::code).map_or(ACK_SLOTS - 1, code_slot)
}

/// The counter of an ACK code.
fn code_slot(code: AckCode) -> usize {
    match code {
        AckCode::AA => 0,
        AckCode::AE => 1,
        AckCode::AR => 2,
        AckCode::CA => 3,
        AckCode::CE => 4,
        AckCode::CR => 5,
    }
}

/// The bucket of a latency in microseconds: exact below 4 µs, then four per power of two.
fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let exponent = 63 - us.leading_zeros() as usize; // >= 2
    let sub = ((us >> (exponent - 2)) & 3) as usize;
    (4 + (exponent - 2) * 4 + sub).min(LATENCY_BUCKETS - 1)
}

/// The largest latency (µs) a bucket holds.
fn bucket_upper(index: usize) -> u64 {
    if index < 4 {
        return index as u64;
    }
    let exponent = (index - 4) / 4 + 2;
    let sub = ((index - 4) % 4) as u64;
    ((4 + sub + 1) << (exponent - 2)) - 1
}

impl Activity {
    fn shard(&self, id: u64) -> &Shard {
        &self.last[(id as usize) % SHARDS]
    }

    fn answered(&self, connection: u64, meta: &Inbound, duration: Duration, ack: Option<&Ack>) {
        // A batch counts as its messages, each answered when the batch was.
        if let Some(BatchOutcome::Handled { messages, more }) = meta.batch_outcome() {
            for (message, ack) in messages {
                self.answered(connection, message, duration, ack.as_ref());
            }
            // The ones past what is reported one by one: their answers, by code.
            for code in more {
                self.acks[code.map_or(ACK_SLOTS - 1, code_slot)].fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let slot = ack_slot(ack);
        self.acks[slot].fetch_add(1, Ordering::Relaxed);
        if let Some(reject) = Reject::of_message(meta, ack) {
            self.rejects[reject.index()].fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.latency[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        // Read first: the maximum rarely moves, and a read keeps the line shared between
        // threads where a `fetch_max` would take it exclusive on every message.
        if us > self.latency_max_us.load(Ordering::Relaxed) {
            self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        }
        let last = LastMessage::new(meta, slot);
        let mut shard = self
            .shard(connection)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A connection not in the map has already stopped (a message aborted with it).
        if let Some(entry) = shard.get_mut(&connection) {
            *entry = Some(last);
        }
    }

    /// The last message of each connection asked for, by id. Each shard is locked once.
    pub(crate) fn last_messages(&self, ids: &[u64]) -> Vec<Option<LastMessage>> {
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); SHARDS];
        for (i, id) in ids.iter().enumerate() {
            by_shard[(*id as usize) % SHARDS].push(i);
        }
        let mut last = vec![None; ids.len()];
        for (shard, indices) in self.last.iter().zip(by_shard) {
            if indices.is_empty() {
                continue;
            }
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for i in indices {
                last[i] = shard.get(&ids[i]).copied().flatten();
            }
        }
        last
    }

    /// The counters now.
    pub(crate) fn read(&self) -> ActivityReading {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ActivityReading {
            acks: std::array::from_fn(|i| load(&self.acks[i])),
            rejects: Reject::ALL
                .iter()
                .map(|r| (*r, load(&self.rejects[r.index()])))
                .collect(),
            failures: load(&self.failures),
            latency: self
                .latency
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let n = load(n);
                    (n > 0).then(|| (Duration::from_micros(bucket_upper(i)), n))
                })
                .collect(),
            latency_max: Duration::from_micros(load(&self.latency_max_us)),
            latency_sum: Duration::from_micros(load(&self.latency_sum_us)),
        }
    }
}

impl Observer<Hl7> for Activity {
    fn on_event(&self, event: &Event<'_, Hl7>) {
        match event {
            Event::ConnectionStart { connection, .. } => {
                let id = connection.id();
                let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
                // `None` until the connection's first message.
                shard.insert(id, None);
            }
            Event::ConnectionStop {
                connection, reason, ..
            } => {
                let id = connection.id();
                let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
                shard.remove(&id);
                // Give back most of the table once it is three-quarters empty (after a burst
                // of connections), keeping room for twice what is left.
                if shard.capacity() > 64 && shard.len() * 4 < shard.capacity() {
                    let keep = (shard.len() * 2).max(64);
                    shard.shrink_to(keep);
                }
                drop(shard);
                if let Some(reject) = Reject::of_close(reason) {
                    self.rejects[reject.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::MessageStop {
                connection,
                meta,
                duration,
                response,
                ..
            } => self.answered(connection.id(), meta, *duration, *response),
            Event::MessageException {
                connection,
                meta,
                duration,
                response,
                ..
            } => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.answered(connection.id(), meta, *duration, *response);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every latency falls in a bucket whose upper bound is at least it and at most a quarter
    /// above its lower bound; buckets are in order.
    #[test]
    fn latency_buckets_bound_their_values() {
        for us in (0..5000).chain([65_535, 65_536, 1 << 30, (1 << 30) + 12345]) {
            let i = bucket(us);
            assert!(bucket_upper(i) >= us, "{us} in {i}");
            if i > 0 {
                assert!(bucket_upper(i - 1) < us, "{us} in {i}");
            }
            assert!(bucket_upper(i) as f64 <= (us.max(4) as f64) * 1.25 + 1.0);
        }
        assert_eq!(bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    /// `count` connections, each started on `activity`.
    fn opened(activity: &Activity, count: u64) -> Vec<mllp_actors::ConnectionInfo> {
        let addr: std::net::SocketAddr = "127.0.0.1:2575".parse().unwrap();
        let connections: Vec<_> = (0..count)
            .map(|id| mllp_actors::ConnectionInfo::new(id, addr, addr, false, None))
            .collect();
        for c in &connections {
            activity.on_event(&Event::ConnectionStart {
                connection: c,
                system_time: std::time::SystemTime::now(),
            });
        }
        connections
    }

    /// A burst of connections does not leave its tables allocated once it has closed: the
    /// shards give back what a 10k burst needed (about half a MiB).
    #[test]
    fn last_message_tables_shrink_after_a_burst_closes() {
        use mllp_actors::CloseReason;

        let activity = Activity::default();
        let capacity = |a: &Activity| -> usize {
            a.last
                .iter()
                .map(|s| s.lock().unwrap().capacity())
                .sum::<usize>()
        };
        let connections = opened(&activity, 10_000);
        let peak = capacity(&activity);
        assert!(peak >= 10_000, "{peak}");
        // One stays open.
        for c in &connections[1..] {
            activity.on_event(&Event::ConnectionStop {
                connection: c,
                duration: Duration::from_millis(1),
                reason: &CloseReason::PeerClosed,
                messages: 1,
                span: None,
            });
        }
        let after = capacity(&activity);
        assert!(after <= SHARDS * 128, "{peak} -> {after}");
        assert_eq!(activity.last_messages(&[0]), vec![None]);
    }

    /// What recording one answered message costs (ACK counter, latency bucket, last message),
    /// with 16 live connections on two threads. A measurement, not a check: run with
    /// `cargo test --release --lib -- --ignored --nocapture activity_cost`.
    #[test]
    #[ignore = "a measurement; run it in release"]
    fn activity_cost() {
        use std::sync::Arc;

        use crate::ack::{Ack, AckOptions};
        use crate::protocol::test_inbound;

        let activity = Arc::new(Activity::default());
        let connections = opened(&activity, 16);
        let meta = test_inbound("ADT", "A01");
        let ack = Ack::build(
            meta.message().unwrap(),
            AckCode::AA,
            &[],
            &AckOptions::default(),
        );
        const N: u32 = 2_000_000;
        let run = |offset: usize| {
            let span = tracing::Span::none();
            let start = std::time::Instant::now();
            for i in 0..N {
                activity.on_event(&Event::MessageStop {
                    connection: &connections[(i as usize + offset) % 8 * 2 + offset],
                    meta: &meta,
                    duration: Duration::from_micros(u64::from(i % 500)),
                    response: Some(&ack),
                    response_size: 40,
                    span: &span,
                });
            }
            start.elapsed()
        };
        for round in 0..3 {
            let alone = run(0);
            println!(
                "round {round}: {:.1} ns per message (one thread)",
                alone.as_nanos() as f64 / f64::from(N)
            );
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(|| run(0));
                let b = s.spawn(|| run(1));
                (a.join().unwrap(), b.join().unwrap())
            });
            println!(
                "round {round}: {:.1} ns and {:.1} ns per message (two threads)",
                a.as_nanos() as f64 / f64::from(N),
                b.as_nanos() as f64 / f64::from(N)
            );
        }
    }
}

//! Telemetry: the events the server emits, and OpenTelemetry metrics built from them.
//!
//! Spans (`mllp.connection`, `mllp.message`) go out through `tracing`; install
//! `tracing-opentelemetry` to export them. Metrics go through the `opentelemetry` metrics API:
//! by default the server records into the global meter provider (a no-op until the embedding
//! service installs one), so an installed exporter sees them with no further glue.
//! docs/telemetry.md lists every name: renaming one is a breaking change.

mod activity;
mod log;
mod span;
mod text;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableCounter, UpDownCounter};
use opentelemetry::{KeyValue, Value};

use crate::ack::Ack;
use crate::protocol::{BatchOutcome, Inbound};

/// A telemetry event, as delivered to an [`Observer`].
pub type Event<'a> = mllp_actors::Event<'a, Hl7>;

/// Receives every telemetry [`Event`] synchronously: keep `on_event` cheap and never block.
///
/// Register one with [`ServerBuilder::observer`](crate::ServerBuilder::observer). The type
/// parameter is the protocol, always [`Hl7`] for this crate's server:
/// `impl Observer<Hl7> for MyObserver`. For a closure, [`observer_fn`] does it for you.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use mllp::telemetry::{Event, Hl7, Observer};
///
/// #[derive(Default)]
/// struct Answered(AtomicU64);
///
/// impl Observer<Hl7> for Answered {
///     fn on_event(&self, event: &Event<'_>) {
///         if let Event::MessageStop { .. } = event {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// let builder = mllp::Server::builder().observer(Answered::default());
/// # let _ = builder;
/// ```
pub use mllp_actors::Observer;

/// The HL7 protocol as the runtime sees it: the type parameter of [`Observer`] and [`Event`]
/// (also at `mllp::server::Hl7`).
pub use crate::protocol::Hl7;

/// An [`Observer`] made from a closure, by [`observer_fn`].
pub struct ObserverFn<F>(F);

impl<F> std::fmt::Debug for ObserverFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserverFn")
    }
}

impl<F> Observer<Hl7> for ObserverFn<F>
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>) {
        (self.0)(event);
    }
}

/// An observer from a closure, called synchronously with every telemetry [`Event`] (keep it
/// cheap, never block: count, or send to a channel).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use mllp::{Event, observer_fn};
///
/// let failures = Arc::new(AtomicU64::new(0));
/// let counted = Arc::clone(&failures);
/// let builder = mllp::Server::builder().observer(observer_fn(move |event: &Event<'_>| {
///     if let Event::MessageException { failure, .. } = event {
///         tracing::warn!(kind = failure.kind(), "handler failed");
///         counted.fetch_add(1, Ordering::Relaxed);
///     }
/// }));
/// # let _ = builder;
/// ```
pub fn observer_fn<F>(f: F) -> ObserverFn<F>
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    ObserverFn(f)
}

pub use mllp_actors::CloseReason;

/// What went wrong with a message, as carried by a `MessageException` [`Event`].
pub use mllp_actors::Failure;

pub(crate) use activity::{ACK_NAMES, Activity, ActivityReading, LastMessage, Reject};
pub use log::LineSink;
pub(crate) use log::MessageLog;

/// The `tracing` target of the per-message lines.
pub const MESSAGES_TARGET: &str = "mllp::messages";
/// The `tracing` target of the reject lines.
pub const REJECTS_TARGET: &str = "mllp::rejects";

pub(crate) use span::SpanRecorder;
pub use text::{TextFields, TextFormat};

/// The `tracing` target of the telemetry events (`mllp.connection.start`,
/// `mllp.connection.stop`, `mllp.message.start`, `mllp.message.stop`, `mllp.message.exception`),
/// all at `DEBUG`: enable them with the filter directive `mllp::events=debug`.
pub const EVENTS_TARGET: &str = crate::protocol::EVENTS_TARGET;

/// The instrumentation scope name of every metric.
pub const METER_NAME: &str = "mllp";

/// OpenTelemetry metrics for a server, recorded from its telemetry events.
///
/// Attributes are low cardinality only: message type, trigger event, ACK code, close reason,
/// failure kind. Never the control ID, never the peer address.
#[derive(Debug, Clone)]
pub struct Metrics {
    active_connections: UpDownCounter<i64>,
    connections_opened: Counter<u64>,
    connections_closed: Counter<u64>,
    connections_refused: Counter<u64>,
    message_duration: Histogram<f64>,
    message_size: Histogram<u64>,
    exceptions: Counter<u64>,
    framing_faults: Counter<u64>,
    acceptor_restarts: Counter<u64>,
    /// The per-message counters (`mllp.server.messages`, `received`, `sent`), summed here with
    /// an atomic add each and reported by their instruments' callbacks at collection, instead of
    /// a synchronous instrument's attribute lookup per message.
    counts: Arc<Counts>,
    _counted: [ObservableCounter<u64>; 3],
}

/// Totals behind the asynchronous counters. `messages[i]` counts the messages of kept attribute
/// set `i` (see [`with_message_attributes`]); the last slot counts the rest, reported with
/// `otel.metric.overflow = true` as the SDK does past its cardinality limit.
#[derive(Debug)]
struct Counts {
    /// Tells this server's kept attribute sets from another's in the per-thread cache.
    id: u64,
    /// This server's kept attribute sets, by key (at most [`KEPT_ATTRIBUTE_SETS`]).
    kept: Mutex<HashMap<Key, Kept>>,
    messages: Box<[AtomicU64]>,
    received: AtomicU64,
    sent: AtomicU64,
}

impl Metrics {
    /// Instruments on the given meter.
    pub fn new(meter: &Meter) -> Self {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let counts = Arc::new(Counts {
            id: INSTANCES.fetch_add(1, Ordering::Relaxed),
            kept: Mutex::new(HashMap::new()),
            messages: (0..=KEPT_ATTRIBUTE_SETS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        let observed = Arc::clone(&counts);
        let messages = meter
            .u64_observable_counter("mllp.server.messages")
            .with_unit("{message}")
            .with_description("Messages handled, by message type and ACK code")
            .with_callback(move |observer| {
                let kept = observed.kept.lock().unwrap_or_else(|e| e.into_inner());
                for (index, set) in kept.values() {
                    let count = observed.messages[*index].load(Ordering::Relaxed);
                    if count > 0 {
                        observer.observe(count, &set[..]);
                    }
                }
                let overflow = observed.messages[KEPT_ATTRIBUTE_SETS].load(Ordering::Relaxed);
                if overflow > 0 {
                    observer.observe(overflow, &[KeyValue::new("otel.metric.overflow", true)]);
                }
            })
            .build();
        let observed = Arc::clone(&counts);
        let received = meter
            .u64_observable_counter("mllp.server.received")
            .with_unit("By")
            .with_description("Message payload bytes received (MLLP framing excluded)")
            .with_callback(move |observer| {
                observer.observe(observed.received.load(Ordering::Relaxed), &[]);
            })
            .build();
        let observed = Arc::clone(&counts);
        let sent = meter
            .u64_observable_counter("mllp.server.sent")
            .with_unit("By")
            .with_description("Acknowledgment payload bytes sent (MLLP framing excluded)")
            .with_callback(move |observer| {
                observer.observe(observed.sent.load(Ordering::Relaxed), &[]);
            })
            .build();
        Self {
            counts,
            _counted: [messages, received, sent],
            active_connections: meter
                .i64_up_down_counter("mllp.server.active_connections")
                .with_unit("{connection}")
                .with_description("Connections currently open")
                .build(),
            connections_opened: meter
                .u64_counter("mllp.server.connections.opened")
                .with_unit("{connection}")
                .with_description("Connections accepted")
                .build(),
            connections_closed: meter
                .u64_counter("mllp.server.connections.closed")
                .with_unit("{connection}")
                .with_description("Connections closed, by close reason")
                .build(),
            connections_refused: meter
                .u64_counter("mllp.server.connections.refused")
                .with_unit("{connection}")
                .with_description("Peers refused by the admission check")
                .build(),
            message_duration: meter
                .f64_histogram("mllp.server.message.duration")
                .with_unit("s")
                .with_description("Time from a message's last byte to its ACK being written")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0,
                ])
                .build(),
            message_size: meter
                .u64_histogram("mllp.server.message.size")
                .with_unit("By")
                .with_description("Size of inbound message payloads")
                .with_boundaries(vec![
                    256.0,
                    1024.0,
                    4096.0,
                    16384.0,
                    65536.0,
                    262_144.0,
                    1_048_576.0,
                    4_194_304.0,
                    10_485_760.0,
                ])
                .build(),
            exceptions: meter
                .u64_counter("mllp.server.handler.exceptions")
                .with_unit("{exception}")
                .with_description("Handler failures, by kind (panic, timeout, aborted)")
                .build(),
            framing_faults: meter
                .u64_counter("mllp.server.framing.faults")
                .with_unit("{fault}")
                .with_description("Connections closed for invalid framing, by kind")
                .build(),
            acceptor_restarts: meter
                .u64_counter("mllp.server.acceptor.restarts")
                .with_unit("{restart}")
                .with_description("Acceptor restarts after a listener failure")
                .build(),
        }
    }

    /// Instruments on the global meter provider (scope `mllp`).
    pub fn global() -> Self {
        Self::new(&meter())
    }
}

/// The meter of the global provider that mllp's instruments use: scope `mllp`, with this
/// crate's version (`otel_scope_version` in Prometheus). Use it for instruments of your own
/// that should be reported beside the server's.
pub fn meter() -> opentelemetry::metrics::Meter {
    let scope = opentelemetry::InstrumentationScope::builder(METER_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    opentelemetry::global::meter_with_scope(scope)
}

fn message_attributes(meta: &Inbound, ack_code: &'static str) -> [KeyValue; 3] {
    [
        KeyValue::new("hl7.message_type", code_value(meta.message_code_bytes())),
        KeyValue::new("hl7.trigger_event", code_value(meta.trigger_event_bytes())),
        KeyValue::new("hl7.ack_code", ack_code),
    ]
}

/// How many attribute sets (type, event, ACK code) a server builds once and keeps: real traffic
/// has a few dozen. Past this, a message's set is built for it alone, and
/// `mllp.server.messages` counts it in its overflow series. Below the OpenTelemetry SDK's
/// default cardinality limit (2000 series per instrument), which would otherwise cut the
/// counter's series short of exact totals. Each server (each [`Metrics`]) has its own sets, so
/// one server's traffic cannot use up another's.
const KEPT_ATTRIBUTE_SETS: usize = 1024;

/// A kept attribute set: its slot in [`Counts::messages`] and the attributes.
type Kept = (usize, Arc<[KeyValue; 3]>);

/// The key of an attribute set: message code, trigger event (as in [`with_message_attributes`])
/// and the ACK code's first two letters.
type Key = (u32, u32, u16);

/// A message's metric attributes and their slot in [`Counts::messages`]: built once per
/// combination and kept by the server (bounded by [`KEPT_ATTRIBUTE_SETS`]), so recording costs
/// no construction and no drop per message. A per-thread cache (direct-mapped, 256 slots) spares
/// the server's lock. Past the bound, the set is built for the message alone and its slot is the
/// overflow one.
fn with_message_attributes(
    counts: &Counts,
    meta: &Inbound,
    ack_code: &'static str,
    record: impl FnOnce(usize, &[KeyValue]),
) {
    const SLOTS: usize = 256;
    type Slot = Option<(u64, Key, Kept)>;
    thread_local! {
        static CACHE: RefCell<[Slot; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
    }
    // Distinct for distinct attribute values: at most three non-zero bytes, or a bucket.
    let part = |code: Option<&[u8]>| match kept_code(code) {
        Ok(code) => code.iter().fold(0u32, |key, &b| (key << 8) | u32::from(b)),
        Err("unknown") => 0,
        Err(_) => u32::MAX,
    };
    let ack = ack_code.as_bytes();
    let key: Key = (
        part(meta.message_code_bytes()),
        part(meta.trigger_event_bytes()),
        u16::from_be_bytes([ack[0], ack[1]]),
    );
    let slot =
        ((key.0 ^ key.1.rotate_left(11) ^ u32::from(key.2).rotate_left(22) ^ counts.id as u32)
            .wrapping_mul(0x9E37_79B9)
            >> 24) as usize
            % SLOTS;
    let record = CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((id, cached, (index, set))) = &cache[slot]
            && *id == counts.id
            && *cached == key
        {
            record(*index, &set[..]);
            return None;
        }
        let kept = {
            let mut kept_by_key = counts.kept.lock().unwrap_or_else(|e| e.into_inner());
            match kept_by_key.get(&key) {
                Some(kept) => Some(kept.clone()),
                None if kept_by_key.len() < KEPT_ATTRIBUTE_SETS => {
                    let kept = (
                        kept_by_key.len(),
                        Arc::new(message_attributes(meta, ack_code)),
                    );
                    kept_by_key.insert(key, kept.clone());
                    Some(kept)
                }
                None => None,
            }
        };
        match kept {
            Some((index, set)) => {
                record(index, &set[..]);
                cache[slot] = Some((counts.id, key, (index, set)));
                None
            }
            None => Some(record),
        }
    });
    if let Some(record) = record {
        record(KEPT_ATTRIBUTE_SETS, &message_attributes(meta, ack_code));
    }
}

/// Message codes and trigger events are three characters by the standard; a hostile sender
/// must not be able to mint unbounded metric series, so anything else is bucketed as `other`
/// (and an absent one is `unknown`): `Err` names the bucket.
fn kept_code(code: Option<&[u8]>) -> Result<&[u8], &'static str> {
    match code {
        None => Err("unknown"),
        Some(code) if code.len() <= 3 && code.iter().all(u8::is_ascii_alphanumeric) => Ok(code),
        Some(_) => Err("other"),
    }
}

pub(crate) fn code_value(code: Option<&[u8]>) -> Value {
    match kept_code(code) {
        // Letters and digits only, so this is the code as sent.
        Ok(code) => Value::from(String::from_utf8_lossy(code).into_owned()),
        Err(bucket) => Value::from(bucket),
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Metrics {
    /// A message ended (answered, failed, or silent by MSH-15): count it with its ACK code,
    /// record its duration and the ACK's payload bytes (like `received` and the span's
    /// `mllp.response.size`; the runtime's `response_size` also counts the MLLP framing).
    fn record_answer(&self, meta: &Inbound, duration: Duration, response: Option<&Ack>) {
        let count = |meta: &Inbound, response: Option<&Ack>| {
            let code = response.map_or("none", |ack| ack.code().as_str());
            with_message_attributes(&self.counts, meta, code, |index, attrs| {
                self.counts.messages[index].fetch_add(1, Ordering::Relaxed);
                self.message_duration.record(seconds(duration), attrs);
            });
        };
        match meta.batch_outcome() {
            // A batch counts as its messages, each answered when the batch was.
            Some(BatchOutcome::Handled { messages, .. }) => {
                for (message, ack) in messages {
                    count(message, ack.as_ref());
                }
            }
            _ => count(meta, response),
        }
        if let Some(ack) = response {
            self.counts
                .sent
                .fetch_add(ack.as_bytes().len() as u64, Ordering::Relaxed);
        }
    }
}

impl Observer<Hl7> for Metrics {
    fn on_event(&self, event: &Event<'_>) {
        match event {
            Event::ConnectionStart { .. } => {
                self.active_connections.add(1, &[]);
                self.connections_opened.add(1, &[]);
            }
            Event::ConnectionStop { reason, .. } => {
                self.active_connections.add(-1, &[]);
                let reason_kv = KeyValue::new("mllp.close_reason", reason.as_str());
                self.connections_closed
                    .add(1, std::slice::from_ref(&reason_kv));
                if let CloseReason::Protocol { kind, .. } = reason {
                    self.framing_faults
                        .add(1, &[KeyValue::new("mllp.fault", *kind)]);
                }
            }
            Event::MessageStart { meta, .. } => {
                self.message_size.record(meta.size() as u64, &[]);
                self.counts
                    .received
                    .fetch_add(meta.size() as u64, Ordering::Relaxed);
            }
            Event::MessageStop {
                meta,
                duration,
                response,
                ..
            } => self.record_answer(meta, *duration, *response),
            Event::MessageException {
                meta,
                duration,
                failure,
                response,
                ..
            } => {
                self.record_answer(meta, *duration, *response);
                self.exceptions
                    .add(1, &[KeyValue::new("error.type", failure.kind())]);
            }
            Event::ConnectionRefused { .. } => self.connections_refused.add(1, &[]),
            Event::AcceptorRestart { .. } => self.acceptor_restarts.add(1, &[]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attribute values are bounded and exact: a short alphanumeric code is kept as sent, and
    /// anything else is bucketed.
    #[test]
    fn code_values_are_bounded() {
        assert_eq!(code_value(Some(b"A01")), Value::from("A01"));
        assert_eq!(code_value(Some(b"ADT_A01")), Value::from("other"));
        assert_eq!(code_value(Some(b"A-1")), Value::from("other"));
        assert_eq!(code_value(None), Value::from("unknown"));
    }

    /// Kept attribute sets are exactly the ones built for the message, for every combination,
    /// past the number kept too (those are built per message).
    #[test]
    fn kept_attribute_sets_match_the_message() {
        use crate::protocol::test_inbound;
        let metrics = Metrics::new(&opentelemetry::global::meter("test"));
        let mut n = 0;
        for code in ["ADT", "ORU", "A1", "TOOLONG", ""] {
            for event in 0..1100 {
                let meta = test_inbound(code, &format!("{event:03}"));
                for ack in ["AA", "AE", "none"] {
                    let want = message_attributes(&meta, ack);
                    let mut got = None;
                    with_message_attributes(&metrics.counts, &meta, ack, |index, attrs| {
                        got = Some(attrs.to_vec());
                        assert!(index <= KEPT_ATTRIBUTE_SETS);
                    });
                    assert_eq!(got.as_deref(), Some(&want[..]), "{code}^{event:03} {ack}");
                    n += 1;
                }
            }
        }
        assert!(n > KEPT_ATTRIBUTE_SETS);
    }

    /// Each server keeps its own attribute sets: one whose sets were all used up by a sender
    /// minting message types still counts another server's new combination in its own series,
    /// not in the overflow one.
    #[test]
    fn servers_keep_their_own_attribute_sets() {
        use crate::protocol::test_inbound;
        let meter = opentelemetry::global::meter("test");
        let (flooded, other) = (Metrics::new(&meter), Metrics::new(&meter));
        for i in 0..=KEPT_ATTRIBUTE_SETS {
            let meta = test_inbound(&format!("Z{:02}", i / 100), &format!("E{:02}", i % 100));
            with_message_attributes(&flooded.counts, &meta, "AR", |_, _| {});
        }
        let meta = test_inbound("ORU", "R01");
        let mut index = None;
        with_message_attributes(&flooded.counts, &meta, "AE", |i, _| index = Some(i));
        assert_eq!(
            index,
            Some(KEPT_ATTRIBUTE_SETS),
            "the flooded server overflows"
        );
        with_message_attributes(&other.counts, &meta, "AE", |i, _| index = Some(i));
        assert_eq!(index, Some(0), "the other server keeps the set");
        // And the per-thread cache does not hand one server's slot to the other.
        with_message_attributes(&flooded.counts, &meta, "AE", |i, _| index = Some(i));
        assert_eq!(index, Some(KEPT_ATTRIBUTE_SETS));
    }
}

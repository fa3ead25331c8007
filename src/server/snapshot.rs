//! [`Snapshot`]: the runtime's view of a server (listeners, connections, recently closed) with
//! what the HL7 layer adds (each connection's last message, answers by ACK code, rejects by
//! kind, latency percentiles).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use mllp_actors::{ClosedConnection, ConnectionSnapshot, ListenerSnapshot, ServerState};

use crate::telemetry::{ACK_NAMES, Activity, ActivityReading, LastMessage, Reject};

/// What [`ServerHandle::snapshot`](crate::ServerHandle::snapshot) reports. Plain data with MSH
/// fields only (message type, trigger event, ACK codes): no payload, no patient data.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// When it was taken.
    pub taken: SystemTime,
    /// When the server started.
    pub started: SystemTime,
    /// Running, draining or stopped.
    pub state: ServerState,
    /// The listening sockets.
    pub listeners: Vec<ListenerSnapshot>,
    /// `max_connections`.
    pub max_connections: usize,
    /// Live connections.
    pub active_connections: usize,
    /// The live connections, by id (empty in a
    /// [summary](crate::ServerHandle::summary)).
    pub connections: Vec<ConnectionStatus>,
    /// The last connections to close, most recent first, with their close reasons (empty in
    /// a summary).
    pub recently_closed: Vec<ClosedConnection>,
    /// Counts since the server started.
    pub totals: Totals,
    /// Message latency since the server started.
    pub latency: Latency,
}

/// One live connection: the runtime's counters and its last message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStatus {
    /// Id, peer, TLS identity, start, messages, in flight, bytes, time of the last message.
    pub connection: ConnectionSnapshot,
    /// MSH-9 of the last message answered (`ADT^A01`; `not HL7` for a payload that was not;
    /// codes that are not 1-3 letters or digits read `other`), if any.
    pub last_message_type: Option<String>,
    /// The ACK code sent for it (`AA` ... `CR`, `none` when nothing was sent), if any.
    pub last_ack_code: Option<&'static str>,
}

impl ConnectionStatus {
    /// The connection's id.
    pub fn id(&self) -> u64 {
        self.connection.id
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.connection.peer
    }
}

/// Messages answered, by the ACK code sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckCounts {
    /// Application accept.
    pub aa: u64,
    /// Application error.
    pub ae: u64,
    /// Application reject.
    pub ar: u64,
    /// Commit accept (enhanced mode).
    pub ca: u64,
    /// Commit error.
    pub ce: u64,
    /// Commit reject.
    pub cr: u64,
    /// Messages that got no answer (MSH-15 said so, or the handler-failure policy).
    pub none: u64,
}

impl AckCounts {
    /// Every count with its code: `("AA", n)`, ..., `("none", n)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        ACK_NAMES.into_iter().zip([
            self.aa, self.ae, self.ar, self.ca, self.ce, self.cr, self.none,
        ])
    }

    /// All messages answered or not.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).sum()
    }
}

/// Refused messages and connections, by reason (the `reject.reason` of the reject log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectCounts {
    /// Payloads that were not HL7 (AR 100/102).
    pub not_hl7: u64,
    /// Messages without MSH-9 or MSH-10 (AR 101).
    pub missing_msh_field: u64,
    /// Other AR/CR: unsupported type, event, version or processing id, handler rejects.
    pub refused: u64,
    /// Connections closed for bytes outside a frame.
    pub framing: u64,
    /// Connections closed for a frame over `max_message_size`.
    pub oversize: u64,
    /// Connections whose stream ended inside a frame.
    pub truncated: u64,
    /// Batches whose envelope was malformed (one AR for the batch).
    pub batch: u64,
}

impl RejectCounts {
    /// Every count with its reason: `("not_hl7", n)`, ....
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("not_hl7", self.not_hl7),
            ("missing_msh_field", self.missing_msh_field),
            ("refused", self.refused),
            ("framing", self.framing),
            ("oversize", self.oversize),
            ("truncated", self.truncated),
            ("batch", self.batch),
        ]
        .into_iter()
    }
}

/// Counts since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Messages finished (answered, failed or aborted).
    pub messages: u64,
    /// Messages by the ACK code sent.
    pub acks: AckCounts,
    /// Rejects by reason.
    pub rejects: RejectCounts,
    /// Handlers that panicked or timed out, and messages aborted.
    pub handler_failures: u64,
    /// Connections accepted.
    pub connections_opened: u64,
}

/// Message latency (from the read that completed a frame to its ACK written) since the server
/// started. Percentiles are the upper bounds of histogram buckets a quarter of their value
/// wide, so they may read up to 25% high.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// Messages measured.
    pub count: u64,
    /// Median.
    pub p50: Option<Duration>,
    /// 90th percentile.
    pub p90: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// The slowest.
    pub max: Option<Duration>,
    /// Sum of all latencies (with `count`, the mean).
    pub sum: Duration,
    /// The histogram's non-empty buckets: upper bound and count (not cumulative). Two
    /// snapshots' buckets subtract to the latency of the messages in between, which is how
    /// `mllp top` shows recent percentiles.
    pub buckets: Vec<(Duration, u64)>,
}

impl Latency {
    /// The `q` quantile (0.0 to 1.0) of `buckets` (upper bound, count), as a bucket's upper
    /// bound; `None` when they are empty.
    pub fn quantile(buckets: &[(Duration, u64)], q: f64) -> Option<Duration> {
        let count: u64 = buckets.iter().map(|(_, n)| n).sum();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        buckets.iter().find_map(|(le, n)| {
            seen += n;
            (seen >= rank).then_some(*le)
        })
    }

    fn from_reading(reading: &ActivityReading) -> Self {
        let buckets = reading.latency.clone();
        let count = buckets.iter().map(|(_, n)| n).sum();
        // A bucket's upper bound may pass the slowest message seen: never report more.
        let at = |q| Self::quantile(&buckets, q).map(|p| p.min(reading.latency_max));
        Latency {
            count,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: (count > 0).then_some(reading.latency_max),
            sum: reading.latency_sum,
            buckets,
        }
    }
}

/// Joins the runtime's snapshot with the activity counters.
pub(super) fn take(server: mllp_actors::ServerSnapshot, activity: &Activity) -> Snapshot {
    let reading = activity.read();
    let ids: Vec<u64> = server.connections.iter().map(|c| c.id).collect();
    let last = activity.last_messages(&ids);
    let connections = server
        .connections
        .into_iter()
        .zip(last)
        .map(|(connection, last)| ConnectionStatus {
            connection,
            last_message_type: last.as_ref().map(|m| m.message_type().to_owned()),
            last_ack_code: last.as_ref().map(LastMessage::ack_code),
        })
        .collect();
    let [aa, ae, ar, ca, ce, cr, none] = reading.acks;
    let reject = |kind: Reject| {
        reading
            .rejects
            .iter()
            .find(|(r, _)| *r == kind)
            .map_or(0, |(_, n)| *n)
    };
    let acks = AckCounts {
        aa,
        ae,
        ar,
        ca,
        ce,
        cr,
        none,
    };
    Snapshot {
        taken: server.taken,
        started: server.started,
        state: server.state,
        listeners: server.listeners,
        max_connections: server.max_connections,
        active_connections: server.active_connections,
        connections,
        recently_closed: server.recently_closed,
        totals: Totals {
            messages: acks.total(),
            acks,
            rejects: RejectCounts {
                not_hl7: reject(Reject::NotHl7),
                missing_msh_field: reject(Reject::MissingMshField),
                refused: reject(Reject::Refused),
                framing: reject(Reject::Framing),
                oversize: reject(Reject::Oversize),
                truncated: reject(Reject::Truncated),
                batch: reject(Reject::Batch),
            },
            handler_failures: reading.failures,
            connections_opened: server.connections_opened,
        },
        latency: Latency::from_reading(&reading),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantiles come from cumulative bucket counts: the bucket where the rank falls.
    #[test]
    fn quantiles_pick_the_bucket_of_their_rank() {
        let ms = Duration::from_millis;
        let buckets = [(ms(1), 50), (ms(2), 40), (ms(10), 9), (ms(100), 1)];
        assert_eq!(Latency::quantile(&buckets, 0.5), Some(ms(1)));
        assert_eq!(Latency::quantile(&buckets, 0.9), Some(ms(2)));
        assert_eq!(Latency::quantile(&buckets, 0.99), Some(ms(10)));
        assert_eq!(Latency::quantile(&buckets, 1.0), Some(ms(100)));
        assert_eq!(Latency::quantile(&[], 0.5), None);
    }
}

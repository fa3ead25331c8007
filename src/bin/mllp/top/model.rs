//! What `mllp top` shows: the last answers of `/status` and `/connections`, the message rate
//! history, recent latency percentiles (the difference of two histograms), the sort order, and
//! whether the endpoint answered last time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How many rate samples the sparkline keeps (one per refresh).
pub(crate) const HISTORY: usize = 240;

/// How many connections are asked for: more rows than any terminal shows.
const ROWS: usize = 300;

/// `/status`, as far as `top` reads it.
#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Status {
    pub(crate) state: String,
    pub(crate) ready: bool,
    #[serde(default)]
    pub(crate) not_ready: Vec<String>,
    pub(crate) uptime_s: f64,
    #[serde(default)]
    pub(crate) version: String,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) connections: ConnectionCounts,
    pub(crate) messages: Messages,
    #[serde(default)]
    pub(crate) rejects: BTreeMap<String, u64>,
    pub(crate) latency_ms: LatencyView,
    #[serde(default)]
    pub(crate) checks: Vec<Check>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Listener {
    pub(crate) address: String,
    pub(crate) tls: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct ConnectionCounts {
    pub(crate) active: usize,
    pub(crate) max: usize,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Messages {
    pub(crate) total: u64,
    pub(crate) ack: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct LatencyView {
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    #[serde(default)]
    pub(crate) buckets: Vec<(f64, u64)>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) healthy: bool,
    /// Healthy but needing attention (absent from older servers' `/status`).
    #[serde(default)]
    pub(crate) degraded: bool,
    pub(crate) detail: String,
}

/// `/connections`.
#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Connections {
    pub(crate) connections: Vec<Connection>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) peer: String,
    pub(crate) tls: bool,
    pub(crate) tls_identity: Option<String>,
    pub(crate) since: String,
    pub(crate) messages: u64,
    pub(crate) in_flight: usize,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) last_message_at: Option<String>,
    pub(crate) last_message_type: Option<String>,
    pub(crate) last_ack_code: Option<String>,
}

/// The columns of the connections table, in order; the table sorts by any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    Id,
    Peer,
    Since,
    Messages,
    InFlight,
    BytesIn,
    BytesOut,
    LastType,
    LastAck,
    LastAt,
}

impl Column {
    pub(crate) const ALL: [Column; 10] = [
        Column::Id,
        Column::Peer,
        Column::Since,
        Column::Messages,
        Column::InFlight,
        Column::BytesIn,
        Column::BytesOut,
        Column::LastType,
        Column::LastAck,
        Column::LastAt,
    ];

    pub(crate) fn title(self) -> &'static str {
        match self {
            Column::Id => "ID",
            Column::Peer => "PEER",
            Column::Since => "SINCE",
            Column::Messages => "MSGS",
            Column::InFlight => "FLIGHT",
            Column::BytesIn => "IN",
            Column::BytesOut => "OUT",
            Column::LastType => "LAST TYPE",
            Column::LastAck => "ACK",
            Column::LastAt => "LAST AT",
        }
    }

    /// The sort key of `/connections?sort=`.
    fn key(self) -> &'static str {
        match self {
            Column::Id => "id",
            Column::Peer => "peer",
            Column::Since => "since",
            Column::Messages => "messages",
            Column::InFlight => "in_flight",
            Column::BytesIn => "bytes_in",
            Column::BytesOut => "bytes_out",
            Column::LastType => "last_message_type",
            Column::LastAck => "last_ack_code",
            Column::LastAt => "last_message_at",
        }
    }

    fn index(self) -> usize {
        Column::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// The next column (wrapping), or the previous one.
    pub(crate) fn step(self, forward: bool) -> Column {
        let n = Column::ALL.len();
        let i = self.index();
        Column::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }
}

/// The last answer the rate and the recent percentiles are measured from: when, the message
/// total, the latency histogram.
type Previous = (Instant, u64, Vec<(f64, u64)>);

/// The state of the view.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) endpoint: String,
    pub(crate) status: Option<Status>,
    pub(crate) connections: Vec<Connection>,
    /// Messages per second, oldest first.
    pub(crate) rates: VecDeque<f64>,
    /// Recent p50 and p99 (ms), from the histogram's difference between the last two answers.
    pub(crate) recent: Option<(f64, f64)>,
    pub(crate) sort: Column,
    pub(crate) descending: bool,
    /// Why the last refresh failed, and since when the data is stale.
    pub(crate) error: Option<(String, Instant)>,
    previous: Option<Previous>,
}

impl Model {
    pub(crate) fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            status: None,
            connections: Vec::new(),
            rates: VecDeque::with_capacity(HISTORY),
            recent: None,
            sort: Column::Messages,
            descending: true,
            error: None,
            previous: None,
        }
    }

    /// Takes a refresh: both answers, or why there are none.
    pub(crate) fn update(&mut self, now: Instant, answer: Result<(Status, Connections), String>) {
        match answer {
            Err(reason) => {
                let since = self.error.as_ref().map_or(now, |(_, since)| *since);
                self.error = Some((reason, since));
                // A gap in the history: the rate is unknown, not zero.
                self.previous = None;
            }
            Ok((status, connections)) => {
                self.error = None;
                let total = status.messages.total;
                let buckets = status.latency_ms.buckets.clone();
                if let Some((at, before, old)) = self.previous.take() {
                    let seconds = now.saturating_duration_since(at).as_secs_f64();
                    if seconds > 0.0 {
                        self.push_rate(total.saturating_sub(before) as f64 / seconds);
                    }
                    self.recent = recent_percentiles(&old, &buckets);
                }
                self.previous = Some((now, total, buckets));
                self.status = Some(status);
                self.connections = connections.connections;
                self.sort_rows();
            }
        }
    }

    fn push_rate(&mut self, rate: f64) {
        if self.rates.len() == HISTORY {
            self.rates.pop_front();
        }
        self.rates.push_back(rate);
    }

    /// The `/connections` request for the current sort: the endpoint sorts and sends the
    /// first rows only, so a server with thousands of connections is cheap to watch.
    pub(crate) fn connections_path(&self) -> String {
        format!(
            "/connections?sort={}&order={}&limit={ROWS}",
            self.sort.key(),
            if self.descending { "desc" } else { "asc" }
        )
    }

    /// The last rate measured.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.rates.back().copied()
    }

    pub(crate) fn sort_by(&mut self, column: Column) {
        if self.sort == column {
            self.descending = !self.descending;
        } else {
            self.sort = column;
            self.descending = true;
        }
        self.sort_rows();
    }

    pub(crate) fn next_sort(&mut self, forward: bool) {
        self.sort = self.sort.step(forward);
        self.sort_rows();
    }

    pub(crate) fn reverse(&mut self) {
        self.descending = !self.descending;
        self.sort_rows();
    }

    fn sort_rows(&mut self) {
        let column = self.sort;
        self.connections.sort_by(|a, b| {
            let order = match column {
                Column::Id => a.id.cmp(&b.id),
                Column::Peer => a.peer.cmp(&b.peer),
                Column::Since => a.since.cmp(&b.since),
                Column::Messages => a.messages.cmp(&b.messages),
                Column::InFlight => a.in_flight.cmp(&b.in_flight),
                Column::BytesIn => a.bytes_in.cmp(&b.bytes_in),
                Column::BytesOut => a.bytes_out.cmp(&b.bytes_out),
                Column::LastType => a.last_message_type.cmp(&b.last_message_type),
                Column::LastAck => a.last_ack_code.cmp(&b.last_ack_code),
                Column::LastAt => a.last_message_at.cmp(&b.last_message_at),
            };
            // Ties in id order, whatever the direction, so rows do not jump between refreshes.
            let order = if self.descending {
                order.reverse()
            } else {
                order
            };
            order.then(a.id.cmp(&b.id))
        });
    }

    /// How long the data shown has been stale, when the endpoint stopped answering.
    pub(crate) fn stale_for(&self, now: Instant) -> Option<Duration> {
        self.error
            .as_ref()
            .map(|(_, since)| now.saturating_duration_since(*since))
    }
}

/// p50 and p99 of the messages between two cumulative histograms (`[upper bound ms, count]`).
fn recent_percentiles(old: &[(f64, u64)], new: &[(f64, u64)]) -> Option<(f64, f64)> {
    let diff: Vec<(f64, u64)> = new
        .iter()
        .map(|(le, n)| {
            let before = old.iter().find(|(l, _)| l == le).map_or(0, |(_, n)| *n);
            (*le, n.saturating_sub(before))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let count: u64 = diff.iter().map(|(_, n)| n).sum();
    if count == 0 {
        return None;
    }
    let at = |q: f64| {
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        diff.iter()
            .find_map(|(le, n)| {
                seen += n;
                (seen >= rank).then_some(*le)
            })
            .unwrap_or(0.0)
    };
    Some((at(0.5), at(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recent percentiles are those of the messages between two answers only.
    #[test]
    fn recent_percentiles_come_from_the_difference() {
        let old = [(1.0, 100), (5.0, 0)];
        let new = [(1.0, 101), (5.0, 99)];
        assert_eq!(recent_percentiles(&old, &new), Some((5.0, 5.0)));
        assert_eq!(recent_percentiles(&new, &new), None);
    }

    /// The rate is the difference of totals over the time between answers; a failed refresh
    /// leaves a gap instead of a zero.
    #[test]
    fn rates_come_from_successive_totals() {
        let mut model = Model::new("x".into());
        let t0 = Instant::now();
        let status = |total| Status {
            messages: Messages {
                total,
                ack: BTreeMap::new(),
            },
            ..Status::default()
        };
        model.update(t0, Ok((status(10), Connections::default())));
        model.update(
            t0 + Duration::from_secs(2),
            Ok((status(30), Connections::default())),
        );
        assert_eq!(model.rate(), Some(10.0));
        model.update(t0 + Duration::from_secs(3), Err("down".into()));
        model.update(
            t0 + Duration::from_secs(4),
            Ok((status(40), Connections::default())),
        );
        assert_eq!(model.rates.len(), 1, "no rate across the gap");
        assert!(model.error.is_none());
    }
}

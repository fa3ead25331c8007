//! `/status` and `/connections`: the servers' snapshots as JSON, through view types of this
//! module (the library's own types stay serde-free). Times are RFC 3339 in UTC, durations in
//! milliseconds; every field is an MSH field, a counter, an address or a name. With several
//! servers (one per listener), `/status` adds them up and `/connections` lists them together,
//! each row naming its listener.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AdminState;
use super::health::not_ready;
use crate::server::{
    ClosedConnection, ConnectionStatus, Latency, RECENTLY_CLOSED, ServerState, Snapshot,
};
use crate::telemetry::CloseReason;

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[derive(Serialize)]
pub(super) struct Status {
    version: &'static str,
    state: &'static str,
    ready: bool,
    not_ready: Vec<String>,
    started: String,
    uptime_s: f64,
    listeners: Vec<Listener>,
    connections: ConnectionCounts,
    messages: Messages,
    rejects: serde_json::Map<String, serde_json::Value>,
    latency_ms: LatencyView,
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct Listener {
    /// The server's name, when the endpoint serves several (one per listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    address: String,
    tls: bool,
    accepting: bool,
}

#[derive(Serialize)]
struct ConnectionCounts {
    active: usize,
    max: usize,
    opened: u64,
}

#[derive(Serialize)]
struct Messages {
    total: u64,
    ack: serde_json::Map<String, serde_json::Value>,
    handler_failures: u64,
}

#[derive(Serialize)]
struct LatencyView {
    count: u64,
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    /// `[upper bound in ms, count]` of each non-empty histogram bucket.
    buckets: Vec<(f64, u64)>,
}

#[derive(Serialize)]
struct Check {
    name: String,
    healthy: bool,
    degraded: bool,
    detail: String,
}

#[derive(Serialize)]
pub(super) struct Connections {
    connections: Vec<Connection>,
    recently_closed: Vec<Closed>,
}

#[derive(Serialize)]
struct Connection {
    /// The server's name, when the endpoint serves several.
    #[serde(skip_serializing_if = "Option::is_none")]
    listener: Option<String>,
    id: u64,
    peer: String,
    local: String,
    tls: bool,
    tls_identity: Option<String>,
    since: String,
    messages: u64,
    in_flight: usize,
    bytes_in: u64,
    bytes_out: u64,
    last_message_at: Option<String>,
    last_message_type: Option<String>,
    last_ack_code: Option<&'static str>,
}

impl From<(Label, ConnectionStatus)> for Connection {
    fn from((label, status): (Label, ConnectionStatus)) -> Self {
        let c = status.connection;
        Connection {
            listener: label.map(|l| l.to_string()),
            id: c.id,
            peer: c.peer.to_string(),
            local: c.local.to_string(),
            tls: c.tls,
            tls_identity: c.peer_identity,
            since: time(c.started),
            messages: c.messages,
            in_flight: c.in_flight,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            last_message_at: c.last_message.map(time),
            last_message_type: status.last_message_type,
            last_ack_code: status.last_ack_code,
        }
    }
}

#[derive(Serialize)]
struct Closed {
    #[serde(skip_serializing_if = "Option::is_none")]
    listener: Option<String>,
    id: u64,
    peer: String,
    tls: bool,
    since: String,
    closed: String,
    reason: &'static str,
    /// For a framing fault: where in the inbound stream.
    offset: Option<u64>,
    messages: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl From<(Label, ClosedConnection)> for Closed {
    fn from((label, c): (Label, ClosedConnection)) -> Self {
        let offset = match &c.reason {
            CloseReason::Protocol { offset, .. } => *offset,
            _ => None,
        };
        Closed {
            listener: label.map(|l| l.to_string()),
            id: c.id,
            peer: c.peer.to_string(),
            tls: c.tls,
            since: time(c.started),
            closed: time(c.closed),
            reason: c.reason.as_str(),
            offset,
            messages: c.messages,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
        }
    }
}

fn counts<'a>(
    items: impl Iterator<Item = (&'a str, u64)>,
) -> serde_json::Map<String, serde_json::Value> {
    items.map(|(k, v)| (k.to_owned(), v.into())).collect()
}

/// A server's name in the endpoint (`None` for the only, or first unnamed, one).
type Label = Option<Arc<str>>;

/// The servers' state as one: each alike gives that state; a mix is `draining` (some have
/// begun to stop).
fn overall(states: impl Iterator<Item = ServerState>) -> ServerState {
    let mut all = states.peekable();
    let first = all.peek().copied().unwrap_or(ServerState::Stopped);
    if all.all(|s| s == first) {
        first
    } else {
        ServerState::Draining
    }
}

/// The latency of several servers: their histograms added, the percentiles recomputed.
fn merged_latency<'a>(latencies: impl Iterator<Item = &'a Latency>) -> LatencyView {
    let mut buckets: BTreeMap<Duration, u64> = BTreeMap::new();
    let (mut sum, mut max) = (Duration::ZERO, None::<Duration>);
    for latency in latencies {
        for (le, n) in &latency.buckets {
            *buckets.entry(*le).or_default() += n;
        }
        sum += latency.sum;
        max = max.max(latency.max);
    }
    let buckets: Vec<(Duration, u64)> = buckets.into_iter().collect();
    let count: u64 = buckets.iter().map(|(_, n)| n).sum();
    let at = |q| Latency::quantile(&buckets, q).map(|p| ms(max.map_or(p, |max| p.min(max))));
    LatencyView {
        count,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: max.map(ms),
        mean: (count > 0).then(|| ms(sum) / count as f64),
        buckets: buckets.iter().map(|(le, n)| (ms(*le), *n)).collect(),
    }
}

fn sum_counts<I: Iterator<Item = (&'static str, u64)>>(
    parts: impl Iterator<Item = I>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut total: Vec<(&'static str, u64)> = Vec::new();
    for part in parts {
        for (name, n) in part {
            match total.iter_mut().find(|(k, _)| *k == name) {
                Some((_, t)) => *t += n,
                None => total.push((name, n)),
            }
        }
    }
    counts(total.into_iter())
}

fn status_of(state: &AdminState, snapshots: &[(Label, Snapshot)]) -> Status {
    let reasons = not_ready(state);
    let all = || snapshots.iter().map(|(_, s)| s);
    let started = all()
        .map(|s| s.started)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let taken = all().map(|s| s.taken).max().unwrap_or(started);
    let total = |f: fn(&Snapshot) -> u64| all().map(f).sum::<u64>();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        state: overall(all().map(|s| s.state)).as_str(),
        ready: reasons.is_empty(),
        not_ready: reasons,
        started: time(started),
        uptime_s: taken
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64(),
        listeners: snapshots
            .iter()
            .flat_map(|(label, snapshot)| {
                snapshot.listeners.iter().map(move |l| Listener {
                    label: label.as_ref().map(|l| l.to_string()),
                    address: l.local_addr.to_string(),
                    tls: l.tls,
                    accepting: l.accepting && snapshot.state == ServerState::Running,
                })
            })
            .collect(),
        connections: ConnectionCounts {
            active: all().map(|s| s.active_connections).sum(),
            max: all().map(|s| s.max_connections).sum(),
            opened: total(|s| s.totals.connections_opened),
        },
        messages: Messages {
            total: total(|s| s.totals.messages),
            ack: sum_counts(all().map(|s| s.totals.acks.iter())),
            handler_failures: total(|s| s.totals.handler_failures),
        },
        rejects: sum_counts(all().map(|s| s.totals.rejects.iter())),
        latency_ms: merged_latency(all().map(|s| &s.latency)),
        checks: state
            .run_checks()
            .into_iter()
            .map(|(name, health)| Check {
                name: name.to_string(),
                healthy: health.healthy,
                degraded: health.healthy && health.degraded,
                detail: health.detail,
            })
            .collect(),
    }
}

/// Every server's snapshot (or summary), with its label, taken concurrently.
async fn snapshots(state: &AdminState, full: bool) -> Vec<(Label, Snapshot)> {
    join_all(state.servers.iter().map(|(label, server)| async move {
        let snapshot = if full {
            server.snapshot().await
        } else {
            server.summary().await
        };
        (label.clone(), snapshot)
    }))
    .await
}

pub(super) async fn status(State(state): State<AdminState>) -> Json<Status> {
    let snapshots = snapshots(&state, false).await;
    Json(status_of(&state, &snapshots))
}

#[derive(Deserialize)]
pub(super) struct ConnectionsQuery {
    /// At most this many live connections (after sorting). Default: all.
    limit: Option<usize>,
    /// The sort key: `id` (the default), `peer`, `since`, `messages`, `in_flight`,
    /// `bytes_in`, `bytes_out`, `last_message_type`, `last_ack_code`, `last_message_at`.
    sort: Option<String>,
    /// `asc` (the default) or `desc`.
    order: Option<String>,
}

/// Sorts by `key` (stable, ties by id); `None` for an unknown key.
fn sort(connections: &mut [(Label, ConnectionStatus)], key: &str, descending: bool) -> Option<()> {
    use std::cmp::Ordering;
    let compare: fn(&ConnectionStatus, &ConnectionStatus) -> Ordering = match key {
        "id" => |a, b| a.connection.id.cmp(&b.connection.id),
        "peer" => |a, b| a.connection.peer.cmp(&b.connection.peer),
        "since" => |a, b| a.connection.started.cmp(&b.connection.started),
        "messages" => |a, b| a.connection.messages.cmp(&b.connection.messages),
        "in_flight" => |a, b| a.connection.in_flight.cmp(&b.connection.in_flight),
        "bytes_in" => |a, b| a.connection.bytes_in.cmp(&b.connection.bytes_in),
        "bytes_out" => |a, b| a.connection.bytes_out.cmp(&b.connection.bytes_out),
        "last_message_type" => |a, b| a.last_message_type.cmp(&b.last_message_type),
        "last_ack_code" => |a, b| a.last_ack_code.cmp(&b.last_ack_code),
        "last_message_at" => |a, b| a.connection.last_message.cmp(&b.connection.last_message),
        _ => return None,
    };
    connections.sort_by(|(_, a), (_, b)| {
        let order = compare(a, b);
        let order = if descending { order.reverse() } else { order };
        order.then(a.connection.id.cmp(&b.connection.id))
    });
    Some(())
}

pub(super) async fn connections(
    State(state): State<AdminState>,
    Query(query): Query<ConnectionsQuery>,
) -> Result<Json<Connections>, (StatusCode, String)> {
    let descending = match query.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("order must be asc or desc, not {other:?}\n"),
            ));
        }
    };
    let mut live = Vec::new();
    let mut closed = Vec::new();
    for (label, snapshot) in snapshots(&state, true).await {
        live.extend(snapshot.connections.into_iter().map(|c| (label.clone(), c)));
        closed.extend(
            snapshot
                .recently_closed
                .into_iter()
                .map(|c| (label.clone(), c)),
        );
    }
    // One id space per process: ids are unique across servers, so id order is accept order.
    sort(&mut live, query.sort.as_deref().unwrap_or("id"), descending).ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            format!("unknown sort key {:?}\n", query.sort.unwrap_or_default()),
        )
    })?;
    closed.sort_by(|(_, a), (_, b)| b.closed.cmp(&a.closed).then(b.id.cmp(&a.id)));
    closed.truncate(RECENTLY_CLOSED);
    let limit = query.limit.unwrap_or(usize::MAX);
    Ok(Json(Connections {
        connections: live.into_iter().take(limit).map(Connection::from).collect(),
        recently_closed: closed.into_iter().map(Closed::from).collect(),
    }))
}

//! `/status` and `/connections`: the server's snapshot as JSON, through view types of this
//! module (the library's own types stay serde-free). Times are RFC 3339 in UTC, durations in
//! milliseconds; every field is an MSH field, a counter, an address or a name.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AdminState;
use super::health::not_ready;
use crate::server::{ClosedConnection, ConnectionStatus, Latency, ServerState, Snapshot};
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

impl From<&Latency> for LatencyView {
    fn from(l: &Latency) -> Self {
        LatencyView {
            count: l.count,
            p50: l.p50.map(ms),
            p90: l.p90.map(ms),
            p99: l.p99.map(ms),
            max: l.max.map(ms),
            mean: (l.count > 0).then(|| ms(l.sum) / l.count as f64),
            buckets: l.buckets.iter().map(|(le, n)| (ms(*le), *n)).collect(),
        }
    }
}

#[derive(Serialize)]
struct Check {
    name: String,
    healthy: bool,
    detail: String,
}

#[derive(Serialize)]
pub(super) struct Connections {
    connections: Vec<Connection>,
    recently_closed: Vec<Closed>,
}

#[derive(Serialize)]
struct Connection {
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

impl From<ConnectionStatus> for Connection {
    fn from(status: ConnectionStatus) -> Self {
        let c = status.connection;
        Connection {
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

impl From<ClosedConnection> for Closed {
    fn from(c: ClosedConnection) -> Self {
        let offset = match &c.reason {
            CloseReason::Protocol { offset, .. } => *offset,
            _ => None,
        };
        Closed {
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

fn status_of(state: &AdminState, snapshot: &Snapshot) -> Status {
    let reasons = not_ready(state);
    let totals = &snapshot.totals;
    Status {
        version: env!("CARGO_PKG_VERSION"),
        state: snapshot.state.as_str(),
        ready: reasons.is_empty(),
        not_ready: reasons,
        started: time(snapshot.started),
        uptime_s: snapshot
            .taken
            .duration_since(snapshot.started)
            .unwrap_or_default()
            .as_secs_f64(),
        listeners: snapshot
            .listeners
            .iter()
            .map(|l| Listener {
                address: l.local_addr.to_string(),
                tls: l.tls,
                accepting: l.accepting && snapshot.state == ServerState::Running,
            })
            .collect(),
        connections: ConnectionCounts {
            active: snapshot.active_connections,
            max: snapshot.max_connections,
            opened: totals.connections_opened,
        },
        messages: Messages {
            total: totals.messages,
            ack: counts(totals.acks.iter()),
            handler_failures: totals.handler_failures,
        },
        rejects: counts(totals.rejects.iter()),
        latency_ms: LatencyView::from(&snapshot.latency),
        checks: state
            .run_checks()
            .into_iter()
            .map(|(name, health)| Check {
                name: name.to_string(),
                healthy: health.healthy,
                detail: health.detail,
            })
            .collect(),
    }
}

pub(super) async fn status(State(state): State<AdminState>) -> Json<Status> {
    let snapshot = state.server.summary().await;
    Json(status_of(&state, &snapshot))
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
fn sort(connections: &mut [ConnectionStatus], key: &str, descending: bool) -> Option<()> {
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
    connections.sort_by(|a, b| {
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
    let mut snapshot = state.server.snapshot().await;
    if let Some(key) = &query.sort {
        sort(&mut snapshot.connections, key, descending).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("unknown sort key {key:?}\n"),
            )
        })?;
    } else if descending {
        snapshot.connections.reverse();
    }
    let limit = query.limit.unwrap_or(usize::MAX);
    Ok(Json(Connections {
        connections: snapshot
            .connections
            .into_iter()
            .take(limit)
            .map(Connection::from)
            .collect(),
        recently_closed: snapshot
            .recently_closed
            .into_iter()
            .map(Closed::from)
            .collect(),
    }))
}

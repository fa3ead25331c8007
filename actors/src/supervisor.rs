//! The connection supervisor: owns the registry of live connections and their slots, spawns a
//! [`Connection`](crate::connection) actor per accepted socket, and reports each connection's
//! end exactly once.
//!
//! Invariants:
//! - `ConnectionStart` is emitted here, before the connection actor is spawned, and the
//!   registry entry is inserted in the same `handle` call; `ConnectionStop` is emitted here,
//!   when the entry is removed. An entry is removed once (on the child's `ActorTerminated` or
//!   `ActorFailed`, or when the registry is dropped), so there is exactly one stop per start.
//! - The slot is held by the registry entry: the permit is dropped with the entry, before the
//!   stop is emitted; that is what frees the slot, on every path (clean close, panic, kill, the
//!   supervisor's own end).
//! - ractor's default `handle_supervisor_evt` stops the supervisor when any child exits; this
//!   one overrides it, since connections ending is the normal case.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::connection::{ConnStats, Connection, ConnectionArgs};
use crate::event::{CloseReason, Event};
use crate::protocol::{ConnectionInfo, Protocol};
use crate::report::{ClosedConnection, ConnectionSnapshot, RECENTLY_CLOSED, ShutdownReport};
use crate::shared::Shared;
use crate::slots::Slot;
use crate::transport::Transport;
use crate::util::next_connection_id;

/// The kinds of connection log lines, as the log limit counts them.
const OPENED: usize = 0;
const CLOSED: usize = 1;

pub(crate) struct ConnectionSupervisor<P, T>(PhantomData<fn() -> (P, T)>);

impl<P, T> ConnectionSupervisor<P, T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

pub(crate) enum SupervisorMessage {
    /// The acceptor took a slot, accepted a socket and admitted its peer.
    Accepted {
        socket: TcpStream,
        peer: SocketAddr,
        slot: Slot,
    },
    /// The registry, for `ServerHandle::connections`.
    Snapshot(RpcReplyPort<Vec<ConnectionSnapshot>>),
    /// The registry (its connections only when the flag says so) and its history, for
    /// `ServerHandle::snapshot` and `ServerHandle::summary`.
    Status(bool, RpcReplyPort<RegistryStatus>),
    /// Replies once no connection is left, with the shutdown counts.
    Drain(RpcReplyPort<ShutdownReport>),
}

pub(crate) struct SupervisorState<P: Protocol, T: Transport> {
    registry: Registry<P, T>,
    drain_waiters: Vec<RpcReplyPort<ShutdownReport>>,
    /// Connection actors that have ended but whose task may not have returned yet; awaited in
    /// `post_stop` so that the server's shutdown waits for every actor.
    exited: Vec<JoinHandle<()>>,
}

impl<P: Protocol, T: Transport> Actor for ConnectionSupervisor<P, T> {
    type Msg = SupervisorMessage;
    type State = SupervisorState<P, T>;
    type Arguments = Arc<Shared<P, T>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            registry: Registry {
                shared,
                entries: HashMap::new(),
                report: ShutdownReport::default(),
                closed: VecDeque::with_capacity(RECENTLY_CLOSED),
                opened: 0,
            },
            drain_waiters: Vec::new(),
            exited: Vec::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for task in state.exited.drain(..) {
            let _ = task.await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Accepted { socket, peer, slot } => {
                state.start(&myself, socket, peer, slot).await;
            }
            SupervisorMessage::Snapshot(reply) => {
                let _ = reply.send(state.registry.snapshot());
            }
            SupervisorMessage::Status(full, reply) => {
                let registry = &state.registry;
                let _ = reply.send(RegistryStatus {
                    active: registry.entries.len(),
                    connections: if full {
                        registry.snapshot()
                    } else {
                        Vec::new()
                    },
                    recently_closed: if full {
                        registry.closed.iter().rev().cloned().collect()
                    } else {
                        Vec::new()
                    },
                    opened: registry.opened,
                });
            }
            SupervisorMessage::Drain(reply) => {
                state.drain_waiters.push(reply);
                state.reply_if_drained();
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, fallback) = match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                (cell.get_id(), CloseReason::Panicked(error.to_string()))
            }
            SupervisionEvent::ActorTerminated(cell, _state, reason) => {
                let fallback = match reason.as_deref() {
                    // Killed: only the tree's own teardown kills a connection.
                    Some("killed") => CloseReason::Aborted,
                    Some(other) => CloseReason::Panicked(format!("connection exited: {other}")),
                    None => CloseReason::Panicked("connection exited".to_owned()),
                };
                (cell.get_id(), fallback)
            }
            _ => return Ok(()),
        };
        if let Some(entry) = state.registry.entries.remove(&id) {
            shrink_if_sparse(&mut state.registry.entries);
            let reason = entry.stats.take_close().unwrap_or(fallback);
            state.exited.retain(|task| !task.is_finished());
            if let Some(task) = state.registry.finish(entry, reason) {
                state.exited.push(task);
            }
            state.reply_if_drained();
        }
        Ok(())
    }
}

impl<P: Protocol, T: Transport> SupervisorState<P, T> {
    async fn start(
        &mut self,
        myself: &ActorRef<SupervisorMessage>,
        socket: TcpStream,
        peer: SocketAddr,
        slot: Slot,
    ) {
        let shared = &self.registry.shared;
        let local = socket.local_addr().unwrap_or(shared.local_addr);
        let info = ConnectionInfo::new(
            next_connection_id(),
            peer,
            local,
            shared.transport.tls(),
            None,
        );
        let start = Instant::now();
        let stats = Arc::new(ConnStats::new(start));
        let started = SystemTime::now();
        self.registry.opened += 1;
        // Integers as i64: tracing-opentelemetry exports unsigned ones as strings. At most
        // `connection_log_rate` lines a second: a flood is summed up instead.
        if shared.connection_logs.admit(OPENED, &shared.tasks) {
            tracing::info!(
                connection.id = info.id() as i64,
                network.peer.address = %peer.ip(),
                network.peer.port = i64::from(peer.port()),
                "connection accepted"
            );
        }
        shared.observers.emit(Event::ConnectionStart {
            connection: &info,
            system_time: started,
        });
        let args = ConnectionArgs {
            shared: Arc::clone(shared),
            socket,
            info: info.clone(),
            stats: Arc::clone(&stats),
        };
        let spawned = Actor::spawn_linked(None, Connection::new(), args, myself.get_cell()).await;
        let (actor, task) = match spawned {
            Ok((actor, task)) => (Some(actor.get_id()), Some(task)),
            Err(error) => {
                stats.set_close(CloseReason::Panicked(format!(
                    "connection failed to start: {error}"
                )));
                (None, None)
            }
        };
        let entry = Entry {
            info,
            stats,
            started,
            start,
            slot,
            task,
        };
        match actor {
            Some(id) => {
                self.registry.entries.insert(id, entry);
            }
            None => {
                let reason = entry.stats.take_close().unwrap_or(CloseReason::Aborted);
                let _ = self.registry.finish(entry, reason);
            }
        }
    }

    fn reply_if_drained(&mut self) {
        if self.registry.entries.is_empty() {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(self.registry.report);
            }
        }
    }
}

/// One live connection.
struct Entry {
    info: ConnectionInfo,
    stats: Arc<ConnStats>,
    started: SystemTime,
    start: Instant,
    /// The connection's slot: dropped with the entry.
    slot: Slot,
    /// The connection actor's task.
    task: Option<JoinHandle<()>>,
}

/// Gives back most of a map's table once it is three-quarters empty, keeping room for twice
/// what it holds. A burst of 10k connections otherwise leaves the registry's table (about
/// 2 MiB) allocated for the life of the server. Shrinking rehashes the entries left, at most
/// once per halving, so its cost is spread over the removals that led to it.
fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    const KEEP: usize = 64;
    if map.capacity() > KEEP && map.len() * 4 < map.capacity() {
        map.shrink_to((map.len() * 2).max(KEEP));
    }
}

/// The registry as `ServerHandle::snapshot` reports it.
pub(crate) struct RegistryStatus {
    pub(crate) active: usize,
    pub(crate) connections: Vec<ConnectionSnapshot>,
    /// Most recent first.
    pub(crate) recently_closed: Vec<ClosedConnection>,
    pub(crate) opened: u64,
}

/// The live connections, keyed by actor id.
struct Registry<P: Protocol, T: Transport> {
    shared: Arc<Shared<P, T>>,
    entries: HashMap<ActorId, Entry>,
    /// Connections that ended after shutdown began.
    report: ShutdownReport,
    /// The last [`RECENTLY_CLOSED`] connections to end, oldest first.
    closed: VecDeque<ClosedConnection>,
    /// Connections started over the server's life.
    opened: u64,
}

impl<P: Protocol, T: Transport> Registry<P, T> {
    /// Ends a removed entry: frees its slot, records the close on its span, emits
    /// `ConnectionStop`. Returns the actor's task, which may still be returning.
    fn finish(&mut self, entry: Entry, reason: CloseReason) -> Option<JoinHandle<()>> {
        let Entry {
            info,
            stats,
            started,
            start,
            slot,
            task,
        } = entry;
        drop(slot);
        let info = stats.established.get().cloned().unwrap_or(info);
        let messages = stats.messages.load(Ordering::Relaxed);
        let logged = self
            .shared
            .connection_logs
            .admit(CLOSED, &self.shared.tasks);
        let record = || {
            if logged {
                // A failed handshake says why (the TLS stack's text, or the allow-list's):
                // without it an operator sees only `handshake_failed`.
                let detail = match &reason {
                    CloseReason::HandshakeFailed(detail) => Some(detail.as_str()),
                    _ => None,
                };
                tracing::info!(
                    connection.id = info.id() as i64,
                    close_reason = reason.as_str(),
                    close_detail = detail,
                    messages = i64::try_from(messages).unwrap_or(i64::MAX),
                    "connection closed"
                );
            }
        };
        match stats.span.get() {
            Some(span) => {
                span.record("close_reason", reason.as_str());
                span.record("messages", i64::try_from(messages).unwrap_or(i64::MAX));
                span.in_scope(record);
            }
            None => record(),
        }
        if self.shared.control.is_shutting_down() {
            if reason == CloseReason::Aborted {
                self.report.aborted += 1;
            } else {
                self.report.drained += 1;
            }
        }
        let duration = start.elapsed();
        self.shared.observers.emit(Event::ConnectionStop {
            connection: &info,
            duration,
            reason: &reason,
            messages,
            span: stats.span.get(),
        });
        if self.closed.len() == RECENTLY_CLOSED {
            self.closed.pop_front();
        }
        self.closed.push_back(ClosedConnection {
            id: info.id(),
            peer: info.peer(),
            tls: info.tls(),
            started,
            closed: started + duration,
            reason,
            messages,
            bytes_in: stats.bytes_in.load(Ordering::Relaxed),
            bytes_out: stats.bytes_out.load(Ordering::Relaxed),
        });
        task
    }

    fn snapshot(&self) -> Vec<ConnectionSnapshot> {
        let mut connections: Vec<_> = self
            .entries
            .values()
            .map(|entry| {
                let info = entry.stats.established.get().unwrap_or(&entry.info);
                let stats = &entry.stats;
                ConnectionSnapshot {
                    id: info.id(),
                    peer: info.peer(),
                    tls: info.tls(),
                    started: entry.started,
                    messages: stats.messages.load(Ordering::Relaxed),
                    in_flight: stats.in_flight.load(Ordering::Relaxed),
                    local: info.local(),
                    peer_identity: info.peer_identity().map(str::to_owned),
                    bytes_in: stats.bytes_in.load(Ordering::Relaxed),
                    bytes_out: stats.bytes_out.load(Ordering::Relaxed),
                    last_message: stats.last_answer().map(|after| entry.started + after),
                }
            })
            .collect();
        connections.sort_by_key(|c| c.id);
        connections
    }
}

impl<P: Protocol, T: Transport> Drop for Registry<P, T> {
    fn drop(&mut self) {
        // The supervisor is ending with connections still registered (it was killed, or failed):
        // ractor kills its linked children, and each still gets its one stop, from here.
        let entries: Vec<Entry> = self.entries.drain().map(|(_, entry)| entry).collect();
        for entry in entries {
            let reason = entry.stats.take_close().unwrap_or(CloseReason::Aborted);
            let _ = self.finish(entry, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_map_gives_back_its_table_and_keeps_room_for_what_is_left() {
        let mut map: HashMap<u64, [u8; 100]> = (0..10_000).map(|k| (k, [0; 100])).collect();
        let peak = map.capacity();
        for k in 100..10_000 {
            map.remove(&k);
            shrink_if_sparse(&mut map);
        }
        assert!(map.capacity() <= 512, "{peak} -> {}", map.capacity());
        assert!((0..100).all(|k| map.contains_key(&k)));
        // A table already small is left alone.
        let mut small: HashMap<u64, u64> = (0..10).map(|k| (k, k)).collect();
        let before = small.capacity();
        small.remove(&1);
        shrink_if_sparse(&mut small);
        assert_eq!(small.capacity(), before);
    }
}

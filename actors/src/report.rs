//! What the server reports to its embedder: [`ShutdownReport`], and the snapshot
//! ([`ServerSnapshot`] with its [`ConnectionSnapshot`]s, [`ClosedConnection`]s and
//! [`ListenerSnapshot`]s).
//!
//! Plain data, with no behaviour and no imports from this crate but the [`CloseReason`] leaf:
//! the connection supervisor fills them in and the [`ServerHandle`](crate::ServerHandle) hands
//! them out, so both layers depend on this module and neither on the other.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::event::CloseReason;

/// How many closed connections a server remembers for [`ServerSnapshot::recently_closed`].
pub const RECENTLY_CLOSED: usize = 64;

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that closed on their own terms after shutdown began: idle ones, ones that
    /// answered what they had in flight, ones the peer closed.
    pub drained: usize,
    /// Connections still busy at the grace deadline, closed with their handlers aborted.
    pub aborted: usize,
}

/// One live connection, as [`ServerHandle::connections`](crate::ServerHandle::connections)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionSnapshot {
    /// The connection's id (as in its events).
    pub id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// When the connection was accepted.
    pub started: SystemTime,
    /// Requests finished so far (answered, failed or aborted).
    pub messages: u64,
    /// Requests decoded and not yet answered.
    pub in_flight: usize,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// The verified peer identity (a client certificate's subject), once the handshake
    /// established one.
    pub peer_identity: Option<String>,
    /// Bytes read from the connection, as of its last decoded request or, while a request is
    /// part-way in, its last read (after the transport: TLS is counted decrypted).
    pub bytes_in: u64,
    /// Bytes of encoded responses written to the connection.
    pub bytes_out: u64,
    /// When the last request finished (was answered, failed or was aborted), if one did.
    pub last_message: Option<SystemTime>,
}

/// A connection that has ended, as kept in [`ServerSnapshot::recently_closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosedConnection {
    /// The connection's id.
    pub id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Whether the connection was TLS.
    pub tls: bool,
    /// When the connection was accepted.
    pub started: SystemTime,
    /// When it closed.
    pub closed: SystemTime,
    /// Why it closed.
    pub reason: CloseReason,
    /// Requests it finished.
    pub messages: u64,
    /// Bytes read from it.
    pub bytes_in: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
}

/// Whether the server takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerState {
    /// Accepting and serving.
    Running,
    /// Shutdown has begun: no new connections; those still open finish what they have in
    /// flight.
    Draining,
    /// Every actor and task has ended.
    Stopped,
}

impl ServerState {
    /// `running`, `draining` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Running => "running",
            ServerState::Draining => "draining",
            ServerState::Stopped => "stopped",
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerSnapshot {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Whether its connections are TLS ([`Transport::tls`](crate::Transport::tls)).
    pub tls: bool,
    /// Whether it accepts new connections now (false once shutdown began).
    pub accepting: bool,
}

/// What [`ServerHandle::snapshot`](crate::ServerHandle::snapshot) reports: the listeners, the
/// slots, the live connections and the most recently closed ones (as `ranch:info` and
/// `ranch:procs`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerSnapshot {
    /// When the snapshot was taken.
    pub taken: SystemTime,
    /// When the server started.
    pub started: SystemTime,
    /// Running, draining or stopped.
    pub state: ServerState,
    /// The listening sockets.
    pub listeners: Vec<ListenerSnapshot>,
    /// `max_connections`.
    pub max_connections: usize,
    /// Connection slots in use (accepted sockets not yet closed).
    pub slots_in_use: usize,
    /// Live connections (registered with the connection supervisor).
    pub active_connections: usize,
    /// The live connections, by id (empty in a [summary](crate::ServerHandle::summary)).
    pub connections: Vec<ConnectionSnapshot>,
    /// The last connections to close, most recent first (at most
    /// [`RECENTLY_CLOSED`](crate::RECENTLY_CLOSED); empty in a
    /// [summary](crate::ServerHandle::summary)).
    pub recently_closed: Vec<ClosedConnection>,
    /// Connections accepted since the server started.
    pub connections_opened: u64,
}

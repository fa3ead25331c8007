//! What the server reports to its embedder: [`ShutdownReport`] and [`ConnectionSnapshot`].
//!
//! Plain data, with no behaviour and no imports from this crate: the connection supervisor
//! fills them in and the [`ServerHandle`](crate::ServerHandle) hands them out, so both layers
//! depend on this module and neither on the other.

use std::net::SocketAddr;
use std::time::SystemTime;

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
}

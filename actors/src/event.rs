//! Telemetry events and the observers that receive them (`:telemetry.attach` for this runtime).
//!
//! Every connection produces exactly one [`Event::ConnectionStart`] and exactly one
//! [`Event::ConnectionStop`], whatever ends it (peer close, timeout, codec error, shutdown, or a
//! panic in the runtime itself). Every request produces one [`Event::MessageStart`] and then
//! exactly one of [`Event::MessageStop`] (the handler answered, possibly with nothing, and the
//! answer was written) or [`Event::MessageException`] (the handler panicked or timed out, or
//! the message was aborted: the connection closed first, or its answer could not be written;
//! the failure response, if the policy sends one, is reported on the exception event).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::protocol::{ConnectionInfo, Failure, Protocol};

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side.
    PeerClosed,
    /// No bytes arrived for `idle_timeout`.
    Idle,
    /// A frame was started and not finished within `frame_timeout`.
    FrameTimeout,
    /// A response could not be written within `write_timeout`.
    WriteTimeout,
    /// The transport handshake (TLS) did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// The transport handshake failed; the text says why (never payload data).
    HandshakeFailed(String),
    /// The codec rejected the byte stream; `kind` is [`Protocol::error_kind`], `detail` its
    /// text, `offset` [`Protocol::error_offset`].
    Protocol {
        /// The protocol's name for the error (`"framing"`, `"oversize"`, ...).
        kind: &'static str,
        /// The error's text.
        detail: String,
        /// Where in the inbound byte stream the codec failed (from 0 at the connection's first
        /// byte), when the protocol says.
        offset: Option<u64>,
    },
    /// Reading or writing the socket failed.
    Io(String),
    /// The handler-failure policy is `Close` and a handler failed.
    HandlerFailure,
    /// The server is shutting down and the connection was drained.
    Shutdown,
    /// The embedder closed this connection
    /// ([`ServerHandle::close_connection`](crate::ServerHandle::close_connection)); it was
    /// drained like a shutdown.
    ServerClosed,
    /// The server is shutting down and the connection was still busy at the grace deadline.
    Aborted,
    /// The connection's own code panicked (a bug in the runtime or the codec).
    Panicked(String),
    /// The peer's verified TLS identity already had `max_connections_per_peer` connections.
    PeerLimit,
}

impl CloseReason {
    /// A short, stable, low-cardinality name, used as a metric attribute and span field.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Idle => "idle",
            CloseReason::FrameTimeout => "frame_timeout",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::HandshakeFailed(_) => "handshake_failed",
            CloseReason::Protocol { kind, .. } => kind,
            CloseReason::Io(_) => "io",
            CloseReason::HandlerFailure => "handler_failure",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ServerClosed => "server_closed",
            CloseReason::Aborted => "aborted",
            CloseReason::Panicked(_) => "panic",
            CloseReason::PeerLimit => "peer_limit",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::HandshakeFailed(d) => write!(f, "handshake failed: {d}"),
            CloseReason::Protocol {
                kind,
                detail,
                offset: None,
            } => write!(f, "{kind}: {detail}"),
            CloseReason::Protocol {
                kind,
                detail,
                offset: Some(offset),
            } => write!(f, "{kind}: {detail} (at byte {offset})"),
            CloseReason::Io(d) => write!(f, "i/o error: {d}"),
            CloseReason::Panicked(d) => write!(f, "connection panicked: {d}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// One telemetry event. Borrowed: observers copy what they keep.
#[non_exhaustive]
pub enum Event<'a, P: Protocol> {
    /// A connection was accepted (after admission, before any handshake).
    ConnectionStart {
        /// The connection, as known before the handshake: `tls` is
        /// [`Transport::tls`](crate::Transport::tls) and `peer_identity` is `None`; later
        /// events carry what the handshake established.
        connection: &'a ConnectionInfo,
        /// Wall-clock time of the start.
        system_time: SystemTime,
    },
    /// A connection ended. Exactly one per `ConnectionStart`.
    ConnectionStop {
        /// The connection.
        connection: &'a ConnectionInfo,
        /// How long it lived.
        duration: Duration,
        /// Why it ended.
        reason: &'a CloseReason,
        /// How many requests it handled (answered, failed or silently completed).
        messages: u64,
        /// The connection's span ([`Protocol::connection_span`]), still open, or `None` when
        /// the connection ended before one was made (it failed to start).
        span: Option<&'a tracing::Span>,
    },
    /// A request was decoded and its handler task is about to start.
    ///
    /// It carries no timestamp: observers run synchronously, at the moment the event happens,
    /// so one that wants the wall-clock time reads it (`SystemTime::now()`), and the others do
    /// not pay for a clock read per message.
    MessageStart {
        /// The connection.
        connection: &'a ConnectionInfo,
        /// The request's metadata.
        meta: &'a P::Meta,
        /// The message's span ([`Protocol::message_span`]), just opened: the handler will run
        /// inside it.
        span: &'a tracing::Span,
    },
    /// A handler returned. `response` is `None` when it chose to send nothing.
    MessageStop {
        /// The connection.
        connection: &'a ConnectionInfo,
        /// The request's metadata.
        meta: &'a P::Meta,
        /// From decode to the response being written.
        duration: Duration,
        /// The response sent, if any.
        response: Option<&'a P::Response>,
        /// Encoded size of the response in bytes (0 when none was sent).
        response_size: usize,
        /// The message's span ([`Protocol::message_span`]),
        /// still open: record the outcome on it.
        span: &'a tracing::Span,
    },
    /// A handler panicked or timed out, or the message was aborted (the connection closed
    /// before it was answered, or its answer could not be written).
    MessageException {
        /// The connection.
        connection: &'a ConnectionInfo,
        /// The request's metadata.
        meta: &'a P::Meta,
        /// From decode to the failure being handled.
        duration: Duration,
        /// What went wrong.
        failure: &'a Failure,
        /// The failure response sent, if the policy sent one.
        response: Option<&'a P::Response>,
        /// The message's span, still open: record the failure on it.
        span: &'a tracing::Span,
    },
    /// A peer was refused by the admission check right after accept; no connection was started.
    ConnectionRefused {
        /// The refused peer.
        peer: SocketAddr,
    },
    /// The acceptor failed and is being restarted.
    AcceptorRestart {
        /// The error that ended the previous acceptor.
        error: &'a str,
        /// Restarts within the current window, this one included.
        restarts: u32,
    },
    /// The server stops by itself (the acceptor failed past its
    /// [`RestartPolicy`](crate::RestartPolicy), or a supervisor failed): escalation, as in
    /// OTP. Emitted once, as the teardown begins, before
    /// [`ServerHandle::wait`](crate::ServerHandle::wait) returns this error.
    Escalation {
        /// Why the server stops.
        error: &'a crate::ServerError,
    },
}

impl<P: Protocol> fmt::Debug for Event<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Event::ConnectionStart { .. } => "ConnectionStart",
            Event::ConnectionStop { .. } => "ConnectionStop",
            Event::MessageStart { .. } => "MessageStart",
            Event::MessageStop { .. } => "MessageStop",
            Event::MessageException { .. } => "MessageException",
            Event::ConnectionRefused { .. } => "ConnectionRefused",
            Event::AcceptorRestart { .. } => "AcceptorRestart",
            Event::Escalation { .. } => "Escalation",
        };
        f.write_str(name)
    }
}

/// Receives every [`Event`] synchronously, on the task that produced it: keep it cheap
/// (update a counter, push to a channel), never block.
pub trait Observer<P: Protocol>: Send + Sync + 'static {
    /// Called once per event.
    fn on_event(&self, event: &Event<'_, P>);
}

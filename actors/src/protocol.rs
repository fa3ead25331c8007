//! The one trait through which the supervision tree learns about a protocol.
//!
//! Everything protocol-specific (how bytes become requests, what a request means, what to answer
//! when a handler fails, what a span should say) lives behind [`Protocol`]. The runtime knows
//! sockets, supervision, deadlines, back-pressure and shutdown, and nothing else.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::codec::{Decoder, Encoder};

use crate::lease::Lease;

/// A protocol served by the supervision tree.
///
/// The runtime drives one codec per connection, calls [`Protocol::meta`] on every decoded request
/// (in the connection, before the handler task starts), runs [`Protocol::handle`] in its own tokio
/// task under the handler deadline, and writes the response it returns, in arrival order.
///
/// When the handler task fails (it panicked, or passed its deadline and was aborted), the
/// runtime's `HandlerFailurePolicy` decides what happens; when that policy says "respond", the
/// runtime asks [`Protocol::on_failure`] for the answer, using only the request's metadata.
pub trait Protocol: Send + Sync + 'static {
    /// A decoded request (one frame).
    type Request: Send + 'static;
    /// A response, encoded by the codec. `Clone` because the codec consumes the response while
    /// observers are shown it after it was written; the runtime clones only when observers are
    /// registered.
    type Response: Clone + Send + 'static;
    /// What the runtime keeps about a request while its handler runs: enough to answer a failed
    /// handler without the request itself, and to describe the request in telemetry.
    type Meta: Send + Sync + 'static;
    /// Decoding or encoding failed. Any codec error closes the connection.
    type Error: std::error::Error + From<std::io::Error> + Send + Sync + 'static;
    /// The per-connection codec.
    type Codec: Decoder<Item = Self::Request, Error = Self::Error>
        + Encoder<Self::Response, Error = Self::Error>
        + Send
        + 'static;

    /// A fresh codec for a new connection.
    fn codec(&self) -> Self::Codec;

    /// Metadata for a request, taken before the request moves into its handler task.
    fn meta(&self, request: &Self::Request) -> Self::Meta;

    /// Handles one request. The future runs inside the span returned by
    /// [`Protocol::message_span`] and may be aborted at the handler deadline.
    ///
    /// It is polled once on the connection's task, where it is: a future that finishes then
    /// costs no task and no allocation. Only one still pending is moved into its own task,
    /// which is why it must be `Unpin`: return `Box::pin(async move { .. })`, or a hand-written
    /// future that boxes only what waits.
    ///
    /// `None` means "send nothing for this request" (for example an HL7 accept acknowledgment
    /// that MSH-15 says is never wanted); the connection goes on.
    fn handle(
        &self,
        request: Self::Request,
        meta: &Self::Meta,
        connection: &ConnectionInfo,
    ) -> impl Future<Output = Option<Self::Response>> + Unpin + Send + 'static;

    /// The deadline of this request's handler, when it differs from the server's
    /// `handler_timeout` (a per-route deadline, say). Past it the handler is aborted and
    /// answered exactly as past `handler_timeout`: the handler-failure policy applies and the
    /// failure is `Failure::TimedOut` with this limit. Default is `None`: the server's
    /// `handler_timeout`.
    fn handler_timeout(&self, meta: &Self::Meta) -> Option<std::time::Duration> {
        let _ = meta;
        None
    }

    /// Handles one request holding its [`Lease`]: what the runtime calls. Override it, rather
    /// than [`Protocol::handle`], when the handler hands work off to something the runtime
    /// cannot abort (a blocking write, a job queued for another thread) and that work should
    /// keep counting against the limits after a handler timeout: give that work a clone of
    /// `lease`. Default is [`Protocol::handle`], with the lease dropped at once.
    fn handle_leased(
        &self,
        request: Self::Request,
        meta: &Self::Meta,
        connection: &ConnectionInfo,
        lease: &Lease,
    ) -> impl Future<Output = Option<Self::Response>> + Unpin + Send + 'static {
        let _ = lease;
        self.handle(request, meta, connection)
    }

    /// At most how many bytes handling `request` allocates beside the request itself, before
    /// its metadata is taken (for HL7, the parse index that [`Protocol::meta`] builds). With
    /// `max_buffered_bytes` set, the runtime draws this much from the budget before it calls
    /// [`Protocol::meta`], waiting (and reading nothing more) until the budget has it, so that
    /// the allocation never goes past the budget. Default is 0.
    fn request_overhead(&self, request: &Self::Request) -> usize {
        let _ = request;
        0
    }

    /// A bound on [`Protocol::request_overhead`] that costs next to nothing to compute (from the
    /// request's length, say), never below it, or `None` if there is none. With
    /// `max_buffered_bytes` set, the runtime first tries to draw this; only when the budget
    /// cannot spare it at once does it call [`Protocol::request_overhead`] (which may have to
    /// read the whole request) and draw, or wait for, that instead. Either draw is trimmed to
    /// [`Protocol::meta_overhead`] after [`Protocol::meta`], so a generous ceiling holds budget
    /// only for the moment between the two. Default is `None`.
    fn request_overhead_ceiling(&self, request: &Self::Request) -> Option<usize> {
        let _ = request;
        None
    }

    /// How many bytes `meta` holds beside the request (the parse index as built): after
    /// [`Protocol::meta`], the request's draw of [`Protocol::request_overhead`] is trimmed to
    /// this, and held until the request is answered. Default is 0.
    fn meta_overhead(&self, meta: &Self::Meta) -> usize {
        let _ = meta;
        0
    }

    /// The answer to a request whose handler failed, or `None` to send nothing.
    fn on_failure(&self, meta: &Self::Meta, failure: &Failure) -> Option<Self::Response>;

    /// A short, stable, low-cardinality name for a codec error, used as the close reason
    /// (for example `"framing"` or `"oversize"`). Default is `"protocol"`.
    fn error_kind(&self, error: &Self::Error) -> &'static str {
        let _ = error;
        "protocol"
    }

    /// Where a decoding error is: the offset of the offending byte in the connection's inbound
    /// byte stream, counted from 0, carried on [`CloseReason::Protocol`](crate::CloseReason).
    /// Default is `None`.
    fn error_offset(&self, error: &Self::Error) -> Option<u64> {
        let _ = error;
        None
    }

    /// Whether `codec` is inside a frame: it consumed the frame's start but not its end. The
    /// runtime also counts undecoded bytes in its read buffer as a frame in progress, so this
    /// matters only for codecs that consume a start marker before the payload arrives; the
    /// frame timeout runs while either holds. Default is `false`.
    fn frame_in_progress(&self, codec: &Self::Codec) -> bool {
        let _ = codec;
        false
    }

    /// The long-lived span of a connection. The runtime creates it once the handshake is done
    /// (so `connection` carries the peer identity), or when the handshake fails, enters it for
    /// the connection's I/O, and records `close_reason` (a string) and `messages` (an `i64`) on
    /// it when the connection ends if the span has those fields. Default is an `info` span named
    /// `connection` with no fields.
    fn connection_span(&self, connection: &ConnectionInfo) -> tracing::Span {
        let _ = connection;
        tracing::info_span!("connection")
    }

    /// The span of one request; the handler task runs inside it. `connection_span` is the span
    /// returned by [`Protocol::connection_span`], so a protocol may parent the message span on it
    /// or link to it. Default is a `debug` span named `message`, child of the connection span.
    fn message_span(
        &self,
        connection_span: &tracing::Span,
        connection: &ConnectionInfo,
        meta: &Self::Meta,
    ) -> tracing::Span {
        let _ = (connection, meta);
        tracing::debug_span!(parent: connection_span, "message")
    }
}

/// Why a handler task produced no response of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The handler panicked; the payload's message when it was a string.
    Panicked(String),
    /// The handler did not finish within the handler timeout and was aborted.
    TimedOut(std::time::Duration),
    /// The connection closed before the message was answered (shutdown grace deadline, a failed
    /// write, or the `Close` handler-failure policy): its handler was aborted, or had finished
    /// but its answer could not be written. No response can be sent, so
    /// [`Protocol::on_failure`] is never asked about it; it is only reported on
    /// [`Event::MessageException`](crate::Event::MessageException).
    Aborted,
}

impl Failure {
    /// The failure kind as used in telemetry: `"panic"`, `"timeout"` or `"aborted"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Panicked(_) => "panic",
            Failure::TimedOut(_) => "timeout",
            Failure::Aborted => "aborted",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Panicked(msg) => write!(f, "handler panicked: {msg}"),
            Failure::TimedOut(limit) => write!(f, "handler exceeded its {limit:?} deadline"),
            Failure::Aborted => f.write_str("handler aborted as the connection closed"),
        }
    }
}

/// What the runtime knows of a connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    inner: Arc<ConnectionInfoInner>,
}

#[derive(Debug)]
struct ConnectionInfoInner {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
    peer_identity: Option<String>,
    /// The peer's IP address as text, formatted once for the spans and logs of every message.
    peer_ip: Box<str>,
}

impl ConnectionInfo {
    /// Describes a connection. `peer_identity` is the verified client identity, if the transport
    /// established one (for example a client certificate's subject).
    pub fn new(
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        peer_identity: Option<String>,
    ) -> Self {
        Self {
            inner: Arc::new(ConnectionInfoInner {
                id,
                peer,
                local,
                tls,
                peer_identity,
                peer_ip: peer.ip().to_string().into_boxed_str(),
            }),
        }
    }

    /// The connection's id, unique within the process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// The peer's IP address as text (`192.0.2.7`, `2001:db8::1`), formatted once per connection.
    pub fn peer_ip(&self) -> &str {
        &self.inner.peer_ip
    }

    /// The local address the connection was accepted on.
    pub fn local(&self) -> SocketAddr {
        self.inner.local
    }

    /// Whether the transport is TLS.
    pub fn tls(&self) -> bool {
        self.inner.tls
    }

    /// The verified peer identity (a client certificate's subject), if any.
    pub fn peer_identity(&self) -> Option<&str> {
        self.inner.peer_identity.as_deref()
    }
}

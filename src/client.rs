//! The MLLP sender: one connection, ACK correlation, reply timeouts, reconnect and retry.
//!
//! Safety rules this client keeps (each was a real bug in a peer project):
//! - every reply's MSA-2 is checked against the MSH-10 that was sent; a mismatch is an error,
//!   never a success (a negative ACK with an empty MSA-2, the way many receivers refuse a
//!   message they could not read, is that message's answer: a failure either way);
//! - a reply timeout closes the connection, so a late ACK can never be paired with the next
//!   message;
//! - reconnects back off exponentially up to a cap, and the backoff resets after a success;
//! - a call cancelled mid-way (dropped by a caller's timeout or `select!`) leaves its
//!   connection unusable: the next call drops it and reconnects, so its late reply is never
//!   read as another message's;
//! - an ACK that was not asked for (MSH-15 = NE, sent anyway by the many receivers that ignore
//!   MSH-15) is recognised by its MSA-2 and skipped.
//!
//! Retries make delivery at-least-once: a message whose ACK was lost is sent again, and the
//! receiver may see it twice (with the same MSH-10, which is how receivers deduplicate).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::ack::{AckCode, AckRequirement};
use crate::frame::{END_BLOCK, FrameError, MllpCodec, START_BLOCK};
use crate::hl7::{BatchError, Message, ParseError};

mod batch;

use crate::tls::{BoxedStream, Connector, TlsClientConfig, TlsConfigError};
pub use batch::BatchItem;

type Connection = Framed<BoxedStream, MllpCodec>;

/// Why a send failed.
///
/// `Debug` and `Display` never show text from the receiver's ACK outside its MSH (that is, the
/// [`Negative`](ClientError::Negative) `text`), which may carry patient data: read the field.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection (or TLS handshake) to the receiver could not be made within
    /// [`ClientConfig::connect_timeout`], or failed.
    #[error("could not connect to {addr}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No reply within the reply timeout; the connection was closed.
    #[error("no acknowledgment within {0:?}")]
    Timeout(Duration),
    /// The receiver did not take the whole message within [`ClientConfig::write_timeout`] (it
    /// stopped reading); the connection was closed, and the message may have arrived in part.
    #[error("receiver did not take the message within {0:?}")]
    WriteTimeout(Duration),
    /// The connection was dropped, because an earlier message on it failed, before this message
    /// was acknowledged (in [`Client::send_all`]). The receiver may have got it.
    #[error("connection dropped after an earlier message failed, before this one was acknowledged")]
    Abandoned,
    /// The receiver closed the connection before replying.
    #[error("connection closed by the receiver before it acknowledged")]
    Closed,
    /// Reading or writing the socket failed.
    #[error("mllp transport failed")]
    Io(#[source] io::Error),
    /// The receiver's bytes were not valid MLLP.
    #[error("invalid mllp framing from the receiver")]
    Frame(#[source] FrameError),
    /// The message to send has no MSH-10 (message control ID), so its ACK cannot be correlated.
    #[error("message has no MSH-10 (message control ID) to correlate its acknowledgment")]
    MissingControlId,
    /// The message to send is not HL7.
    #[error("message to send is not valid HL7")]
    InvalidMessage(#[source] ParseError),
    /// The batch to send ([`Client::send_batch`]) has a malformed envelope.
    #[error("batch to send is malformed")]
    InvalidBatch(#[source] BatchError),
    /// The batch acknowledgment holds no ACK for this message, though its MSH-15 asked for one.
    #[error("the batch acknowledgment has no acknowledgment for this message")]
    Unanswered,
    /// The message to send contains a byte MLLP reserves (`0x0B` or `0x1C`), so no receiver could
    /// frame it. Nothing was sent and the connection is untouched.
    #[error("message to send cannot be framed")]
    Unframeable(#[source] FrameError),
    /// The reply is not an HL7 acknowledgment (no MSA segment, or not HL7 at all).
    #[error("reply is not an hl7 acknowledgment: {0}")]
    NotAnAck(String),
    /// The reply acknowledges another message: its MSA-2 is not the MSH-10 that was sent. The
    /// connection was closed, since the stream of replies can no longer be trusted.
    #[error("acknowledgment is for control id {received:?}, expected {expected:?}")]
    Mismatch {
        /// The MSH-10 that was sent.
        expected: String,
        /// The MSA-2 that came back.
        received: String,
    },
    /// The receiver answered with a negative acknowledgment (AE, AR, CE or CR). Display and
    /// `Debug` show only the code: `text` comes from outside the ACK's MSH and may carry patient
    /// data, so it is left to the caller to show deliberately.
    #[error("receiver answered {code}")]
    Negative {
        /// MSA-1.
        code: AckCode,
        /// The first ERR segment's text, or MSA-3, or empty. Receiver-supplied and untrusted:
        /// never shown by `Display` or `Debug`.
        text: String,
        /// The whole acknowledgment.
        ack: Box<Acknowledgment>,
    },
}

impl ClientError {
    /// Whether a retry may help: timeouts, lost connections, and connects that failed, except
    /// a TLS handshake that failed for good (a certificate refused by either side, no common
    /// protocol: [`HandshakeError::is_permanent`](crate::tls::HandshakeError::is_permanent)),
    /// which fails the same way until a certificate or a setting changes.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { source, .. } => {
                !crate::tls::HandshakeError::from_io(source).is_some_and(|e| e.is_permanent())
            }
            ClientError::Timeout(_)
            | ClientError::WriteTimeout(_)
            | ClientError::Abandoned
            | ClientError::Closed
            | ClientError::Io(_) => true,
            _ => false,
        }
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { addr, source } => f
                .debug_struct("Connect")
                .field("addr", addr)
                .field("source", source)
                .finish(),
            ClientError::Timeout(after) => f.debug_tuple("Timeout").field(after).finish(),
            ClientError::WriteTimeout(after) => f.debug_tuple("WriteTimeout").field(after).finish(),
            ClientError::Abandoned => f.write_str("Abandoned"),
            ClientError::Closed => f.write_str("Closed"),
            ClientError::Io(e) => f.debug_tuple("Io").field(e).finish(),
            ClientError::Frame(e) => f.debug_tuple("Frame").field(e).finish(),
            ClientError::MissingControlId => f.write_str("MissingControlId"),
            ClientError::InvalidMessage(e) => f.debug_tuple("InvalidMessage").field(e).finish(),
            ClientError::InvalidBatch(e) => f.debug_tuple("InvalidBatch").field(e).finish(),
            ClientError::Unanswered => f.write_str("Unanswered"),
            ClientError::Unframeable(e) => f.debug_tuple("Unframeable").field(e).finish(),
            ClientError::NotAnAck(why) => f.debug_tuple("NotAnAck").field(why).finish(),
            ClientError::Mismatch { expected, received } => f
                .debug_struct("Mismatch")
                .field("expected", expected)
                .field("received", received)
                .finish(),
            ClientError::Negative { code, text, ack } => f
                .debug_struct("Negative")
                .field("code", code)
                .field("text", &format_args!("<{} bytes, not shown>", text.len()))
                .field("ack", ack)
                .finish(),
        }
    }
}

/// A parsed acknowledgment received from a receiver.
#[derive(Clone)]
pub struct Acknowledgment {
    message: Message,
    code: AckCode,
}

impl Acknowledgment {
    /// Parses an ACK message.
    ///
    /// # Errors
    /// [`ClientError::NotAnAck`] when it is not HL7 or has no valid MSA-1.
    pub fn parse(payload: Bytes) -> Result<Self, ClientError> {
        let message = Message::parse_with(
            payload,
            &crate::hl7::ParseOptions::default().lenient_line_endings(true),
        )
        .map_err(|e| ClientError::NotAnAck(e.to_string()))?;
        let code = message
            .get("MSA-1")
            .ok()
            .flatten()
            .and_then(|v| AckCode::from_code(v.as_bytes()))
            .ok_or_else(|| ClientError::NotAnAck("no valid MSA-1".to_owned()))?;
        Ok(Self { message, code })
    }

    /// MSA-1, the acknowledgment code.
    pub fn code(&self) -> AckCode {
        self.code
    }

    /// MSA-2, the control ID of the acknowledged message, as on the wire (escape sequences are
    /// not decoded), so it compares equal to the sent message's
    /// [`Message::control_id`](crate::hl7::Message::control_id).
    pub fn acknowledged_control_id(&self) -> Option<String> {
        let raw = self.acknowledged_control_id_bytes();
        (!raw.is_empty()).then(|| String::from_utf8_lossy(raw).into_owned())
    }

    /// MSA-2 as on the wire; empty when absent.
    fn acknowledged_control_id_bytes(&self) -> &[u8] {
        self.message
            .get("MSA-2")
            .ok()
            .flatten()
            .map_or(&[], |v| v.as_bytes())
    }

    /// The error text: ERR-8 (user message), else ERR-3.2 (the code's text), else ERR-1.4.2
    /// (before v2.5), else MSA-3; empty if none.
    pub fn text(&self) -> String {
        self.field("ERR-8")
            .or_else(|| self.field("ERR-3.2"))
            .or_else(|| self.field("ERR-1.4.2"))
            .or_else(|| self.field("MSA-3"))
            .unwrap_or_default()
    }

    /// The ACK message itself.
    pub fn message(&self) -> &Message {
        &self.message
    }

    fn field(&self, path: &str) -> Option<String> {
        let value = self.message.get(path).ok().flatten()?;
        let decoded = value.decoded();
        let s = String::from_utf8_lossy(&decoded).into_owned();
        (!s.is_empty()).then_some(s)
    }
}

impl fmt::Debug for Acknowledgment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acknowledgment")
            .field("code", &self.code)
            .field("acknowledged_control_id", &self.acknowledged_control_id())
            .finish()
    }
}

/// Exponential backoff: `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first delay. Default is 100 ms.
    pub initial: Duration,
    /// The cap. Default is 10 s.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How long to wait for each ACK. Default is 30 s.
    pub reply_timeout: Duration,
    /// How long to wait for a new connection: the TCP connect and, with TLS, the handshake
    /// together. Default is 10 s.
    pub connect_timeout: Duration,
    /// How long writing one message (or closing the connection) may take while the receiver is
    /// not reading; when it passes, the connection is closed and the send fails with
    /// [`ClientError::WriteTimeout`]. Default is 30 s.
    pub write_timeout: Duration,
    /// Largest reply accepted. Default is 10 MiB.
    pub max_message_size: usize,
    /// Delay before reconnecting after consecutive failed attempts (a connect that failed, or a
    /// connection lost before the message was acknowledged); reset after a successful exchange.
    /// Default is 100 ms doubling to 10 s.
    pub reconnect: Backoff,
    /// How many times a message is sent again after a transient failure (timeout, lost
    /// connection). Default is 2.
    pub max_retries: u32,
    /// Whether AE/AR (and CE/CR) answers are retried too. Default is `false`: a negative ACK
    /// is the receiver's decision, and resending the same bytes rarely changes it.
    pub retry_negative: bool,
    /// Messages sent before waiting for ACKs in [`Client::send_all`]. Default is 1.
    pub max_in_flight: usize,
    /// TCP keepalive on the connection. Default is `true`.
    pub keepalive: bool,
}

impl ClientConfig {
    /// Sets [`reply_timeout`](Self::reply_timeout). Default is 30 s.
    #[must_use]
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout). Default is 10 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`write_timeout`](Self::write_timeout). Default is 30 s.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`max_message_size`](Self::max_message_size). Default is 10 MiB.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`reconnect`](Self::reconnect). Default is 100 ms doubling to 10 s.
    #[must_use]
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Sets [`max_retries`](Self::max_retries). Default is 2.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets [`retry_negative`](Self::retry_negative). Default is `false`.
    #[must_use]
    pub fn retry_negative(mut self, retry: bool) -> Self {
        self.retry_negative = retry;
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight). Default is 1.
    #[must_use]
    pub fn max_in_flight(mut self, depth: usize) -> Self {
        self.max_in_flight = depth;
        self
    }

    /// Sets [`keepalive`](Self::keepalive). Default is `true`.
    #[must_use]
    pub fn keepalive(mut self, keepalive: bool) -> Self {
        self.keepalive = keepalive;
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            reply_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_message_size: 10 * 1024 * 1024,
            reconnect: Backoff::default(),
            max_retries: 2,
            retry_negative: false,
            max_in_flight: 1,
            keepalive: true,
        }
    }
}

/// A failed connect within a `send_all`, repeated for the messages after it (a TLS handshake's
/// error as itself, so that each copy tells whether a retry may help as the first does).
struct ConnectFailure {
    kind: io::ErrorKind,
    text: String,
    handshake: Option<crate::tls::HandshakeError>,
}

impl ConnectFailure {
    fn of(error: &ClientError) -> Option<Self> {
        match error {
            ClientError::Connect { source, .. } => Some(Self {
                kind: source.kind(),
                text: source.to_string(),
                handshake: crate::tls::HandshakeError::from_io(source).map(|e| e.duplicate()),
            }),
            _ => None,
        }
    }

    fn repeat(&self, addr: &str) -> ClientError {
        let source = match &self.handshake {
            Some(e) => io::Error::new(self.kind, e.duplicate()),
            None => io::Error::new(self.kind, self.text.clone()),
        };
        ClientError::Connect {
            addr: addr.to_owned(),
            source,
        }
    }
}

/// An MLLP client: sends HL7 messages over one connection and checks each acknowledgment.
pub struct Client {
    addr: String,
    config: ClientConfig,
    connector: Option<Connector>,
    connection: Option<Connection>,
    /// Counts the connections made: a message in flight is tagged with the one it was written
    /// on, and is never paired with a reply read on another.
    generation: u64,
    /// Consecutive failed attempts (connects that failed, connections lost before an ACK);
    /// reset by a successful exchange.
    failed_attempts: u32,
    /// Set while a `send`, `send_all` or `connect` runs. Still set when the next one starts,
    /// the last was cancelled (dropped mid-way): its frame may be half written or its reply
    /// still on the way, so its connection is not used again.
    busy: bool,
    /// MSH-10s of the messages sent on this connection that asked for no ACK (MSH-15 = NE),
    /// newest last, at most [`UNASKED_KEPT`]: a receiver that acknowledges them anyway (many
    /// ignore MSH-15) sends replies nobody waits for, which are skipped, not read as the next
    /// message's.
    unasked: VecDeque<String>,
}

/// How many control ids of unacknowledged (MSH-15 = NE) messages a connection remembers.
const UNASKED_KEPT: usize = 256;

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("connected", &self.connection.is_some())
            .field("config", &self.config)
            .finish()
    }
}

impl Client {
    /// A client for `addr` (`host:port`) with default settings. Connects lazily, on first send.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with_config(addr, ClientConfig::default())
    }

    /// A client with the given settings. Connects lazily, on first send.
    pub fn with_config(addr: impl Into<String>, config: ClientConfig) -> Self {
        Self {
            addr: addr.into(),
            config,
            connector: None,
            connection: None,
            generation: 0,
            failed_attempts: 0,
            busy: false,
            unasked: VecDeque::new(),
        }
    }

    /// A client for `addr` that speaks TLS, verifying the receiver per `tls` (CA bundle, server
    /// name, optional client certificate for mutual TLS).
    ///
    /// # Errors
    /// [`TlsConfigError`] when a file cannot be used or the server name is invalid.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use mllp::tls::TlsClientConfig;
    /// let tls = TlsClientConfig::new("partner-ca.pem").client_cert("me.pem", "me.key");
    /// let client = mllp::Client::with_tls("mllp.partner.example:2575", Default::default(), tls)?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn with_tls(
        addr: impl Into<String>,
        config: ClientConfig,
        tls: TlsClientConfig,
    ) -> Result<Self, TlsConfigError> {
        let addr = addr.into();
        let connector = tls.build()?.connector(&addr)?;
        let mut client = Self::with_config(addr, config);
        client.connector = Some(connector);
        Ok(client)
    }

    /// A client that wraps each new TCP connection with `connector` (TLS, or any other
    /// stream layer).
    pub fn with_connector(
        addr: impl Into<String>,
        config: ClientConfig,
        connector: Connector,
    ) -> Self {
        let mut client = Self::with_config(addr, config);
        client.connector = Some(connector);
        client
    }

    /// Connects now (otherwise the first send connects).
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the receiver cannot be reached.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.begin();
        let result = self.ensure_connected().await.map(|_| ());
        self.busy = false;
        result
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Closes the connection, if open, waiting at most
    /// [`write_timeout`](ClientConfig::write_timeout) for bytes still buffered to go out.
    pub async fn close(&mut self) {
        if let Some(mut conn) = self.connection.take() {
            // A receiver that stopped reading must not hold the caller; the socket is dropped
            // either way.
            let _ = tokio::time::timeout(self.config.write_timeout, conn.close()).await;
        }
    }

    /// Sends one message and waits for its acknowledgment, retrying per the config.
    ///
    /// What is waited for follows the message's own MSH-15 (accept acknowledgment type), as the
    /// receiver does: with MSH-15 absent (original mode), `AL` or `SU` an ACK is required and
    /// its absence is a [`ClientError::Timeout`]; with `NE` nothing is waited for and the
    /// result is `Ok(None)` once the message is written (an ACK the receiver sends anyway, as
    /// many do, is skipped when a later reply is read); with `ER` an ACK comes only on error,
    /// so silence for `reply_timeout` is `Ok(None)` (accepted) and the connection stays open.
    ///
    /// Returns the ACK when it is AA or CA.
    ///
    /// Cancel-safe: when the future is dropped before it completes (the caller's own timeout, a
    /// `select!`), the message may or may not have arrived, and the next call drops that
    /// connection and reconnects, so a late reply is never read as another message's.
    ///
    /// # Errors
    /// [`ClientError::Negative`] for AE/AR/CE/CR (also when MSA-2 is empty, as receivers that
    /// could not read the message send it), [`ClientError::Mismatch`] when MSA-2 is not the
    /// sent MSH-10, [`ClientError::Unframeable`] (nothing sent) for a message holding an MLLP
    /// reserved byte, and the transport errors ([`ClientError::Connect`],
    /// [`ClientError::WriteTimeout`], [`ClientError::Timeout`], ...) when retries are exhausted.
    pub async fn send(
        &mut self,
        message: impl Into<Bytes>,
    ) -> Result<Option<Acknowledgment>, ClientError> {
        let message = message.into();
        let (control_id, expect) = inspect(&message)?;
        self.begin();
        let mut attempt = 0;
        loop {
            self.drop_if_closed_by_peer();
            let result = self.send_once(&message, &control_id, expect).await;
            match &result {
                Err(e) if attempt < self.config.max_retries && self.retryable(e) => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying message");
                }
                _ => {
                    self.busy = false;
                    return result;
                }
            }
        }
    }

    /// Checks `message` as [`send`](Self::send) and [`send_all`](Self::send_all) do before
    /// they write it, and returns its MSH-10 (the control id its ACK must carry in MSA-2). Lets
    /// a caller refuse a batch up front instead of half-way through.
    ///
    /// Segments may end in CR, LF or CRLF; a bare LF inside a field of a message whose segments
    /// end in CR is data.
    ///
    /// # Errors
    /// [`ClientError::Unframeable`] for an MLLP reserved byte, [`ClientError::InvalidMessage`]
    /// when it does not parse as HL7, [`ClientError::MissingControlId`] without an MSH-10.
    pub fn check(message: &Bytes) -> Result<String, ClientError> {
        inspect(message).map(|(control_id, _)| control_id)
    }

    /// Sends many messages with up to `max_in_flight` awaiting their ACKs (pipelining); ACKs are
    /// correlated in order. Results come back in input order, each as [`Client::send`] would
    /// give it. A message with MSH-15 = `ER` (an ACK only on error) is sent alone, after the
    /// pipeline has drained, since silence is its answer. Transient failures are not retried
    /// here: the caller sees them per message. When connecting fails, every message not yet
    /// sent fails with that [`ClientError::Connect`] at once, without waiting out the reconnect
    /// backoff per message. When a failure drops the connection, every
    /// message still awaiting its ACK on it fails with [`ClientError::Abandoned`]; a reply read
    /// on a later connection is never paired with it.
    pub async fn send_all<I>(
        &mut self,
        messages: I,
    ) -> Vec<Result<Option<Acknowledgment>, ClientError>>
    where
        I: IntoIterator<Item = Bytes>,
    {
        self.begin();
        let depth = self.config.max_in_flight.max(1);
        let mut results: Vec<Option<Reply>> = Vec::new();
        // (input index, MSH-10, generation of the connection it was written on)
        let mut pending: VecDeque<(usize, String, u64)> = VecDeque::new();
        let mut queue = messages.into_iter().enumerate();
        let mut held: Option<(usize, Bytes, String)> = None;
        // Once a connect failed, the rest of the batch fails with it at once: connecting again
        // for each message would wait out the reconnect backoff once per message.
        let mut unreachable: Option<ConnectFailure> = None;
        loop {
            // Fill the pipeline.
            while pending.len() < depth && held.is_none() {
                let Some((index, message)) = queue.next() else {
                    break;
                };
                results.push(None);
                let (control_id, expect) = match inspect(&message) {
                    Ok(found) => found,
                    Err(e) => {
                        results[index] = Some(Err(e));
                        continue;
                    }
                };
                if let Some(failure) = &unreachable {
                    results[index] = Some(Err(failure.repeat(&self.addr)));
                    continue;
                }
                if expect == Expect::OnErrorOnly {
                    held = Some((index, message, control_id));
                    break;
                }
                if pending.is_empty() {
                    self.drop_if_closed_by_peer();
                }
                match self.write(message).await {
                    Ok(()) if expect == Expect::Never => {
                        self.succeeded();
                        self.sent_unasked(control_id);
                        results[index] = Some(Ok(None));
                    }
                    Ok(()) => pending.push_back((index, control_id, self.generation)),
                    // The connection was dropped (or never made): what is pending on it fails
                    // below, when its turn comes.
                    Err(e) => {
                        unreachable = unreachable.or_else(|| ConnectFailure::of(&e));
                        results[index] = Some(Err(e));
                    }
                }
            }
            if let Some((index, control_id, generation)) = pending.pop_front() {
                let reply = if self.is_live(generation) {
                    self.read_reply(&control_id, false).await
                } else {
                    // Its connection is gone; a reply read on another one cannot be its.
                    Err(ClientError::Abandoned)
                };
                results[index] = Some(reply);
            } else if let Some((index, message, control_id)) = held.take() {
                let reply = match &unreachable {
                    Some(failure) => Err(failure.repeat(&self.addr)),
                    None => {
                        self.drop_if_closed_by_peer();
                        self.send_once(&message, &control_id, Expect::OnErrorOnly)
                            .await
                    }
                };
                if let Err(e) = &reply {
                    unreachable = unreachable.or_else(|| ConnectFailure::of(e));
                }
                results[index] = Some(reply);
            } else {
                break;
            }
        }
        self.busy = false;
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ClientError::Abandoned)))
            .collect()
    }

    /// Starts an exchange. When the previous one was cancelled mid-way, its connection is
    /// dropped first: a frame of it may be half written, or its reply still on the way, and
    /// either would be read as the next message's. Not a failure of the receiver, so no
    /// backoff.
    fn begin(&mut self) {
        if std::mem::replace(&mut self.busy, true) && self.connection.take().is_some() {
            tracing::debug!("dropping the connection of a cancelled send");
        }
    }

    /// Before a message is written on a connection that has no reply pending: drops the
    /// connection if the receiver has closed it meanwhile (an idle timeout, a restart), so the
    /// message goes out on a fresh one instead of failing on the dead one. Reads only what has
    /// already arrived, without waiting: EOF or a read error drops the connection (not a
    /// failure of the receiver: no reconnect backoff). A late ACK of a message sent with
    /// MSH-15 = NE is skipped; any other unsolicited frame makes the connection untrustworthy,
    /// and it is dropped too.
    fn drop_if_closed_by_peer(&mut self) {
        loop {
            let Some(conn) = self.connection.as_mut() else {
                return;
            };
            // `now_or_never` polls once with a no-op waker; a `Framed` read is cancel safe (the
            // bytes stay in its buffer), and the next real read registers a real waker.
            let frame = match conn.next().now_or_never() {
                None => return, // nothing arrived: the connection is open and idle
                Some(frame) => frame,
            };
            if let Some(Ok(payload)) = &frame
                && let Ok(ack) = Acknowledgment::parse(payload.clone())
                && let Some(at) = self
                    .unasked
                    .iter()
                    .position(|id| id.as_bytes() == ack.acknowledged_control_id_bytes())
            {
                self.unasked.remove(at);
                continue;
            }
            tracing::debug!(
                closed = matches!(frame, None | Some(Err(_))),
                "dropping a connection the receiver closed or wrote to unasked"
            );
            self.connection = None;
            return;
        }
    }

    /// Whether the connection a message was written on (its `generation`) is still open.
    fn is_live(&self, generation: u64) -> bool {
        self.connection.is_some() && self.generation == generation
    }

    /// Drops the connection after a failure on it: nothing more it carries can be trusted to
    /// belong to the next message, and the next connect backs off.
    fn lose_connection(&mut self) {
        if self.connection.take().is_some() {
            self.failed_attempts = self.failed_attempts.saturating_add(1);
        }
    }

    /// Remembers a message sent with MSH-15 = NE on this connection (see `unasked`).
    fn sent_unasked(&mut self, control_id: String) {
        if self.unasked.len() == UNASKED_KEPT {
            self.unasked.pop_front();
        }
        self.unasked.push_back(control_id);
    }

    /// A message was delivered as its MSH-15 asks: the reconnect backoff starts over.
    fn succeeded(&mut self) {
        self.failed_attempts = 0;
    }

    fn retryable(&self, error: &ClientError) -> bool {
        error.is_transient()
            || (self.config.retry_negative && matches!(error, ClientError::Negative { .. }))
    }

    async fn send_once(&mut self, message: &Bytes, control_id: &str, expect: Expect) -> Reply {
        self.write(message.clone()).await?;
        match expect {
            Expect::Never => {
                self.succeeded();
                self.sent_unasked(control_id.to_owned());
                Ok(None)
            }
            Expect::Always => self.read_reply(control_id, false).await,
            Expect::OnErrorOnly => self.read_reply(control_id, true).await,
        }
    }

    /// Writes one frame, within `write_timeout`. Any failure but an unframeable message drops
    /// the connection.
    async fn write(&mut self, message: Bytes) -> Result<(), ClientError> {
        let timeout = self.config.write_timeout;
        let conn = self.ensure_connected().await?;
        let error = match tokio::time::timeout(timeout, conn.send(message)).await {
            Ok(Ok(())) => return Ok(()),
            // `inspect` rejects these first; the encoder writes nothing for them anyway, so the
            // connection is still whole.
            Ok(Err(e @ FrameError::ReservedByte { .. })) => {
                return Err(ClientError::Unframeable(e));
            }
            Ok(Err(FrameError::Io(e))) => ClientError::Io(e),
            Ok(Err(e)) => ClientError::Frame(e),
            // Part of the frame may be on the wire: the connection cannot be used again.
            Err(_elapsed) => ClientError::WriteTimeout(timeout),
        };
        self.lose_connection();
        Err(error)
    }

    /// Reads the reply to `control_id`. With `silence_ok` (MSH-15 = ER) no reply within the
    /// timeout means accepted, and the connection is kept.
    async fn read_reply(&mut self, control_id: &str, silence_ok: bool) -> Reply {
        let timeout = self.config.reply_timeout;
        // One deadline for the reply, however many unasked-for ACKs come before it.
        let deadline = tokio::time::Instant::now() + timeout;
        let ack = loop {
            let Some(conn) = self.connection.as_mut() else {
                return Err(ClientError::Closed);
            };
            let reply = match tokio::time::timeout_at(deadline, conn.next()).await {
                Err(_elapsed) if silence_ok => {
                    self.succeeded();
                    // Silence was its answer; a late ACK for it is skipped like an NE one.
                    self.sent_unasked(control_id.to_owned());
                    return Ok(None);
                }
                Err(_elapsed) => Err(ClientError::Timeout(timeout)),
                Ok(None) => Err(ClientError::Closed),
                Ok(Some(Err(FrameError::Io(e)))) => Err(ClientError::Io(e)),
                Ok(Some(Err(e))) => Err(ClientError::Frame(e)),
                Ok(Some(Ok(payload))) => Acknowledgment::parse(payload),
            };
            let ack = match reply {
                Ok(ack) => ack,
                Err(e) => {
                    self.lose_connection();
                    return Err(e);
                }
            };
            // Raw bytes on both sides, as a receiver copies MSH-10 into MSA-2.
            let received = ack.acknowledged_control_id_bytes();
            if received == control_id.as_bytes() {
                break ack;
            }
            // A negative ACK with an empty MSA-2 is how many receivers (hl7apy, simple-hl7)
            // refuse a message they could not read: replies come in order, so it answers the
            // message awaited. A positive one is never taken without the matching id.
            if received.is_empty() && !ack.code().is_success() {
                break ack;
            }
            // An ACK for a message sent with MSH-15 = NE, from a receiver that answers anyway:
            // nobody waits for it; the reply sought may still follow.
            if let Some(at) = self.unasked.iter().position(|id| id.as_bytes() == received) {
                self.unasked.remove(at);
                tracing::debug!("skipping an acknowledgment of a message that asked for none");
                continue;
            }
            let received = String::from_utf8_lossy(received).into_owned();
            self.lose_connection();
            return Err(ClientError::Mismatch {
                expected: control_id.to_owned(),
                received,
            });
        };
        self.succeeded();
        if ack.code().is_success() {
            Ok(Some(ack))
        } else {
            Err(ClientError::Negative {
                code: ack.code(),
                text: ack.text(),
                ack: Box::new(ack),
            })
        }
    }

    async fn ensure_connected(&mut self) -> Result<&mut Connection, ClientError> {
        if self.connection.is_none() {
            if self.failed_attempts > 0 {
                tokio::time::sleep(self.config.reconnect.delay(self.failed_attempts - 1)).await;
            }
            match self.dial().await {
                Ok(conn) => {
                    self.generation = self.generation.wrapping_add(1);
                    self.connection = Some(conn);
                    self.unasked.clear();
                }
                Err(source) => {
                    self.failed_attempts = self.failed_attempts.saturating_add(1);
                    return Err(ClientError::Connect {
                        addr: self.addr.clone(),
                        source,
                    });
                }
            }
        }
        Ok(self.connection.as_mut().expect("connection was just set"))
    }

    fn dial(&self) -> impl Future<Output = io::Result<Connection>> + Send + 'static {
        // Owned copies: the future must not borrow the client (whose stream is not `Sync`).
        let addr = self.addr.clone();
        let config = self.config.clone();
        let connector = self.connector.clone();
        let connect = async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            if config.keepalive {
                socket2::SockRef::from(&tcp).set_keepalive(true)?;
            }
            let stream: BoxedStream = match connector {
                Some(connector) => connector(tcp).await?,
                None => Box::pin(tcp),
            };
            let codec = MllpCodec::with_max_message_size(config.max_message_size);
            Ok(Framed::new(stream, codec))
        };
        let timeout = self.config.connect_timeout;
        // One deadline for the TCP connect and the handshake: a receiver that accepts and then
        // says nothing must not hold the sender.
        async move {
            tokio::time::timeout(timeout, connect).await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )
            })?
        }
    }
}

/// One message's result: the ACK, or `None` when MSH-15 says no ACK was to come.
type Reply = Result<Option<Acknowledgment>, ClientError>;

/// What reply a message's MSH-15 (accept acknowledgment type) asks the receiver for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Original mode (no MSH-15), `AL`, or `SU`: an ACK must come (for `SU`, silence means
    /// the message was not accepted).
    Always,
    /// `ER`: an ACK comes only when the message was not accepted.
    OnErrorOnly,
    /// `NE`: no ACK comes.
    Never,
}

/// The message's MSH-10 and what reply to wait for.
fn inspect(message: &Bytes) -> Result<(String, Expect), ClientError> {
    if let Some(offset) = memchr::memchr2(START_BLOCK, END_BLOCK, message) {
        return Err(ClientError::Unframeable(FrameError::ReservedByte {
            byte: message[offset],
            offset,
        }));
    }
    let lenient = crate::hl7::ParseOptions::default().lenient_line_endings(true);
    let parsed = match Message::parse_with(message.clone(), &lenient) {
        Ok(parsed) => parsed,
        // A bare LF can be data inside a field of a message whose segments end in CR (a stored
        // inbox file, a report text): read that way, it parses. Only the MSH segment is read
        // here, and it is the same either way unless it holds the LF itself.
        Err(lenient_error) => Message::parse(message.clone())
            .map_err(|_| ClientError::InvalidMessage(lenient_error))?,
    };
    let control_id = parsed
        .control_id()
        .map(str::to_owned)
        .ok_or(ClientError::MissingControlId)?;
    let expect = match parsed.accept_ack_type() {
        Some(AckRequirement::Never) => Expect::Never,
        Some(AckRequirement::ErrorOnly) => Expect::OnErrorOnly,
        _ => Expect::Always,
    };
    Ok((control_id, expect))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reconnect delay doubles from the initial value and stops at the cap.
    #[test]
    fn backoff_doubles_to_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(4), Duration::from_secs(1));
        assert_eq!(b.delay(400), Duration::from_secs(1));
    }
}

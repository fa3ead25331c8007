//! The HL7 protocol as the supervision runtime sees it: frames in, ACKs out.
//!
//! Its public types are re-exported from [`server`](crate::server), where they have always been
//! (`mllp::server::{Hl7, Hl7Codec, Inbound}`). Telemetry builds on it (events name [`Hl7`],
//! metrics read [`Inbound`]), so it sits below `telemetry` and `server`, and imports neither.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use tracing::{Span, field};

use mllp_actors::{ConnectionInfo, Failure, Lease, Protocol};

use crate::ack::{Ack, AckCode, AckOptions, Diagnostic, ErrorCode, Severity, accept_ack_wanted};
use crate::app::BoxFuture;
use crate::app::Deadlines;
use crate::app::plugin::Plugin;
use crate::app::service::Route;
use crate::app::{Request, Response, Status, StoreIdSlot};
use crate::frame::{FrameError, MllpCodec};
use crate::hl7::{Batch, Message, ParseError, ParseOptions, is_batch};

/// The HL7 v2 protocol over MLLP, as plugged into the supervision runtime.
///
/// You do not build one yourself: [`Server::builder`](crate::Server::builder) does. It is public
/// because telemetry [`Event`](crate::Event)s name it.
#[derive(Clone)]
pub struct Hl7 {
    inner: Arc<Hl7Inner>,
}

pub(crate) struct Hl7Inner {
    pub(crate) pipeline: Route,
    /// Per-route handler deadlines (`Router::route_with_timeout`).
    pub(crate) deadlines: Deadlines,
    pub(crate) plugins: Vec<Arc<dyn Plugin>>,
    pub(crate) ack: AckOptions,
    pub(crate) parse: ParseOptions,
    pub(crate) codec: MllpCodec,
    pub(crate) sampler: Sampler,
    /// Whether the message log is on: each message then gets a slot for its store id.
    pub(crate) message_log: bool,
    /// The meter the server was given, for middleware that counts (each request carries it).
    pub(crate) meter: Option<opentelemetry::metrics::Meter>,
}

/// Decides which messages get an `mllp.message` span
/// ([`ServerBuilder::message_trace_ratio`](crate::ServerBuilder::message_trace_ratio) first,
/// then [`ServerBuilder::message_trace_limit`](crate::ServerBuilder::message_trace_limit)).
#[derive(Debug)]
pub(crate) struct Sampler {
    /// A message is traced when a uniform 64-bit draw is below this; `u64::MAX` means always
    /// (no draw), 0 never.
    threshold: u64,
    limit: Option<TraceLimit>,
}

/// At most `per_second` traced messages in each whole second since the server was built (fixed
/// windows: a burst across a window boundary may get up to twice that in one second). Time is
/// tokio's, so it follows a paused clock in tests.
#[derive(Debug)]
struct TraceLimit {
    per_second: u32,
    start: tokio::time::Instant,
    /// The current window's second (high 32 bits) and the messages traced in it (low 32).
    window: AtomicU64,
}

impl Sampler {
    pub(crate) fn new(ratio: f64, limit: Option<u32>) -> Self {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else if ratio > 0.0 {
            // Exact enough: the draw has 64 bits, a ratio 53.
            (ratio * u64::MAX as f64) as u64
        } else {
            0
        };
        Sampler {
            threshold,
            limit: limit.map(|per_second| TraceLimit {
                per_second,
                start: tokio::time::Instant::now(),
                window: AtomicU64::new(0),
            }),
        }
    }

    /// Whether this message is traced.
    pub(crate) fn sample(&self) -> bool {
        let drawn = match self.threshold {
            u64::MAX => true,
            0 => false,
            threshold => fastrand::u64(..) < threshold,
        };
        drawn && self.limit.as_ref().is_none_or(TraceLimit::admit)
    }
}

impl TraceLimit {
    /// Takes one of this second's traces, if any is left.
    fn admit(&self) -> bool {
        if self.per_second == 0 {
            return false;
        }
        let second = self.start.elapsed().as_secs() as u32;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (at, used) = ((current >> 32) as u32, current as u32);
            // Compared in wrapping arithmetic; a thread whose clock read is a moment behind
            // another's counts in the newer window instead of resetting it.
            let next = if (second.wrapping_sub(at) as i32) > 0 {
                (u64::from(second) << 32) | 1
            } else if used < self.per_second {
                current + 1
            } else {
                return false;
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

impl Hl7 {
    pub(crate) fn new(inner: Hl7Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The answer to one message: the plugins, the pipeline and the ACK stage, or the AR of a
    /// payload that is not HL7.
    fn answer(
        &self,
        request: Bytes,
        meta: &Inbound,
        connection: &ConnectionInfo,
        lease: Option<Lease>,
    ) -> HandleFuture {
        let inner = Arc::clone(&self.inner);
        HandleFuture(match &meta.parsed {
            Ok(message) => Handle::Start {
                inner,
                message: message.clone(),
                connection: connection.clone(),
                lease,
                store_id: meta.store_id.clone(),
            },
            // A batch: each message through plugins, router and ACK stage on its own, in
            // order, then one batch acknowledgment. Rare enough to be boxed.
            Err(_) if is_batch(&request) => Handle::Batch(Box::pin(handle_batch(
                inner,
                request,
                connection.clone(),
                meta.batch.clone(),
            ))),
            // Not HL7: the best-effort AR, and the handler never sees it.
            Err((error, _)) => Handle::Unparseable {
                inner,
                raw: request,
                diagnostic: error.to_diagnostic(),
            },
        })
    }
}

impl fmt::Debug for Hl7 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hl7")
            .field("plugins", &self.inner.plugins.len())
            .finish()
    }
}

/// What is known of one inbound message while it is handled: its size and parse result (the
/// parsed message shares the frame's buffer). Telemetry observers receive it.
///
/// `Debug` prints MSH metadata only.
pub struct Inbound {
    size: usize,
    /// The parsed message (it holds the payload), or why the payload is not HL7 and the payload
    /// itself, for the best-effort AR.
    parsed: Result<Message, (ParseError, Bytes)>,
    /// Where the payload stopped being HL7 (only when it is not).
    error_offset: Option<usize>,
    /// The store id the pipeline recorded ([`Request::set_store_id`]), when the message log
    /// is on.
    store_id: Option<StoreIdSlot>,
    /// For a batch: what became of it, filled in by its handler so that observers can report
    /// each of its messages.
    batch: Option<BatchSlot>,
}

/// Where a batch's handler leaves its outcome for the observers.
pub(crate) type BatchSlot = Arc<OnceLock<BatchOutcome>>;

/// What became of a batch.
#[derive(Debug)]
pub(crate) enum BatchOutcome {
    /// The envelope was refused (one AR for the whole batch), for this reason.
    Refused(crate::hl7::BatchError),
    /// Its first messages (see [`reportable`]), each with what it was answered (`None`: no
    /// ACK, as its MSH-15 asked), and the ACK codes of the ones after them.
    Handled {
        messages: Vec<(Inbound, Option<Ack>)>,
        more: Vec<Option<AckCode>>,
    },
}

/// How many messages of a batch of `len` bytes the observers (log lines, metrics, the
/// snapshot) get one by one: up to 1000, and one per 256 bytes of the batch (at least 16), so
/// that what they hold (a parsed header and an ACK each, some hundreds of bytes) stays near the
/// batch's own size however small its messages are. The rest are counted by ACK code.
pub(crate) fn reportable(len: usize) -> usize {
    (len / 256).clamp(16, 1000)
}

impl Inbound {
    /// The metadata of one payload: a frame's ([`Hl7::meta`]) or one message of a batch.
    fn of(bytes: &Bytes, inner: &Hl7Inner) -> Inbound {
        let parsed =
            Message::parse_with(bytes.clone(), &inner.parse).map_err(|e| (e, bytes.clone()));
        Inbound {
            size: bytes.len(),
            error_offset: parsed
                .as_ref()
                .err()
                .and_then(|(error, raw)| error.offset(raw, &inner.parse)),
            parsed,
            store_id: inner.message_log.then(|| Arc::new(OnceLock::new())),
            batch: None,
        }
    }

    /// What became of a batch, once its handler has run: `None` for a single message, and for
    /// a batch whose handler failed as a whole (its deadline).
    pub(crate) fn batch_outcome(&self) -> Option<&BatchOutcome> {
        self.batch.as_ref()?.get()
    }

    /// Size of the frame payload in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The parsed message, unless the payload was not HL7 (or was a batch).
    pub fn message(&self) -> Option<&Message> {
        self.parsed.as_ref().ok()
    }

    /// Whether the payload is a batch (it starts with FHS or BHS): its messages are handled
    /// one by one and answered together ([`Ack::batch`]); [`Inbound::message`] is `None`.
    pub fn is_batch(&self) -> bool {
        match &self.parsed {
            Ok(_) => false,
            Err((_, raw)) => is_batch(raw),
        }
    }

    /// Why the payload could not be parsed, if it could not.
    pub fn parse_error(&self) -> Option<&ParseError> {
        self.parsed.as_ref().err().map(|(error, _)| error)
    }

    /// MSH-9.1, the message code (`ADT`).
    pub fn message_code(&self) -> Option<&str> {
        self.message()?.message_code()
    }

    /// MSH-9.2, the trigger event (`A01`).
    pub fn trigger_event(&self) -> Option<&str> {
        self.message()?.trigger_event()
    }

    /// MSH-9.1 as bytes, not checked again (for metric attributes).
    pub(crate) fn message_code_bytes(&self) -> Option<&[u8]> {
        self.message()?.message_code_bytes()
    }

    /// MSH-9.2 as bytes, not checked again (for metric attributes).
    pub(crate) fn trigger_event_bytes(&self) -> Option<&[u8]> {
        self.message()?.trigger_event_bytes()
    }

    /// MSH-10, the message control ID.
    pub fn control_id(&self) -> Option<&str> {
        self.message()?.control_id()
    }

    /// MSH-10 as text, decoded per MSH-18 (a Latin-1 id too; see
    /// [`Message::control_id_text`]).
    pub fn control_id_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.message()?.control_id_text()
    }

    /// MSH-12, the version ID.
    pub fn version(&self) -> Option<&str> {
        self.message()?.version()
    }

    /// When the payload is not HL7: the offset of the offending byte in it
    /// ([`ParseError::offset`]).
    pub fn error_offset(&self) -> Option<usize> {
        self.error_offset
    }

    /// The id under which the pipeline stored the message
    /// ([`Request::set_store_id`](crate::app::Request::set_store_id)), when the message log is
    /// on and it was recorded.
    pub fn store_id(&self) -> Option<&str> {
        self.store_id.as_ref()?.get().map(|id| &**id)
    }
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("size", &self.size())
            .field("message_code", &self.message_code())
            .field("trigger_event", &self.trigger_event())
            .field("control_id", &self.control_id())
            .field("parsed", &self.parsed.is_ok())
            .finish()
    }
}

/// The per-connection codec: MLLP frames in, encoded ACKs out.
#[derive(Debug)]
pub struct Hl7Codec {
    frame: MllpCodec,
}

impl Decoder for Hl7Codec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        self.frame.decode(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        self.frame.decode_eof(src)
    }
}

impl Encoder<Ack> for Hl7Codec {
    type Error = FrameError;

    fn encode(&mut self, ack: Ack, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.frame.encode(ack.into_bytes(), dst)
    }
}

impl Protocol for Hl7 {
    type Request = Bytes;
    type Response = Ack;
    type Meta = Inbound;
    type Error = FrameError;
    type Codec = Hl7Codec;

    fn codec(&self) -> Hl7Codec {
        Hl7Codec {
            frame: self.inner.codec.clone(),
        }
    }

    fn meta(&self, request: &Bytes) -> Inbound {
        let mut meta = Inbound::of(request, &self.inner);
        if meta.parsed.is_err() && is_batch(request) {
            meta.batch = Some(Arc::new(OnceLock::new()));
        }
        meta
    }

    fn handle(
        &self,
        request: Bytes,
        meta: &Inbound,
        connection: &ConnectionInfo,
    ) -> impl Future<Output = Option<Ack>> + Unpin + Send + 'static {
        self.answer(request, meta, connection, None)
    }

    fn handle_leased(
        &self,
        request: Bytes,
        meta: &Inbound,
        connection: &ConnectionInfo,
        lease: &Lease,
    ) -> impl Future<Output = Option<Ack>> + Unpin + Send + 'static {
        // The request carries the lease to the pipeline: a store keeps it (in its `Record`)
        // for as long as its write runs, even past the handler timeout.
        self.answer(request, meta, connection, Some(lease.clone()))
    }

    fn request_overhead(&self, request: &Bytes) -> usize {
        // The parse index: drawn from `max_buffered_bytes` before the parse allocates it.
        Message::index_size_bound(request, &self.inner.parse)
    }

    fn request_overhead_ceiling(&self, request: &Bytes) -> Option<usize> {
        // From the length alone: a 1 MiB message is not read an extra time to count its
        // delimiters while the budget has room for the loose bound.
        Some(Message::index_size_ceiling(request.len()))
    }

    fn meta_overhead(&self, meta: &Inbound) -> usize {
        meta.message().map_or(0, Message::index_size)
    }

    fn handler_timeout(&self, meta: &Inbound) -> Option<std::time::Duration> {
        self.inner
            .deadlines
            .for_message(meta.message_code_bytes(), meta.trigger_event_bytes())
    }

    fn on_failure(&self, meta: &Inbound, failure: &Failure) -> Option<Ack> {
        // The handler's own text (a panic message) may hold anything: the partner gets a fixed
        // text naming the kind of failure, never the payload of the panic.
        let text = match failure {
            Failure::TimedOut(_) => "application internal error: processing timed out",
            Failure::Panicked(_) => "application internal error: handler failed",
            _ => "application internal error",
        };
        let response = Response::error(ErrorCode::ApplicationInternalError, text);
        let ack = match &meta.parsed {
            Ok(message) => finish(&self.inner, message, response, Vec::new(), false),
            // The whole batch failed (its deadline covers every message): one AE for it.
            Err((_, raw)) if is_batch(raw) => Some(Ack::reject_batch(
                raw,
                AckCode::AE,
                &[Diagnostic::error(ErrorCode::ApplicationInternalError, text)],
                &self.inner.ack,
            )),
            Err((error, raw)) => Some(Ack::reject_unparseable(
                raw,
                &error.to_diagnostic(),
                &self.inner.ack,
            )),
        };
        // The span is completed by `SpanRecorder` from the exception event, which also covers
        // the policies that never ask for an answer.
        ack
    }

    fn frame_in_progress(&self, codec: &Hl7Codec) -> bool {
        codec.frame.in_frame()
    }

    fn error_kind(&self, error: &FrameError) -> &'static str {
        error.kind()
    }

    fn error_offset(&self, error: &FrameError) -> Option<u64> {
        error.offset()
    }

    fn connection_span(&self, connection: &ConnectionInfo) -> Span {
        let span = tracing::info_span!(
            "mllp.connection",
            mllp.connection.id = connection.id() as i64,
            network.peer.address = %connection.peer().ip(),
            network.peer.port = i64::from(connection.peer().port()),
            server.port = i64::from(connection.local().port()),
            network.transport = "tcp",
            tls = connection.tls(),
            tls.client.subject = connection.peer_identity(),
            close_reason = field::Empty,
            messages = field::Empty,
        );
        // The runtime opens this span once per connection (after the handshake, or when it
        // failed), so this is where the documented `mllp.connection.start` event is emitted,
        // inside the span (an OpenTelemetry span event). Nothing is computed when nobody
        // listens (the callsite's interest is checked first).
        tracing::event!(
            name: "mllp.connection.start",
            target: EVENTS_TARGET,
            parent: &span,
            tracing::Level::DEBUG,
            mllp.connection.id = connection.id() as i64,
            network.peer.address = connection.peer_ip(),
            network.peer.port = i64::from(connection.peer().port()),
            server.port = i64::from(connection.local().port()),
            tls = connection.tls(),
            system_time = unix_nanos(std::time::SystemTime::now()),
            "mllp.connection.start"
        );
        span
    }

    fn message_span(
        &self,
        connection_span: &Span,
        connection: &ConnectionInfo,
        meta: &Inbound,
    ) -> Span {
        // Nobody listening for this span (no subscriber, or a filter that drops it): no draw and
        // no use of the per-second limit, one cached check.
        if !tracing::span_enabled!(tracing::Level::INFO) || !self.inner.sampler.sample() {
            return Span::none();
        }
        // A root span linked to the connection: MLLP links live for days, and a trace per
        // message keeps traces short in Jaeger/Tempo (docs/telemetry.md explains the choice).
        let span = tracing::info_span!(
            parent: None,
            "mllp.message",
            otel.kind = "server",
            otel.status_code = field::Empty,
            otel.status_description = field::Empty,
            error.type = field::Empty,
            mllp.connection.id = connection.id() as i64,
            network.peer.address = connection.peer_ip(),
            network.peer.port = i64::from(connection.peer().port()),
            server.port = i64::from(connection.local().port()),
            network.transport = "tcp",
            mllp.message.size = meta.size() as i64,
            mllp.response.size = field::Empty,
            hl7.message_type = meta.message_code(),
            hl7.trigger_event = meta.trigger_event(),
            hl7.control_id = meta
                .control_id_text()
                .as_deref()
                .map(crate::hl7::logged_control_id)
                .as_deref(),
            hl7.version = meta.version(),
            hl7.ack_code = field::Empty,
        );
        span.follows_from(connection_span);
        span
    }
}

/// The `tracing` target of the telemetry events; re-exported as
/// [`telemetry::EVENTS_TARGET`](crate::telemetry::EVENTS_TARGET), which sits above this module.
pub(crate) const EVENTS_TARGET: &str = "mllp::events";

/// Nanoseconds since the Unix epoch, as an `i64` (tracing-opentelemetry exports `u64` as text).
fn unix_nanos(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// One message's answer: the plugins, then the pipeline, then the ACK stage.
///
/// Written by hand rather than as an `async` block so that it is `Unpin` and small: the runtime
/// polls it where it is, and only a handler that is still pending is moved into a task. The
/// first poll runs the plugins and calls the pipeline (user code, inside the runtime's
/// `catch_unwind`).
struct HandleFuture(Handle);

enum Handle {
    Unparseable {
        inner: Arc<Hl7Inner>,
        raw: Bytes,
        diagnostic: Diagnostic,
    },
    Start {
        inner: Arc<Hl7Inner>,
        message: Message,
        connection: ConnectionInfo,
        lease: Option<Lease>,
        store_id: Option<StoreIdSlot>,
    },
    Running {
        inner: Arc<Hl7Inner>,
        message: Message,
        attached: Vec<Diagnostic>,
        response: BoxFuture<Response>,
    },
    Batch(BoxFuture<Option<Ack>>),
    Done,
}

impl Future for HandleFuture {
    type Output = Option<Ack>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Ack>> {
        let state = &mut self.get_mut().0;
        loop {
            match std::mem::replace(state, Handle::Done) {
                Handle::Unparseable {
                    inner,
                    raw,
                    diagnostic,
                } => {
                    return Poll::Ready(Some(Ack::reject_unparseable(
                        &raw,
                        &diagnostic,
                        &inner.ack,
                    )));
                }
                Handle::Start {
                    inner,
                    message,
                    connection,
                    lease,
                    store_id,
                } => {
                    let mut request = Request::new(message.clone(), connection)
                        .with_store_id_slot(store_id)
                        .with_meter(inner.meter.clone());
                    if let Some(lease) = lease {
                        request = request.with_lease(lease);
                    }
                    for plugin in &inner.plugins {
                        if let Err(response) = plugin.inspect(&mut request) {
                            let attached = request.diagnostics().to_vec();
                            return Poll::Ready(finish(&inner, &message, response, attached, true));
                        }
                    }
                    let attached = request.diagnostics().to_vec();
                    // A plugin that attached an error without returning a rejection still
                    // refused the message: it is never routed, and never answered as accepted.
                    if attached.iter().any(|d| is_error(d.severity)) {
                        let refused = Response::new(Status::Rejected, Vec::new());
                        return Poll::Ready(finish(&inner, &message, refused, attached, true));
                    }
                    // These go to the ACK from here; what middleware adds later, the handler
                    // stage adds to its response.
                    request.mark_diagnostics_carried();
                    let response = inner.pipeline.run(request);
                    *state = Handle::Running {
                        inner,
                        message,
                        attached,
                        response,
                    };
                }
                Handle::Running {
                    inner,
                    message,
                    attached,
                    mut response,
                } => {
                    return match response.as_mut().poll(cx) {
                        Poll::Ready(response) => {
                            Poll::Ready(finish(&inner, &message, response, attached, true))
                        }
                        Poll::Pending => {
                            *state = Handle::Running {
                                inner,
                                message,
                                attached,
                                response,
                            };
                            Poll::Pending
                        }
                    };
                }
                Handle::Batch(mut batch) => {
                    return match batch.as_mut().poll(cx) {
                        Poll::Ready(ack) => Poll::Ready(ack),
                        Poll::Pending => {
                            *state = Handle::Batch(batch);
                            Poll::Pending
                        }
                    };
                }
                Handle::Done => panic!("HandleFuture polled after completion"),
            }
        }
    }
}

/// A batch: a malformed envelope is one AR; otherwise each message goes through the plugins,
/// the router (and its store layer) and the ACK stage on its own, in order, as if it had come
/// in its own frame, and the answers are sent back as one batch acknowledgment. The runtime's
/// deadline (`handler_timeout`) covers the whole batch.
async fn handle_batch(
    inner: Arc<Hl7Inner>,
    raw: Bytes,
    connection: ConnectionInfo,
    outcome: Option<BatchSlot>,
) -> Option<Ack> {
    let batch = match Batch::parse(raw.clone(), &inner.parse) {
        Ok(batch) => batch,
        Err(error) => {
            let diagnostic = Diagnostic::error(error.error_code(), error.to_string());
            if let Some(slot) = &outcome {
                let _ = slot.set(BatchOutcome::Refused(error));
            }
            return Some(Ack::reject_batch(
                &raw,
                AckCode::AR,
                &[diagnostic],
                &inner.ack,
            ));
        }
    };
    let mut answers = Vec::with_capacity(batch.groups().len());
    let mut handled = Vec::new();
    let mut more = Vec::new();
    let reportable = reportable(raw.len());
    for group in batch.groups() {
        let mut acks = Vec::with_capacity(group.messages().len());
        for bytes in group.messages() {
            let meta = Inbound::of(bytes, &inner);
            let handle = match &meta.parsed {
                Ok(message) => Handle::Start {
                    inner: Arc::clone(&inner),
                    message: message.clone(),
                    connection: connection.clone(),
                    // The batch's own request holds the connection's lease for all of it.
                    lease: None,
                    store_id: meta.store_id.clone(),
                },
                Err((error, _)) => Handle::Unparseable {
                    inner: Arc::clone(&inner),
                    raw: bytes.clone(),
                    diagnostic: error.to_diagnostic(),
                },
            };
            let ack = HandleFuture(handle).await;
            if outcome.is_some() {
                if handled.len() < reportable {
                    // Parsed again for the observers (the same result): the handler's copy may
                    // hold a field index that they never read.
                    let parsed = meta.parsed.and_then(|_| {
                        Message::parse_with(bytes.clone(), &inner.parse)
                            .map_err(|e| (e, bytes.clone()))
                    });
                    handled.push((Inbound { parsed, ..meta }, ack.clone()));
                } else {
                    more.push(ack.as_ref().map(Ack::code));
                }
            }
            acks.extend(ack);
        }
        answers.push(acks);
    }
    if let Some(slot) = &outcome {
        let _ = slot.set(BatchOutcome::Handled {
            messages: handled,
            more,
        });
    }
    Some(Ack::batch(&batch, &answers, &inner.ack))
}

/// The ACK stage: one outcome in, at most one acknowledgment out.
///
/// A handler's own reply is checked and sent as it is (AE 207 when it is not HL7), whatever
/// MSH-15 says.
///
/// With MSH-15 (accept acknowledgment type) present the message is in enhanced mode: the answer
/// is an accept ACK (CA/CE/CR), sent or not per the MSH-15 rule. Otherwise, or with
/// `AckOptions::original_mode_only`, original mode (AA/AE/AR), always sent.
///
/// `in_span`: called while the message span is entered (from the handler future), so a failure
/// that MSH-15 keeps from being answered can still be marked on it.
fn finish(
    inner: &Hl7Inner,
    message: &Message,
    mut response: Response,
    mut diagnostics: Vec<Diagnostic>,
    in_span: bool,
) -> Option<Ack> {
    if let Some(reply) = response.take_reply() {
        match reply.finish(message) {
            Ok(reply) => return Some(reply),
            Err(error) => {
                // The reason names positions only; the reply itself is never logged.
                tracing::warn!(
                    error = %error,
                    hl7.control_id = crate::hl7::logged_control_id(
                        message.control_id().unwrap_or_default()
                    )
                    .as_ref(),
                    "handler reply refused, answered AE 207"
                );
                response = Response::error(
                    ErrorCode::ApplicationInternalError,
                    "application internal error: invalid reply",
                );
            }
        }
    }
    let (status, extra) = response.into_parts();
    diagnostics.extend(extra);
    // Errors first (stable: each in the order it was added), so MSA-3 and the first ERR, which
    // senders read, name what went wrong rather than an earlier warning.
    diagnostics.sort_by_key(|d| !is_error(d.severity));
    let requirement = message
        .accept_ack_type()
        .filter(|_| !inner.ack.original_mode_only);
    let enhanced = requirement.is_some();
    if enhanced && !accept_ack_wanted(requirement, status == Status::Accepted) {
        if in_span && status != Status::Accepted {
            // No ACK goes out (MSH-15 = NE or SU), but the message failed: its span says so,
            // with the code the ACK would have carried (the runtime only sees "no answer").
            let span = Span::current();
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", status.ack_code(true).as_str());
        }
        return None;
    }
    Some(Ack::build(
        message,
        status.ack_code(enhanced),
        &diagnostics,
        &inner.ack,
    ))
}

/// Whether a diagnostic says the message was not (fully) processed: `E` or `F`.
fn is_error(severity: Severity) -> bool {
    matches!(severity, Severity::Error | Severity::Fatal)
}

/// An `Inbound` for a message of type `code^event`, for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn test_inbound(code: &str, event: &str) -> Inbound {
    let message = format!("MSH|^~\\&|A|B|C|D|20240101||{code}^{event}|1|P|2.5\r");
    let bytes = Bytes::from(message);
    Inbound {
        size: bytes.len(),
        parsed: Message::parse(bytes.clone()).map_err(|error| (error, bytes)),
        error_offset: None,
        store_id: None,
        batch: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ratio is honoured: all, none, and about a quarter over many draws.
    #[test]
    fn sampler_keeps_the_configured_fraction() {
        let n = 100_000;
        let count = |ratio: f64| {
            let sampler = Sampler::new(ratio, None);
            (0..n).filter(|_| sampler.sample()).count()
        };
        assert_eq!(count(1.0), n);
        assert_eq!(count(0.0), 0);
        let quarter = count(0.25) as f64 / n as f64;
        assert!((0.23..0.27).contains(&quarter), "sampled {quarter}");
    }

    /// The limit admits at most its count in each second of (tokio's) time, the count starts
    /// afresh every second, and a limit of 0 admits nothing.
    #[tokio::test(start_paused = true)]
    async fn trace_limit_admits_its_count_per_second() {
        let sampler = Sampler::new(1.0, Some(3));
        let traced = || (0..10).filter(|_| sampler.sample()).count();
        assert_eq!(traced(), 3);
        tokio::time::advance(std::time::Duration::from_millis(999)).await;
        assert_eq!(traced(), 0, "still the first second");
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
        assert_eq!(traced(), 3);
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert_eq!(traced(), 3);
        assert_eq!(
            (0..10)
                .filter(|_| Sampler::new(1.0, Some(0)).sample())
                .count(),
            0
        );
    }

    /// The ratio applies first and the limit counts only what it let through: with ratio 0 the
    /// limit is never used up.
    #[tokio::test(start_paused = true)]
    async fn trace_limit_counts_only_messages_the_ratio_kept() {
        let sampler = Sampler::new(0.0, Some(3));
        assert_eq!((0..10).filter(|_| sampler.sample()).count(), 0);
        let limit = sampler.limit.as_ref().expect("a limit");
        assert_eq!(limit.window.load(Ordering::Relaxed) as u32, 0);
    }
}

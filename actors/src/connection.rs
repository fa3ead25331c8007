//! One connection: a temporary actor that owns a spawned I/O task.
//!
//! The actor is the connection's place in the supervision tree: it is linked to the
//! [`ConnectionSupervisor`](crate::supervisor), so its end (clean, failed or killed) always
//! reaches the supervisor as a ractor `SupervisionEvent`, and it is never restarted (its socket
//! is gone). The socket work runs in a task the actor spawns in `post_start` and aborts when its
//! state is dropped, so the actor's mailbox is never blocked by I/O: a `Stop` or `Kill` is
//! served at once.
//!
//! The I/O task, in order: the transport handshake (under `handshake_timeout`), then a loop that
//! reads a request only while the connection is below `max_in_flight`, runs each request's
//! handler under its deadline ([`crate::handler_task`]), and writes the responses in arrival order under
//! `write_timeout`. It ends with a [`CloseReason`], which it leaves in the shared
//! [`ConnStats`] before stopping the actor; a panic in the task is caught and turned into an
//! actor failure.
//!
//! Ending, by cause:
//! - peer EOF: stop reading, answer what is in flight (the peer may have only half-closed),
//!   close as `PeerClosed`; a codec error, a read error or a frame timeout end the same way,
//!   with their own reason (responses already due are still written);
//! - a write error or timeout, or the `Close` handler-failure policy: close at once, aborting
//!   the handlers still in flight (each reported as `Failure::Aborted`);
//! - shutdown: stop reading, answer what is in flight, close as `Shutdown`; at the grace
//!   deadline, abort what is left and close as `Aborted` (or `Shutdown` if nothing was left).
//!
//! # Cancel safety
//!
//! Each turn first checks the shutdown and abort flags (atomics), then polls, in order, the
//! oldest in-flight handler, the server-wide handler permit, the next read, and the control
//! waker (registered with the server's `Control`, which wakes every connection when shutdown or
//! abort begins; polled only when nothing else is ready, it costs an atomic swap, not a lock
//! shared by every connection). Nothing is lost between turns: reads go into the connection's
//! own buffer (`read_buf`), deadlines are instants stored in the connection (the timers are
//! re-armed from them), handlers are tasks or finished results, and the wait for a handler
//! permit is kept, so the connection keeps its place in the semaphore's queue.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::HandlerFailurePolicy;
use crate::control::ControlStep;
use crate::event::{CloseReason, Event};
use crate::handler_task::HandlerTask;
use crate::owned::OwnedTask;
use crate::protocol::{ConnectionInfo, Failure, Protocol};
use crate::shared::Shared;
use crate::transport::Transport;
use crate::util::{deadline, panic_message};

mod stats;

pub(crate) use stats::ConnStats;

/// Spare room the read buffer keeps before a read; it grows (doubling) for larger frames.
const READ_CHUNK: usize = 2048;

/// A read buffer that grew past this (for a large frame) is let go once a request is decoded
/// and nothing else is buffered, and a write buffer that did (for a large response) once the
/// response is written: a connection keeps the memory of a large message only while it is
/// handled, not until the connection closes.
const KEEP_BUFFER: usize = 64 * 1024;

/// The connection actor. Temporary: never restarted.
pub(crate) struct Connection<P, T>(PhantomData<fn() -> (P, T)>);

impl<P, T> Connection<P, T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

pub(crate) struct ConnectionArgs<P: Protocol, T: Transport> {
    pub(crate) shared: Arc<Shared<P, T>>,
    pub(crate) socket: TcpStream,
    pub(crate) info: ConnectionInfo,
    pub(crate) stats: Arc<ConnStats>,
}

pub(crate) enum ConnectionMessage {
    /// The I/O task panicked (a bug in the runtime or the codec): fail the actor with it.
    Panicked(String),
}

/// The connection's I/O task: an actor that ends takes it (its socket, its handlers) along.
pub(crate) type ConnectionState<P, T> = OwnedTask<ConnectionArgs<P, T>>;

impl<P: Protocol, T: Transport> Actor for Connection<P, T> {
    type Msg = ConnectionMessage;
    type State = ConnectionState<P, T>;
    type Arguments = ConnectionArgs<P, T>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(OwnedTask::new(args))
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.start(|args| {
            let tasks = args.shared.tasks.clone();
            tasks.spawn(async move {
                let stats = Arc::clone(&args.stats);
                match AssertUnwindSafe(run(args)).catch_unwind().await {
                    Ok(reason) => {
                        // The socket is closed (dropped with `run`'s future) before the supervisor
                        // hears of the end, so a peer that sees the stop event also sees EOF.
                        let text = reason.as_str().to_owned();
                        stats.set_close(reason);
                        myself.stop(Some(text));
                    }
                    Err(payload) => {
                        let message = panic_message(payload);
                        stats.set_close(CloseReason::Panicked(message.clone()));
                        if let Err(unsent) = myself.cast(ConnectionMessage::Panicked(message)) {
                            drop(unsent);
                            myself.stop(None);
                        }
                    }
                }
            })
        });
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionMessage::Panicked(text) => Err(text.into()),
        }
    }
}

/// The connection's I/O, from handshake to close.
async fn run<P: Protocol, T: Transport>(args: ConnectionArgs<P, T>) -> CloseReason {
    let ConnectionArgs {
        shared,
        socket,
        info,
        stats,
    } = args;
    let control = Arc::clone(&shared.control);

    // Boxed: a TLS handshake future is large, and it should not stay in this task's state for
    // the connection's whole life.
    let handshake = Box::pin(tokio::time::timeout(
        shared.config.handshake_timeout,
        shared.transport.handshake(socket),
    ));
    let established = tokio::select! {
        biased;
        () = control.abort.cancelled() => Err(CloseReason::Shutdown),
        () = control.shutdown.cancelled() => Err(CloseReason::Shutdown),
        outcome = handshake => match outcome {
            Err(_elapsed) => Err(CloseReason::HandshakeTimeout),
            Ok(Err(error)) => Err(CloseReason::HandshakeFailed(error.to_string())),
            Ok(Ok(established)) => Ok(established),
        },
    };
    let established = match established {
        Ok(established) => established,
        Err(reason) => {
            let span = shared.protocol.connection_span(&info);
            let _ = stats.span.set(span);
            return reason;
        }
    };

    let info = if established.tls != info.tls() || established.peer_identity.is_some() {
        ConnectionInfo::new(
            info.id(),
            info.peer(),
            info.local(),
            established.tls,
            established.peer_identity,
        )
    } else {
        info
    };
    let _ = stats.established.set(info.clone());
    let span = shared.protocol.connection_span(&info);
    let _ = stats.span.set(span.clone());

    let mut conn = Conn {
        io: Io::new(established.stream, shared.protocol.codec()),
        shared,
        info,
        stats,
        span,
        queue: VecDeque::new(),
        ready: None,
        closing: None,
    };
    // The connection span is not entered around the loop: every poll would enter and exit it
    // (a clock read and a subscriber round trip each). Its events are emitted inside it
    // explicitly, and message spans are roots linked to it.
    let reason = conn.serve().await;
    conn.goodbye(&reason).await;
    reason
}

/// A request whose handler is running or has finished, in arrival order.
struct InFlight<P: Protocol> {
    meta: P::Meta,
    decoded_at: Instant,
    span: tracing::Span,
    handler: HandlerTask<P::Response>,
    outcome: Option<Result<Option<P::Response>, Failure>>,
}

/// A decoded request and its wait for a server-wide handler permit. The wait is kept across
/// turns of the loop, so the connection keeps its place in the semaphore's queue.
struct Waiting<P: Protocol> {
    request: P::Request,
    decoded_at: Instant,
    permit: Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>,
}

/// A request whose handler has finished, ready to be answered.
struct Finished<P: Protocol> {
    meta: P::Meta,
    decoded_at: Instant,
    span: tracing::Span,
    outcome: Result<Option<P::Response>, Failure>,
}

impl<P: Protocol> InFlight<P> {
    fn finished(self) -> Finished<P> {
        Finished {
            meta: self.meta,
            decoded_at: self.decoded_at,
            span: self.span,
            outcome: self
                .outcome
                .expect("poll_front returns finished requests only"),
        }
    }
}

/// What one turn of the connection loop got.
enum Step<P: Protocol> {
    Abort,
    Shutdown,
    Answered(InFlight<P>),
    Permit(OwnedSemaphorePermit),
    Read(ReadEvent<P::Request>),
}

enum ReadEvent<R> {
    Request(R),
    Closed(CloseReason),
}

struct Conn<P: Protocol, T: Transport> {
    shared: Arc<Shared<P, T>>,
    info: ConnectionInfo,
    stats: Arc<ConnStats>,
    span: tracing::Span,
    io: Io<P, T::Stream>,
    /// Handlers in arrival order; responses are written from the front.
    queue: VecDeque<InFlight<P>>,
    /// A decoded request waiting for a server-wide handler permit. While it waits, nothing more
    /// is read.
    ready: Option<Waiting<P>>,
    /// Set when the connection stops reading (peer EOF, codec error, shutdown...): the requests
    /// already in flight are answered, then the connection closes with this reason.
    closing: Option<CloseReason>,
}

impl<P: Protocol, T: Transport> Conn<P, T> {
    async fn serve(&mut self) -> CloseReason {
        let config = &self.shared.config;
        let max_in_flight = config.max_in_flight;
        let idle_timeout = config.idle_timeout;
        let frame_timeout = config.frame_timeout;
        let control = Arc::clone(&self.shared.control);
        // Woken when shutdown or abort begins; the flags are atomics read on every turn.
        let wake = control.register(self.info.id());
        loop {
            let quiet = self.queue.is_empty() && self.ready.is_none();
            if quiet && let Some(reason) = self.closing.take() {
                return reason;
            }
            // The flags are checked first on every turn (an atomic load each), so a peer that
            // keeps sending cannot keep a draining connection reading. The control branch below
            // is only polled when nothing else is ready, to register the wake-up.
            let step = if control.is_aborting() {
                Step::Abort
            } else if self.closing.is_none() && control.is_shutting_down() {
                Step::Shutdown
            } else {
                let can_read = self.closing.is_none()
                    && self.ready.is_none()
                    && self.queue.len() < max_in_flight;
                let draining = self.closing.is_some();
                let protocol = &self.shared.protocol;
                let idle = if quiet { idle_timeout } else { None };
                let (queue, ready, io) = (&mut self.queue, &mut self.ready, &mut self.io);
                // In order: the oldest handler, the handler permit, the next read, then the
                // control waker (registered only when nothing else is ready). Polled by hand so
                // that the permit wait lives in `self.ready` and keeps its place across turns.
                poll_fn(|cx| {
                    if !queue.is_empty()
                        && let Poll::Ready(done) = poll_front(queue, cx)
                    {
                        return Poll::Ready(Step::Answered(done));
                    }
                    if let Some(waiting) = ready.as_mut()
                        && let Poll::Ready(permit) = waiting.permit.as_mut().poll(cx)
                    {
                        return Poll::Ready(Step::Permit(permit));
                    }
                    if can_read
                        && let Poll::Ready(event) =
                            io.poll_next_request(protocol, idle, frame_timeout, cx)
                    {
                        return Poll::Ready(Step::Read(event));
                    }
                    wake.poll(cx, draining).map(|step| match step {
                        ControlStep::Abort => Step::Abort,
                        ControlStep::Shutdown => Step::Shutdown,
                    })
                })
                .await
            };
            let finished = match step {
                Step::Abort => {
                    if quiet {
                        // Nothing was in flight: this is a clean close, not an abort.
                        return CloseReason::Shutdown;
                    }
                    self.abort_in_flight();
                    return CloseReason::Aborted;
                }
                Step::Shutdown => {
                    self.closing = Some(CloseReason::Shutdown);
                    None
                }
                Step::Answered(done) => Some(done.finished()),
                Step::Permit(permit) => self.ready.take().and_then(|waiting| {
                    self.start(waiting.request, waiting.decoded_at, Some(permit))
                }),
                Step::Read(ReadEvent::Request(request)) => {
                    // The time its last byte arrived: the read that completed it (not moved by
                    // answers, so a frame that waited in the buffer behind another keeps it).
                    let decoded_at = self.io.last_read;
                    if let Some(permits) = &self.shared.handler_permits {
                        let permits = Arc::clone(permits);
                        self.ready = Some(Waiting {
                            request,
                            decoded_at,
                            permit: Box::pin(async move {
                                permits
                                    .acquire_owned()
                                    .await
                                    .expect("the handler semaphore is never closed")
                            }),
                        });
                        self.publish_in_flight();
                        None
                    } else {
                        self.start(request, decoded_at, None)
                    }
                }
                Step::Read(ReadEvent::Closed(reason)) => {
                    self.closing = Some(reason);
                    None
                }
            };
            if let Some(finished) = finished
                && let Err(reason) = self.answer(finished).await
            {
                self.abort_in_flight();
                return reason;
            }
        }
    }

    /// Closes the write side politely (a TLS stream sends `close_notify`, TCP a FIN) when the
    /// peer may still be listening; bounded by `write_timeout` and the abort token, so a peer
    /// that stopped reading cannot hold the connection open.
    async fn goodbye(&mut self, reason: &CloseReason) {
        if matches!(
            reason,
            CloseReason::WriteTimeout | CloseReason::Io(_) | CloseReason::Aborted
        ) {
            return;
        }
        let timeout = self.shared.config.write_timeout;
        let abort = &self.shared.control.abort;
        let stream = &mut self.io.stream;
        tokio::select! {
            biased;
            () = abort.cancelled() => {}
            _ = tokio::time::timeout(timeout, stream.shutdown()) => {}
        }
    }

    /// Emits `MessageStart` and starts the request's handler. Most handlers finish on their
    /// first poll: when nothing older is waiting for its answer, such a request is returned to
    /// be answered at once (it never enters the queue). Otherwise it is queued.
    fn start(
        &mut self,
        request: P::Request,
        decoded_at: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<Finished<P>> {
        let protocol = &self.shared.protocol;
        let meta = protocol.meta(&request);
        let span = protocol.message_span(&self.span, &self.info, &meta);
        if !self.shared.observers.is_empty() {
            self.shared.observers.emit(Event::MessageStart {
                connection: &self.info,
                meta: &meta,
            });
        }
        // `handle` may do its work before returning the future (`std::future::ready(f())`): a
        // panic there is the handler's failure too, so the future is made inside the task's
        // `catch_unwind`.
        let tasks = &self.shared.tasks;
        let limit = self.shared.config.handler_timeout;
        let info = &self.info;
        let make = || {
            protocol
                .handle(request, &meta, info)
                .instrument(span.clone())
        };
        let mut handler = match permit {
            None => HandlerTask::start(tasks, make, limit),
            Some(permit) => HandlerTask::start(
                tasks,
                || {
                    let handler = make();
                    Box::pin(async move {
                        // The server-wide permit is held for exactly as long as the handler
                        // runs.
                        let _permit = permit;
                        handler.await
                    })
                },
                limit,
            ),
        };
        if self.queue.is_empty()
            && let Some(outcome) = handler.take_done()
        {
            return Some(Finished {
                meta,
                decoded_at,
                span,
                outcome,
            });
        }
        self.queue.push_back(InFlight {
            meta,
            decoded_at,
            span,
            handler,
            outcome: None,
        });
        self.publish_in_flight();
        None
    }

    /// Requests decoded and not yet answered, for the registry.
    fn publish_in_flight(&self) {
        let waiting = usize::from(self.ready.is_some());
        self.stats
            .in_flight
            .store(self.queue.len() + waiting, Ordering::Relaxed);
    }

    /// Writes the oldest request's answer and reports it. An error closes the connection.
    async fn answer(&mut self, done: Finished<P>) -> Result<(), CloseReason> {
        self.publish_in_flight();
        let Finished {
            meta,
            decoded_at,
            span,
            outcome,
        } = done;
        let result = match outcome {
            Ok(response) => {
                let (written, result) = self.write(response).await;
                let now = self.answered_now();
                let duration = now.saturating_duration_since(decoded_at);
                let observed = !self.shared.observers.is_empty();
                if observed && result.is_err() {
                    // The answer could not be written (the peer is gone, or stopped reading):
                    // the message was not answered, which is not the same as a handler that
                    // chose to send nothing.
                    self.shared.observers.emit(Event::MessageException {
                        connection: &self.info,
                        meta: &meta,
                        duration,
                        failure: &Failure::Aborted,
                        response: None,
                        span: &span,
                    });
                } else if observed {
                    let (response, response_size) = written.unzip();
                    self.shared.observers.emit(Event::MessageStop {
                        connection: &self.info,
                        meta: &meta,
                        duration,
                        response: response.as_ref().and_then(Option::as_ref),
                        response_size: response_size.unwrap_or(0),
                        span: &span,
                    });
                }
                result
            }
            Err(failure) => {
                span.in_scope(|| {
                    tracing::warn!(
                        connection.id = self.info.id() as i64,
                        failure.kind = failure.kind(),
                        // Not the failure's text: a panic message may quote patient data.
                        "handler failed"
                    );
                });
                let policy = self.shared.config.handler_failure;
                let response = match policy {
                    HandlerFailurePolicy::RespondWithFailure => {
                        self.shared.protocol.on_failure(&meta, &failure)
                    }
                    _ => None,
                };
                let (written, result) = self.write(response).await;
                let now = self.answered_now();
                let response = written.and_then(|(response, _)| response);
                self.shared.observers.emit(Event::MessageException {
                    connection: &self.info,
                    meta: &meta,
                    duration: now.saturating_duration_since(decoded_at),
                    failure: &failure,
                    response: response.as_ref(),
                    span: &span,
                });
                match (result, policy) {
                    (Err(reason), _) => Err(reason),
                    (Ok(()), HandlerFailurePolicy::Close) => Err(CloseReason::HandlerFailure),
                    (Ok(()), _) => Ok(()),
                }
            }
        };
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// The time an answer went out (one clock read): also the start of the idle clock once
    /// nothing is left in flight.
    fn answered_now(&mut self) -> Instant {
        let now = Instant::now();
        if self.queue.is_empty() {
            self.io.last_activity = now;
        }
        now
    }

    /// Encodes and writes a response. Returns what was written, for the observers (the
    /// response itself only when observers are registered; it is cloned for them), and whether
    /// the connection can go on.
    #[allow(clippy::type_complexity)]
    async fn write(
        &mut self,
        response: Option<P::Response>,
    ) -> (
        Option<(Option<P::Response>, usize)>,
        Result<(), CloseReason>,
    ) {
        let Some(response) = response else {
            return (None, Ok(()));
        };
        let kept = (!self.shared.observers.is_empty()).then(|| response.clone());
        match self
            .io
            .write(
                response,
                &self.shared.protocol,
                self.shared.config.write_timeout,
                &self.shared.control.abort,
                &mut self.queue,
            )
            .await
        {
            Ok(size) => (Some((kept, size)), Ok(())),
            Err(reason) => (None, Err(reason)),
        }
    }

    /// Aborts every handler still queued (a policy or an I/O failure closes the connection,
    /// or the shutdown grace ran out). Each is reported once: with the failure it already had
    /// (timed out, panicked), else as `Failure::Aborted`.
    fn abort_in_flight(&mut self) {
        while let Some(entry) = self.queue.pop_front() {
            // Dropping the entry aborts its task. A handler that already failed (past its
            // deadline, or panicked) is reported with that failure; one that finished or is
            // still running was aborted.
            let failure = match entry.outcome {
                Some(Err(failure)) => failure,
                _ => Failure::Aborted,
            };
            self.shared.observers.emit(Event::MessageException {
                connection: &self.info,
                meta: &entry.meta,
                duration: entry.decoded_at.elapsed(),
                failure: &failure,
                response: None,
                span: &entry.span,
            });
            self.stats.messages.fetch_add(1, Ordering::Relaxed);
        }
        self.ready = None;
        self.stats.in_flight.store(0, Ordering::Relaxed);
    }
}

impl<P: Protocol, T: Transport> Drop for Conn<P, T> {
    /// Every path that ends the loop answers or aborts what is in flight; this covers the ones
    /// that cannot: a panic on the connection's task (in the codec, the protocol or an observer)
    /// and a kill. Each message still queued gets its one end event, as `abort_in_flight` gives
    /// it.
    fn drop(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        // An observer that panicked once may panic again: that must not become a panic in drop.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| self.abort_in_flight()));
    }
}

/// Polls every in-flight handler (so each meets its own deadline) and yields the oldest one
/// once it has finished: responses go out in arrival order.
fn poll_front<P: Protocol>(
    queue: &mut VecDeque<InFlight<P>>,
    cx: &mut Context<'_>,
) -> Poll<InFlight<P>> {
    poll_handlers(queue, cx);
    match queue.front() {
        Some(front) if front.outcome.is_some() => {
            Poll::Ready(queue.pop_front().expect("front exists"))
        }
        _ => Poll::Pending,
    }
}

/// Polls every in-flight handler that has not finished, keeping each outcome: a handler past
/// its deadline is aborted here. Registers the waker with every handler still running.
fn poll_handlers<P: Protocol>(queue: &mut VecDeque<InFlight<P>>, cx: &mut Context<'_>) {
    for entry in queue.iter_mut() {
        if entry.outcome.is_none()
            && let Poll::Ready(outcome) = Pin::new(&mut entry.handler).poll(cx)
        {
            entry.outcome = Some(outcome);
        }
    }
}

/// The socket, its codec and its buffers.
struct Io<P: Protocol, S> {
    stream: S,
    codec: P::Codec,
    read_buf: BytesMut,
    /// The read buffer grew past [`KEEP_BUFFER`]: it is replaced by an empty one when it next
    /// holds nothing after a decoded request.
    large_buffer: bool,
    write_buf: BytesMut,
    eof: bool,
    /// When the last byte arrived (or the last response went out); the idle clock starts here.
    last_activity: Instant,
    /// When the last read returned bytes: a request decoded from them arrived then.
    last_read: Instant,
    /// Set while the connection waits for the rest of a started frame.
    frame_deadline: Option<Instant>,
    /// The read timer (frame or idle deadline), created when first needed and re-armed lazily:
    /// moving the idle deadline later on every byte costs nothing until the timer fires early.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<P, S> Io<P, S>
where
    P: Protocol,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// A connection's I/O with empty buffers (allocated on first use) and its clocks at now.
    fn new(stream: S, codec: P::Codec) -> Self {
        Io {
            stream,
            codec,
            read_buf: BytesMut::new(),
            large_buffer: false,
            write_buf: BytesMut::new(),
            eof: false,
            last_activity: Instant::now(),
            last_read: Instant::now(),
            frame_deadline: None,
            timer: None,
        }
    }

    /// Decodes the next request, reading as needed. `idle` is the idle timeout when nothing is
    /// in flight. Cancel safe: every bit of progress (bytes read, deadlines) is kept in `self`.
    ///
    /// A poll function rather than an `async fn`, so that the connection loop can poll it
    /// alongside its other branches by hand, with no future built and dropped on every turn.
    fn poll_next_request(
        &mut self,
        protocol: &P,
        idle: Option<Duration>,
        frame_timeout: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<ReadEvent<P::Request>> {
        let codec_error = |error: P::Error| {
            ReadEvent::Closed(CloseReason::Protocol {
                kind: protocol.error_kind(&error),
                detail: error.to_string(),
            })
        };
        loop {
            if self.eof {
                return Poll::Ready(match self.codec.decode_eof(&mut self.read_buf) {
                    Ok(Some(request)) => ReadEvent::Request(request),
                    Ok(None) => ReadEvent::Closed(CloseReason::PeerClosed),
                    Err(error) => codec_error(error),
                });
            }
            match self.codec.decode(&mut self.read_buf) {
                Ok(Some(request)) => {
                    self.frame_deadline = None;
                    if self.large_buffer && self.read_buf.is_empty() {
                        // A zero-copy request keeps its own share of the allocation for as long
                        // as it is handled; the connection no longer holds any of it.
                        self.read_buf = BytesMut::new();
                        self.large_buffer = false;
                    }
                    return Poll::Ready(ReadEvent::Request(request));
                }
                Ok(None) => {}
                Err(error) => return Poll::Ready(codec_error(error)),
            }
            // A frame is in progress when the codec holds its bytes in the buffer, or says so
            // itself (a codec may consume a start marker before the payload arrives).
            if self.read_buf.is_empty() && !protocol.frame_in_progress(&self.codec) {
                self.frame_deadline = None;
            } else if self.frame_deadline.is_none() {
                self.frame_deadline = Some(deadline(Instant::now(), frame_timeout));
            }
            // A connection that has never sent a byte has no buffer: the first read lets
            // `read_buf` allocate a small one (64 bytes), so idle connections stay small. Once
            // bytes flow, the buffer grows to `READ_CHUNK`, and doubles for larger frames; one
            // grown past `KEEP_BUFFER` is let go after its frame (see above).
            let capacity = self.read_buf.capacity();
            if capacity > 0 && capacity - self.read_buf.len() < READ_CHUNK / 2 {
                self.read_buf.reserve(READ_CHUNK.max(self.read_buf.len()));
                self.large_buffer |= self.read_buf.capacity() > KEEP_BUFFER;
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf)
            {
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    continue;
                }
                Poll::Ready(Ok(_)) => {
                    self.last_read = Instant::now();
                    self.last_activity = self.last_read;
                    continue;
                }
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(ReadEvent::Closed(CloseReason::Io(error.to_string())));
                }
                Poll::Pending => {}
            }
            // Nothing to read yet: wait on the deadline that applies, if any.
            let (at, reason) = match (self.frame_deadline, idle) {
                (Some(at), _) => (at, CloseReason::FrameTimeout),
                (None, Some(idle)) => (deadline(self.last_activity, idle), CloseReason::Idle),
                (None, None) => return Poll::Pending,
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() > at {
                timer.as_mut().reset(at);
            }
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= at => {
                    return Poll::Ready(ReadEvent::Closed(reason));
                }
                // Armed for an older, earlier deadline: re-arm and wait again.
                Poll::Ready(()) => timer.as_mut().reset(at),
            }
        }
    }

    /// Encodes and writes one response under `timeout`; returns its encoded size. While a write
    /// waits for the peer, the handlers in `queue` are still polled, so each meets its deadline.
    async fn write(
        &mut self,
        response: P::Response,
        protocol: &P,
        timeout: Duration,
        abort: &CancellationToken,
        queue: &mut VecDeque<InFlight<P>>,
    ) -> Result<usize, CloseReason> {
        self.write_buf.clear();
        if let Err(error) = self.codec.encode(response, &mut self.write_buf) {
            return Err(CloseReason::Protocol {
                kind: protocol.error_kind(&error),
                detail: error.to_string(),
            });
        }
        let size = self.write_buf.len();
        let stream = &mut self.stream;
        let buf = &mut self.write_buf;
        // Most writes complete at once (the socket buffer has room): tried once first, such a
        // write never arms the timer nor touches the abort token. The buffer keeps the progress,
        // so the second attempt goes on where the first stopped.
        let first = poll_fn(|cx| Poll::Ready(poll_send(stream, buf, cx))).await;
        let result = match first {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => tokio::select! {
                biased;
                result = tokio::time::timeout(timeout, poll_fn(|cx| poll_send(stream, buf, cx))) => result,
                () = abort.cancelled() => return Err(CloseReason::Aborted),
                // Never ready: keeps the handlers' deadlines running during a slow write.
                () = poll_fn(|cx| {
                    poll_handlers(queue, cx);
                    Poll::<()>::Pending
                }) => unreachable!("never ready"),
            },
        };
        if self.write_buf.capacity() > KEEP_BUFFER {
            // A large response (an ACK echoes fields of its message) is not kept around for the
            // connection's life.
            self.write_buf = BytesMut::new();
        }
        match result {
            Ok(Ok(())) => Ok(size),
            Err(_elapsed) => Err(CloseReason::WriteTimeout),
            Ok(Err(error)) if self.eof && is_disconnect(&error) => Err(CloseReason::PeerClosed),
            Ok(Err(error)) => Err(CloseReason::Io(error.to_string())),
        }
    }
}

/// Writes all of `buf` (advancing it), then flushes: a TLS stream sends its records only then.
fn poll_send<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    while !buf.is_empty() {
        let written = ready!(tokio_util::io::poll_write_buf(
            Pin::new(&mut *stream),
            cx,
            buf
        ))?;
        if written == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
    }
    Pin::new(stream).poll_flush(cx)
}

/// A write failed because the peer is gone (after it half-closed, this is its full close).
fn is_disconnect(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
    )
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{LinesCodec, LinesCodecError};

    use super::*;

    /// Lines in, lines out; the codec copies each line out of the read buffer, so the buffer's
    /// allocation is the connection's alone.
    struct Lines;

    impl Protocol for Lines {
        type Request = String;
        type Response = String;
        type Meta = ();
        type Error = LinesCodecError;
        type Codec = LinesCodec;

        fn codec(&self) -> LinesCodec {
            LinesCodec::new()
        }

        fn meta(&self, _request: &String) {}

        fn handle(
            &self,
            request: String,
            _meta: &(),
            _connection: &ConnectionInfo,
        ) -> impl Future<Output = Option<String>> + Unpin + Send + 'static {
            std::future::ready(Some(request))
        }

        fn on_failure(&self, _meta: &(), _failure: &Failure) -> Option<String> {
            None
        }
    }

    fn io<S>(stream: S) -> Io<Lines, S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        Io::new(stream, Lines.codec())
    }

    async fn next_line<S>(io: &mut Io<Lines, S>) -> String
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let event = poll_fn(|cx| io.poll_next_request(&Lines, None, Duration::from_secs(60), cx));
        match event.await {
            ReadEvent::Request(line) => line,
            ReadEvent::Closed(reason) => panic!("closed: {reason:?}"),
        }
    }

    /// One large request grows the read buffer; once it is decoded and nothing else is
    /// buffered, the connection lets that memory go: an idle connection does not keep the
    /// buffer of its largest message until it closes.
    #[tokio::test]
    async fn read_buffer_shrinks_after_a_large_request() {
        const LARGE: usize = 1 << 20;
        let (mut peer, server) = tokio::io::duplex(4 * LARGE);
        let mut io = io(server);
        let mut line = vec![b'x'; LARGE];
        line.push(b'\n');
        peer.write_all(&line).await.unwrap();
        assert_eq!(next_line(&mut io).await.len(), LARGE);
        peer.write_all(b"small\n").await.unwrap();
        assert_eq!(next_line(&mut io).await, "small");
        // What the buffer still owns without allocating: a released buffer has only a small
        // one; a kept one can take back the large request's whole allocation.
        assert!(
            !io.read_buf.try_reclaim(LARGE / 2),
            "the read buffer kept the large request's allocation"
        );
        assert!(io.read_buf.capacity() <= 2 * READ_CHUNK);
    }

    /// A large response is written from a buffer that then lets that memory go: the next
    /// (small) response does not find the large one's allocation still held.
    #[tokio::test]
    async fn write_buffer_shrinks_after_a_large_response() {
        const LARGE: usize = 1 << 20;
        let (mut peer, server) = tokio::io::duplex(4 * LARGE);
        let mut io = io(server);
        let abort = CancellationToken::new();
        let mut queue = VecDeque::new();
        let timeout = Duration::from_secs(60);
        let size = io
            .write("y".repeat(LARGE), &Lines, timeout, &abort, &mut queue)
            .await
            .unwrap();
        assert_eq!(size, LARGE + 1);
        io.write("small".to_owned(), &Lines, timeout, &abort, &mut queue)
            .await
            .unwrap();
        let mut received = vec![0; LARGE + 1 + 6];
        tokio::io::AsyncReadExt::read_exact(&mut peer, &mut received)
            .await
            .unwrap();
        assert!(received.ends_with(b"\nsmall\n"));
        assert!(
            !io.write_buf.try_reclaim(LARGE / 2),
            "the write buffer kept the large response's allocation"
        );
    }
}

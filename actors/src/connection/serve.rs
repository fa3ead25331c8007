//! The request loop of one connection, from the established stream to the close: it reads a
//! request only while the connection is below `max_in_flight` (the requests in its queue, plus
//! answered ones whose [`Lease`] is still held by work their handler handed off), starts each
//! request's handler under its deadline, and answers in arrival order; then it closes the write
//! side politely.
//!
//! # Cancel safety
//!
//! Each turn first checks the shutdown and abort flags (atomics), then polls, in order, the
//! next read (so requests a pipelining peer already sent are started before any is answered,
//! and the answers that are ready together go out in one write), the oldest in-flight handler,
//! the server-wide handler permit, and the control waker (registered with the server's `Control`, which wakes every connection when shutdown or
//! abort begins; polled only when nothing else is ready, it costs an atomic swap, not a lock
//! shared by every connection). Nothing is lost between turns: reads go into the connection's
//! own buffer (`read_buf`), deadlines are instants stored in the connection (the timers are
//! re-armed from them), handlers are tasks or finished results, and the wait for a handler
//! permit is kept, so the connection keeps its place in the semaphore's queue.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::in_flight::{Finished, InFlight, poll_front, poll_handlers};
use super::io::{Io, ReadEvent};
use super::stats::ConnStats;
use crate::budget::{Allocation, Charge, Memory};
use crate::config::HandlerFailurePolicy;
use crate::control::ControlStep;
use crate::event::{CloseReason, Event};
use crate::handler_task::HandlerTask;
use crate::lease::{self, Lease, Lingering};
use crate::protocol::{ConnectionInfo, Failure, Protocol};
use crate::shared::Shared;
use crate::transport::Transport;

/// The most answers one write carries (see [`Conn::answer`]).
const MAX_COALESCED: usize = 64;

/// What one answer of a coalesced write put in the write buffer.
enum Written<R> {
    /// Not encoded: an earlier response could not be, or this one could not.
    NotEncoded,
    /// The handler chose to send nothing.
    Nothing,
    /// Encoded: `size` bytes, and the response itself when observers want it.
    Encoded { kept: Option<R>, size: usize },
}

/// What a decoded request needs before its handler starts: its overhead drawn from the memory
/// budget (`max_buffered_bytes`), and a server-wide handler permit (`max_concurrent_handlers`).
struct Admission {
    overhead: Charge,
    handler: Option<OwnedSemaphorePermit>,
}

/// A decoded request and its wait for its [`Admission`]. The wait is kept across turns of the
/// loop, so the connection keeps its place in the semaphores' queues.
struct Waiting<P: Protocol> {
    request: P::Request,
    decoded_at: Instant,
    allocation: Option<Allocation>,
    admission: Pin<Box<dyn Future<Output = Admission> + Send>>,
}

/// What one turn of the connection loop got.
enum Step<P: Protocol> {
    Abort,
    Shutdown,
    Close,
    Answered(InFlight<P>),
    Admitted(Admission),
    Read(ReadEvent<P::Request>),
    /// Draining, and no request was part-way in when the drain began (bytes that had arrived
    /// by then were read first).
    Drained,
}

/// One established connection and its requests in flight.
pub(super) struct Conn<P: Protocol, T: Transport> {
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
    /// A drain (or an embedder's close) began while a request may be part-way in: reading
    /// goes on until that one request is complete, so that a sender in the middle of a message
    /// gets its answer instead of a cut connection. Bounded by the frame timeout and the grace.
    finishing: bool,
    /// Answered requests whose leases are still held (work handed off by a handler that timed
    /// out): they keep their place in `max_in_flight` until the last clone is dropped.
    lingering: Arc<Lingering>,
}

impl<P: Protocol, T: Transport> Conn<P, T> {
    /// An established connection with nothing read yet.
    pub(super) fn new(
        shared: Arc<Shared<P, T>>,
        stream: T::Stream,
        info: ConnectionInfo,
        stats: Arc<ConnStats>,
        span: tracing::Span,
    ) -> Self {
        Conn {
            io: Io::new(stream, shared.protocol.codec(), shared.budget.clone())
                .report_progress_to(Arc::clone(&stats)),
            shared,
            info,
            stats,
            span,
            queue: VecDeque::new(),
            ready: None,
            closing: None,
            finishing: false,
            lingering: Arc::default(),
        }
    }

    /// Serves requests until the connection closes, and says why.
    pub(super) async fn serve(&mut self) -> CloseReason {
        let config = &self.shared.config;
        let max_in_flight = config.max_in_flight;
        let idle_timeout = config.idle_timeout;
        let frame_timeout = config.frame_timeout;
        let control = Arc::clone(&self.shared.control);
        // Woken when shutdown or abort begins; the flags are atomics read on every turn.
        let wake = control.register(self.info.id());
        loop {
            let quiet = self.queue.is_empty() && self.ready.is_none();
            if quiet
                && !self.finishing
                && let Some(reason) = self.closing.take()
            {
                return reason;
            }
            // The flags are checked first on every turn (an atomic load each), so a peer that
            // keeps sending cannot keep a draining connection reading. The control branch below
            // is only polled when nothing else is ready, to register the wake-up.
            let step = if control.is_aborting() {
                Step::Abort
            } else if self.closing.is_none() && control.is_shutting_down() {
                Step::Shutdown
            } else if self.closing.is_none() && wake.close_requested() {
                Step::Close
            } else {
                let finishing = self.finishing;
                let can_read = (self.closing.is_none() || finishing)
                    && self.ready.is_none()
                    && self.queue.len() < max_in_flight;
                let room = max_in_flight.saturating_sub(self.queue.len());
                let lingering = &*self.lingering;
                let draining = self.closing.is_some();
                let protocol = &self.shared.protocol;
                let idle = if quiet { idle_timeout } else { None };
                let (queue, ready, io) = (&mut self.queue, &mut self.ready, &mut self.io);
                // In order: the next read, the oldest handler, the handler permit, then the
                // control waker (registered only when nothing else is ready). Requests already
                // sent are read first (up to `max_in_flight`), so that the answers of those that
                // finish together go out in one write. Polled by hand so that the permit wait
                // lives in `self.ready` and keeps its place across turns.
                poll_fn(|cx| {
                    // Answered requests whose handed-off work still holds their lease keep
                    // their place too; a lease let go wakes this loop.
                    if can_read
                        && lease::poll_below(lingering, room, cx).is_ready()
                        && let Poll::Ready(event) =
                            io.poll_next_request(protocol, idle, frame_timeout, cx)
                    {
                        return Poll::Ready(Step::Read(event));
                    }
                    // What had arrived is read (above): no request part-way in, so nothing to
                    // finish.
                    if finishing && !io.mid_request() {
                        return Poll::Ready(Step::Drained);
                    }
                    if !queue.is_empty()
                        && let Poll::Ready(done) = poll_front(queue, cx)
                    {
                        return Poll::Ready(Step::Answered(done));
                    }
                    if let Some(waiting) = ready.as_mut()
                        && let Poll::Ready(admission) = waiting.admission.as_mut().poll(cx)
                    {
                        return Poll::Ready(Step::Admitted(admission));
                    }
                    wake.poll(cx, draining).map(|step| match step {
                        ControlStep::Abort => Step::Abort,
                        ControlStep::Shutdown => Step::Shutdown,
                        ControlStep::Close => Step::Close,
                    })
                })
                .await
            };
            let finished = match step {
                Step::Abort => {
                    if quiet && !self.io.mid_request() {
                        // Nothing was in flight: this is a clean close, not an abort.
                        return CloseReason::Shutdown;
                    }
                    self.abort_in_flight();
                    return CloseReason::Aborted;
                }
                Step::Shutdown => {
                    self.closing = Some(CloseReason::Shutdown);
                    self.finishing = true;
                    None
                }
                Step::Close => {
                    // Asked to close by the embedder: like a drain, for this connection only.
                    self.closing = Some(CloseReason::ServerClosed);
                    self.finishing = true;
                    None
                }
                Step::Drained => {
                    self.finishing = false;
                    None
                }
                Step::Answered(done) => Some(done.finished()),
                Step::Admitted(admission) => self.ready.take().and_then(|waiting| {
                    self.start(
                        waiting.request,
                        waiting.decoded_at,
                        waiting.allocation,
                        admission,
                    )
                }),
                Step::Read(ReadEvent::Request(request, allocation)) => {
                    // While draining, this was the one request to finish.
                    self.finishing = false;
                    self.publish_bytes_in();
                    // The time its last byte arrived: the read that completed it (not moved by
                    // answers, so a frame that waited in the buffer behind another keeps it).
                    let decoded_at = self.io.last_read;
                    match self.admit(&request, allocation.as_ref()) {
                        Ok(admission) => self.start(request, decoded_at, allocation, admission),
                        Err(admission) => {
                            self.ready = Some(Waiting {
                                request,
                                decoded_at,
                                allocation,
                                admission,
                            });
                            self.publish_in_flight();
                            None
                        }
                    }
                }
                Step::Read(ReadEvent::Closed(reason)) => {
                    self.publish_bytes_in();
                    self.closing = Some(reason);
                    self.finishing = false;
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
    pub(super) async fn goodbye(&mut self, reason: &CloseReason) {
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

    /// What `request` needs before it starts, taken now if it is there: its overhead from the
    /// memory budget, then a handler permit. Otherwise the wait for them, which holds what it
    /// already took.
    #[allow(clippy::type_complexity)]
    fn admit(
        &self,
        request: &P::Request,
        allocation: Option<&Allocation>,
    ) -> Result<Admission, Pin<Box<dyn Future<Output = Admission> + Send>>> {
        let shared = &self.shared;
        // What the request's bytes already hold: the draw of its overhead is cut so that both
        // fit in the budget together.
        let held = allocation.map_or(0, |a| a.num_permits());
        // `overhead` is what the wait below draws when `drawn` is `None`.
        let (overhead, drawn) = match &shared.budget {
            None => (0, Some(Charge::default())),
            Some(budget) => {
                // The protocol's free ceiling first, if the budget has it whole (uncut): the
                // exact overhead may cost a pass over the request, worth it only when memory
                // is short.
                let ceiling = shared
                    .protocol
                    .request_overhead_ceiling(request)
                    .filter(|&ceiling| ceiling.saturating_add(held) <= budget.total())
                    .and_then(|ceiling| budget.try_draw(ceiling, held));
                match ceiling {
                    Some(permit) => (0, Some(Charge::from(permit))),
                    None => match shared.protocol.request_overhead(request) {
                        0 => (0, Some(Charge::default())),
                        overhead => (overhead, budget.try_draw(overhead, held).map(Charge::from)),
                    },
                }
            }
        };
        let permit = match &shared.handler_permits {
            None => Some(None),
            Some(permits) => Arc::clone(permits).try_acquire_owned().ok().map(Some),
        };
        match (drawn, permit) {
            (Some(overhead), Some(handler)) => Ok(Admission { overhead, handler }),
            (drawn, permit) => {
                let budget = shared.budget.clone();
                let permits = shared.handler_permits.clone();
                Err(Box::pin(async move {
                    let overhead = match (drawn, budget) {
                        (Some(drawn), _) => drawn,
                        (None, Some(budget)) => Charge::from(budget.draw(overhead, held).await),
                        (None, None) => Charge::default(),
                    };
                    let handler = match (permit, permits) {
                        (Some(permit), _) => permit,
                        (None, Some(permits)) => Some(
                            permits
                                .acquire_owned()
                                .await
                                .expect("the handler semaphore is never closed"),
                        ),
                        (None, None) => None,
                    };
                    Admission { overhead, handler }
                }))
            }
        }
    }

    /// Emits `MessageStart` and starts the request's handler. Most handlers finish on their
    /// first poll: when nothing older is waiting for its answer, such a request is returned to
    /// be answered at once (it never enters the queue). Otherwise it is queued.
    fn start(
        &mut self,
        request: P::Request,
        decoded_at: Instant,
        allocation: Option<Allocation>,
        admission: Admission,
    ) -> Option<Finished<P>> {
        let protocol = &self.shared.protocol;
        let meta = protocol.meta(&request);
        let Admission {
            mut overhead,
            handler: permit,
        } = admission;
        if self.shared.budget.is_some() {
            // What was drawn was the most the metadata could take; keep what it took.
            overhead.trim(protocol.meta_overhead(&meta));
        }
        let span = protocol.message_span(&self.span, &self.info, &meta);
        if !self.shared.observers.is_empty() {
            self.shared.observers.emit(Event::MessageStart {
                connection: &self.info,
                meta: &meta,
                span: &span,
            });
        }
        // `handle` may do its work before returning the future (`std::future::ready(f())`): a
        // panic there is the handler's failure too, so the future is made inside the task's
        // `catch_unwind`.
        let tasks = &self.shared.tasks;
        let limit = protocol
            .handler_timeout(&meta)
            .unwrap_or(self.shared.config.handler_timeout);
        let info = &self.info;
        // The server-wide permit goes into the lease: it is held while the handler runs, until
        // the request is answered, and for as long as work the handler handed off holds a clone.
        let memory = Memory {
            allocation,
            overhead,
        };
        let lease = Lease::new(Arc::clone(&self.lingering), permit, memory);
        let make = || {
            protocol
                .handle_leased(request, &meta, info, &lease)
                .instrument(span.clone())
        };
        let mut handler = HandlerTask::start(tasks, make, limit);
        // Done at once with nothing before it: answered now, unless more requests wait in the
        // read buffer (a pipelining peer), whose answers can then share its write.
        let outcome = match handler.take_done() {
            Some(outcome) if self.queue.is_empty() && !self.io.has_buffered() => {
                return Some(Finished {
                    meta,
                    decoded_at,
                    span,
                    outcome,
                    lease,
                });
            }
            outcome => outcome,
        };
        self.queue.push_back(InFlight {
            meta,
            decoded_at,
            span,
            handler,
            outcome,
            lease,
        });
        self.publish_in_flight();
        None
    }

    /// Bytes read so far, for the registry: published once per decoded request (and at the
    /// close), not on every read.
    fn publish_bytes_in(&self) {
        self.stats
            .bytes_in
            .store(self.io.bytes_read, Ordering::Relaxed);
    }

    /// Requests decoded and not yet answered, for the registry.
    fn publish_in_flight(&self) {
        let waiting = usize::from(self.ready.is_some());
        self.stats
            .in_flight
            .store(self.queue.len() + waiting, Ordering::Relaxed);
    }

    /// Writes the oldest request's answer and reports it. An error closes the connection.
    /// Answers the oldest request, and with it every request behind it whose handler has
    /// already succeeded: their responses are encoded one after the other and go out in one
    /// write (a pipelining peer gets one segment for many ACKs, not one write each). A failed
    /// handler is answered on its own, by its failure policy.
    async fn answer(&mut self, done: Finished<P>) -> Result<(), CloseReason> {
        if done.outcome.is_err() {
            // Boxed: a rare path whose state would otherwise be part of every connection's
            // task for its whole life.
            return Box::pin(self.answer_failure(done)).await;
        }
        // Only those already known to be finished: nothing waits for a running handler.
        let mut more: Vec<(Finished<P>, Written<P::Response>)> = Vec::new();
        self.take_finished(&mut more);
        if self
            .queue
            .front()
            .is_some_and(|next| next.outcome.is_none())
        {
            // Handlers still run behind this one: let those that are ready run first, once, and
            // take the ones that finished. The runtime runs a task woken by another next (tokio's
            // LIFO slot), so this loop would otherwise be woken by the first handler to finish
            // and write each answer alone, even when the others were a moment from done.
            tokio::task::yield_now().await;
            let queue = &mut self.queue;
            poll_fn(|cx| {
                poll_handlers(queue, cx);
                Poll::Ready(())
            })
            .await;
            self.take_finished(&mut more);
        }
        self.publish_in_flight();
        let observed = !self.shared.observers.is_empty();
        let mut first = (done, Written::NotEncoded);
        // Encoded in arrival order; the response is kept (cloned) only for observers.
        let mut result = Ok(());
        for (finished, written) in std::iter::once(&mut first).chain(more.iter_mut()) {
            let Ok(response) = &mut finished.outcome else {
                unreachable!("only successes are coalesced")
            };
            let Some(response) = response.take() else {
                *written = Written::Nothing;
                continue;
            };
            let kept = observed.then(|| response.clone());
            match self.io.encode(response, &self.shared.protocol) {
                Ok(size) => *written = Written::Encoded { kept, size },
                Err(reason) => {
                    result = Err(reason);
                    break;
                }
            }
        }
        // What was encoded goes out even when a later response could not be encoded.
        let mut sent = usize::MAX;
        if self.io.has_output() {
            let (out, flushed) = self
                .io
                .flush(
                    self.shared.config.write_timeout,
                    &self.shared.control.abort,
                    &mut self.queue,
                )
                .await;
            sent = out;
            self.stats
                .bytes_out
                .fetch_add(out as u64, Ordering::Relaxed);
            if let Err(reason) = flushed {
                result = Err(reason);
            }
        }
        let now = self.answered_now();
        if observed {
            // Where each response ends in what was written: it went out if all of it did.
            let mut end = 0usize;
            for (finished, written) in std::iter::once(&first).chain(&more) {
                let duration = now.saturating_duration_since(finished.decoded_at);
                let (response, response_size) = match written {
                    // Nothing to send (the handler chose so): answered as intended.
                    Written::Nothing => (None, 0),
                    Written::Encoded { kept, size } if end.saturating_add(*size) <= sent => {
                        end += size;
                        (kept.as_ref(), *size)
                    }
                    // The answer could not be written (the peer is gone, or stopped reading, or
                    // the response could not be encoded): the message was not answered, which
                    // is not the same as a handler that chose to send nothing.
                    _ => {
                        end = usize::MAX;
                        self.shared.observers.emit(Event::MessageException {
                            connection: &self.info,
                            meta: &finished.meta,
                            duration,
                            failure: &Failure::Aborted,
                            response: None,
                            span: &finished.span,
                        });
                        continue;
                    }
                };
                self.shared.observers.emit(Event::MessageStop {
                    connection: &self.info,
                    meta: &finished.meta,
                    duration,
                    response,
                    response_size,
                    span: &finished.span,
                });
            }
        }
        self.stats
            .messages
            .fetch_add(1 + more.len() as u64, Ordering::Relaxed);
        for (finished, _) in std::iter::once(first).chain(more) {
            finished.lease.release_answered();
        }
        result
    }

    /// Moves the requests at the front of the queue whose handlers have succeeded into `more`,
    /// up to [`MAX_COALESCED`] answers in all (the one being answered included).
    fn take_finished(&mut self, more: &mut Vec<(Finished<P>, Written<P::Response>)>) {
        while more.len() + 1 < MAX_COALESCED
            && self
                .queue
                .front()
                .is_some_and(|next| matches!(next.outcome, Some(Ok(_))))
        {
            let finished = self.queue.pop_front().expect("front exists").finished();
            more.push((finished, Written::NotEncoded));
        }
    }

    /// Answers a request whose handler failed, by the handler-failure policy.
    async fn answer_failure(&mut self, done: Finished<P>) -> Result<(), CloseReason> {
        self.publish_in_flight();
        let Finished {
            meta,
            decoded_at,
            span,
            outcome,
            lease,
        } = done;
        let Err(failure) = outcome else {
            unreachable!("answer_failure is for failed handlers")
        };
        let result = {
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
        };
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        lease.release_answered();
        result
    }

    /// The time an answer went out (one clock read): also the start of the idle clock once
    /// nothing is left in flight.
    fn answered_now(&mut self) -> Instant {
        let now = Instant::now();
        self.stats.note_answer(now);
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
            Ok(size) => {
                self.stats
                    .bytes_out
                    .fetch_add(size as u64, Ordering::Relaxed);
                (Some((kept, size)), Ok(()))
            }
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

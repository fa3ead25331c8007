//! The requests a connection has in flight, in arrival order: each with its handler (running
//! or finished) and what its answer needs (meta, arrival time, span). Responses go out from
//! the front, so a handler that finishes early waits for the ones before it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::handler_task::HandlerTask;
use crate::lease::Lease;
use crate::protocol::{Failure, Protocol};

/// A request whose handler is running or has finished, in arrival order.
pub(super) struct InFlight<P: Protocol> {
    pub(super) meta: P::Meta,
    pub(super) decoded_at: Instant,
    pub(super) span: tracing::Span,
    pub(super) handler: HandlerTask<P::Response>,
    pub(super) outcome: Option<Result<Option<P::Response>, Failure>>,
    /// The runtime's clone of the request's lease, given up once the request is answered.
    pub(super) lease: Lease,
}

/// A request whose handler has finished, ready to be answered.
pub(super) struct Finished<P: Protocol> {
    pub(super) meta: P::Meta,
    pub(super) decoded_at: Instant,
    pub(super) span: tracing::Span,
    pub(super) outcome: Result<Option<P::Response>, Failure>,
    pub(super) lease: Lease,
}

impl<P: Protocol> InFlight<P> {
    pub(super) fn finished(self) -> Finished<P> {
        Finished {
            meta: self.meta,
            decoded_at: self.decoded_at,
            span: self.span,
            outcome: self
                .outcome
                .expect("poll_front returns finished requests only"),
            lease: self.lease,
        }
    }
}

/// Polls every in-flight handler (so each meets its own deadline) and yields the oldest one
/// once it has finished: responses go out in arrival order.
pub(super) fn poll_front<P: Protocol>(
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
pub(super) fn poll_handlers<P: Protocol>(queue: &mut VecDeque<InFlight<P>>, cx: &mut Context<'_>) {
    for entry in queue.iter_mut() {
        if entry.outcome.is_none()
            && let Poll::Ready(outcome) = Pin::new(&mut entry.handler).poll(cx)
        {
            entry.outcome = Some(outcome);
        }
    }
}

//! [`Lease`]: a request's hold on the limits it was admitted under, for as long as any work
//! done for it is alive.
//!
//! A request counts against its connection's `max_in_flight` and, when set, against the
//! server-wide `max_concurrent_handlers` (and `max_buffered_bytes`). The handler's own task is
//! bounded by `handler_timeout`, but a handler may hand work off to something the runtime cannot
//! abort: a write on tokio's blocking pool, a job queued for a writer thread. Such work goes on
//! after the handler timed out; if the request stopped counting at that moment, a slow disk
//! would let the next request (often the sender's resend) start another write, and so on
//! without bound.
//!
//! So the runtime gives each request one [`Lease`] ([`Protocol::handle_leased`]). The handler,
//! and whatever it hands work to, keep clones of it as long as they work for the request. The
//! request stops counting against the limits only when it has been answered *and* the last
//! clone is dropped:
//!
//! - its server-wide handler permit and its buffered bytes are held by the lease itself, and go
//!   back when the last clone is dropped;
//! - its place in `max_in_flight` is held by the connection's queue until the request is
//!   answered, then, if clones are still alive, by the connection's `lingering` count until the
//!   last one is dropped; the connection reads only while `queue + lingering < max_in_flight`.
//!
//! A lease dropped before the request is answered (the usual case: the handler returned)
//! costs one reference count and no wake-up.
//!
//! [`Protocol::handle_leased`]: crate::Protocol::handle_leased

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::OwnedSemaphorePermit;

use crate::budget::Memory;

/// A request's hold on the server's limits (its place in `max_in_flight`, its server-wide
/// handler permit, its share of `max_buffered_bytes`).
///
/// The runtime hands one to [`Protocol::handle_leased`](crate::Protocol::handle_leased). Keep a
/// clone in any work done for the request that may outlive the handler (a blocking write, a
/// job for a writer thread): until the last clone is dropped, the request keeps counting
/// against the limits, so work the runtime could not abort at the handler deadline still
/// bounds how much more is accepted. Cheap to clone (one reference count).
///
/// Hold it only for work that will end: a lease kept for ever keeps its connection from
/// reading (once `max_in_flight` leases are held) and its permits taken.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<LeaseInner>,
}

struct LeaseInner {
    connection: Arc<Lingering>,
    /// Set once the request has been answered while other clones were alive: the lease is then
    /// counted in `Lingering::count` until it is dropped.
    answered: AtomicBool,
    /// The server-wide handler permit, if `max_concurrent_handlers` is set.
    _handler: Option<OwnedSemaphorePermit>,
    /// The request's share of `max_buffered_bytes`, if set.
    _memory: Memory,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("answered", &self.inner.answered.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// A lease on `connection`'s in-flight limit, holding these permits.
    pub(crate) fn new(
        connection: Arc<Lingering>,
        handler: Option<OwnedSemaphorePermit>,
        memory: Memory,
    ) -> Self {
        Lease {
            inner: Arc::new(LeaseInner {
                connection,
                answered: AtomicBool::new(false),
                _handler: handler,
                _memory: memory,
            }),
        }
    }

    /// The runtime's own clone, given up once the request has been answered: if other clones
    /// are still alive, the lease starts counting as lingering on its connection.
    pub(crate) fn release_answered(self) {
        // Nobody else holds a clone, and nobody can make one: dropping this frees everything at
        // once, with no count to move and no wake-up.
        if Arc::strong_count(&self.inner) == 1 {
            return;
        }
        // Counted first, flagged second: whichever clone is dropped last sees the flag and
        // takes the count back.
        self.inner.connection.count.fetch_add(1, Ordering::AcqRel);
        self.inner.answered.store(true, Ordering::Release);
    }
}

impl Drop for LeaseInner {
    fn drop(&mut self) {
        if self.answered.load(Ordering::Acquire) {
            self.connection.count.fetch_sub(1, Ordering::AcqRel);
            self.connection.waker.wake();
        }
    }
}

/// One connection's answered requests whose leases are still held.
#[derive(Default)]
pub(crate) struct Lingering {
    count: AtomicUsize,
    waker: AtomicWaker,
}

impl Lingering {
    /// How many answered requests still hold their lease; registers `cx` to be woken when one
    /// lets go, if any is held.
    pub(crate) fn poll_count(&self, cx: &mut Context<'_>) -> usize {
        let count = self.count.load(Ordering::Acquire);
        if count == 0 {
            return 0;
        }
        self.waker.register(cx.waker());
        // Read again after registering: a lease dropped in between has woken nobody.
        self.count.load(Ordering::Acquire)
    }

    /// How many answered requests still hold their lease.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// Ready once fewer than `limit` answered requests still hold their lease.
pub(crate) fn poll_below(lingering: &Lingering, limit: usize, cx: &mut Context<'_>) -> Poll<()> {
    if lingering.poll_count(cx) < limit {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    /// A lease given up while nobody else holds it leaves nothing lingering.
    #[test]
    fn sole_lease_released_leaves_nothing() {
        let lingering = Arc::new(Lingering::default());
        let lease = Lease::new(Arc::clone(&lingering), None, Memory::default());
        lease.release_answered();
        assert_eq!(lingering.count(), 0);
    }

    /// A clone alive after the answer keeps the request lingering until it is dropped, and
    /// takes its permits with it.
    #[test]
    fn clone_alive_after_the_answer_lingers_until_dropped() {
        let lingering = Arc::new(Lingering::default());
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = Arc::clone(&permits).try_acquire_owned().unwrap();
        let lease = Lease::new(Arc::clone(&lingering), Some(permit), Memory::default());
        let handed_off = lease.clone();
        lease.release_answered();
        assert_eq!(lingering.count(), 1);
        assert_eq!(permits.available_permits(), 0);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(poll_below(&lingering, 1, &mut cx), Poll::Pending);
        drop(handed_off);
        assert_eq!(lingering.count(), 0);
        assert_eq!(permits.available_permits(), 1);
        assert_eq!(poll_below(&lingering, 1, &mut cx), Poll::Ready(()));
    }

    /// A clone dropped before the answer (the handler returned) never counts as lingering.
    #[test]
    fn clone_dropped_before_the_answer_never_lingers() {
        let lingering = Arc::new(Lingering::default());
        let lease = Lease::new(Arc::clone(&lingering), None, Memory::default());
        drop(lease.clone());
        lease.release_answered();
        assert_eq!(lingering.count(), 0);
    }
}

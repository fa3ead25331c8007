//! The non-generic control of one server: the tokens and flags that drive its teardown, the
//! connection loops to wake when they change, the escalation error and the final outcome.
//! Shared by the [`ServerHandle`](crate::ServerHandle), the root supervisor's teardown driver,
//! the acceptor and every connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ServerError;
use crate::report::ShutdownReport;

/// The non-generic part of a server: tokens, the escalation error, the final outcome.
pub(crate) struct Control {
    /// Cancelled to begin the teardown (by `shutdown()` or by escalation).
    pub(crate) stop_requested: CancellationToken,
    /// Cancelled when the teardown begins: the accept loop ends, connections drain.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled at the grace deadline: busy connections abort their handlers and close.
    pub(crate) abort: CancellationToken,
    /// The connection loops to wake when a flag below (or their own close flag) is set, by
    /// connection id. A loop registers its waker with an atomic swap when it goes to sleep,
    /// rather than polling the tokens (whose waiter lists sit behind locks shared by every
    /// connection).
    wakers: Mutex<HashMap<u64, Arc<ConnectionFlags>>>,
    /// Whether accepting is suspended (`ServerHandle::suspend`); set by the root supervisor.
    pub(crate) suspended: AtomicBool,
    /// Mirrors of the two tokens that connections check on every turn for the price of an
    /// atomic load (a token's `is_cancelled` and a registered waiter's poll take a lock shared
    /// by every connection). Set before the token is cancelled.
    shutting_down: AtomicBool,
    aborting: AtomicBool,
    /// Why the server stopped on its own, if it did.
    pub(crate) fatal: Mutex<Option<ServerError>>,
    /// Set once, when everything has ended.
    pub(crate) outcome: watch::Sender<Option<Outcome>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) report: ShutdownReport,
    pub(crate) error: Option<ServerError>,
}

impl Control {
    pub(crate) fn new() -> Self {
        Self {
            stop_requested: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
            aborting: AtomicBool::new(false),
            fatal: Mutex::new(None),
            outcome: watch::Sender::new(None),
            wakers: Mutex::new(HashMap::new()),
            suspended: AtomicBool::new(false),
        }
    }

    /// Begins the drain: the accept loop ends, connections answer what is in flight and close.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.shutdown.cancel();
        self.wake_connections();
    }

    /// The grace deadline passed: busy connections abort their handlers and close.
    pub(crate) fn begin_abort(&self) {
        self.aborting.store(true, Ordering::Release);
        self.abort.cancel();
        self.wake_connections();
    }

    /// Wakes every connection loop, after a flag was set: each re-reads the flags.
    fn wake_connections(&self) {
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for flags in wakers.values() {
            flags.waker.wake();
        }
    }

    /// Asks one connection to close (`ServerHandle::close_connection`): it stops reading,
    /// answers what it has in flight and closes as `ServerClosed`. Returns whether a
    /// connection with that id is being served.
    pub(crate) fn close_connection(&self, id: u64) -> bool {
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        match wakers.get(&id) {
            Some(flags) => {
                flags.close.store(true, Ordering::Release);
                flags.waker.wake();
                true
            }
            None => false,
        }
    }

    /// Registers a connection loop to be woken when shutdown or abort begins. The returned guard
    /// deregisters it when dropped.
    pub(crate) fn register(self: &Arc<Self>, id: u64) -> ControlWaker {
        let flags = Arc::new(ConnectionFlags {
            waker: AtomicWaker::new(),
            close: AtomicBool::new(false),
        });
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&flags));
        ControlWaker {
            control: Arc::clone(self),
            id,
            flags,
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn is_aborting(&self) -> bool {
        self.aborting.load(Ordering::Acquire)
    }

    /// Escalation: records the first fatal error and begins the teardown.
    pub(crate) fn fail(&self, error: ServerError) {
        {
            let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
            if fatal.is_none() {
                *fatal = Some(error);
            }
        }
        self.stop_requested.cancel();
    }

    pub(crate) fn take_fatal(&self) -> Option<ServerError> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One connection's entry in [`Control`]: its loop's waker and its own close flag.
struct ConnectionFlags {
    waker: AtomicWaker,
    close: AtomicBool,
}

/// A connection loop's registration with [`Control`]: woken when shutdown or abort begins, or
/// when this connection is asked to close.
pub(crate) struct ControlWaker {
    control: Arc<Control>,
    id: u64,
    flags: Arc<ConnectionFlags>,
}

/// What the control flags ask of a connection loop.
pub(crate) enum ControlStep {
    Abort,
    Shutdown,
    Close,
}

impl ControlWaker {
    /// Whether this connection was asked to close (an atomic load of its own flag).
    pub(crate) fn close_requested(&self) -> bool {
        self.flags.close.load(Ordering::Acquire)
    }

    /// Ready when the server aborts, or begins its shutdown, or asks this connection to close,
    /// while `draining` is false. Registers the waker first, then reads the flags, so a flag
    /// set in between is not missed.
    pub(crate) fn poll(
        &self,
        cx: &mut std::task::Context<'_>,
        draining: bool,
    ) -> std::task::Poll<ControlStep> {
        self.flags.waker.register(cx.waker());
        if self.control.is_aborting() {
            std::task::Poll::Ready(ControlStep::Abort)
        } else if !draining && self.control.is_shutting_down() {
            std::task::Poll::Ready(ControlStep::Shutdown)
        } else if !draining && self.close_requested() {
            std::task::Poll::Ready(ControlStep::Close)
        } else {
            std::task::Poll::Pending
        }
    }
}

impl Drop for ControlWaker {
    fn drop(&mut self) {
        self.control
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

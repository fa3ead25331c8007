//! What every actor and task of one server shares: the protocol, the transport, the settings,
//! the observers, the connection slots and the shutdown tokens. Restarted actors get it as
//! `Arguments`; nothing in it belongs to a restartable actor.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::event::{CloseReason, Event, Observer};
use crate::protocol::{ConnectionInfo, Protocol};
use crate::report::ShutdownReport;
use crate::transport::Transport;

pub(crate) struct Shared<P: Protocol, T: Transport> {
    pub(crate) protocol: P,
    pub(crate) transport: T,
    pub(crate) config: ServerConfig,
    pub(crate) observers: Observers<P>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) slots: Slots,
    /// The server-wide handler limit (`max_concurrent_handlers`), if any.
    pub(crate) handler_permits: Option<Arc<Semaphore>>,
    pub(crate) control: Arc<Control>,
    /// Every task the tree spawns (accept loops, connection I/O, handlers, restart timers), so
    /// that shutdown can wait for all of them.
    pub(crate) tasks: TaskTracker,
}

/// The non-generic part of a server: tokens, the escalation error, the final outcome.
pub(crate) struct Control {
    /// Cancelled to begin the teardown (by `shutdown()` or by escalation).
    pub(crate) stop_requested: CancellationToken,
    /// Cancelled when the teardown begins: the accept loop ends, connections drain.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled at the grace deadline: busy connections abort their handlers and close.
    pub(crate) abort: CancellationToken,
    /// The connection loops to wake when a flag below is set, by connection id. A loop registers
    /// its waker with an atomic swap when it goes to sleep, rather than polling the tokens
    /// (whose waiter lists sit behind locks shared by every connection).
    wakers: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
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
        for waker in wakers.values() {
            waker.wake();
        }
    }

    /// Registers a connection loop to be woken when shutdown or abort begins. The returned guard
    /// deregisters it when dropped.
    pub(crate) fn register(self: &Arc<Self>, id: u64) -> ControlWaker {
        let waker = Arc::new(AtomicWaker::new());
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&waker));
        ControlWaker {
            control: Arc::clone(self),
            id,
            waker,
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

/// A connection loop's registration with [`Control`]: woken when shutdown or abort begins.
pub(crate) struct ControlWaker {
    control: Arc<Control>,
    id: u64,
    waker: Arc<AtomicWaker>,
}

/// What the control flags ask of a connection loop.
pub(crate) enum ControlStep {
    Abort,
    Shutdown,
}

impl ControlWaker {
    /// Ready when the server aborts, or begins its shutdown while `draining` is false.
    /// Registers the waker first, then reads the flags, so a flag set in between is not missed.
    pub(crate) fn poll(
        &self,
        cx: &mut std::task::Context<'_>,
        draining: bool,
    ) -> std::task::Poll<ControlStep> {
        self.waker.register(cx.waker());
        if self.control.is_aborting() {
            std::task::Poll::Ready(ControlStep::Abort)
        } else if !draining && self.control.is_shutting_down() {
            std::task::Poll::Ready(ControlStep::Shutdown)
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

/// The connection slots (`max_connections`). A slot is taken before `accept()`.
#[derive(Clone)]
pub(crate) struct Slots {
    semaphore: Arc<Semaphore>,
    in_use: Arc<AtomicUsize>,
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            in_use: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits for a free slot. Cancel safe.
    pub(crate) async fn reserve(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed")
    }

    /// Marks a reserved slot as used by an accepted socket.
    pub(crate) fn occupy(&self, permit: OwnedSemaphorePermit) -> Slot {
        self.in_use.fetch_add(1, Ordering::AcqRel);
        Slot {
            _permit: permit,
            in_use: Arc::clone(&self.in_use),
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
}

/// One accepted socket's claim on `max_connections`. Dropping it frees the slot, whatever path
/// the connection took to its end (it lives in the registry entry, or in the message that
/// carries the socket to the supervisor).
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    in_use: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

/// What a connection's I/O task tells its supervisor, without going through a mailbox.
#[derive(Default)]
pub(crate) struct ConnStats {
    /// Requests finished (answered, failed or aborted).
    pub(crate) messages: AtomicU64,
    /// Requests decoded and not yet answered.
    pub(crate) in_flight: AtomicUsize,
    /// The connection as the handshake established it.
    pub(crate) established: OnceLock<ConnectionInfo>,
    /// The connection span, once created.
    pub(crate) span: OnceLock<tracing::Span>,
    /// Why the I/O task ended, set just before the connection actor stops.
    pub(crate) close: Mutex<Option<CloseReason>>,
}

impl ConnStats {
    pub(crate) fn set_close(&self, reason: CloseReason) {
        *self.close.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    pub(crate) fn take_close(&self) -> Option<CloseReason> {
        self.close.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The observers registered on a server.
pub(crate) struct Observers<P: Protocol>(Vec<Arc<dyn Observer<P>>>);

impl<P: Protocol> Observers<P> {
    pub(crate) fn new(observers: Vec<Arc<dyn Observer<P>>>) -> Self {
        Self(observers)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn emit(&self, event: Event<'_, P>) {
        for observer in &self.0 {
            observer.on_event(&event);
        }
    }
}

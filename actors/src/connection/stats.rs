//! [`ConnStats`]: a connection's counters and close reason, written by its I/O task and read by
//! the connection supervisor's registry.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::time::Instant;

use crate::event::CloseReason;
use crate::protocol::ConnectionInfo;

/// What a connection's I/O task tells its supervisor, without going through a mailbox.
///
/// The counters are relaxed atomics written by the connection's own task only (one cache line
/// the snapshot reader shares now and then), so keeping them costs an uncontended add per read,
/// write or answer.
pub(crate) struct ConnStats {
    /// When the connection was accepted: `last_answer` counts from here.
    pub(crate) start: Instant,
    /// Requests finished (answered, failed or aborted).
    pub(crate) messages: AtomicU64,
    /// Requests decoded and not yet answered.
    pub(crate) in_flight: AtomicUsize,
    /// Bytes read from the stream (after the transport: TLS records are counted decrypted).
    pub(crate) bytes_in: AtomicU64,
    /// Bytes of encoded responses written.
    pub(crate) bytes_out: AtomicU64,
    /// Microseconds from `start` to the last request finished, plus one; 0 before the first.
    last_answer: AtomicU64,
    /// The connection as the handshake established it.
    pub(crate) established: OnceLock<ConnectionInfo>,
    /// The connection span, once created.
    pub(crate) span: OnceLock<tracing::Span>,
    /// Why the I/O task ended, set just before the connection actor stops.
    pub(crate) close: Mutex<Option<CloseReason>>,
}

impl ConnStats {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            messages: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_answer: AtomicU64::new(0),
            established: OnceLock::new(),
            span: OnceLock::new(),
            close: Mutex::new(None),
        }
    }

    pub(crate) fn set_close(&self, reason: CloseReason) {
        *self.close.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    pub(crate) fn take_close(&self) -> Option<CloseReason> {
        self.close.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// A request was answered (or failed) at `now`.
    pub(crate) fn note_answer(&self, now: Instant) {
        let micros = now.saturating_duration_since(self.start).as_micros();
        self.last_answer.store(
            u64::try_from(micros).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Relaxed,
        );
    }

    /// How long after `start` the last request finished, if one did.
    pub(crate) fn last_answer(&self) -> Option<std::time::Duration> {
        match self.last_answer.load(Ordering::Relaxed) {
            0 => None,
            n => Some(std::time::Duration::from_micros(n - 1)),
        }
    }
}

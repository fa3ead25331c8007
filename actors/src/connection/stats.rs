//! [`ConnStats`]: a connection's counters and close reason, written by its I/O task and read by
//! the connection supervisor's registry.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, OnceLock};

use crate::event::CloseReason;
use crate::protocol::ConnectionInfo;

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

//! The connection slots (`max_connections`): taken by the acceptor before `accept()`, held by
//! the connection supervisor's registry entry, freed by `Drop` on every path.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::peers::PeerGuard;

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

    /// Marks a reserved slot as used by an accepted socket, from a peer whose count `peer`
    /// holds (per-peer limits).
    pub(crate) fn occupy(&self, permit: OwnedSemaphorePermit, peer: Option<PeerGuard>) -> Slot {
        self.in_use.fetch_add(1, Ordering::AcqRel);
        Slot {
            _permit: permit,
            _peer: peer,
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
    /// The connection's place in its address's count, given back with the slot.
    _peer: Option<PeerGuard>,
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

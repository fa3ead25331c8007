//! The connection slots (`max_connections`): taken by the acceptor before `accept()`, held by
//! the connection supervisor's registry entry, freed by `Drop` on every path.
//!
//! The limit can change while the server runs ([`Slots::set_max`]). Raising it adds permits.
//! Lowering it takes the free permits away at once and records the rest as a *debt*: each
//! slot freed while a debt is left pays one unit of it instead of going back, so live
//! connections are never closed and no new one is accepted until the server is under the new
//! limit. Invariant: free permits + slots held − debt = the limit.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ConfigError;
use crate::peers::PeerGuard;

/// The connection slots (`max_connections`). A slot is taken before `accept()`.
#[derive(Clone)]
pub(crate) struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    semaphore: Arc<Semaphore>,
    in_use: AtomicUsize,
    max: AtomicUsize,
    /// Permits still to take away after the limit was lowered below the slots held.
    debt: AtomicUsize,
    /// Serialises changes of the limit.
    resize: Mutex<()>,
}

impl Inner {
    /// A permit comes back: it pays the debt if there is one, else it is free again.
    fn give_back(&self, permit: OwnedSemaphorePermit) {
        let paid = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if paid {
            permit.forget();
        } else {
            drop(permit);
        }
    }
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(limit)),
                in_use: AtomicUsize::new(0),
                max: AtomicUsize::new(limit),
                debt: AtomicUsize::new(0),
                resize: Mutex::new(()),
            }),
        }
    }

    /// Waits for a free slot. Cancel safe.
    pub(crate) async fn reserve(&self) -> Reserved {
        let permit = Arc::clone(&self.inner.semaphore)
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed");
        Reserved {
            permit: Some(permit),
            inner: Arc::clone(&self.inner),
        }
    }

    /// Marks a reserved slot as used by an accepted socket, from a peer whose count `peer`
    /// holds (per-peer limits).
    pub(crate) fn occupy(&self, reserved: Reserved, peer: Option<PeerGuard>) -> Slot {
        self.inner.in_use.fetch_add(1, Ordering::AcqRel);
        Slot {
            reserved,
            _peer: peer,
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Acquire)
    }

    /// The current limit.
    pub(crate) fn max(&self) -> usize {
        self.inner.max.load(Ordering::Acquire)
    }

    /// Changes the limit. Live connections are never closed: past a lowered limit, slots are
    /// taken away as they are freed.
    pub(crate) fn set_max(&self, limit: usize) -> Result<(), ConfigError> {
        let setting = "max_connections";
        if limit == 0 {
            return Err(ConfigError::Zero { setting });
        }
        if limit > Semaphore::MAX_PERMITS {
            return Err(ConfigError::TooLarge {
                setting,
                max: Semaphore::MAX_PERMITS,
            });
        }
        let inner = &self.inner;
        let _resizing = inner.resize.lock().unwrap_or_else(|e| e.into_inner());
        let old = inner.max.load(Ordering::Acquire);
        if limit > old {
            let grow = limit - old;
            let mut paid = 0;
            let _ = inner
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    paid = d.min(grow);
                    Some(d - paid)
                });
            inner.semaphore.add_permits(grow - paid);
        } else if limit < old {
            let shrink = old - limit;
            let taken = inner.semaphore.forget_permits(shrink);
            inner.debt.fetch_add(shrink - taken, Ordering::AcqRel);
        }
        inner.max.store(limit, Ordering::Release);
        Ok(())
    }
}

/// A slot reserved before `accept()`; dropping it gives the slot back (or pays the debt of a
/// lowered limit).
pub(crate) struct Reserved {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.inner.give_back(permit);
        }
    }
}

/// One accepted socket's claim on `max_connections`. Dropping it frees the slot, whatever path
/// the connection took to its end (it lives in the registry entry, or in the message that
/// carries the socket to the supervisor).
pub(crate) struct Slot {
    reserved: Reserved,
    /// The connection's place in its address's count, given back with the slot.
    _peer: Option<PeerGuard>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.reserved.inner.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(slots: &Slots) -> usize {
        slots.inner.semaphore.available_permits()
    }

    /// Raising the limit frees slots at once; lowering it below the slots held takes the rest
    /// away as they are freed, and raising it again first cancels that debt.
    #[tokio::test]
    async fn the_limit_changes_at_runtime_without_closing_anything() {
        let slots = Slots::new(3);
        let held: Vec<Slot> = vec![
            slots.occupy(slots.reserve().await, None),
            slots.occupy(slots.reserve().await, None),
        ];
        assert_eq!(free(&slots), 1);
        slots.set_max(1).unwrap();
        assert_eq!((free(&slots), slots.max()), (0, 1));
        let mut held = held.into_iter();
        drop(held.next());
        assert_eq!(free(&slots), 0, "the freed slot paid the debt");
        slots.set_max(4).unwrap();
        assert_eq!(free(&slots), 3, "4 minus the one held");
        drop(held);
        assert_eq!((free(&slots), slots.in_use()), (4, 0));
        assert!(slots.set_max(0).is_err());
        assert_eq!(slots.max(), 4);
    }
}

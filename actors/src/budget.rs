//! The server-wide memory budget (`max_buffered_bytes`): the bytes of every connection's read
//! buffer and of every request in flight, with what handling a request allocates beside it
//! (for HL7, the parse index), drawn from one semaphore of bytes.
//!
//! What is counted, and when:
//!
//! - a connection's read buffer, by its capacity: a buffer grows only once the growth is drawn
//!   (the connection stops reading while it waits), and it is reallocated by the runtime at a
//!   size it chose, so the allocation is never larger than what was drawn;
//! - a decoded request takes over the bytes its frame held of the buffer, and draws
//!   [`Protocol::request_overhead`](crate::Protocol::request_overhead) more before
//!   [`Protocol::meta`](crate::Protocol::meta) runs (or the protocol's free
//!   [`Protocol::request_overhead_ceiling`](crate::Protocol::request_overhead_ceiling), when the
//!   budget has that much to spare at once; either is trimmed to
//!   [`Protocol::meta_overhead`](crate::Protocol::meta_overhead) after it); it gives them back
//!   with its [`Lease`](crate::Lease): once answered, and once the work its handler handed off
//!   has ended.
//!
//! Responses and the runtime's own structures are not counted: they are small beside a
//! message. A single draw larger than the whole budget is cut to what is left of it (a
//! request's bytes and its overhead together never wait for more than the budget holds), so
//! nothing waits for ever: such a request waits until everything else has been given back.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget: a semaphore of bytes, and its size.
#[derive(Clone)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    pub(crate) fn new(total: usize) -> Self {
        Budget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// `bytes` as one draw: at most the budget less `held` (what the caller already holds),
    /// and at most what one draw can take.
    fn cap(&self, bytes: usize, held: usize) -> u32 {
        let most = self.total.saturating_sub(held).min(u32::MAX as usize);
        bytes.min(most) as u32
    }

    /// Draws `bytes` now, if the budget has them (see [`Budget::cap`] for `held`).
    pub(crate) fn try_draw(&self, bytes: usize, held: usize) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.bytes)
            .try_acquire_many_owned(self.cap(bytes, held))
            .ok()
    }

    /// Waits until the budget has `bytes` (see [`Budget::cap`] for `held`), then draws them.
    /// Cancel safe in the semaphore's sense: a dropped wait loses its place in the queue.
    pub(crate) fn draw(
        &self,
        bytes: usize,
        held: usize,
    ) -> impl Future<Output = OwnedSemaphorePermit> + Send + 'static {
        let (semaphore, bytes) = (Arc::clone(&self.bytes), self.cap(bytes, held));
        async move {
            semaphore
                .acquire_many_owned(bytes)
                .await
                .expect("the budget semaphore is never closed")
        }
    }

    /// The budget's size.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Bytes drawn now.
    pub(crate) fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }
}

/// The draw of one read-buffer allocation. Shared: the buffer and every request decoded from
/// it (whose bytes are slices of the allocation, zero copy) hold it, so the bytes count until
/// the allocation can really be freed.
pub(crate) type Allocation = Arc<OwnedSemaphorePermit>;

/// What a request holds of the budget: its share of the allocation its bytes live in, and
/// its overhead (the parse index).
#[derive(Default)]
pub(crate) struct Memory {
    // Held, never read: dropping them gives the bytes back.
    #[allow(dead_code)]
    pub(crate) allocation: Option<Allocation>,
    #[allow(dead_code)]
    pub(crate) overhead: Charge,
}

/// A draw from the budget that grows and shrinks.
#[derive(Default)]
pub(crate) struct Charge(Option<OwnedSemaphorePermit>);

impl Charge {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Adds a draw to what is held.
    #[cfg(test)]
    fn add(&mut self, permit: OwnedSemaphorePermit) {
        match &mut self.0 {
            Some(held) => held.merge(permit),
            None => self.0 = Some(permit),
        }
    }

    /// Gives back what is held above `keep` bytes.
    pub(crate) fn trim(&mut self, keep: usize) {
        let _ = self.take(self.bytes().saturating_sub(keep));
    }

    /// Takes `bytes` of what is held (all of it if less is held) out, as a charge of its own.
    pub(crate) fn take(&mut self, bytes: usize) -> Charge {
        if bytes >= self.bytes() {
            return Charge(self.0.take());
        }
        Charge(self.0.as_mut().and_then(|held| held.split(bytes)))
    }
}

impl From<OwnedSemaphorePermit> for Charge {
    fn from(permit: OwnedSemaphorePermit) -> Self {
        Charge(Some(permit))
    }
}

/// The default `max_buffered_bytes`: a quarter of the memory this process may use (its cgroup's
/// limit when it has one, else the machine's), at least 64 MiB; 1 GiB where neither can be
/// read.
pub(crate) fn default_max_buffered_bytes() -> usize {
    const MIN: u64 = 64 << 20;
    const UNKNOWN: u64 = 1 << 30;
    let memory = cgroup_limit().or_else(machine_memory);
    let bytes = memory.map_or(UNKNOWN, |m| (m / 4).max(MIN));
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

/// The cgroup v2 memory limit of this process (`memory.max`), when one is set.
fn cgroup_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
    text.trim().parse().ok()
}

/// The machine's memory (`MemTotal` in `/proc/meminfo`).
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A charge grows by draws, gives back its excess, and splits off what a request takes.
    #[test]
    fn charge_adds_trims_and_splits() {
        let budget = Budget::new(100);
        let mut charge = Charge::default();
        charge.add(budget.try_draw(40, 0).unwrap());
        charge.add(budget.try_draw(30, 0).unwrap());
        assert_eq!((charge.bytes(), budget.in_use()), (70, 70));
        let taken = charge.take(25);
        assert_eq!((charge.bytes(), taken.bytes()), (45, 25));
        charge.trim(10);
        assert_eq!(budget.in_use(), 35);
        drop(taken);
        assert_eq!(budget.in_use(), 10);
        assert!(budget.try_draw(91, 0).is_none());
    }

    /// A draw larger than what is left of the budget beside what the caller holds is cut, so
    /// it can always be met once everything else is given back.
    #[test]
    fn draw_past_the_budget_is_cut_to_what_is_left() {
        let budget = Budget::new(100);
        let held = budget.try_draw(60, 0).unwrap();
        let rest = budget.try_draw(1_000, 60).unwrap();
        assert_eq!(rest.num_permits(), 40);
        drop((held, rest));
        assert_eq!(budget.in_use(), 0);
    }

    /// The machine's default is at least 64 MiB.
    #[test]
    fn default_is_at_least_64_mib() {
        assert!(default_max_buffered_bytes() >= 64 << 20);
    }
}

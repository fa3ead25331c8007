//! The binary's allocator (jemalloc) and the gauges that tell its memory apart from the
//! process's: whether an RSS that stays up after a burst is memory still in use or pages the
//! allocator keeps.

use opentelemetry::metrics::{Meter, ObservableGauge};
use tikv_jemalloc_ctl::{epoch, stats};

/// jemalloc, with its background purge thread, rather than the system's allocator:
/// - glibc serves a 1 MiB read buffer from fresh pages again and again (page faults took a
///   third of the server's time on 1 MiB messages: 0.31-0.36 of the bare peer, against 0.75
///   with jemalloc, which reuses them);
/// - glibc kept the memory of a 10k-connection burst for the life of the process; jemalloc's
///   decay gives it back within seconds of the burst closing;
/// - an idle connection costs about the same (11.0 KiB with glibc, 11.9 with jemalloc).
///   mimalloc, also tried, took 15.4 KiB and kept the burst's memory.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The allocator's statistics, in bytes (one consistent snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Held by live allocations.
    pub(crate) allocated: u64,
    /// In pages the allocator has handed out (allocations plus their fragmentation).
    pub(crate) active: u64,
    /// The allocator's own bookkeeping.
    pub(crate) metadata: u64,
    /// Physically resident pages the allocator maps: active, metadata, and dirty pages not yet
    /// purged. The part of RSS that is the heap.
    pub(crate) resident: u64,
    /// Address space kept but given back to the system (not resident).
    pub(crate) retained: u64,
}

impl Snapshot {
    /// Reads the statistics afresh; `None` if jemalloc cannot tell (built without them).
    pub(crate) fn read() -> Option<Self> {
        // The statistics are cached per epoch: advance it to refresh them.
        epoch::advance().ok()?;
        let read = |value: tikv_jemalloc_ctl::Result<usize>| value.ok().map(|v| v as u64);
        Some(Self {
            allocated: read(stats::allocated::read())?,
            active: read(stats::active::read())?,
            metadata: read(stats::metadata::read())?,
            resident: read(stats::resident::read())?,
            retained: read(stats::retained::read())?,
        })
    }
}

/// Registers the `mllp.allocator.*` gauges on `meter`; keep what it returns for as long as
/// they should be reported.
pub(crate) fn register(meter: &Meter) -> Vec<ObservableGauge<u64>> {
    type Field = fn(&Snapshot) -> u64;
    let gauges: [(&'static str, &'static str, Field); 5] = [
        (
            "mllp.allocator.allocated",
            "Heap bytes held by live allocations",
            |s| s.allocated,
        ),
        (
            "mllp.allocator.active",
            "Heap bytes in pages handed out to allocations",
            |s| s.active,
        ),
        (
            "mllp.allocator.metadata",
            "Heap bytes of the allocator's own bookkeeping",
            |s| s.metadata,
        ),
        (
            "mllp.allocator.resident",
            "Heap bytes resident in memory: active, bookkeeping, and freed pages not yet returned",
            |s| s.resident,
        ),
        (
            "mllp.allocator.retained",
            "Heap address space kept by the allocator but returned to the system",
            |s| s.retained,
        ),
    ];
    gauges
        .into_iter()
        .map(|(name, description, field)| {
            meter
                .u64_observable_gauge(name)
                .with_unit("By")
                .with_description(description)
                .with_callback(move |observer| {
                    if let Some(snapshot) = Snapshot::read() {
                        observer.observe(field(&snapshot), &[]);
                    }
                })
                .build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_allocation_shows_in_allocated_until_it_is_freed() {
        let before = Snapshot::read().expect("jemalloc is built with statistics");
        let block = vec![1u8; 64 << 20];
        let during = Snapshot::read().expect("statistics");
        assert!(
            during.allocated >= before.allocated + (60 << 20),
            "{before:?} -> {during:?}"
        );
        assert!(during.active >= during.allocated, "{during:?}");
        assert!(during.resident >= during.active, "{during:?}");
        drop(block);
        let after = Snapshot::read().expect("statistics");
        assert!(
            after.allocated + (60 << 20) <= during.allocated,
            "{during:?} -> {after:?}"
        );
    }
}

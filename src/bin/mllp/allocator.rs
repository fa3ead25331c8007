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

/// One of the allocator's statistics, in bytes.
type Read = fn() -> tikv_jemalloc_ctl::Result<usize>;

/// The gauges: name, description, and the statistic each reports.
const GAUGES: [(&str, &str, Read); 5] = [
    (
        "mllp.allocator.allocated",
        "Heap bytes held by live allocations",
        stats::allocated::read,
    ),
    (
        "mllp.allocator.active",
        "Heap bytes in pages handed out to allocations",
        stats::active::read,
    ),
    (
        "mllp.allocator.metadata",
        "Heap bytes of the allocator's own bookkeeping",
        stats::metadata::read,
    ),
    (
        "mllp.allocator.resident",
        "Heap bytes resident in memory: active, bookkeeping, and freed pages not yet returned",
        stats::resident::read,
    ),
    (
        "mllp.allocator.retained",
        "Heap address space kept by the allocator but returned to the system",
        stats::retained::read,
    ),
];

/// Reads one statistic afresh; `None` if jemalloc cannot tell.
fn current(read: Read) -> Option<u64> {
    // The statistics are cached per epoch: advance it to refresh them.
    epoch::advance().ok()?;
    read().ok().map(|v| v as u64)
}

/// Registers the `mllp.allocator.*` gauges on `meter`; keep what it returns for as long as
/// they should be reported.
pub(crate) fn register(meter: &Meter) -> Vec<ObservableGauge<u64>> {
    GAUGES
        .into_iter()
        .map(|(name, description, read)| {
            meter
                .u64_observable_gauge(name)
                .with_unit("By")
                .with_description(description)
                .with_callback(move |observer| {
                    if let Some(bytes) = current(read) {
                        observer.observe(bytes, &[]);
                    }
                })
                .build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocated, active and resident bytes of one epoch.
    fn snapshot() -> (usize, usize, usize) {
        epoch::advance().expect("jemalloc has statistics");
        let read = |r: Read| r().expect("statistics");
        (
            read(stats::allocated::read),
            read(stats::active::read),
            read(stats::resident::read),
        )
    }

    #[test]
    fn a_live_allocation_shows_in_allocated_until_it_is_freed() {
        let (before, _, _) = snapshot();
        let block = vec![1u8; 64 << 20];
        let (during, active, resident) = snapshot();
        assert!(during >= before + (60 << 20), "{before} -> {during}");
        assert!(active >= during, "{active} < {during}");
        assert!(resident >= active, "{resident} < {active}");
        drop(block);
        let after = current(stats::allocated::read).expect("statistics") as usize;
        assert!(after + (60 << 20) <= during, "{during} -> {after}");
    }
}

//! Small helpers used across the tree. A leaf: it imports nothing from this crate, so any
//! module may use it without creating a cycle.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Connection ids are unique within the process, across servers.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_connection_id() -> u64 {
    NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed)
}

/// `now + timeout`, or a far-future instant when the sum does not fit (a timeout of
/// `Duration::MAX` means "never", not a panic).
pub(crate) fn deadline(from: Instant, timeout: Duration) -> Instant {
    from.checked_add(timeout)
        .unwrap_or_else(|| from + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

/// The text of a panic payload: `panic!("...")` gives a `&str` or a `String`.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic payload is not a string".to_owned()
    }
}

//! [`FailureHold`]: how long a failing store reports [`StoreHealth::Failing`].

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::StoreHealth;

/// How long a store reports [`StoreHealth::Failing`] after it last saw a commit fail, when no
/// commit was tried since: 5 seconds. Then it reports [`StoreHealth::Ok`] again, so that a
/// readiness probe lets the next message through to try the store. Without it, a receiver
/// behind a load balancer that sends nothing to an unready receiver would never commit again,
/// and so never become ready, after its disk or lock problem had gone.
pub const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// The failure a store's health last reported, and since when: a store's failures count, as
/// seen by [`FailureHold::health`], and the time it first saw that count.
#[derive(Debug, Default)]
pub(crate) struct FailureHold(Mutex<Option<(u64, Instant)>>);

impl FailureHold {
    /// Notes that the store's commit number `failures` failed, now: the hold runs from here,
    /// not from the first readiness probe after it. Called where the failure is answered (in
    /// the runtime, so that tests can run the clock).
    pub(crate) fn failed(&self, failures: u64) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*seen, Some((count, _)) if count >= failures) {
            *seen = Some((failures, Instant::now()));
        }
    }

    /// The health of a store whose last commit `failing`, after `failures` failed commits in
    /// all: `Failing` from the first call that sees a new failure until [`FAILURE_HOLD`] has
    /// passed without another, `Ok` after that (and whenever the last commit succeeded).
    pub(crate) fn health(&self, failing: bool, failures: u64) -> StoreHealth {
        if !failing {
            return StoreHealth::Ok;
        }
        let now = Instant::now();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let since = match *seen {
            Some((count, since)) if count == failures => since,
            _ => seen.insert((failures, now)).1,
        };
        if now.duration_since(since) < FAILURE_HOLD {
            StoreHealth::Failing
        } else {
            StoreHealth::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_held_for_the_hold_then_lets_a_message_try_again() {
        let hold = FailureHold::default();
        assert_eq!(hold.health(false, 0), StoreHealth::Ok);
        assert_eq!(hold.health(true, 1), StoreHealth::Failing);
        tokio::time::advance(FAILURE_HOLD - Duration::from_millis(1)).await;
        assert_eq!(hold.health(true, 1), StoreHealth::Failing);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(hold.health(true, 1), StoreHealth::Ok, "past the hold");
        // The message let through fails too: held again, for the whole hold.
        assert_eq!(hold.health(true, 2), StoreHealth::Failing);
        tokio::time::advance(FAILURE_HOLD / 2).await;
        assert_eq!(hold.health(true, 2), StoreHealth::Failing);
        // It succeeded: healthy at once.
        assert_eq!(hold.health(false, 2), StoreHealth::Ok);
    }

    /// The hold runs from the failure when it was noted then, not from the first probe.
    #[tokio::test(start_paused = true)]
    async fn the_hold_runs_from_the_failure_not_from_the_first_probe() {
        let hold = FailureHold::default();
        hold.failed(1);
        tokio::time::advance(FAILURE_HOLD).await;
        assert_eq!(
            hold.health(true, 1),
            StoreHealth::Ok,
            "no probe came in between"
        );
        hold.failed(2);
        hold.failed(2);
        tokio::time::advance(FAILURE_HOLD / 2).await;
        assert_eq!(hold.health(true, 2), StoreHealth::Failing);
    }
}

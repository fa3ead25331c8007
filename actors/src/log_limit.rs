//! Log lines that a flood could multiply (one per connection opened, closed or refused), kept to
//! a rate: up to `per_second` lines in each second, and past it one summary line for the
//! second, saying how many were left out.
//!
//! The summary of a second is written by the first line of a later second, or, when nothing
//! follows, by a timer armed when the first line of a second was left out, so a flood that stops
//! is still summed up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// The kinds of lines one limiter counts, for its summary.
pub(crate) const KINDS: usize = 2;

/// A rate limit on a family of log lines.
pub(crate) struct LogLimit {
    /// Lines logged per second; `None` logs every line.
    per_second: Option<u32>,
    state: Mutex<State>,
    /// Writes the summary of a second that had lines left out.
    summary: fn(&[u64; KINDS]),
}

struct State {
    /// The current second began here.
    window: Instant,
    /// Lines logged in the current second.
    logged: u32,
    /// Lines left out in the current second, by kind.
    left_out: [u64; KINDS],
    /// A flush timer is armed for the current second.
    flush_armed: bool,
}

const SECOND: Duration = Duration::from_secs(1);

impl LogLimit {
    pub(crate) fn new(per_second: Option<u32>, summary: fn(&[u64; KINDS])) -> Arc<Self> {
        Arc::new(LogLimit {
            per_second,
            state: Mutex::new(State {
                window: Instant::now(),
                logged: 0,
                left_out: [0; KINDS],
                flush_armed: false,
            }),
            summary,
        })
    }

    /// Whether a line of `kind` may be logged now. Past the rate it is counted instead, and
    /// summed up once its second is over (a flush is spawned on `tasks` for that).
    pub(crate) fn admit(self: &Arc<Self>, kind: usize, tasks: &TaskTracker) -> bool {
        let Some(per_second) = self.per_second else {
            return true;
        };
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(state.window) >= SECOND {
            self.roll(&mut state, now);
        }
        if state.logged < per_second {
            state.logged += 1;
            return true;
        }
        state.left_out[kind] += 1;
        if !state.flush_armed {
            state.flush_armed = true;
            let (this, at) = (Arc::clone(self), state.window + SECOND);
            tasks.spawn(async move {
                tokio::time::sleep_until(at).await;
                let mut state = this.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.window + SECOND <= Instant::now() {
                    let now = Instant::now();
                    this.roll(&mut state, now);
                }
            });
        }
        false
    }

    /// Ends the current second: writes its summary if lines were left out, starts the next.
    fn roll(&self, state: &mut State, now: Instant) {
        if state.left_out.iter().any(|&n| n > 0) {
            (self.summary)(&state.left_out);
        }
        *state = State {
            window: now,
            logged: 0,
            left_out: [0; KINDS],
            flush_armed: false,
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    static SUMMED: AtomicU64 = AtomicU64::new(0);

    fn sum(left_out: &[u64; KINDS]) {
        SUMMED.fetch_add(left_out.iter().sum(), Ordering::SeqCst);
    }

    /// Up to the rate per second, then counted; the count is summed up once the second is over
    /// even when nothing follows, and the next second logs again.
    #[tokio::test(start_paused = true)]
    async fn lines_past_the_rate_are_summed_up_once_per_second() {
        let tasks = TaskTracker::new();
        let limit = LogLimit::new(Some(3), sum);
        let logged = (0..10).filter(|n| limit.admit(n % 2, &tasks)).count();
        assert_eq!(logged, 3);
        assert_eq!(SUMMED.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(SUMMED.load(Ordering::SeqCst), 7);
        assert!(limit.admit(0, &tasks));
        let unlimited = LogLimit::new(None, sum);
        assert!((0..100).all(|_| unlimited.admit(0, &tasks)));
    }
}

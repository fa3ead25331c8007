//! Which writes of a [`DirStore`](super::DirStore) are under way, and which finished after
//! their caller had given up (its handler timed out, so its sender was answered AE): a resend
//! of the same message is answered from here instead of being written a second time.
//!
//! Keyed like the SQLite store's duplicates (MSH-3, MSH-4, MSH-10 and the content digest, MSH-7
//! aside), but only for those two cases: a directory store does not look for duplicates among
//! the files it holds. Kept in memory, so for as long as the process runs, at most
//! [`MAX_UNCLAIMED`] messages, each for at most [`UNCLAIMED_FOR`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::store::StoreId;

/// How many unclaimed writes are remembered; the oldest are forgotten first.
pub(super) const MAX_UNCLAIMED: usize = 4096;

/// How long an unclaimed write is remembered: as long as the SQLite store's default duplicate
/// window.
pub(super) const UNCLAIMED_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// MSH-3, MSH-4 and MSH-10 (length-prefixed), and the content digest.
pub(super) type Key = (Vec<u8>, [u8; 32]);

/// What an append of a message should do.
pub(super) enum Claim {
    /// Nothing known of this message: write it (the claim is registered as under way).
    Write,
    /// The same message is being written: wait for that write. `Some(id)` is its file; `None`
    /// means it failed, and the append should claim again.
    Wait(oneshot::Receiver<Option<StoreId>>),
    /// The same message was stored after its caller gave up: this append takes it over.
    Stored(StoreId),
}

#[derive(Default)]
pub(super) struct Claims {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Writes under way, with the appends of the same message waiting for them.
    writing: HashMap<Key, Vec<oneshot::Sender<Option<StoreId>>>>,
    /// Writes that finished after their caller gave up, not yet claimed by a resend.
    unclaimed: HashMap<Key, (StoreId, Instant)>,
    /// `unclaimed` in the order it was filled, to forget the oldest first.
    order: VecDeque<(Key, Instant)>,
}

impl Claims {
    /// What an append of the message `key` does; registers a write when it should write.
    pub(super) fn claim(&self, key: &Key) -> Claim {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, _)) = state.unclaimed.remove(key) {
            return Claim::Stored(id);
        }
        if let Some(waiters) = state.writing.get_mut(key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Claim::Wait(rx);
        }
        state.writing.insert(key.clone(), Vec::new());
        Claim::Write
    }

    /// The write registered for `key` ended: `Some(id)` if the message is stored. `answer`
    /// hands the result to the write's caller and says whether it took it. Appends waiting for
    /// the write take it over; when no one did, it is kept for a resend. Returns whether it was
    /// left unclaimed.
    ///
    /// The caller is answered under the lock, with the write no longer registered: once it has
    /// its answer (and its sender the ACK), an append of the same message is a new write, never
    /// a wait for this one. Answered first, a resend sent at once after the ACK could find the
    /// write still registered and be taken for the same message.
    pub(super) fn finish(
        &self,
        key: Key,
        stored: Option<StoreId>,
        answer: impl FnOnce() -> bool,
    ) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let waiters = state.writing.remove(&key).unwrap_or_default();
        let mut taken = answer();
        for waiter in waiters {
            taken |= waiter.send(stored.clone()).is_ok() && stored.is_some();
        }
        let Some(id) = stored.filter(|_| !taken) else {
            return false;
        };
        state.keep(key, id);
        true
    }

    /// Keeps the stored message `key` for a resend: its write answered, but its caller gave up
    /// before reading the answer (the two crossed at the handler's deadline).
    pub(super) fn unread(&self, key: Key, id: StoreId) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.keep(key, id);
    }
}

impl State {
    /// Remembers a stored message no append took, for a resend to claim.
    fn keep(&mut self, key: Key, id: StoreId) {
        let now = Instant::now();
        self.unclaimed.insert(key.clone(), (id, now));
        self.order.push_back((key, now));
        self.forget_old(now);
    }

    /// Forgets unclaimed writes past [`MAX_UNCLAIMED`] or older than [`UNCLAIMED_FOR`].
    fn forget_old(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) > UNCLAIMED_FOR;
            if self.order.len() <= MAX_UNCLAIMED && !expired {
                break;
            }
            // The entry may have been claimed since, or replaced by a later write of the same
            // message: only the one recorded at this time goes.
            if self.unclaimed.get(key).is_some_and(|(_, kept)| kept == at) {
                self.unclaimed.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        (vec![n], [n; 32])
    }

    /// A write nobody took is handed to the next append of the same message, once.
    #[test]
    fn unclaimed_write_goes_to_the_next_append_once() {
        let claims = Claims::default();
        assert!(matches!(claims.claim(&key(1)), Claim::Write));
        assert!(claims.finish(key(1), Some(StoreId::new("f")), || false));
        assert!(matches!(claims.claim(&key(1)), Claim::Stored(id) if id.as_str() == "f"));
        assert!(matches!(claims.claim(&key(1)), Claim::Write));
    }

    /// An append of a message being written waits for that write and takes it over; a failed
    /// write sends it back to claim again.
    /// A caller answered its write's result and at once sending the same message again (a
    /// sender resending right after its ACK) starts a new write: the first write is no longer
    /// registered once its caller has the answer. The answer is slow to finish here (a write
    /// thread preempted after answering), and the second claim still cannot see it.
    #[test]
    fn append_right_after_the_answer_is_a_new_write() {
        let claims = std::sync::Arc::new(Claims::default());
        assert!(matches!(claims.claim(&key(3)), Claim::Write));
        let (answered, answer) = std::sync::mpsc::channel();
        let writer = {
            let claims = std::sync::Arc::clone(&claims);
            std::thread::spawn(move || {
                claims.finish(key(3), Some(StoreId::new("h")), || {
                    answered.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(50));
                    true
                })
            })
        };
        answer.recv().unwrap();
        assert!(matches!(claims.claim(&key(3)), Claim::Write));
        assert!(
            !writer.join().unwrap(),
            "the first write was claimed by its caller"
        );
    }

    #[test]
    fn append_during_a_write_waits_for_it() {
        let claims = Claims::default();
        assert!(matches!(claims.claim(&key(2)), Claim::Write));
        let Claim::Wait(mut waiter) = claims.claim(&key(2)) else {
            panic!("expected to wait")
        };
        assert!(!claims.finish(key(2), Some(StoreId::new("g")), || false));
        assert_eq!(waiter.try_recv().unwrap().unwrap().as_str(), "g");
        assert!(matches!(claims.claim(&key(2)), Claim::Write));
        let Claim::Wait(mut waiter) = claims.claim(&key(2)) else {
            panic!("expected to wait")
        };
        assert!(!claims.finish(key(2), None, || false));
        assert_eq!(waiter.try_recv().unwrap(), None);
    }

    /// At most `MAX_UNCLAIMED` writes are remembered, the oldest forgotten first.
    #[test]
    fn oldest_unclaimed_writes_are_forgotten_past_the_limit() {
        let claims = Claims::default();
        for n in 0..=MAX_UNCLAIMED {
            let key = (n.to_be_bytes().to_vec(), [0; 32]);
            assert!(matches!(claims.claim(&key), Claim::Write));
            claims.finish(key, Some(StoreId::new(n.to_string())), || false);
        }
        let first = (0usize.to_be_bytes().to_vec(), [0; 32]);
        assert!(matches!(claims.claim(&first), Claim::Write));
        let last = (MAX_UNCLAIMED.to_be_bytes().to_vec(), [0; 32]);
        assert!(matches!(claims.claim(&last), Claim::Stored(_)));
    }
}

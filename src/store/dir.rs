//! [`DirStore`]: one file per message, the inbox of earlier releases, as a [`Store`].

mod claims;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::inbox::{Inbox, InboxError};
use crate::store::health::FailureHold;
use crate::store::{AppendFuture, Receipt, Record, Store, StoreError, StoreHealth, StoreId};
use claims::{Claim, Claims};

/// A [`Store`] that writes each message to its own file in a directory (see
/// [`Inbox`](crate::inbox::Inbox) for the file names and the write sequence: temporary file,
/// `fsync`, hard link, directory `fsync`). Its ids are the file names.
///
/// It does not look for duplicates among its files: a resend of a message that was
/// acknowledged is a second file. Two cases are recognised, in memory, while the process runs:
/// a message whose write finished after its caller gave up (the handler timed out, so the
/// sender was answered AE) is not written again when it is resent, and the resend is answered
/// as a [`Receipt::Duplicate`] of that file; and a resend that arrives while the same message
/// is still being written waits for that write instead of starting another.
///
/// The blocking write holds the [`Record`] (and so the request's lease on the server's limits)
/// until it has finished, even when the append future was dropped at the handler deadline.
#[derive(Debug, Clone)]
pub struct DirStore {
    inbox: Inbox,
    claims: Arc<Claims>,
    outcomes: Arc<Outcomes>,
}

/// What the writes did, for [`Store::health`].
#[derive(Debug, Default)]
struct Outcomes {
    /// The last write failed.
    failing: AtomicBool,
    /// Writes that failed.
    failures: AtomicU64,
    hold: FailureHold,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claims")
    }
}

impl DirStore {
    /// Opens (creating if missing) the directory `dir`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Dir`] when the directory cannot be created or written to.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Ok(Self {
            inbox: Inbox::open(dir).map_err(StoreError::Dir)?,
            claims: Arc::default(),
            outcomes: Arc::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.inbox.dir()
    }
}

impl Store for DirStore {
    fn append(&self, record: Record) -> AppendFuture {
        let control_id = (!record.control_id().is_empty()).then(|| record.control_id());
        // Named now, in call order (see `Inbox::store`).
        let write = self.inbox.prepare(control_id);
        let key = control_id.map(|_| (record.dedup_key(), *record.digest()));
        let claims = Arc::clone(&self.claims);
        let outcomes = Arc::clone(&self.outcomes);
        let write_outcomes = Arc::clone(&self.outcomes);
        Box::pin(async move {
            if let Some(key) = &key {
                loop {
                    match claims.claim(key) {
                        Claim::Write => break,
                        Claim::Stored(of) => return Ok(Receipt::Duplicate { of }),
                        Claim::Wait(written) => {
                            if let Ok(Some(of)) = written.await {
                                return Ok(Receipt::Duplicate { of });
                            }
                        }
                    }
                }
            }
            // No await between the claim above and the spawn below: a write registered as
            // under way always runs, and always finishes its claim.
            let (answer, answered) = oneshot::channel();
            let mut answered = Unread {
                answer: Some(answered),
                claims: Arc::clone(&claims),
                key: key.clone(),
            };
            let task = tokio::task::spawn_blocking(move || {
                let finish = Finish { claims, key };
                let result = write.run(record.payload());
                if result.is_err() {
                    write_outcomes.failures.fetch_add(1, Ordering::Relaxed);
                }
                write_outcomes
                    .failing
                    .store(result.is_err(), Ordering::Relaxed);
                // The record (and the request's lease) goes once the file is written: the
                // request counted against the server's limits until now, even if its handler
                // timed out long ago.
                let control_id =
                    crate::hl7::logged_control_id(&record.text(record.control_id())).into_owned();
                drop(record);
                let stored = result.as_ref().ok().map(|path| file_id(path));
                let receipt = result.map(|path| Receipt::Stored {
                    id: file_id(&path),
                    reused_control_id: false,
                });
                if finish.done(stored.clone(), || answer.send(receipt).is_ok())
                    && let Some(id) = stored
                {
                    tracing::info!(
                        store.id = %id,
                        hl7.control_id = control_id,
                        "message stored after its handler timed out (answered AE); its resend \
                         will be acknowledged without a second copy"
                    );
                }
            });
            match answered.read().await {
                Ok(Err(e)) => {
                    outcomes
                        .hold
                        .failed(outcomes.failures.load(Ordering::Relaxed));
                    Err(StoreError::Dir(e))
                }
                Ok(result) => result.map_err(StoreError::Dir),
                Err(_) => Err(StoreError::Dir(match task.await {
                    Err(error) => InboxError::Task(error),
                    Ok(()) => unreachable!("the write answers before it ends"),
                })),
            }
        })
    }

    fn health(&self) -> StoreHealth {
        let o = &self.outcomes;
        o.hold.health(
            o.failing.load(Ordering::Relaxed),
            o.failures.load(Ordering::Relaxed),
        )
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.inbox.dir().display())
    }
}

/// The answer of a write, until its append reads it. An append dropped in between (its handler
/// timed out just as the write finished) leaves the stored message for a resend to claim, as a
/// write that finishes after its append gave up does: without this, the write's answer would
/// count as taken and the resend would write a second copy.
struct Unread {
    answer: Option<oneshot::Receiver<Result<Receipt, InboxError>>>,
    claims: Arc<Claims>,
    key: Option<claims::Key>,
}

impl Unread {
    /// Waits for the answer; once it is read, dropping `self` keeps nothing. Cancel safe: an
    /// append dropped while waiting leaves the answer unread.
    async fn read(&mut self) -> Result<Result<Receipt, InboxError>, oneshot::error::RecvError> {
        let read = self.answer.as_mut().expect("read once").await;
        self.answer = None;
        read
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        if let (Some(mut answer), Some(key)) = (self.answer.take(), self.key.take()) {
            // Closed first: a write finishing now either answered already (read below) or
            // finds no one to answer and keeps the message itself.
            answer.close();
            if let Ok(Ok(Receipt::Stored { id, .. })) = answer.try_recv() {
                self.claims.unread(key, id);
            }
        }
    }
}

/// The id of a stored file: its name.
fn file_id(path: &Path) -> StoreId {
    StoreId::new(
        path.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .as_ref(),
    )
}

/// Ends a write's claim, on every path (a panicking write ends it as failed).
struct Finish {
    claims: Arc<Claims>,
    key: Option<claims::Key>,
}

impl Finish {
    /// Ends the claim, answering the caller with `answer` (see [`Claims::finish`]); returns
    /// whether the stored message was left for a resend to claim.
    fn done(mut self, stored: Option<StoreId>, answer: impl FnOnce() -> bool) -> bool {
        match self.key.take() {
            Some(key) => self.claims.finish(key, stored, answer),
            None => {
                answer();
                false
            }
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.claims.finish(key, None, || false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write of the message `n` that has finished and answered while its append still
    /// waited (the answer not read yet): the claims, the message's key and file, and the
    /// append's unread answer.
    fn answered_write(n: u8) -> (Arc<Claims>, claims::Key, StoreId, Unread) {
        let claims = Arc::new(Claims::default());
        let key: claims::Key = (format!("LAB|HOSP|C{n}").into_bytes(), [n; 32]);
        assert!(matches!(claims.claim(&key), Claim::Write));
        let (answer, answered) = oneshot::channel();
        let unread = Unread {
            answer: Some(answered),
            claims: Arc::clone(&claims),
            key: Some(key.clone()),
        };
        let id = StoreId::new(format!("20240101T000000.000000Z-C{n}-1-1.hl7").as_str());
        let receipt = Receipt::Stored {
            id: id.clone(),
            reused_control_id: false,
        };
        let left = claims.finish(key.clone(), Some(id.clone()), || {
            answer.send(Ok(receipt)).is_ok()
        });
        assert!(!left, "answered, so not left for a resend by the write");
        (claims, key, id, unread)
    }

    /// The write answered, then its append was dropped before reading the answer: the stored
    /// message is kept, and the resend takes it over instead of writing a second copy.
    #[test]
    fn answer_left_unread_keeps_the_message_for_its_resend() {
        let (claims, key, id, unread) = answered_write(1);
        drop(unread);
        match claims.claim(&key) {
            Claim::Stored(of) => assert_eq!(of, id),
            Claim::Write => panic!("the resend would write a second copy"),
            Claim::Wait(_) => panic!("no write is under way"),
        }
    }

    /// An answer that was read leaves nothing behind: a later append of the same message is a
    /// new write.
    #[tokio::test]
    async fn answer_that_was_read_keeps_nothing() {
        let (claims, key, id, mut unread) = answered_write(2);
        let read = unread.read().await;
        assert!(
            matches!(read, Ok(Ok(Receipt::Stored { id: ref got, .. })) if *got == id),
            "{read:?}"
        );
        drop(unread);
        assert!(matches!(claims.claim(&key), Claim::Write));
    }
}

//! [`DirStore`]: one file per message, the inbox of earlier releases, as a [`Store`].

mod claims;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::inbox::{Inbox, InboxError};
use crate::store::{AppendFuture, Receipt, Record, Store, StoreError, StoreId};
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
            let task = tokio::task::spawn_blocking(move || {
                let finish = Finish { claims, key };
                let result = write.run(record.payload());
                // The record (and the request's lease) goes once the file is written: the
                // request counted against the server's limits until now, even if its handler
                // timed out long ago.
                let control_id = record.text(record.control_id()).into_owned();
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
            match answered.await {
                Ok(result) => result.map_err(StoreError::Dir),
                Err(_) => Err(StoreError::Dir(match task.await {
                    Err(error) => InboxError::Task(error),
                    Ok(()) => unreachable!("the write answers before it ends"),
                })),
            }
        })
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.inbox.dir().display())
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

//! [`DirStore`]: one file per message, the inbox of earlier releases, as a [`Store`].

use std::path::{Path, PathBuf};

use crate::inbox::Inbox;
use crate::store::{AppendFuture, Receipt, Record, Store, StoreError, StoreId};

/// A [`Store`] that writes each message to its own file in a directory (see
/// [`Inbox`](crate::inbox::Inbox) for the file names and the write sequence: temporary file,
/// `fsync`, hard link, directory `fsync`).
///
/// It does not detect duplicates: a resend is a second file. Its ids are the file names.
#[derive(Debug, Clone)]
pub struct DirStore {
    inbox: Inbox,
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
        let write = self.inbox.store_bytes(record.payload().clone(), control_id);
        Box::pin(async move {
            let path = write.await.map_err(StoreError::Dir)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            Ok(Receipt::Stored {
                id: StoreId::new(name.as_ref()),
                reused_control_id: false,
            })
        })
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.inbox.dir().display())
    }
}

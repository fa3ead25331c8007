//! Durable message stores: a message is acknowledged only once it is safely stored.
//!
//! A [`Store`] appends one received message with its metadata ([`Record`]: receive time,
//! listener, peer, TLS identity and the MSH header fields, never any other field) and resolves
//! only when the message is durable, with a [`Receipt`]: the store id, or "duplicate of id".
//! [`StoreLayer`] is the ready-made middleware: it stores every message before the handler runs
//! and answers a duplicate resend without storing it again, so an embedder gets `mllp serve`'s
//! guarantee in one line:
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mllp::app::{Request, Router};
//! use mllp::store::{SqliteStore, StoreLayer};
//!
//! let store = SqliteStore::open("inbox.db", Default::default()).await?;
//! let router = Router::new()
//!     .route("*", |_req: Request| async {})
//!     .layer(StoreLayer::new(store));
//! let server = mllp::Server::builder().router(router).bind("127.0.0.1:2575").await?;
//! # let _ = server; Ok(()) }
//! ```
//!
//! Stores shipped here:
//!
//! - [`SqliteStore`] (feature `sqlite`, on by default): one SQLite file in WAL mode with
//!   `synchronous=FULL`, written by one thread that commits everything waiting in one
//!   transaction (group commit), with duplicate detection, search, retention and replay.
//! - [`DirStore`]: one file per message in a directory (the [`Inbox`](crate::inbox::Inbox) of
//!   earlier releases); no duplicate detection among its files, only the resend of a write that
//!   outlived its handler is recognised, while the process runs.
//! - `JetStreamStore` (feature `nats`, off by default in the library, on in the CLI): a NATS
//!   JetStream stream, for N stateless receivers behind a load balancer; acknowledged after the
//!   stream's PubAck, resends recognised by the stream (`Nats-Msg-Id`) whichever receiver gets
//!   them.
//!
//! # Guarantees
//!
//! - Nothing is acknowledged before it is committed: [`Store::append`] resolves `Ok` only once
//!   the message survives a crash or a power loss, and [`StoreLayer`] calls the handler (and so
//!   lets the ACK be built) only after that.
//! - A store that cannot commit answers `Err`; [`StoreLayer`] turns it into AE (CE in enhanced
//!   mode) with ERR-3 207, never a success ACK.
//! - At-least-once: when the future of `append` is dropped (the handler timed out, and the
//!   sender was answered AE) the message may still be committed. Its resend is then recognised
//!   and acknowledged without a second copy: by [`SqliteStore`]'s duplicate detection, and by
//!   [`DirStore`] while the process runs (it remembers writes that finished after their caller
//!   gave up).
//! - Store writes count against the server's limits: a [`Record`] made from a request holds
//!   the request's lease ([`Request::lease`](crate::app::Request::lease)), and a store keeps
//!   the record until its write has finished, so a write that outlives its handler still holds
//!   the request's place in `max_in_flight` and its `max_concurrent_handlers` permit.

mod digest;
mod dir;
mod health;
mod layer;
#[cfg(feature = "nats")]
pub mod nats;
mod record;
mod spec;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use dir::DirStore;
pub use health::FAILURE_HOLD;
pub use layer::{DuplicatePolicy, StoreLayer, Stored};
#[cfg(feature = "nats")]
pub use nats::{JetStreamConfig, JetStreamStore};
pub use record::Record;
pub use spec::{NatsSpec, StoreSpec, StoreSpecError};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConfig, SqliteStats, SqliteStore};

/// The future returned by [`Store::append`].
pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Receipt, StoreError>> + Send + 'static>>;

/// The future returned by [`Store::close`].
pub type CloseFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A durable message store.
///
/// Implementations are cheap to share (`Arc<dyn Store>` is how [`StoreLayer`] holds one).
pub trait Store: Send + Sync + 'static {
    /// Appends `record` and resolves once it is durable (or known to be a duplicate of a
    /// durable message).
    ///
    /// Cancel safety: dropping the future does not undo the append; the message may still be
    /// stored (at-least-once).
    fn append(&self, record: Record) -> AppendFuture;

    /// Whether the store can take messages now, for readiness. The stores here report
    /// [`StoreHealth::Failing`] after a failed commit until the next successful one, or until
    /// [`FAILURE_HOLD`] has passed with no commit tried: then `Ok`, so that a message gets
    /// through to try the store again (see [`FAILURE_HOLD`]). The default is always `Ok`.
    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }

    /// What the store writes to, for logs (`sqlite:mllp-inbox.db`); never patient data.
    fn describe(&self) -> String;

    /// Finishes what was appended so far and releases the store's files, for a clean stop:
    /// call it after the server has drained. Appends after it fail. [`SqliteStore`] commits what
    /// waits, copies its write-ahead log into the database file (so that the file alone holds
    /// every message) and stops its writer, for every clone and `Arc` of it at once (they
    /// share the writer: close it once, where the server is shut down). The default does
    /// nothing.
    fn close(&self) -> CloseFuture {
        Box::pin(async {})
    }
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn append(&self, record: Record) -> AppendFuture {
        (**self).append(record)
    }
    fn health(&self) -> StoreHealth {
        (**self).health()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn close(&self) -> CloseFuture {
        (**self).close()
    }
}

/// Whether a store is currently committing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreHealth {
    /// The last commit succeeded (or none was tried yet), or it failed more than
    /// [`FAILURE_HOLD`] ago and no commit was tried since.
    Ok,
    /// The last commit failed, less than [`FAILURE_HOLD`] ago; messages are answered AE/CE
    /// until a commit succeeds again.
    Failing,
}

/// The id a store gave a message: a row id for SQLite, a file name for a directory store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreId(Arc<str>);

impl StoreId {
    /// An id from its text.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a number, when it is one (SQLite row ids are).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

impl From<u64> for StoreId {
    fn from(id: u64) -> Self {
        Self(id.to_string().into())
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`Store::append`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Receipt {
    /// The message is durable under `id`.
    Stored {
        /// Its id in the store.
        id: StoreId,
        /// Another message from the same sender with the same MSH-10 but other content is
        /// inside the duplicate window: the sender reused a control id. The message is stored
        /// all the same (data is never dropped) and flagged.
        reused_control_id: bool,
    },
    /// The same message (same sender, MSH-10 and content, MSH-7 aside) is already stored,
    /// inside the duplicate window: nothing new was stored.
    Duplicate {
        /// The id of the stored copy.
        of: StoreId,
    },
}

impl Receipt {
    /// The id of the stored message (the earlier copy's for a duplicate).
    pub fn id(&self) -> &StoreId {
        match self {
            Receipt::Stored { id, .. } => id,
            Receipt::Duplicate { of } => of,
        }
    }

    /// Whether this was a duplicate.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Receipt::Duplicate { .. })
    }
}

/// Boxed source error of a [`StoreError`], so that no outside crate's type is in the API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store could not be opened or a message could not be stored.
///
/// Messages name paths and settings, never message content; the cause is the `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be opened or created (missing directory, permissions).
    #[error("cannot open store {target}")]
    Open {
        /// What was opened (`sqlite:PATH`).
        target: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The file is an SQLite database but not one written by `mllp`.
    #[error(
        "{target} is not an mllp store (application id {found:#x}); refusing to use it, \
         choose another path"
    )]
    NotAStore {
        /// What was opened.
        target: String,
        /// The application id found in the file header.
        found: i64,
    },
    /// The store was written by a newer release of `mllp`, whose schema this one cannot read.
    #[error(
        "{target} has schema version {found}, newer than {supported} (what this release \
         supports); upgrade mllp, or use another store path"
    )]
    NewerSchema {
        /// What was opened.
        target: String,
        /// The schema version in the file.
        found: i64,
        /// The newest version this release knows.
        supported: i64,
    },
    /// The file at the store's path is not an SQLite database at all (another kind of file);
    /// it was left untouched.
    #[error(
        "{target} is not an SQLite database (another kind of file); refusing to use it, choose \
         another path"
    )]
    NotADatabase {
        /// What was opened.
        target: String,
    },
    /// The store's file is damaged; it was left untouched.
    #[error("{target} is corrupt; it was left untouched: restore it from a backup or move it away")]
    Corrupt {
        /// What was opened.
        target: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A commit failed (disk full, read-only file, locked by another process, I/O error): the
    /// message is not stored.
    #[error("store commit failed")]
    Commit(#[source] BoxError),
    /// A read or a maintenance statement (prune, search) failed.
    #[error("store query failed")]
    Query(#[source] BoxError),
    /// The store's writer has stopped (the store was closed, or its thread panicked).
    #[error("store writer has stopped")]
    Closed,
    /// The directory store failed (see its source).
    #[error("directory store failed")]
    Dir(#[source] crate::inbox::InboxError),
    /// The log (a NATS server) cannot be reached now; the client reconnects by itself. The
    /// message was not sent.
    #[error("{target} is unreachable (reconnecting); message not stored")]
    Unavailable {
        /// The log (`nats://HOST:PORT/STREAM`).
        target: String,
    },
    /// The log did not confirm the message: no stream answered for its subject, the
    /// confirmation timed out, or the stream refused it. It may have been stored all the same;
    /// the sender's resend is then recognised as a duplicate.
    #[error("{target} did not confirm the message")]
    Publish {
        /// The log.
        target: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The stream does not exist, and creating it was not asked for.
    #[error(
        "stream {stream} not found on {target}: create it (docs/scale-out.md shows how), or \
         let mllp create it (--create-stream)"
    )]
    StreamNotFound {
        /// The servers.
        target: String,
        /// The stream's name.
        stream: String,
    },
    /// The stream does not capture the subjects messages are published to.
    #[error(
        "stream {stream} on {target} does not capture {subjects}: add it to the stream's \
         subjects, or choose the subject prefix the stream captures"
    )]
    StreamSubjects {
        /// The servers.
        target: String,
        /// The stream's name.
        stream: String,
        /// The subjects messages go to (`hl7.>`).
        subjects: String,
    },
    /// A size limit of the log is below the largest message the receiver accepts.
    #[error(
        "{target}: {limit_name} is {limit} bytes, below the {needed} bytes a message may take \
         (the max message size plus {headers} bytes of headers); raise {limit_name}, or lower \
         the max message size to {suggested} or less"
    )]
    LimitTooSmall {
        /// The log.
        target: String,
        /// Which limit: `the server's max_payload`, `the stream's max_msg_size`.
        limit_name: &'static str,
        /// Its value.
        limit: u64,
        /// What a largest message needs.
        needed: u64,
        /// The room kept for headers.
        headers: u64,
        /// The largest max message size the limit admits.
        suggested: u64,
    },
}

impl StoreError {
    /// Whether the failure is in the store's setup (refuse to start) rather than a passing one.
    pub fn is_startup(&self) -> bool {
        matches!(
            self,
            StoreError::Open { .. }
                | StoreError::NotAStore { .. }
                | StoreError::NotADatabase { .. }
                | StoreError::NewerSchema { .. }
                | StoreError::Corrupt { .. }
                | StoreError::StreamNotFound { .. }
                | StoreError::StreamSubjects { .. }
                | StoreError::LimitTooSmall { .. }
        )
    }
}

/// `error: cause: cause…`, one line, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;

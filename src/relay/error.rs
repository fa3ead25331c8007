//! [`RelayError`]: why a relay could not start.

use crate::store::StoreError;

/// Why a relay could not start. Once running, a relay does not fail: it retries reads,
/// downstream sends and cursor commits, logging each failure, until it is stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The source store could not be opened (missing, not an mllp store, unreachable, no
    /// stream).
    #[error("cannot open the relay's source")]
    Source(#[source] StoreError),
    /// The store kind has no relay source (`dir:`, `none`), or its feature is off.
    #[error("cannot relay from {0}: a relay reads sqlite:PATH or nats://HOST:PORT/STREAM")]
    UnsupportedSource(String),
    /// The relay name cannot be used.
    #[error("invalid relay name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// No JetStream stream captures the dead-letter subject, and creating one was not asked
    /// for.
    #[error(
        "no stream captures the dead-letter subject {subject}: create one, or let mllp create \
         it (--create-stream)"
    )]
    NoDeadLetterStream {
        /// The subject.
        subject: String,
    },
    /// The dead-letter subject would be read back by the relay itself (the source stream
    /// captures it under the relayed prefix).
    #[error("the dead-letter subject {subject} is relayed itself; choose another")]
    DeadLetterLoop {
        /// The subject.
        subject: String,
    },
    /// The downstream TLS settings cannot be used.
    #[error("downstream TLS settings cannot be used")]
    Tls(#[source] crate::tls::TlsConfigError),
    /// Another relay of the same name is running on the same SQLite store (it holds the
    /// name's lock file): two would each send every message, and move one cursor back and
    /// forth.
    #[error(
        "relay {name:?} is already running on this store (it holds {}): stop it, or give \
         this one another name",
        lock.display()
    )]
    AlreadyRunning {
        /// The name.
        name: String,
        /// The lock file.
        lock: std::path::PathBuf,
    },
    /// The relay's task panicked (a bug); nothing after its last commit was marked done.
    #[error("relay task panicked")]
    Panicked,
}

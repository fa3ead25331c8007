//! Where a relay reads: an SQLite store (a cursor row) or a JetStream stream (a durable pull
//! consumer). Both hand out one message at a time, oldest first, and move on only when told
//! the message is done (delivered or dead-lettered).

#[cfg(feature = "nats")]
mod jetstream;
#[cfg(feature = "sqlite")]
mod sqlite;

use bytes::Bytes;

use super::{RelayConfig, RelayError};
use crate::store::StoreSpec;

/// One message to relay.
pub(crate) struct Item {
    /// Store id (SQLite) or stream sequence (JetStream): increasing.
    pub(crate) id: u64,
    pub(crate) payload: Bytes,
    /// MSH-9.
    pub(crate) message_type: String,
    /// MSH-10.
    pub(crate) control_id: String,
    /// The JetStream message, to ack.
    #[cfg(feature = "nats")]
    pub(crate) message: Option<async_nats::jetstream::Message>,
}

/// What [`Source::next`] found.
pub(crate) enum Next {
    Item(Box<Item>),
    /// Nothing new (now, or within the source's own wait).
    Idle,
}

/// A relay's source. Its errors are one-line texts (no patient data): the worker logs them
/// and retries.
pub(crate) enum Source {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteSource),
    #[cfg(feature = "nats")]
    JetStream(Box<jetstream::JetStreamSource>),
}

impl Source {
    /// Opens the source `from` for the relay `config.name`.
    pub(crate) async fn open(from: &StoreSpec, config: &RelayConfig) -> Result<Self, RelayError> {
        match from {
            #[cfg(feature = "sqlite")]
            StoreSpec::Sqlite(path) => Ok(Source::Sqlite(
                sqlite::SqliteSource::open(path.clone(), config).await?,
            )),
            #[cfg(feature = "nats")]
            StoreSpec::Nats(spec) => Ok(Source::JetStream(Box::new(
                jetstream::JetStreamSource::open(spec, config).await?,
            ))),
            other => Err(RelayError::UnsupportedSource(other.to_string())),
        }
    }

    /// What is read (`sqlite:inbox.db`, `nats://…/HL7`).
    pub(crate) fn describe(&self) -> String {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(s) => s.describe(),
            #[cfg(feature = "nats")]
            Source::JetStream(s) => s.describe(),
        }
    }

    /// The last id done.
    pub(crate) fn position(&self) -> u64 {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(s) => s.position(),
            #[cfg(feature = "nats")]
            Source::JetStream(s) => s.position(),
        }
    }

    /// Messages waiting, if the source can tell.
    pub(crate) async fn backlog(&mut self) -> Option<u64> {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(s) => s.backlog().await,
            #[cfg(feature = "nats")]
            Source::JetStream(s) => s.backlog().await,
        }
    }

    /// The next message after the last one handed out. With `wait`, a source that can block
    /// for new messages (JetStream) waits a while before answering [`Next::Idle`].
    #[cfg_attr(not(feature = "nats"), allow(unused_variables))]
    pub(crate) async fn next(&mut self, wait: bool) -> Result<Next, String> {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(s) => s.next().await,
            #[cfg(feature = "nats")]
            Source::JetStream(s) => s.next(wait).await,
        }
    }

    /// The pause after [`Next::Idle`] before looking again.
    pub(crate) async fn idle_pause(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(s) => tokio::time::sleep(s.poll_interval()).await,
            // The pull request itself waited.
            #[cfg(feature = "nats")]
            Source::JetStream(_) => {}
        }
    }

    /// Tells the source the message is still being worked on (JetStream: resets its ack
    /// wait, so it is not handed out again meanwhile).
    pub(crate) async fn still_working(&self, item: &Item) {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(_) => {
                let _ = item;
            }
            #[cfg(feature = "nats")]
            Source::JetStream(s) => s.still_working(item).await,
        }
    }

    /// Marks `item` delivered: the position moves past it, durably.
    pub(crate) async fn done(&mut self, item: &Item) -> Result<(), String> {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(s) => s.done(item).await,
            #[cfg(feature = "nats")]
            Source::JetStream(s) => s.done(item).await,
        }
    }

    /// Records `item` as a dead letter with `reason` and moves the position past it, durably.
    pub(crate) async fn dead_letter(&mut self, item: &Item, reason: &str) -> Result<(), String> {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(s) => s.dead_letter(item, reason).await,
            #[cfg(feature = "nats")]
            Source::JetStream(s) => s.dead_letter(item, reason).await,
        }
    }
}

/// `error: cause: cause…`, for the texts sources return.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    crate::store::error_chain(error)
}

//! Store and forward: a [`Relay`] reads a store in order and sends each message downstream
//! with the [`Client`], moving on only after the downstream's AA/CA.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mllp::relay::{Relay, RelayConfig};
//!
//! let from = "sqlite:mllp-inbox.db".parse()?;
//! let relay = Relay::open(&from, "lis.example:2575", RelayConfig::default().name("lis")).await?;
//! let handle = relay.spawn();
//! // … later, on SIGTERM:
//! let stats = handle.shutdown().await?;
//! println!("{} delivered, {} dead letters", stats.delivered, stats.dead_lettered);
//! # Ok(()) }
//! ```
//!
//! # Sources
//!
//! - `sqlite:PATH`: the messages of an SQLite store in id order (arrival order). The
//!   relay's position is a row of `relay_cursors` named after the relay, in the same file; dead
//!   letters are rows of `dead_letters` (store id, relay, reason, time). It runs beside the
//!   `mllp serve` writing the file.
//! - `nats://HOST:PORT/STREAM`: the stream's messages under `<prefix>.>` in sequence order,
//!   through a durable pull consumer named after the relay, with one message in flight
//!   (`max_ack_pending: 1`). Dead letters are published to `mllp.dead.<name>` (the original
//!   payload and headers plus `Mllp-Dead-Reason`), which a stream must capture.
//!
//! # Delivery
//!
//! One message at a time, in order. The message is sent with its MSH-10 unchanged, so a
//! receiver that deduplicates recognises a resend.
//!
//! - AA/CA: the message is done; the position moves past it (the SQLite row is committed, the
//!   JetStream message acked and the ack confirmed) before the next is read.
//! - AR/CR: the downstream refuses it for good: it becomes a dead letter at once, with the
//!   ACK code and ERR-3 as the reason, and the relay moves on.
//! - AE/CE, no ACK within the reply timeout, a connection lost after sending, an ACK for
//!   another control id: the try fails; after [`RelayConfig::max_attempts`] tries the message
//!   becomes a dead letter; before, it is sent again after [`RelayConfig::retry_backoff`].
//! - The downstream refuses connections: it is down. The relay waits for it without end,
//!   reconnecting with the client's capped backoff; nothing becomes a dead letter because of
//!   it, and the messages after it wait their turn.
//!
//! # At-least-once, and its bound
//!
//! A message is marked done only after its AA/CA, so nothing is lost: a crash at any point
//! leaves the message in flight unmarked, and the next run sends it first. The one window is
//! between the downstream's ACK and the durable mark: a crash (or kill) there sends that
//! message again on restart, although it was acknowledged. With one message in flight, that
//! is **at most one message sent twice per crash**, with its MSH-10 unchanged. JetStream adds
//! one case of the same kind: an ack that the server did not confirm (the connection dropped)
//! hands the message out again after the ack wait; the relay recognises its own redelivery of a
//! message it already marked and skips it, but a crash before the confirmation again sends at
//! most that one message twice.
//!
//! A graceful stop ([`RelayHandle::shutdown`]) finishes the exchange in flight on an open
//! connection and marks it before returning, so it sends nothing twice; a stop while
//! connecting or while waiting to retry leaves that message for the next run.

mod config;
mod error;
mod event;
mod source;
mod worker;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::RelayConfig;
pub use error::RelayError;
pub use event::RelayEvent;

use crate::client::Client;
use crate::store::StoreSpec;
use source::Source;
use worker::{Observer, Worker};

/// A relay from a store to a downstream MLLP receiver, opened and ready to run.
pub struct Relay {
    source: Source,
    client: Client,
    config: RelayConfig,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("from", &self.source.describe())
            .field("to", &self.client)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Opens the source `from` (`sqlite:PATH` or `nats://HOST:PORT/STREAM`) for the relay
    /// [`RelayConfig::name`], to send to `to` (`HOST:PORT`). Nothing is sent until it runs;
    /// the downstream is not dialled yet.
    ///
    /// # Errors
    ///
    /// [`RelayError::InvalidName`], [`RelayError::UnsupportedSource`] (`dir:`, `none`),
    /// [`RelayError::Source`] (missing file, not an mllp store, NATS unreachable, no stream),
    /// [`RelayError::NoDeadLetterStream`], [`RelayError::DeadLetterLoop`],
    /// [`RelayError::Tls`].
    pub async fn open(
        from: &StoreSpec,
        to: impl Into<String>,
        config: RelayConfig,
    ) -> Result<Self, RelayError> {
        config::check_name(&config.name).map_err(|reason| RelayError::InvalidName {
            name: config.name.clone(),
            reason,
        })?;
        let to = to.into();
        // The relay counts and spaces its tries itself.
        let client_config = config.client.clone().max_retries(0);
        let client = match &config.tls {
            Some(tls) => {
                Client::with_tls(to, client_config, tls.clone()).map_err(RelayError::Tls)?
            }
            None => Client::with_config(to, client_config),
        };
        let source = Source::open(from, &config).await?;
        Ok(Self {
            source,
            client,
            config,
            observer: None,
        })
    }

    /// Calls `observer` with every [`RelayEvent`], from the relay's task (keep it short).
    #[must_use]
    pub fn on_event(mut self, observer: impl Fn(&RelayEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// What the relay reads (`sqlite:inbox.db`).
    pub fn source(&self) -> String {
        self.source.describe()
    }

    /// Runs the relay on a tokio task until [`RelayHandle::shutdown`] (or, with
    /// [`RelayConfig::follow`] off, until it has caught up).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(self) -> RelayHandle {
        let cancel = CancellationToken::new();
        let worker = Worker {
            source: self.source,
            client: self.client,
            config: self.config,
            observer: self.observer,
            cancel: cancel.clone(),
        };
        RelayHandle {
            cancel,
            task: tokio::spawn(worker.run()),
        }
    }

    /// Runs the relay on the current task until `shutdown` completes (or, with
    /// [`RelayConfig::follow`] off, until it has caught up), then stops as
    /// [`RelayHandle::shutdown`] does.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> RelayStats {
        let cancel = CancellationToken::new();
        let worker = Worker {
            source: self.source,
            client: self.client,
            config: self.config,
            observer: self.observer,
            cancel: cancel.clone(),
        };
        let run = worker.run();
        tokio::pin!(run);
        tokio::select! {
            stats = &mut run => return stats,
            () = shutdown => cancel.cancel(),
        }
        run.await
    }
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    cancel: CancellationToken,
    task: JoinHandle<RelayStats>,
}

impl RelayHandle {
    /// Asks the relay to stop: the exchange in flight on an open connection is finished and
    /// marked; waits between tries and reconnects are cut short. Returns at once; see
    /// [`shutdown`](Self::shutdown) to wait.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Stops the relay (as [`stop`](Self::stop)) and waits until it has.
    ///
    /// # Errors
    ///
    /// [`RelayError::Panicked`] if the relay's task panicked.
    pub async fn shutdown(self) -> Result<RelayStats, RelayError> {
        self.stop();
        self.wait().await
    }

    /// Waits until the relay ends (stopped, or caught up when not following).
    ///
    /// # Errors
    ///
    /// [`RelayError::Panicked`] if the relay's task panicked.
    pub async fn wait(self) -> Result<RelayStats, RelayError> {
        self.task.await.map_err(|_| RelayError::Panicked)
    }

    /// Kills the relay's task at its next await point, marking nothing more: what a crash
    /// does. The next run starts at the last mark (see the module docs for the bound on what
    /// is sent again).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the relay's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// What a relay did in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RelayStats {
    /// Messages acknowledged AA/CA downstream and marked done.
    pub delivered: u64,
    /// Messages given up on (dead letters).
    pub dead_lettered: u64,
    /// Tries that failed and were retried.
    pub retries: u64,
}

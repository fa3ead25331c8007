//! [`JetStreamStore`]: the scale-out store, a replicated NATS JetStream stream.
//!
//! # How a message becomes durable
//!
//! [`Store::append`] publishes the message to `<prefix>.<MSH-9.1>.<MSH-9.2>` (`hl7.ADT.A01`)
//! with the store metadata as [headers](header) and resolves only when the stream's
//! acknowledgement (PubAck) arrives. The PubAck comes after the stream has the message: with
//! `replicas: 3`, after a majority of the cluster has written it; with the server setting
//! `sync_interval: always`, after it is fsynced. Without that setting NATS fsyncs every two
//! minutes, and an acknowledged message can be lost in a power failure of a majority of nodes
//! (docs/scale-out.md lists the settings the guarantee needs).
//!
//! Publishes from every connection share one NATS connection and are pipelined: many are in
//! flight at once, each waiting for its own PubAck. No connection waits for another's round
//! trip.
//!
//! # Duplicates
//!
//! Each message carries `Nats-Msg-Id` = a hash of the sender (MSH-3, MSH-4), MSH-10 and the
//! content digest (MSH-7 left out) ([`header::message_id`]). Any receiver computes the same id
//! for a resend, so the stream itself recognises it inside its `duplicate_window`, whichever
//! receiver behind the balancer got it: the PubAck says `duplicate`, and the append is
//! [`Receipt::Duplicate`] (`of` the stream sequence of the first copy). Unlike the SQLite
//! store, a reused control id with other content is not flagged (it is simply another message).
//!
//! # Failures
//!
//! No stream for the subject (no responders), no PubAck within
//! [`JetStreamConfig::ack_timeout`], or a stream error is [`StoreError::Publish`]; a connection
//! that is down is [`StoreError::Unavailable`] at once (the message is not sent). Either way
//! [`StoreLayer`](crate::store::StoreLayer) answers AE/CE 207, never a success.
//! [`Store::health`] is [`StoreHealth::Failing`] while disconnected, and after a failed publish
//! until the next one succeeds or, with none tried, for [`FAILURE_HOLD`](crate::store::FAILURE_HOLD).
//! The client reconnects by itself, backing off up to 4 s.
//!
//! A publish that timed out may still be stored (the PubAck was late, or the connection broke
//! after the message left): the sender, answered AE, resends, and the resend is recognised as
//! a duplicate. This is at-least-once, made exactly-once in the stream by `Nats-Msg-Id` as
//! long as the resend comes inside the duplicate window.
//!
//! Cancel safety: as for every store, dropping the future of `append` does not take the
//! message back.

mod config;
mod connect;
pub mod header;
mod stream;
mod subject;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_nats::connection::State;
use async_nats::jetstream::{self, message::PublishMessage};

pub use config::{JetStreamConfig, NatsOptions, Storage, StreamSettings};
pub(crate) use connect::connect;
pub(crate) use subject::check_prefix;

use crate::store::health::FailureHold;
use crate::store::{
    AppendFuture, NatsSpec, Receipt, Record, Store, StoreError, StoreHealth, StoreId,
};

/// A [`Store`] on a NATS JetStream stream: acknowledged after the stream's PubAck, duplicates
/// recognised by the stream across every receiver. Cheap to clone; clones share the
/// connection.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use mllp::app::{Request, Router};
/// use mllp::store::nats::{JetStreamConfig, JetStreamStore};
/// use mllp::store::StoreLayer;
///
/// let spec = "nats://127.0.0.1:4222/HL7".parse::<mllp::store::StoreSpec>()?;
/// let mllp::store::StoreSpec::Nats(spec) = spec else { unreachable!() };
/// let config = JetStreamConfig::default().max_message_size(1 << 20);
/// let store = JetStreamStore::open(&spec, config).await?;
/// let router = Router::new().route("*", |_req: Request| async {}).layer(StoreLayer::new(store));
/// # let _ = router; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JetStreamStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    context: jetstream::Context,
    client: async_nats::Client,
    spec: NatsSpec,
    target: String,
    prefix: String,
    /// A publish failed and none succeeded since.
    failed: AtomicBool,
    stored: AtomicU64,
    duplicates: AtomicU64,
    failures: AtomicU64,
    hold: FailureHold,
}

impl JetStreamStore {
    /// Connects to the servers of `spec`, finds the stream (or creates it, with
    /// [`JetStreamConfig::create_stream`]) and checks that it captures the subjects and that
    /// its and the server's size limits admit [`JetStreamConfig::max_message_size`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] (no server answers, a credentials or TLS file cannot be used, the
    /// subject prefix is invalid, JetStream is not enabled), [`StoreError::StreamNotFound`],
    /// [`StoreError::StreamSubjects`], [`StoreError::LimitTooSmall`].
    pub async fn open(spec: &NatsSpec, config: JetStreamConfig) -> Result<Self, StoreError> {
        let target = spec.to_string();
        check_prefix(&config.subject_prefix).map_err(|reason| StoreError::Open {
            target: target.clone(),
            source: reason.into(),
        })?;
        let client = connect(spec, &config.nats, "messages are answered AE").await?;
        let context = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .backpressure_on_inflight(true)
            .build(client.clone());
        stream::open(&context, spec, &config).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                context,
                client,
                spec: spec.clone(),
                target,
                prefix: config.subject_prefix,
                failed: AtomicBool::new(false),
                stored: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                hold: FailureHold::default(),
            }),
        })
    }

    /// The servers and stream.
    pub fn spec(&self) -> &NatsSpec {
        &self.inner.spec
    }

    /// The subject a message of type `code`^`event` (MSH-9.1, MSH-9.2) is published to.
    pub fn subject_for(&self, code: &[u8], event: &[u8]) -> String {
        subject::subject(&self.inner.prefix, code, event)
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> JetStreamStats {
        let inner = &self.inner;
        JetStreamStats {
            stored: inner.stored.load(Ordering::Relaxed),
            duplicates: inner.duplicates.load(Ordering::Relaxed),
            failed: inner.failures.load(Ordering::Relaxed),
        }
    }

    /// Waits until every publish is flushed to the server, then lets the connection go (it
    /// closes when the last clone is dropped).
    pub async fn close(self) {
        let _ = self.inner.client.flush().await;
    }
}

impl Inner {
    fn fail(&self, error: StoreError) -> StoreError {
        self.failed.store(true, Ordering::Relaxed);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.hold.failed(failures);
        error
    }

    async fn publish(&self, record: Record) -> Result<Receipt, StoreError> {
        if self.client.connection_state() == State::Disconnected {
            return Err(self.fail(StoreError::Unavailable {
                target: self.target.clone(),
            }));
        }
        let subject = subject::subject(&self.prefix, record.message_code(), record.trigger_event());
        let message = PublishMessage::build()
            .payload(record.payload().clone())
            .headers(header::headers(&record))
            .expected_stream(self.spec.stream());
        let publish_error = |source: crate::store::BoxError| StoreError::Publish {
            target: self.target.clone(),
            source,
        };
        let ack = match self.context.send_publish(subject, message).await {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        }
        .map_err(|e| self.fail(publish_error(Box::new(e))))?;
        self.failed.store(false, Ordering::Relaxed);
        let id = StoreId::from(ack.sequence);
        if ack.duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            Ok(Receipt::Duplicate { of: id })
        } else {
            self.stored.fetch_add(1, Ordering::Relaxed);
            Ok(Receipt::Stored {
                id,
                reused_control_id: false,
            })
        }
    }
}

impl Store for JetStreamStore {
    fn append(&self, record: Record) -> AppendFuture {
        let inner = self.inner.clone();
        Box::pin(async move { inner.publish(record).await })
    }

    fn health(&self) -> StoreHealth {
        let inner = &self.inner;
        if inner.client.connection_state() != State::Connected {
            return StoreHealth::Failing;
        }
        inner.hold.health(
            inner.failed.load(Ordering::Relaxed),
            inner.failures.load(Ordering::Relaxed),
        )
    }

    fn describe(&self) -> String {
        self.inner.target.clone()
    }
}

/// What a [`JetStreamStore`] has done since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct JetStreamStats {
    /// Messages the stream confirmed as new.
    pub stored: u64,
    /// Messages the stream recognised as resends (`Nats-Msg-Id` inside its duplicate window).
    pub duplicates: u64,
    /// Appends answered with an error (unreachable, no confirmation, refused).
    pub failed: u64,
}

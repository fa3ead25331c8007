//! [`RelayConfig`]: how a relay sends, retries and tails.

use std::time::Duration;

use crate::client::{Backoff, ClientConfig};
#[cfg(feature = "nats")]
use crate::store::nats::NatsOptions;
use crate::tls::TlsClientConfig;

/// Settings of a [`Relay`](super::Relay). Every one has a `mllp relay` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayConfig {
    /// The relay's name: its cursor row in an SQLite store, its durable consumer on a
    /// JetStream stream. Two relays with one name share a position; give each destination its
    /// own. Letters, digits, `-` and `_`. Default is `relay`.
    pub name: String,
    /// How the downstream connection behaves (reply, connect and write timeouts, reconnect
    /// backoff). Its `max_retries` is not used: the relay counts tries itself
    /// ([`max_attempts`](Self::max_attempts)). Default is [`ClientConfig::default`]: replies
    /// within 30 s, reconnects backing off from 100 ms to 10 s.
    pub client: ClientConfig,
    /// TLS to the downstream. Default is `None` (plain TCP).
    pub tls: Option<TlsClientConfig>,
    /// Tries per message before it goes to the dead letters, counting AE/CE answers and tries
    /// that got no valid ACK (timeout, connection lost after sending, MSA-2 mismatch). An
    /// AR/CR is dead-lettered at once; a downstream that refuses connections is waited for
    /// without end (nothing is dead-lettered because the downstream is down). Default is 5.
    pub max_attempts: u32,
    /// Wait between tries after an AE/CE or a failed try (reconnects after a refused connection
    /// wait [`ClientConfig::reconnect`] instead). Default is 1 s doubling to 60 s.
    pub retry_backoff: Backoff,
    /// Keep running after the backlog is sent, sending new messages as they are stored.
    /// Default is `true`; `false` stops once caught up.
    pub follow: bool,
    /// How often an SQLite store is looked at for new messages once caught up. Default is
    /// 200 ms.
    pub poll_interval: Duration,
    /// JetStream: the subjects relayed are `<prefix>.>` (the store's subject prefix). Default
    /// is `hl7`.
    pub subject_prefix: String,
    /// JetStream: where dead letters are published (the original payload and headers, plus
    /// the reason); a stream must capture it. Default is `None`: `mllp.dead.<name>`.
    pub dead_letter_subject: Option<String>,
    /// JetStream: create a stream for the dead letters (`<STREAM>_DEAD`, capturing
    /// `mllp.dead.>`) when none captures the subject. Default is `false`.
    pub create_dead_letter_stream: bool,
    /// JetStream: how long the server waits for the relay's ack before it hands the message
    /// out again; the relay extends it while it retries. After a crash, the message the relay
    /// held comes back after this long. Default is 30 s.
    pub ack_wait: Duration,
    /// JetStream: how to connect. Default is [`NatsOptions::default`].
    #[cfg(feature = "nats")]
    pub nats: NatsOptions,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            name: "relay".to_owned(),
            client: ClientConfig::default(),
            tls: None,
            max_attempts: 5,
            retry_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            follow: true,
            poll_interval: Duration::from_millis(200),
            subject_prefix: "hl7".to_owned(),
            dead_letter_subject: None,
            create_dead_letter_stream: false,
            ack_wait: Duration::from_secs(30),
            #[cfg(feature = "nats")]
            nats: NatsOptions::default(),
        }
    }
}

impl RelayConfig {
    /// Sets [`name`](Self::name). Default is `relay`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`client`](Self::client). Default is [`ClientConfig::default`].
    #[must_use]
    pub fn client(mut self, client: ClientConfig) -> Self {
        self.client = client;
        self
    }

    /// Sets [`tls`](Self::tls). Default is `None`.
    #[must_use]
    pub fn tls(mut self, tls: Option<TlsClientConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts) (at least 1). Default is 5.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets [`retry_backoff`](Self::retry_backoff). Default is 1 s doubling to 60 s.
    #[must_use]
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Sets [`follow`](Self::follow). Default is `true`.
    #[must_use]
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Sets [`poll_interval`](Self::poll_interval). Default is 200 ms.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets [`subject_prefix`](Self::subject_prefix). Default is `hl7`.
    #[must_use]
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Sets [`dead_letter_subject`](Self::dead_letter_subject). Default is `None`
    /// (`mllp.dead.<name>`).
    #[must_use]
    pub fn dead_letter_subject(mut self, subject: Option<String>) -> Self {
        self.dead_letter_subject = subject;
        self
    }

    /// Sets [`create_dead_letter_stream`](Self::create_dead_letter_stream). Default is
    /// `false`.
    #[must_use]
    pub fn create_dead_letter_stream(mut self, create: bool) -> Self {
        self.create_dead_letter_stream = create;
        self
    }

    /// Sets [`ack_wait`](Self::ack_wait). Default is 30 s.
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Sets [`nats`](Self::nats). Default is [`NatsOptions::default`].
    #[cfg(feature = "nats")]
    #[must_use]
    pub fn nats(mut self, options: NatsOptions) -> Self {
        self.nats = options;
        self
    }

    /// The JetStream dead-letter subject: the one set, or `mllp.dead.<name>`.
    pub fn dead_letter_subject_or_default(&self) -> String {
        self.dead_letter_subject
            .clone()
            .unwrap_or_else(|| format!("mllp.dead.{}", self.name))
    }
}

/// Checks a relay name: not empty, letters, digits, `-` and `_` only (it becomes a consumer
/// name and a subject token).
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("use letters, digits, - and _ only");
    }
    Ok(())
}

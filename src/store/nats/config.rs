//! Settings of a [`JetStreamStore`](super::JetStreamStore) and of NATS connections.

use std::path::PathBuf;
use std::time::Duration;

/// How to connect to NATS: credentials, TLS, timeouts. Shared by the store and the relay's
/// JetStream source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsOptions {
    /// A NATS credentials file (`.creds`: a user JWT and its NKey seed). Default is `None`
    /// (no authentication).
    pub credentials: Option<PathBuf>,
    /// A PEM file of CA certificates that verify the servers; setting it requires TLS. Default
    /// is `None` (the system's roots, when the server asks for TLS).
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients. Default is
    /// `None`.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// Refuse to talk to a server without TLS. Default is `false` (`true` when
    /// [`tls_ca`](Self::tls_ca) is set, or with `tls://` URLs).
    pub require_tls: bool,
    /// How long the first connection may take; later reconnects back off from 2 ms to 4 s,
    /// without end. Default is 5 seconds.
    pub connect_timeout: Duration,
    /// The connection's name, as the server's monitoring shows it. Default is `mllp`.
    pub name: String,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            credentials: None,
            tls_ca: None,
            tls_client_cert: None,
            require_tls: false,
            connect_timeout: Duration::from_secs(5),
            name: "mllp".to_owned(),
        }
    }
}

impl NatsOptions {
    /// Sets [`credentials`](Self::credentials). Default is `None`.
    #[must_use]
    pub fn credentials(mut self, file: impl Into<PathBuf>) -> Self {
        self.credentials = Some(file.into());
        self
    }

    /// Sets [`tls_ca`](Self::tls_ca) (and so requires TLS). Default is `None`.
    #[must_use]
    pub fn tls_ca(mut self, file: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(file.into());
        self
    }

    /// Sets [`tls_client_cert`](Self::tls_client_cert). Default is `None`.
    #[must_use]
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Sets [`require_tls`](Self::require_tls). Default is `false`.
    #[must_use]
    pub fn require_tls(mut self, require: bool) -> Self {
        self.require_tls = require;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout). Default is 5 seconds.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`name`](Self::name). Default is `mllp`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// Where a created stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Storage {
    /// Files, fsynced per the server's `sync_interval` (`always` for the guarantee). The
    /// default.
    #[default]
    File,
    /// Memory only: a message acknowledged AA is lost when the servers stop. For tests.
    Memory,
}

/// How [`JetStreamStore::open`](super::JetStreamStore::open) creates the stream when it does
/// not exist (with [`JetStreamConfig::create_stream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSettings {
    /// Copies kept by the cluster; a publish is confirmed once a majority has it. Default is 1
    /// (a single server); 3 in a cluster, so that one node may fail.
    pub replicas: usize,
    /// Files or memory. Default is [`Storage::File`].
    pub storage: Storage,
    /// Messages older than this are deleted by the server; `None` keeps everything. Default
    /// is `None`.
    pub max_age: Option<Duration>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            storage: Storage::File,
            max_age: None,
        }
    }
}

impl StreamSettings {
    /// Sets [`replicas`](Self::replicas) (at least 1). Default is 1.
    #[must_use]
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Sets [`storage`](Self::storage). Default is [`Storage::File`].
    #[must_use]
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Sets [`max_age`](Self::max_age). Default is `None`.
    #[must_use]
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }
}

/// Settings of a [`JetStreamStore`](super::JetStreamStore). Every one has a `mllp serve` flag
/// and TOML key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JetStreamConfig {
    /// Messages go to `<prefix>.<MSH-9.1>.<MSH-9.2>` (`hl7.ADT.A01`); the stream must capture
    /// `<prefix>.>`. Dot-separated tokens without `*`, `>` or whitespace. Default is `hl7`.
    pub subject_prefix: String,
    /// The largest message the receiver accepts (its `max_message_size`): at open, the
    /// server's `max_payload` and the stream's `max_msg_size` must admit it plus the headers.
    /// Default is 10 MiB, the server's default (so the NATS server's 1 MB default
    /// `max_payload` is refused until one of them changes).
    pub max_message_size: usize,
    /// How long a publish waits for the stream's confirmation before the message is answered
    /// AE. Also bounds the API requests at open. Default is 5 seconds.
    pub ack_timeout: Duration,
    /// The shortest duplicate window the stream should have: a resend inside it is recognised
    /// and acknowledged without a second copy. A created stream gets this window; an existing
    /// stream with a shorter one is used, with a warning. Default is 1 hour.
    pub duplicate_window: Duration,
    /// Create the stream (capturing `<prefix>.>`) when it does not exist. Default is `None`:
    /// a missing stream is an error at open.
    pub create_stream: Option<StreamSettings>,
    /// How to connect. Default is [`NatsOptions::default`].
    pub nats: NatsOptions,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            subject_prefix: "hl7".to_owned(),
            max_message_size: 10 * 1024 * 1024,
            ack_timeout: Duration::from_secs(5),
            duplicate_window: Duration::from_secs(60 * 60),
            create_stream: None,
            nats: NatsOptions::default(),
        }
    }
}

impl JetStreamConfig {
    /// Sets [`subject_prefix`](Self::subject_prefix). Default is `hl7`.
    #[must_use]
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Sets [`max_message_size`](Self::max_message_size). Default is 10 MiB.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`ack_timeout`](Self::ack_timeout). Default is 5 seconds.
    #[must_use]
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Sets [`duplicate_window`](Self::duplicate_window). Default is 1 hour.
    #[must_use]
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Sets [`create_stream`](Self::create_stream). Default is `None`.
    #[must_use]
    pub fn create_stream(mut self, settings: Option<StreamSettings>) -> Self {
        self.create_stream = settings;
        self
    }

    /// Sets [`nats`](Self::nats). Default is [`NatsOptions::default`].
    #[must_use]
    pub fn nats(mut self, options: NatsOptions) -> Self {
        self.nats = options;
        self
    }
}

//! NATS connection flags shared by `serve --store nats://…` and `relay --from nats://…`.

use std::path::PathBuf;

use mllp::store::nats::NatsOptions;

/// How to reach NATS: credentials and TLS.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct NatsFlags {
    /// NATS credentials file (a user JWT and its NKey seed) for a nats:// store
    /// [default: none: no authentication]
    #[arg(long, value_name = "FILE")]
    pub(crate) nats_creds: Option<PathBuf>,

    /// Verify the NATS servers with the CAs in this PEM bundle, and require TLS
    /// [default: none: TLS only when the server asks, verified by the system's roots]
    #[arg(long, value_name = "PEM")]
    pub(crate) nats_tls_ca: Option<PathBuf>,

    /// PEM client certificate for NATS servers that verify clients (with --nats-tls-key)
    /// [default: none]
    #[arg(long, value_name = "PEM", requires = "nats_tls_key")]
    pub(crate) nats_tls_cert: Option<PathBuf>,

    /// PEM private key for --nats-tls-cert
    #[arg(long, value_name = "PEM", requires = "nats_tls_cert")]
    pub(crate) nats_tls_key: Option<PathBuf>,
}

impl NatsFlags {
    /// The connection options, the connection named `name` (as NATS monitoring shows it).
    pub(crate) fn options(&self, name: &str) -> NatsOptions {
        let mut options = NatsOptions::default().name(name);
        if let Some(creds) = &self.nats_creds {
            options = options.credentials(creds);
        }
        if let Some(ca) = &self.nats_tls_ca {
            options = options.tls_ca(ca);
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            options = options.tls_client_cert(cert, key);
        }
        options
    }
}

/// Where a created stream keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StreamStorage {
    /// Files (fsynced per the server's sync_interval).
    File,
    /// Memory only: acknowledged messages are lost when the servers stop (tests).
    Memory,
}

/// `mllp serve`'s settings of a nats:// store (ignored by other stores).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct JetStreamFlags {
    /// Messages go to PREFIX.<MSH-9.1>.<MSH-9.2>; the stream must capture PREFIX.>
    /// [default: hl7]
    #[arg(long, value_name = "PREFIX")]
    pub(crate) nats_subject_prefix: Option<String>,

    /// Answer AE when the stream has not confirmed a message within this time [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = crate::config::positive_duration)]
    pub(crate) nats_ack_timeout: Option<std::time::Duration>,

    /// How far back the stream should recognise a resend (its duplicate_window): set on a
    /// created stream, warned about when an existing one is shorter [default: 1h]
    #[arg(long, value_name = "DUR", value_parser = crate::config::positive_duration)]
    pub(crate) nats_duplicate_window: Option<std::time::Duration>,

    /// Create the stream (capturing PREFIX.>) when it does not exist [default: it must exist]
    #[arg(long)]
    pub(crate) create_stream: bool,

    /// Copies a created stream keeps (3 in a 3-node cluster) [default: 1]
    #[arg(long, value_name = "N", value_parser = crate::config::positive_count)]
    pub(crate) stream_replicas: Option<usize>,

    /// Where a created stream keeps messages [default: file]
    #[arg(long, value_name = "STORAGE", value_enum)]
    pub(crate) stream_storage: Option<StreamStorage>,

    #[command(flatten)]
    pub(crate) connect: NatsFlags,
}

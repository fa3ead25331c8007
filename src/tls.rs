//! TLS, mutual TLS and peer admission for the listener and the client.
//!
//! Everything here plugs into the runtime through [`mllp_actors::Transport`]:
//!
//! - [`TlsTransport`] performs the rustls server handshake inside the connection (under the
//!   runtime's `handshake_timeout`), reports `tls: true` and the verified client identity, and
//!   can swap in re-read certificates without a restart ([`TlsReloader`]).
//! - [`Admitted`] wraps any transport (plain TCP or TLS) with an IP/CIDR allow-list
//!   ([`Admission`]) checked in `admit()`, right after `accept()`.
//! - [`TlsConnector`] is the client side: server-name verification against a CA bundle and an
//!   optional client certificate, usable directly or as a boxed [`Connector`].
//!
//! One crypto provider is used everywhere: aws-lc-rs, passed explicitly to every config, so the
//! process-wide default provider never matters. Certificates and keys are read from PEM files
//! (PKCS#8, PKCS#1 and SEC1 keys); passphrase-protected keys are refused with
//! [`TlsConfigError::EncryptedPrivateKey`].
//!
//! # Closing
//!
//! The streams send a TLS `close_notify` alert when shut down (`AsyncWriteExt::shutdown`), so the
//! connection should call `shutdown()` before dropping its stream. A peer that closes TCP without
//! `close_notify` is read as an ordinary end of stream (a read returns 0 bytes), the same as a
//! plain TCP close: MLLP frames carry their own end block, so a message cut short is still
//! detected by the framer.
//!
//! # Errors
//!
//! Building a configuration fails with a [`TlsConfigError`] that names the file and what is wrong
//! with it. A failed handshake is an [`std::io::Error`] whose inner error is a
//! [`HandshakeError`] (use [`HandshakeError::from_io`] to get it back); its text names the reason
//! and, for an allow-list refusal, the certificate subject (never payload data).

mod admission;
mod client;
mod error;
mod identity;
mod pem;
mod server;
mod stream;
mod validity;

pub use admission::{Admission, Admitted};
pub use client::{BoxedStream, Connector, IoStream, TlsClientConfig, TlsConnector};
pub use error::{AdmissionError, FileRole, HandshakeError, PemError, TlsConfigError};
pub use server::{ReloadOutcome, TlsConfig, TlsReloader, TlsTransport};
pub use stream::{ClientTlsStream, ServerTlsStream};
pub use validity::CertificateValidity;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl TlsVersion {
    fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }

    fn from_rustls(version: rustls::ProtocolVersion) -> Option<Self> {
        match version {
            rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion::Tls12),
            rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

/// Every version this crate enables by default, newest first.
const DEFAULT_VERSIONS: [TlsVersion; 2] = [TlsVersion::Tls13, TlsVersion::Tls12];

/// The rustls version list for a configured set; `None` if it is empty.
fn rustls_versions(
    versions: &[TlsVersion],
) -> Option<Vec<&'static rustls::SupportedProtocolVersion>> {
    let mut out: Vec<_> = Vec::with_capacity(2);
    for v in versions {
        let r = v.rustls();
        if !out
            .iter()
            .any(|seen: &&rustls::SupportedProtocolVersion| seen.version == r.version)
        {
            out.push(r);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The one crypto provider used by every configuration built here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

//! Every error type of the TLS module: configuration, handshake, peer admission rules, and the
//! verifier's refusal of a client subject (internal; it travels inside rustls).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What a PEM file is used for; named in [`TlsConfigError`] messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileRole {
    /// A certificate chain (the server's, or the client's own for mutual TLS).
    Certificate,
    /// The private key for a certificate chain.
    PrivateKey,
    /// A bundle of CA certificates to trust (client CAs on the server, server CAs on the client).
    CaBundle,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Certificate => "certificate",
            FileRole::PrivateKey => "private key",
            FileRole::CaBundle => "CA bundle",
        })
    }
}

/// Why a TLS configuration could not be built or reloaded.
///
/// Every variant about a file names it, so an operator knows which flag to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The file could not be opened or read (missing, permission denied, a directory, ...).
    #[error("cannot read {role} file {}", path.display())]
    Read {
        /// What the file is for.
        role: FileRole,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is larger than any PEM file this crate reads (16 MiB).
    #[error("{role} file {} is larger than {limit} bytes", path.display())]
    FileTooLarge {
        /// What the file is for.
        role: FileRole,
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not well-formed PEM (bad section markers, bad base64).
    #[error("malformed PEM in {role} file {}", path.display())]
    MalformedPem {
        /// What the file is for.
        role: FileRole,
        /// The file.
        path: PathBuf,
        /// What the PEM parser found.
        #[source]
        source: PemError,
    },
    /// The file holds no `CERTIFICATE` section.
    #[error("no certificate in {role} file {}", path.display())]
    NoCertificate {
        /// What the file is for.
        role: FileRole,
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the file could not be parsed or is not usable as configured (for a CA
    /// bundle: not a valid trust anchor).
    #[error("certificate #{index} in {role} file {} is invalid", path.display())]
    InvalidCertificate {
        /// What the file is for.
        role: FileRole,
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// What rustls or webpki reported.
        #[source]
        source: rustls::Error,
    },
    /// The file holds no `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` section.
    #[error("no private key in file {}", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is passphrase-protected; this crate reads unencrypted keys only.
    #[error(
        "private key in {} is encrypted, which is not supported: decrypt it (`openssl pkey -in \
         KEY -out PLAIN`) into a file only this service can read",
        path.display()
    )]
    EncryptedPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key could not be loaded: corrupt, or not an RSA, ECDSA or Ed25519 key.
    #[error("private key in {} is not a usable RSA, ECDSA or Ed25519 key", path.display())]
    UnsupportedPrivateKey {
        /// The file.
        path: PathBuf,
        /// What the crypto provider reported.
        #[source]
        source: rustls::Error,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error(
        "private key {} does not match certificate {} (the certificate file must start with \
         the certificate of this key, followed by its intermediates)",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The client-certificate verifier could not be built from the client CA bundle.
    #[error("cannot verify client certificates with CA bundle {}", path.display())]
    ClientVerifier {
        /// The client CA bundle.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// A client-subject allow-list was given without a client CA bundle: without mutual TLS
    /// there is no client certificate to check it against.
    #[error("a client subject allow-list requires a client CA bundle")]
    SubjectsWithoutClientCa,
    /// A client-subject allow-list entry is empty or has surrounding whitespace.
    #[error("invalid client subject {subject:?} in allow-list")]
    InvalidClientSubject {
        /// The entry as given.
        subject: String,
    },
    /// The list of enabled TLS versions is empty.
    #[error("no tls protocol version enabled")]
    NoProtocolVersion,
    /// The name to verify the server's certificate against is neither a DNS name nor an IP
    /// address.
    #[error("invalid tls server name {name:?}")]
    InvalidServerName {
        /// The name as given.
        name: String,
    },
    /// rustls refused the assembled configuration for another reason.
    #[error("tls configuration rejected")]
    Rustls(#[source] rustls::Error),
}

/// What the PEM parser found wrong in a file, in words: the parser's own text shows a section
/// label as a list of byte values (`missing section end marker: [67, 69, ...]`). Labels are cut
/// down to what a real label holds, so no key material is ever quoted.
#[derive(Debug)]
pub struct PemError(rustls_pki_types::pem::Error);

impl PemError {
    pub(crate) fn new(inner: rustls_pki_types::pem::Error) -> Self {
        PemError(inner)
    }

    /// The PEM parser's error.
    pub fn inner(&self) -> &rustls_pki_types::pem::Error {
        &self.0
    }
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use rustls_pki_types::pem::Error;
        match &self.0 {
            Error::MissingSectionEnd { end_marker } => write!(
                f,
                "the {} section has no END line (a truncated or half-written file?)",
                String::from_utf8_lossy(end_marker)
            ),
            Error::IllegalSectionStart { line } => write!(
                f,
                "malformed BEGIN line `{}`",
                String::from_utf8_lossy(line)
            ),
            // The decoder's own text is a Rust value (`InvalidCharacter(64)`: a byte value,
            // not a position); none of the base64 text is quoted.
            Error::Base64Decode(_) => f.write_str(
                "a section's base64 text is damaged: a character base64 does not use, or a cut \
                 (a hand-edited or corrupted file?)",
            ),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for PemError {}

/// Why a TLS handshake failed, carried inside the [`io::Error`] that the handshake returns.
///
/// Unlike most errors in this crate, `Display` is complete on its own and includes the reason
/// reported by rustls: the runtime records a failed handshake as one line of text
/// (`CloseReason::HandshakeFailed`), so the reason must be in that line. For the same reason no
/// variant has a `source()`; the underlying error is a field. The texts name certificate
/// subjects, which are not patient data, and never contain payload bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer's first bytes were not a TLS record: typically a plaintext MLLP client connected
    /// to a TLS port. It gets no answer; the connection is closed.
    #[error("peer did not start a tls handshake (plaintext client on a tls port?)")]
    NotTls,
    /// Mutual TLS is on and the client presented no certificate.
    #[error("client presented no certificate; one is required")]
    ClientCertificateRequired,
    /// The peer's certificate failed verification: unknown issuer, expired, not yet valid, wrong
    /// name or usage, bad signature, ...
    #[error("peer certificate rejected: {0}")]
    CertificateRejected(rustls::CertificateError),
    /// The client's certificate verified, but neither its CN nor any SAN DNS name is on the
    /// allow-list. `subject` is the identity the certificate would have had.
    #[error("client certificate subject {subject:?} is not allowed")]
    SubjectNotAllowed {
        /// The certificate's CN, or its first SAN DNS name when it has no CN.
        subject: String,
    },
    /// The client's certificate verified but has neither a CN nor a SAN DNS name, so it cannot
    /// match the allow-list.
    #[error("client certificate has no common name or dns name to check against the allow-list")]
    NoClientSubject,
    /// The peer sent a fatal TLS alert, typically because it rejected our certificate.
    #[error("peer aborted the tls handshake with alert {0:?}")]
    AlertReceived(rustls::AlertDescription),
    /// Any other TLS protocol failure (no common version or cipher suite, malformed messages,
    /// ...).
    #[error("tls handshake failed: {0}")]
    Protocol(rustls::Error),
    /// The socket failed, or the peer closed it, before the handshake finished.
    #[error("connection lost during tls handshake: {0}")]
    Io(io::Error),
}

impl HandshakeError {
    /// The [`HandshakeError`] inside an error returned by a handshake, if there is one.
    pub fn from_io(err: &io::Error) -> Option<&HandshakeError> {
        err.get_ref()?.downcast_ref::<HandshakeError>()
    }

    /// Whether the same handshake would fail the same way until a certificate or a setting
    /// changes (a certificate refused by either side, no common protocol version or suite, a
    /// plaintext peer), as opposed to the connection being lost mid-way ([`HandshakeError::Io`]).
    /// Retrying a permanent failure only hides it.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, HandshakeError::Io(_))
    }

    /// A copy of this error, for reporting one failure more than once (an [`io::Error`] inside
    /// is copied as its kind and text).
    pub(crate) fn duplicate(&self) -> HandshakeError {
        match self {
            HandshakeError::NotTls => HandshakeError::NotTls,
            HandshakeError::ClientCertificateRequired => HandshakeError::ClientCertificateRequired,
            HandshakeError::CertificateRejected(e) => {
                HandshakeError::CertificateRejected(e.clone())
            }
            HandshakeError::SubjectNotAllowed { subject } => HandshakeError::SubjectNotAllowed {
                subject: subject.clone(),
            },
            HandshakeError::NoClientSubject => HandshakeError::NoClientSubject,
            HandshakeError::AlertReceived(alert) => HandshakeError::AlertReceived(*alert),
            HandshakeError::Protocol(e) => HandshakeError::Protocol(e.clone()),
            HandshakeError::Io(e) => HandshakeError::Io(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Wraps this error in an [`io::Error`] of a fitting kind.
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            HandshakeError::ClientCertificateRequired
            | HandshakeError::CertificateRejected(_)
            | HandshakeError::SubjectNotAllowed { .. }
            | HandshakeError::NoClientSubject => io::ErrorKind::PermissionDenied,
            HandshakeError::Io(e) => e.kind(),
            HandshakeError::NotTls
            | HandshakeError::AlertReceived(_)
            | HandshakeError::Protocol(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }

    /// Classifies an error returned by tokio-rustls during a handshake.
    pub(crate) fn classify(err: io::Error) -> HandshakeError {
        if !err.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
            return HandshakeError::Io(err);
        }
        let kind = err.kind();
        match err
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            Some(Ok(tls)) => HandshakeError::from_rustls(*tls),
            Some(Err(other)) => HandshakeError::Io(io::Error::new(kind, other)),
            None => HandshakeError::Io(kind.into()),
        }
    }

    fn from_rustls(err: rustls::Error) -> HandshakeError {
        use rustls::{CertificateError, Error, InvalidMessage};
        match err {
            Error::InvalidMessage(InvalidMessage::InvalidContentType) => HandshakeError::NotTls,
            Error::NoCertificatesPresented => HandshakeError::ClientCertificateRequired,
            Error::AlertReceived(alert) => HandshakeError::AlertReceived(alert),
            Error::InvalidCertificate(CertificateError::Other(other)) => {
                match other.0.downcast_ref::<SubjectRefused>() {
                    Some(refused) => refused.to_handshake_error(),
                    None => HandshakeError::CertificateRejected(CertificateError::Other(other)),
                }
            }
            Error::InvalidCertificate(cert) => HandshakeError::CertificateRejected(cert),
            other => HandshakeError::Protocol(other),
        }
    }
}

/// An allow-list rule that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The rule is neither an IP address nor a CIDR range (`address/prefix`, prefix at most 32
    /// for IPv4 and 128 for IPv6).
    #[error("invalid peer address or CIDR range {rule:?}")]
    InvalidRule {
        /// The rule as given.
        rule: String,
    },
}

/// The verifier's refusal of a client certificate whose names are not on the allow-list. It
/// travels inside `rustls::CertificateError::Other` and is turned into a [`HandshakeError`].
#[derive(Debug)]
pub(super) struct SubjectRefused {
    /// The identity the certificate would have had; `None` if it has no CN or DNS name.
    pub(super) subject: Option<String>,
}

impl SubjectRefused {
    pub(super) fn to_handshake_error(&self) -> HandshakeError {
        match &self.subject {
            Some(subject) => HandshakeError::SubjectNotAllowed {
                subject: subject.clone(),
            },
            None => HandshakeError::NoClientSubject,
        }
    }
}

impl fmt::Display for SubjectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Some(s) => write!(f, "client certificate subject {s:?} is not allowed"),
            None => f.write_str("client certificate has no name to check against the allow-list"),
        }
    }
}

impl std::error::Error for SubjectRefused {}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that is not from rustls stays an I/O error with its kind.
    #[test]
    fn plain_io_error_is_classified_as_io() {
        let e = HandshakeError::classify(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
        assert!(
            matches!(&e, HandshakeError::Io(inner) if inner.kind() == io::ErrorKind::UnexpectedEof)
        );
        assert_eq!(e.into_io().kind(), io::ErrorKind::UnexpectedEof);
    }

    /// An unknown record content type (plaintext bytes) is reported as "not TLS".
    #[test]
    fn invalid_content_type_is_not_tls() {
        let tls = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let io_err = io::Error::new(io::ErrorKind::InvalidData, tls);
        let wrapped = HandshakeError::classify(io_err).into_io();
        assert!(matches!(
            HandshakeError::from_io(&wrapped),
            Some(HandshakeError::NotTls)
        ));
        assert!(wrapped.to_string().contains("plaintext"));
    }

    /// Display texts are lowercase and carry no trailing period.
    #[test]
    fn config_error_display_names_the_file() {
        let e = TlsConfigError::NoCertificate {
            role: FileRole::Certificate,
            path: PathBuf::from("/etc/mllp/server.pem"),
        };
        assert_eq!(
            e.to_string(),
            "no certificate in certificate file /etc/mllp/server.pem"
        );
    }
}

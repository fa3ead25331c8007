//! Server-side TLS: configuration from PEM files, the handshake as a [`Transport`], mutual TLS
//! with an optional subject allow-list, and certificate reload.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use mllp_actors::{Established, Transport};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::error::{HandshakeError, SubjectRefused, TlsConfigError};
use super::identity::CertNames;
use super::stream::ServerTlsStream;
use super::validity::CertificateValidity;
use super::{DEFAULT_VERSIONS, TlsVersion, pem, provider, rustls_versions};

/// Server TLS settings: where the certificate, key and (for mutual TLS) client CAs live.
///
/// Nothing is read until [`TlsConfig::build`]; [`TlsReloader::reload`] reads the same files
/// again.
///
/// ```no_run
/// use mllp::tls::TlsConfig;
///
/// let transport = TlsConfig::new("/etc/mllp/server.crt", "/etc/mllp/server.key")
///     .client_ca("/etc/mllp/partners-ca.pem")        // mutual TLS: client certificates required
///     .allow_client_subject("lab-sender.example.org") // and only this one is let in
///     .build()?;
/// # Ok::<(), mllp::tls::TlsConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    allowed_subjects: Vec<String>,
    versions: Vec<TlsVersion>,
}

impl TlsConfig {
    /// TLS with the certificate chain in `cert` (leaf first, then intermediates) and its private
    /// key in `key` (PKCS#8, PKCS#1 or SEC1 PEM; unencrypted). Both may be the same file.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsConfig {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            allowed_subjects: Vec::new(),
            versions: DEFAULT_VERSIONS.to_vec(),
        }
    }

    /// Turns on mutual TLS: every client must present a certificate that chains to a CA in
    /// this PEM bundle, or the handshake fails. Certificates are required, not merely
    /// requested. Default is no client authentication.
    #[must_use]
    pub fn client_ca(mut self, bundle: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(bundle.into());
        self
    }

    /// Admits only clients whose verified certificate has this name as its subject CN or as a
    /// SAN DNS name (ASCII case-insensitive; wildcards in certificates are compared literally).
    /// May be called several times; any match admits. Needs [`client_ca`](Self::client_ca).
    /// Default is every client with a verified certificate.
    #[must_use]
    pub fn allow_client_subject(mut self, name: impl Into<String>) -> Self {
        self.allowed_subjects.push(name.into());
        self
    }

    /// [`allow_client_subject`](Self::allow_client_subject) for each name.
    #[must_use]
    pub fn allow_client_subjects<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_subjects
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// The TLS versions offered. Default is TLS 1.3 and TLS 1.2.
    #[must_use]
    pub fn versions(mut self, versions: &[TlsVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// The certificate chain file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The private key file.
    pub fn key_path(&self) -> &Path {
        &self.key
    }

    /// The client CA bundle, when mutual TLS is on.
    pub fn client_ca_path(&self) -> Option<&Path> {
        self.client_ca.as_deref()
    }

    /// The client-subject allow-list; empty admits every verified client.
    pub fn allowed_subjects(&self) -> &[String] {
        &self.allowed_subjects
    }

    /// Reads the files and builds the transport.
    ///
    /// # Errors
    ///
    /// A [`TlsConfigError`] naming the file at fault: missing or unreadable, no certificate or
    /// key in it, malformed PEM, an encrypted or unusable key, a key that does not match the
    /// certificate, a bad CA bundle; or an allow-list without a client CA bundle.
    pub fn build(self) -> Result<TlsTransport, TlsConfigError> {
        let current = self.load()?;
        Ok(TlsTransport {
            shared: Arc::new(Shared {
                settings: self,
                current: RwLock::new(current),
                reloading: Mutex::new(()),
                last_reload: Mutex::new(None),
            }),
        })
    }

    /// Reads the files into a rustls server configuration, with the validity of the leaf
    /// certificate.
    fn load(&self) -> Result<Loaded, TlsConfigError> {
        for subject in &self.allowed_subjects {
            if subject.is_empty() || subject.trim() != subject {
                return Err(TlsConfigError::InvalidClientSubject {
                    subject: subject.clone(),
                });
            }
        }
        if !self.allowed_subjects.is_empty() && self.client_ca.is_none() {
            return Err(TlsConfigError::SubjectsWithoutClientCa);
        }
        let versions = rustls_versions(&self.versions).ok_or(TlsConfigError::NoProtocolVersion)?;
        let provider = provider();

        let certified = pem::load_certified_key(&self.cert, &self.key, &provider)?;
        let validity = certified.cert.first().and_then(CertificateValidity::of);

        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(TlsConfigError::Rustls)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(pem::load_roots(ca)?);
                let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|source| TlsConfigError::ClientVerifier {
                        path: ca.clone(),
                        source,
                    })?;
                if self.allowed_subjects.is_empty() {
                    builder.with_client_cert_verifier(webpki)
                } else {
                    builder.with_client_cert_verifier(Arc::new(SubjectVerifier {
                        inner: webpki,
                        allowed: self.allowed_subjects.clone(),
                    }))
                }
            }
        };
        let config =
            builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        Ok(Loaded {
            config: Arc::new(config),
            validity,
        })
    }
}

/// What one read of the files gives: swapped in whole, so the validity always belongs to the
/// configuration beside it.
struct Loaded {
    config: Arc<ServerConfig>,
    /// The validity of the leaf certificate `config` presents.
    validity: Option<CertificateValidity>,
}

struct Shared {
    settings: TlsConfig,
    /// The configuration new handshakes use. A live connection holds its own `Arc` (inside its
    /// rustls connection), so swapping this never touches it.
    current: RwLock<Loaded>,
    /// Held across a whole reload (read the files, then swap), so that of two overlapping
    /// reloads the one that read the files last is the one that stays.
    reloading: Mutex<()>,
    /// What the last reload did. A lock of its own, never held across file reads: a status
    /// page reads it from an async task while a reload may be stuck on a slow file system.
    last_reload: Mutex<Option<ReloadOutcome>>,
}

/// What the last reload ([`TlsReloader::reload`], [`TlsTransport::reload`]) of a transport
/// did: when it ran, and why it failed if it did. A failed reload leaves the previous
/// certificate in use, so a listener whose last reload failed still serves, with a certificate
/// older than the files on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadOutcome {
    /// When the reload ran.
    pub at: SystemTime,
    /// Why it failed, with its causes (it names the file and what is wrong with it, never key
    /// material); `None` when it succeeded.
    pub error: Option<String>,
}

impl Shared {
    fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete `Arc`: writers only assign.
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .config,
        )
    }

    fn reload(&self) -> Result<(), TlsConfigError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = self.settings.load().map(|fresh| {
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        });
        *self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(ReloadOutcome {
            at: SystemTime::now(),
            error: result.as_ref().err().map(|e| crate::store::error_chain(e)),
        });
        result
    }

    fn last_reload(&self) -> Option<ReloadOutcome> {
        self.last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn validity(&self) -> Option<CertificateValidity> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .validity
    }
}

/// The TLS server transport: a [`Transport`] whose handshake runs rustls.
///
/// Cheap to clone (all clones share the current configuration). Built by
/// [`TlsConfig::build`]; wrap it in [`Admitted`](super::Admitted) for a peer allow-list.
///
/// After the handshake, [`Established::tls`] is `true` and, with mutual TLS, [`Established::peer_identity`]
/// is the verified client certificate's first subject CN, or its first SAN DNS name when it has
/// no CN. It does not depend on which of the certificate's names matched a subject allow-list.
#[derive(Clone)]
pub struct TlsTransport {
    shared: Arc<Shared>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// A handle that re-reads the certificate files; see [`TlsReloader`].
    pub fn reloader(&self) -> TlsReloader {
        TlsReloader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Re-reads the files now; the same as [`TlsReloader::reload`].
    ///
    /// # Errors
    ///
    /// As [`TlsConfig::build`]; the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsConfigError> {
        self.shared.reload()
    }

    /// What the last reload of this transport (through it or a [`TlsReloader`] of it) did;
    /// `None` before the first. The files read when the transport was built are not a reload.
    pub fn last_reload(&self) -> Option<ReloadOutcome> {
        self.shared.last_reload()
    }

    /// The settings this transport was built from.
    pub fn config(&self) -> &TlsConfig {
        &self.shared.settings
    }

    /// When the certificate that new handshakes present is valid (the first of the chain in
    /// the certificate file, as last read), so that its expiry can be watched; `None` when its
    /// dates cannot be read (rustls accepted it, but it is not a well-formed X.509
    /// certificate).
    pub fn certificate_validity(&self) -> Option<CertificateValidity> {
        self.shared.validity()
    }

    /// Whether clients must present a certificate (mutual TLS).
    pub fn client_auth(&self) -> bool {
        self.shared.settings.client_ca.is_some()
    }

    /// Runs the server handshake on `socket` with the current configuration.
    ///
    /// Pends for as long as the peer is silent: the runtime's `handshake_timeout` is what ends
    /// a stalled handshake.
    ///
    /// # Errors
    ///
    /// An [`io::Error`] wrapping a [`HandshakeError`].
    pub async fn accept(&self, socket: TcpStream) -> io::Result<Established<ServerTlsStream>> {
        let acceptor = TlsAcceptor::from(self.shared.current());
        let stream = acceptor
            .accept(socket)
            .await
            .map_err(|e| HandshakeError::classify(e).into_io())?;
        let peer_identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| CertNames::of(leaf).identity().map(str::to_owned));
        Ok(Established::new(ServerTlsStream::new(stream))
            .tls(true)
            .peer_identity(peer_identity))
    }
}

impl Transport for TlsTransport {
    type Stream = ServerTlsStream;

    /// Always `true`: every connection is TLS (reported on `ConnectionStart`, before the
    /// handshake).
    fn tls(&self) -> bool {
        true
    }

    fn handshake(
        &self,
        socket: TcpStream,
    ) -> impl Future<Output = io::Result<Established<ServerTlsStream>>> + Send {
        self.accept(socket)
    }
}

/// Re-reads a [`TlsTransport`]'s certificate, key and client CA files without a restart.
///
/// Cheap to clone and `Send + Sync`: keep one in the server handle or a SIGHUP task. New
/// handshakes use the new configuration; established connections keep the one they started
/// with.
#[derive(Clone)]
pub struct TlsReloader {
    shared: Arc<Shared>,
}

impl fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert", &self.shared.settings.cert)
            .field("key", &self.shared.settings.key)
            .field("client_ca", &self.shared.settings.client_ca)
            .finish()
    }
}

impl TlsReloader {
    /// Reads the files again and, if they make a valid configuration, uses it for every
    /// handshake from now on. Blocking file reads of a few kilobytes; call it from
    /// `spawn_blocking` if that matters.
    ///
    /// # Errors
    ///
    /// As [`TlsConfig::build`]; on error the previous configuration stays in use, so a
    /// half-written certificate never takes the listener down.
    pub fn reload(&self) -> Result<(), TlsConfigError> {
        self.shared.reload()
    }

    /// As [`TlsTransport::certificate_validity`]: the certificate read by the last successful
    /// load.
    pub fn certificate_validity(&self) -> Option<CertificateValidity> {
        self.shared.validity()
    }

    /// As [`TlsTransport::last_reload`].
    pub fn last_reload(&self) -> Option<ReloadOutcome> {
        self.shared.last_reload()
    }
}

/// WebPKI client verification plus the subject allow-list. Refusing here (rather than after
/// the handshake) makes rustls send the client a fatal alert, so the partner sees why.
#[derive(Debug)]
struct SubjectVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for SubjectVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = CertNames::of(end_entity);
        if names.matches_any(&self.allowed) {
            return Ok(verified);
        }
        let refused = SubjectRefused {
            subject: names.identity().map(str::to_owned),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(refused)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

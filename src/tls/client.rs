//! Client-side TLS for the MLLP sender: server verification against a CA bundle, server-name
//! checking, and an optional client certificate for mutual TLS.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::sign::SingleCertAndKey;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::error::{HandshakeError, TlsConfigError};
use super::stream::ClientTlsStream;
use super::{DEFAULT_VERSIONS, TlsVersion, pem, provider, rustls_versions};

/// A byte stream a client can speak MLLP over: plain TCP, TLS, or anything else.
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> IoStream for T {}

/// A boxed [`IoStream`].
pub type BoxedStream = Pin<Box<dyn IoStream>>;

/// Turns a freshly connected socket into the stream a client speaks over (for TLS: runs the
/// client handshake). Called once per connection attempt, so also on every reconnect.
pub type Connector = Arc<
    dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send>>
        + Send
        + Sync,
>;

/// Client TLS settings: which CAs to trust, which name to expect, and an optional client
/// certificate for mutual TLS.
///
/// ```no_run
/// use mllp::tls::TlsClientConfig;
///
/// let tls = TlsClientConfig::new("/etc/mllp/receiver-ca.pem")
///     .client_cert("/etc/mllp/lab-sender.crt", "/etc/mllp/lab-sender.key")
///     .build()?;
/// let connector = tls.connector("hl7.hospital.example:2575")?; // verifies "hl7.hospital.example"
/// # Ok::<(), mllp::tls::TlsConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientConfig {
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
    server_name: Option<String>,
    versions: Vec<TlsVersion>,
}

impl TlsClientConfig {
    /// Trust the CA certificates in this PEM bundle (and nothing else) for the server's
    /// certificate.
    pub fn new(ca_bundle: impl Into<PathBuf>) -> Self {
        TlsClientConfig {
            ca: ca_bundle.into(),
            identity: None,
            server_name: None,
            versions: DEFAULT_VERSIONS.to_vec(),
        }
    }

    /// Present this certificate chain and key (PKCS#8, PKCS#1 or SEC1 PEM) when the server asks
    /// for one (mutual TLS). Default is no client certificate.
    #[must_use]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// The name the server's certificate must carry (a DNS name or an IP address), used by
    /// [`TlsConnector::connector`] instead of the host part of the address. Use it when
    /// connecting by IP to a certificate issued for a DNS name. Default is the host part of the
    /// address.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The TLS versions offered. Default is TLS 1.3 and TLS 1.2.
    #[must_use]
    pub fn versions(mut self, versions: &[TlsVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// The CA bundle file.
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// Reads the files and builds the connector.
    ///
    /// # Errors
    ///
    /// A [`TlsConfigError`] naming the file at fault (as for [`TlsConfig::build`](super::TlsConfig::build)),
    /// or [`TlsConfigError::InvalidServerName`] for a bad [`server_name`](Self::server_name).
    pub fn build(self) -> Result<TlsConnector, TlsConfigError> {
        let server_name = self
            .server_name
            .as_deref()
            .map(parse_server_name)
            .transpose()?;
        let versions = rustls_versions(&self.versions).ok_or(TlsConfigError::NoProtocolVersion)?;
        let provider = provider();
        let roots = pem::load_roots(&self.ca)?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(TlsConfigError::Rustls)?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certified = pem::load_certified_key(cert, key, &provider)?;
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
            }
        };
        Ok(TlsConnector {
            config: Arc::new(config),
            server_name,
            settings: self,
        })
    }
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsConfigError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsConfigError::InvalidServerName {
        name: name.to_owned(),
    })
}

/// The host part of `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 address or a bare host.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match addr.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => addr,
    }
}

/// Runs client TLS handshakes; built by [`TlsClientConfig::build`]. Cheap to clone.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    settings: TlsClientConfig,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Runs the client handshake over `tcp`, verifying that the server's certificate chains to
    /// the CA bundle and is valid for `server_name` (a DNS name or an IP address). Presents the
    /// client certificate if one is configured and the server asks.
    ///
    /// With TLS 1.3 a server that refuses *our* certificate does so after this returns: the
    /// refusal surfaces as an error on the first read.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an invalid `server_name`; otherwise an
    /// [`io::Error`] wrapping a [`HandshakeError`] (see [`HandshakeError::from_io`]).
    pub async fn connect(&self, tcp: TcpStream, server_name: &str) -> io::Result<ClientTlsStream> {
        let name = parse_server_name(server_name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.connect_to(tcp, name).await
    }

    async fn connect_to(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
    ) -> io::Result<ClientTlsStream> {
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
            .map_err(|e| HandshakeError::classify(e).into_io())?;
        Ok(ClientTlsStream::new(stream))
    }

    /// A [`Connector`] for a client that dials `addr` (`host:port`, `[v6]:port` or a bare host):
    /// it verifies the server against the configured
    /// [`server_name`](TlsClientConfig::server_name), or else the host part of `addr`.
    ///
    /// # Errors
    ///
    /// [`TlsConfigError::InvalidServerName`] when the name is neither a DNS name nor an IP
    /// address.
    pub fn connector(&self, addr: &str) -> Result<Connector, TlsConfigError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => parse_server_name(host_of(addr))?,
        };
        let this = self.clone();
        Ok(Arc::new(move |tcp: TcpStream| {
            let this = this.clone();
            let name = name.clone();
            Box::pin(async move {
                let stream = this.connect_to(tcp, name).await?;
                Ok(Box::pin(stream) as BoxedStream)
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host is found in every address form a user may write.
    #[test]
    fn host_of_handles_every_address_form() {
        assert_eq!(host_of("hl7.example.org:2575"), "hl7.example.org");
        assert_eq!(host_of("hl7.example.org"), "hl7.example.org");
        assert_eq!(host_of("127.0.0.1:2575"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2575"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("fe80::1:2"), "fe80::1:2");
    }

    /// Server names must be DNS names or IP addresses.
    #[test]
    fn server_names_are_validated() {
        assert!(parse_server_name("hl7.example.org").is_ok());
        assert!(parse_server_name("10.0.0.1").is_ok());
        assert!(parse_server_name("::1").is_ok());
        assert!(matches!(
            parse_server_name("not a name"),
            Err(TlsConfigError::InvalidServerName { .. })
        ));
    }

    /// A connector's future and stream types are `Send`, so it can be used from any task.
    #[test]
    fn connector_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Connector>();
        assert_send_sync::<TlsConnector>();
    }
}

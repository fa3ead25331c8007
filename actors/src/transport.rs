//! How an accepted TCP socket becomes the stream a connection speaks over.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Turns an accepted socket into a connection's stream: plain TCP, TLS, or anything else.
///
/// [`Transport::admit`] runs in the acceptor right after `accept()` and must be cheap;
/// [`Transport::handshake`] runs inside the connection, under `handshake_timeout`, so a slow
/// peer never blocks the acceptor.
pub trait Transport: Send + Sync + 'static {
    /// The stream after the handshake.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Whether this peer may connect at all. Default admits everyone. A refused peer is closed
    /// at once, reported as [`Event::ConnectionRefused`](crate::Event::ConnectionRefused) and
    /// logged at `warn` (at most one line a second, as the per-peer limits are).
    fn admit(&self, peer: SocketAddr) -> bool {
        let _ = peer;
        true
    }

    /// Whether connections of this transport are TLS, as reported on
    /// [`Event::ConnectionStart`](crate::Event::ConnectionStart), which is emitted before the
    /// handshake. [`Established::tls`] is what later events report. Default is `false`.
    fn tls(&self) -> bool {
        false
    }

    /// Performs the handshake. An error closes the connection with `HandshakeFailed`.
    fn handshake(
        &self,
        socket: TcpStream,
    ) -> impl Future<Output = io::Result<Established<Self::Stream>>> + Send;
}

/// A stream ready for the protocol, and what the handshake learnt about the peer.
///
/// Built with [`Established::new`] and its setters (the struct may gain fields, such as the
/// negotiated ALPN protocol).
#[derive(Debug)]
#[non_exhaustive]
pub struct Established<S> {
    /// The stream.
    pub stream: S,
    /// Whether the stream is TLS.
    pub tls: bool,
    /// The verified peer identity (for example a client certificate's subject), if any.
    pub peer_identity: Option<String>,
}

impl<S> Established<S> {
    /// A plain stream: not TLS, no peer identity.
    pub fn new(stream: S) -> Self {
        Established {
            stream,
            tls: false,
            peer_identity: None,
        }
    }

    /// Sets whether the stream is TLS. Default is `false`.
    #[must_use]
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Sets the verified peer identity. Default is `None`.
    #[must_use]
    pub fn peer_identity(mut self, identity: Option<String>) -> Self {
        self.peer_identity = identity;
        self
    }
}

/// Plain TCP: no handshake, everyone admitted.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainTcp;

impl Transport for PlainTcp {
    type Stream = TcpStream;

    async fn handshake(&self, socket: TcpStream) -> io::Result<Established<TcpStream>> {
        Ok(Established::new(socket))
    }
}

//! The TLS streams handed to connections and clients.
//!
//! Both wrap a tokio-rustls stream and change one thing: a peer that closes TCP without sending
//! `close_notify` reads as end of stream (`Ok` with no bytes) instead of
//! [`io::ErrorKind::UnexpectedEof`]. MLLP frames end with their own end block, so truncation is
//! still caught by the framer (EOF inside a frame), and the runtime sees an ordinary peer close.
//! Shutting a stream down (`AsyncWriteExt::shutdown`) sends `close_notify`, then closes the TCP
//! write side.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::TlsVersion;

/// A missing `close_notify` is an ordinary end of stream; every other outcome passes through.
fn eof_is_close(polled: Poll<io::Result<()>>) -> Poll<io::Result<()>> {
    match polled {
        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
        other => other,
    }
}

macro_rules! tls_stream {
    ($(#[$doc:meta])* $name:ident, $inner:ty) => {
        $(#[$doc])*
        pub struct $name {
            inner: $inner,
        }

        impl $name {
            pub(super) fn new(inner: $inner) -> Self {
                Self { inner }
            }

            /// The negotiated TLS version.
            pub fn protocol_version(&self) -> Option<TlsVersion> {
                self.inner
                    .get_ref()
                    .1
                    .protocol_version()
                    .and_then(TlsVersion::from_rustls)
            }

            /// Whether the handshake resumed an earlier session (no certificates were exchanged
            /// on the wire; the peer's chain is the one from the original session).
            pub fn resumed(&self) -> bool {
                self.inner.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
            }

            /// The certificate chain the peer presented, leaf first; `None` if it sent none.
            pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
                self.inner.get_ref().1.peer_certificates()
            }

            /// The TCP socket underneath (for its addresses; reading or writing it directly
            /// would corrupt the TLS stream).
            pub fn tcp(&self) -> &TcpStream {
                self.inner.get_ref().0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("peer", &self.tcp().peer_addr().ok())
                    .field("protocol_version", &self.protocol_version())
                    .finish_non_exhaustive()
            }
        }

        impl AsyncRead for $name {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                eof_is_close(Pin::new(&mut self.inner).poll_read(cx, buf))
            }
        }

        impl AsyncWrite for $name {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            /// Sends `close_notify`, flushes, then shuts down the TCP write side.
            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

tls_stream!(
    /// A server-side TLS connection, as [`TlsTransport`](super::TlsTransport) hands it to the
    /// runtime.
    ///
    /// A peer's missing `close_notify` reads as end of stream; `shutdown()` sends
    /// `close_notify`.
    ServerTlsStream,
    tokio_rustls::server::TlsStream<TcpStream>
);

tls_stream!(
    /// A client-side TLS connection, as [`TlsConnector`](super::TlsConnector) returns it.
    ///
    /// A peer's missing `close_notify` reads as end of stream; `shutdown()` sends
    /// `close_notify`.
    ClientTlsStream,
    tokio_rustls::client::TlsStream<TcpStream>
);

impl ServerTlsStream {
    /// The SNI server name the client asked for, if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.inner.get_ref().1.server_name()
    }
}

//! Forwarding: a pool of MLLP clients to one downstream receiver, for handlers that pass each
//! message on and answer their sender with the downstream's acknowledgment.
//!
//! ```no_run
//! use mllp::app::{Request, Router};
//! use mllp::forward::Forwarder;
//!
//! # async fn run() -> Result<(), mllp::Error> {
//! let downstream = Forwarder::new("10.0.0.7:2575");
//! let router = Router::new().route("*", move |req: Request| {
//!     let downstream = downstream.clone();
//!     async move { downstream.forward(req.message()).await }
//! });
//! let server = mllp::Server::builder().router(router).bind("0.0.0.0:2575").await?;
//! # let _ = server; Ok(()) }
//! ```

mod application;

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::ack::{AckCode, AckOptions, ErrorCode, Reply, accept_ack_wanted};
use crate::app::{Response, Status};
use crate::client::{Acknowledgment, Client, ClientConfig, ClientError};
use crate::hl7::{Message, translate};
use crate::tls::Connector;

pub use application::ApplicationAcks;

/// A pool of connections to one downstream MLLP receiver, cheap to clone and shared by every
/// handler that forwards.
///
/// [`Forwarder::forward`] sends a message and turns the downstream's answer into the answer to
/// the upstream sender: an ACK of the upstream message (MSH by [`Ack::build`]'s rules, MSA-2 =
/// the upstream MSH-10) whose MSA-1 is the downstream's, mapped to the upstream's mode (AA ↔ CA,
/// AE ↔ CE, AR ↔ CR, by its MSH-15), carrying the downstream's ERR segments (rewritten with the
/// upstream's delimiters). No ACK from downstream in time, or no connection, is AE with ERR-3
/// = 207. Each message waits for its own ACK (the client's correlation applies, and its reply
/// timeout bounds the whole exchange, connecting included); up to
/// [`Forwarder::max_connections`] go at once, each on its own connection (more wait for one,
/// and that wait is not bounded by the timeout).
///
/// A message whose MSH-15 asks for no ACK (`NE`) is answered as accepted once it is written
/// downstream, since none comes: the forwarder cannot tell a downstream that refused it. With
/// `ER`, silence for the reply timeout is acceptance, as the standard reads it. Upstream, such a
/// message gets no answer either unless the server answers in original mode whatever MSH-15
/// says ([`AckOptions::original_mode_only`]).
///
/// [`Ack::build`]: crate::ack::Ack::build
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    config: ClientConfig,
    connector: Option<Connector>,
    ack: AckOptions,
    idle: Mutex<Vec<Client>>,
    slots: Semaphore,
    max_connections: usize,
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("addr", &self.inner.addr)
            .field("max_connections", &self.inner.max_connections)
            .finish_non_exhaustive()
    }
}

/// The default number of connections a [`Forwarder`] opens at most.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4;

impl Forwarder {
    /// A forwarder to `addr` (`host:port`) with the client's default settings (30 s reply
    /// timeout, 2 retries after a timeout or lost connection: the downstream may then get a
    /// message twice, with the same MSH-10) and at most [`DEFAULT_MAX_CONNECTIONS`]
    /// connections. Connects on first use.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with_config(addr, ClientConfig::default())
    }

    /// A forwarder with these client settings.
    pub fn with_config(addr: impl Into<String>, config: ClientConfig) -> Self {
        Self::build(
            addr.into(),
            config,
            None,
            AckOptions::default(),
            DEFAULT_MAX_CONNECTIONS,
        )
    }

    /// A forwarder whose connections go through `connector` (TLS: see
    /// [`TlsClientConfig`](crate::tls::TlsClientConfig)).
    pub fn with_connector(
        addr: impl Into<String>,
        config: ClientConfig,
        connector: Connector,
    ) -> Self {
        Self::build(
            addr.into(),
            config,
            Some(connector),
            AckOptions::default(),
            DEFAULT_MAX_CONNECTIONS,
        )
    }

    fn build(
        addr: String,
        config: ClientConfig,
        connector: Option<Connector>,
        ack: AckOptions,
        max_connections: usize,
    ) -> Self {
        let max_connections = max_connections.max(1);
        Self {
            inner: Arc::new(Inner {
                addr,
                config,
                connector,
                ack,
                idle: Mutex::new(Vec::new()),
                slots: Semaphore::new(max_connections),
                max_connections,
            }),
        }
    }

    /// At most this many messages forwarded at once, each on its own connection (more wait).
    /// Default is [`DEFAULT_MAX_CONNECTIONS`]. Builds a new pool.
    #[must_use]
    pub fn max_connections(self, limit: usize) -> Self {
        let inner = &self.inner;
        Self::build(
            inner.addr.clone(),
            inner.config.clone(),
            inner.connector.clone(),
            inner.ack.clone(),
            limit,
        )
    }

    /// How the acknowledgments sent upstream are written (sending application, original mode
    /// only, ...). Default is [`AckOptions::default`]; give the server's own options here.
    /// Builds a new pool.
    #[must_use]
    pub fn ack_options(self, options: AckOptions) -> Self {
        let inner = &self.inner;
        Self::build(
            inner.addr.clone(),
            inner.config.clone(),
            inner.connector.clone(),
            options,
            inner.max_connections,
        )
    }

    /// The downstream address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Sends `message` downstream as it is and answers it with the downstream's
    /// acknowledgment (see [`Forwarder`]).
    pub async fn forward(&self, message: &Message) -> Response {
        self.forward_as(message, message.as_bytes().clone()).await
    }

    /// Sends `outgoing` (a rewritten copy of `upstream`, with its own MSH-10 if you like)
    /// downstream and answers `upstream` with the downstream's acknowledgment: the ACK is
    /// built for `upstream`, so its MSA-2 is the upstream MSH-10 whatever `outgoing` carried.
    pub async fn forward_as(&self, upstream: &Message, outgoing: Bytes) -> Response {
        let result = self.send(outgoing).await;
        self.relay(upstream, result)
    }

    /// Sends one message downstream on a pooled connection and returns the client's result
    /// as [`Client::send`] gives it.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn send(&self, message: Bytes) -> Result<Option<Acknowledgment>, ClientError> {
        // The semaphore is never closed: acquiring fails only then.
        let _slot = self.inner.slots.acquire().await;
        let mut client = self.take();
        // The reply timeout bounds the whole exchange, reconnecting included: a client that
        // failed before waits a growing backoff (up to 10 s) before it dials again, and the
        // connect has its own timeout, neither of which the sender upstream should wait out.
        let limit = self.inner.config.reply_timeout;
        match tokio::time::timeout(limit, client.send(message)).await {
            Ok(result) => {
                self.put_back(client);
                result
            }
            // Cut short: the client is dropped, never pooled (its connection is in an unknown
            // state), and the next message starts on a fresh one, without the backoff.
            Err(_) => Err(ClientError::Timeout(limit)),
        }
    }

    fn take(&self) -> Client {
        let pooled = self
            .inner
            .idle
            .lock()
            .map(|mut idle| idle.pop())
            .ok()
            .flatten();
        pooled.unwrap_or_else(|| {
            let inner = &self.inner;
            match &inner.connector {
                Some(connector) => Client::with_connector(
                    inner.addr.clone(),
                    inner.config.clone(),
                    connector.clone(),
                ),
                None => Client::with_config(inner.addr.clone(), inner.config.clone()),
            }
        })
    }

    fn put_back(&self, client: Client) {
        if let Ok(mut idle) = self.inner.idle.lock()
            && idle.len() < self.inner.max_connections
        {
            idle.push(client);
        }
    }

    /// The answer to `upstream` for the downstream's `result`.
    fn relay(
        &self,
        upstream: &Message,
        result: Result<Option<Acknowledgment>, ClientError>,
    ) -> Response {
        let ack = match result {
            Ok(Some(ack)) => ack,
            // MSH-15 asked the downstream for no ACK (NE, or ER and none came): accepted.
            Ok(None) => return Response::accept(),
            Err(ClientError::Negative { ack, .. }) => *ack,
            Err(error) => {
                tracing::warn!(
                    hl7.control_id = crate::hl7::logged_control_id(upstream.control_id().unwrap_or_default()).as_ref(),
                    downstream = %self.inner.addr,
                    error = %error,
                    "forwarding failed; answered AE 207"
                );
                let text = match error {
                    ClientError::Timeout(_) => "downstream did not acknowledge in time",
                    ClientError::Connect { .. } => "downstream unreachable",
                    _ => "downstream answer unusable",
                };
                return Response::error(ErrorCode::ApplicationInternalError, text);
            }
        };
        let status = match ack.code() {
            AckCode::AA | AckCode::CA => Status::Accepted,
            AckCode::AE | AckCode::CE => Status::Error,
            _ => Status::Rejected,
        };
        let requirement = upstream
            .accept_ack_type()
            .filter(|_| !self.inner.ack.original_mode_only);
        let enhanced = requirement.is_some();
        if enhanced && !accept_ack_wanted(requirement, status == Status::Accepted) {
            // The upstream's MSH-15 wants no answer for this outcome: the ACK stage sends none.
            return Response::new(status, Vec::new());
        }
        let code = status.ack_code(enhanced);
        let mut reply = Reply::acknowledgment(upstream, code, &self.inner.ack);
        let downstream = ack.message();
        for err in downstream.segments_by_id("ERR") {
            let rewritten = translate(
                err.as_bytes(),
                downstream.delimiters(),
                upstream.delimiters(),
            );
            reply = reply.raw_segment(&rewritten);
        }
        let mut response = Response::reply(reply.build());
        response.set_status(status);
        response
    }
}

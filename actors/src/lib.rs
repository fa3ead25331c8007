//! `mllp-actors`: a protocol-agnostic, OTP-style connection supervisor on ractor and tokio
//! ("Ranch for ractor").
//!
//! It knows sockets, supervision, deadlines, back-pressure and shutdown, and learns everything
//! about a protocol through one trait, [`Protocol`] (a codec, a handler, request metadata, and
//! the answer to give when a handler fails). How a socket becomes a stream (plain TCP, TLS) is a
//! [`Transport`].
//!
//! # The tree
//!
//! ```text
//! Server (root supervisor, rest_for_one)
//! ├── ConnectionSupervisor   owns the slots (max_connections) and the registry
//! │   └── Connection × N     temporary; its I/O runs in a task it owns
//! │       └── handler task   one per request; deadline; aborted on timeout
//! └── Acceptor               accept loop in its own task; restarted under RestartPolicy
//! ```
//!
//! - The connection supervisor starts before the acceptor, so an acceptor restart never touches
//!   live connections. The acceptor takes a slot *before* `accept()`: at `max_connections` it
//!   waits, and the kernel backlog holds new peers.
//! - A connection reads only while it has fewer than `max_in_flight` requests in flight, so a
//!   busy handler pushes back on the sender through TCP; nothing is buffered without bound.
//!   Responses are written in arrival order. A request counts until it is answered *and* the
//!   work its handler handed off (a blocking write, a job for a writer thread) holds no clone
//!   of its [`Lease`] any more: a handler timeout does not let a slow disk take on more.
//! - Read buffers, requests in flight and what handling them allocates share one budget
//!   (`max_buffered_bytes`, default a quarter of the memory): at its limit connections stop
//!   reading. Per-peer limits (`max_connections_per_peer`, by address and by TLS identity;
//!   `accept_rate_per_peer`) keep one peer from taking every slot, and connection log lines
//!   are kept to `connection_log_rate` a second.
//! - A handler that panics or passes `handler_timeout` is answered per
//!   [`HandlerFailurePolicy`]; the connection goes on. A connection whose own code panics is
//!   reported by its supervisor: exactly one `ConnectionStop` per `ConnectionStart`, always,
//!   and its slot is freed.
//! - [`ServerHandle::shutdown`] drains: stop accepting, answer what is in flight, close; after
//!   `shutdown_grace` abort the rest. It returns once every actor and task has ended.
//!
//! # Quick start
//!
//! ```no_run
//! use std::sync::Arc;
//! use mllp_actors::{Failure, PlainTcp, Protocol, Server, ServerConfig};
//! use tokio_util::codec::LinesCodec;
//!
//! /// Answers each line with its length.
//! struct Count;
//!
//! impl Protocol for Count {
//!     type Request = String;
//!     type Response = String;
//!     type Meta = usize;
//!     type Error = tokio_util::codec::LinesCodecError;
//!     type Codec = LinesCodec;
//!
//!     fn codec(&self) -> LinesCodec {
//!         LinesCodec::new_with_max_length(1024)
//!     }
//!     fn meta(&self, line: &String) -> usize {
//!         line.len()
//!     }
//!     fn handle(
//!         &self,
//!         _line: String,
//!         len: &usize,
//!         _connection: &mllp_actors::ConnectionInfo,
//!     ) -> impl Future<Output = Option<String>> + Unpin + Send + 'static {
//!         std::future::ready(Some(len.to_string()))
//!     }
//!     fn on_failure(&self, _len: &usize, failure: &Failure) -> Option<String> {
//!         Some(format!("error: {}", failure.kind()))
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let signal = mllp_actors::signal::listen()?; // SIGTERM/SIGINT from here on drain the server
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = Server::start(listener, Count, PlainTcp, ServerConfig::default(), vec![]).await?;
//! println!("listening on {}", server.local_addr());
//! let report = server.shutdown_on(signal).await?;
//! println!("drained {}, aborted {}", report.drained, report.aborted);
//! # Ok(())
//! # }
//! ```
//!
//! # Telemetry
//!
//! Every event goes to the [`Observer`]s given to [`Server::start`] (see [`event`] for the
//! guarantees) and into `tracing`: the connection runs in [`Protocol::connection_span`], each
//! handler in [`Protocol::message_span`]; `info` events on connection open and close (with the
//! reason), `warn` when a handler fails, `error` only when the listener fails. Request contents
//! are never logged. ractor emits its own spans (named `Actor`) and events for every actor:
//! embedders usually filter them with `ractor=warn`.
//!
//! # Cancel safety
//!
//! [`ServerHandle::shutdown`], [`ServerHandle::wait`], [`ServerHandle::connections`] and
//! [`ServerHandle::snapshot`] may be dropped at any time: dropping `shutdown()` after its first poll does not cancel the shutdown
//! (it has begun and completes on its own), and calling it again waits for the same end.
//! Inside the tree, every `select!` is over cancel-safe operations (see
//! [Internals](#internals)).
//!
//! # Internals
//!
//! - Restarted actors keep no state that must outlive them: the listener, the settings, the
//!   slots and the tokens are owned above them and passed in as arguments.
//! - `post_stop` does not run when an actor is killed or fails, so must-run cleanup lives in
//!   `Drop`: a connection's state aborts its I/O task; the registry entry holds the slot
//!   permit, and the permit is dropped with the entry, which is what frees the slot; the
//!   registry emits the missing stops if it is dropped with connections in it.
//! - A connection's reads, handler waits and writes are cancel safe: bytes go into the
//!   connection's own buffer, deadlines are instants stored in the connection, and a handler
//!   is a task, so dropping its join handle loses nothing (the runtime aborts it explicitly).
//! - A handler is polled once inline on the connection's task (inside `catch_unwind`); only
//!   if it is not done at once is it moved into its own task, under its deadline. A handler
//!   that answers without waiting costs no task spawn, which keeps the tree within a few
//!   percent of a bare accept loop.
//! - The connection I/O runs in a task owned by the connection actor rather than in the
//!   actor's `handle`, so the actor's mailbox (and ractor's `Stop`/`Kill`) is never blocked by
//!   a read; the actor is what links the connection into the supervision tree.
//! - Modules only import downward, as Ranch's roles call: `server` (this API) → `root` (the
//!   root supervisor and its teardown driver) → `acceptor` → `supervisor` (the connection
//!   supervisor, to which the acceptor hands sockets) → `connection` (the actor; under it
//!   `serve`, the request loop, `io`, the socket and buffers, `in_flight` and `stats`) →
//!   `handler_task`. Below them sit `shared` (with `control`, `slots`, `observers`, `budget`
//!   and `peers`), `lease` and `log_limit`, and the leaves (`report`, `util`, `owned` and the
//!   public modules). `.ci/import-cycles` fails CI on a cycle.
//! - The memory budget is a semaphore of bytes. A read buffer grows only by a reallocation this
//!   crate makes, at a size drawn first (never by `BytesMut::reserve`, which could double past
//!   it); each allocation's draw is shared by the buffer and every request decoded from it, so
//!   it is given back when the allocation can really be freed.
//!
//! # Features
//!
//! - `test-util` (off by default): hooks that drive the tree into its failure paths in tests
//!   (making the acceptor fail as if its listener had died). Hidden from these docs and not
//!   part of the stable API.
//!
//! # MSRV
//!
//! Rust 1.89.

pub mod event;
pub mod protocol;
pub mod signal;
pub mod transport;

mod acceptor;
mod budget;
mod config;
mod connection;
mod control;
mod error;
mod handler_task;
mod lease;
mod log_limit;
mod observers;
mod owned;
mod peers;
mod report;
mod root;
mod server;
mod shared;
mod slots;
mod supervisor;
mod util;

pub use config::{
    ConfigError, HandlerFailurePolicy, RestartPolicy, RestartPolicyBuilder, ServerConfig,
};
pub use error::{ServerError, StartError};
pub use event::{CloseReason, Event, Observer};
pub use lease::Lease;
pub use protocol::{ConnectionInfo, Failure, Protocol};
pub use report::{
    ClosedConnection, ConnectionSnapshot, ListenerSnapshot, RECENTLY_CLOSED, ServerSnapshot,
    ServerState, ShutdownReport,
};
pub use server::{Server, ServerHandle};
pub use transport::{Established, PlainTcp, Transport};

//! The public server: a builder for every policy, `bind`, and a handle to run and stop it.
//!
//! ```no_run
//! use mllp::{Server, app::{Request, Router}};
//!
//! # async fn run() -> Result<(), mllp::Error> {
//! let router = Router::new().route("ADT^*", |req: Request| async move {
//!     tracing::info!(control_id = req.message().control_id(), "admitted");
//! });
//! let server = Server::builder().router(router).bind("127.0.0.1:2575").await?;
//! println!("listening on {}", server.local_addr());
//! let report = server.serve_with_shutdown(mllp::shutdown_signal()).await?;
//! println!("drained {} connections, aborted {}", report.drained, report.aborted);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};

use crate::ack::AckOptions;
use crate::app::plugin::{Plugin, RequireMshFields};
use crate::app::{RoutePatternError, Router};
use crate::frame::{FrameConfig, FramingPolicy, MllpCodec};
use crate::hl7::ParseOptions;
use crate::protocol;
use crate::telemetry::{Activity, MessageLog, Metrics, Observer, SpanRecorder};

mod snapshot;

pub use snapshot::{AckCounts, ConnectionStatus, Latency, RejectCounts, Snapshot, Totals};

/// A runtime setting out of range, as carried by [`ConfigError::Runtime`].
pub use mllp_actors::ConfigError as RuntimeConfigError;
/// The runtime settings (timeouts, limits, supervision policies), as taken whole by
/// [`ServerBuilder::config`].
pub use mllp_actors::ServerConfig;
/// Why a server stopped on its own, as returned by [`ServerHandle::wait`] and carried by
/// [`Error::Stopped`].
pub use mllp_actors::ServerError;
/// Why the supervision tree could not start, as carried by [`Error::Start`].
pub use mllp_actors::StartError;
pub use mllp_actors::{
    ClosedConnection, ConnectionInfo, ConnectionSnapshot, Established, HandlerFailurePolicy, Lease,
    ListenerSnapshot, PlainTcp, RECENTLY_CLOSED, RestartPolicy, RestartPolicyBuilder, ServerState,
    ShutdownReport, Transport,
};

pub use crate::protocol::{Hl7, Hl7Codec, Inbound};

/// The default of [`ServerBuilder::message_trace_limit`]: at most 1000 `mllp.message` spans per
/// second, server-wide.
pub const DEFAULT_MESSAGE_TRACE_LIMIT: u32 = 1000;

/// Why a server could not be built or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range, or a route pattern is invalid. Its message is the setting's
    /// own (`max_message_size must be at least 1 byte`, `invalid route pattern "ADT^A01^ADT_A01":
    /// expected CODE^EVENT, …`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listening socket could not be bound.
    #[error("could not bind {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The supervision tree could not be started.
    #[error("server failed to start")]
    Start(#[source] StartError),
    /// The server stopped by itself: the acceptor failed more often than its restart policy
    /// allows (escalation).
    #[error("server stopped")]
    Stopped(#[source] ServerError),
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A runtime setting (timeouts, limits, policies) is out of range.
    #[error(transparent)]
    Runtime(#[from] RuntimeConfigError),
    /// `max_message_size` is zero.
    #[error("max_message_size must be at least 1 byte")]
    MaxMessageSize,
    /// `max_buffered_bytes` cannot hold a message of `max_message_size` while its read buffer
    /// grows (twice `max_message_size`, plus 64 KiB).
    #[error(
        "max_buffered_bytes ({limit} bytes) must be at least twice max_message_size plus 64 KiB \
         ({needed} bytes)"
    )]
    MaxBufferedBytes {
        /// The `max_buffered_bytes` given.
        limit: usize,
        /// The least it may be with this `max_message_size`.
        needed: usize,
    },
    /// `message_trace_ratio` is not a number between 0 and 1.
    #[error("message_trace_ratio must be between 0.0 and 1.0, got {0}")]
    TraceRatio(f64),
    /// A route pattern could not be parsed.
    #[error(transparent)]
    Route(#[from] RoutePatternError),
}

/// Builds a [`Server`]: every policy of docs/configuration.md, the router, plugins and
/// telemetry. Setters consume and return the builder; nothing is checked until [`bind`]. The
/// runtime settings can also be handed over whole, as a [`ServerConfig`], with [`config`].
///
/// [`bind`]: ServerBuilder::bind
/// [`config`]: ServerBuilder::config
#[must_use]
pub struct ServerBuilder<T: Transport = mllp_actors::PlainTcp> {
    runtime: ServerConfig,
    frame: FrameConfig,
    router: Option<Router>,
    plugins: Vec<Arc<dyn Plugin>>,
    default_plugins: bool,
    ack: AckOptions,
    parse: ParseOptions,
    observers: Vec<Arc<dyn Observer<Hl7>>>,
    metrics: Option<Metrics>,
    /// The meter given to [`meter`](Self::meter), which requests carry for middleware that
    /// counts (`StoreLayer`).
    meter: Option<opentelemetry::metrics::Meter>,
    trace_ratio: f64,
    trace_limit: Option<u32>,
    log: MessageLog,
    transport: T,
}

impl<T: Transport> fmt::Debug for ServerBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("runtime", &self.runtime)
            .field("frame", &self.frame)
            .field("router", &self.router)
            .field("plugins", &self.plugins.len())
            .field("transport", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            runtime: ServerConfig::default(),
            frame: FrameConfig::default(),
            router: None,
            plugins: Vec::new(),
            default_plugins: true,
            ack: AckOptions::default(),
            parse: ParseOptions::default(),
            observers: Vec::new(),
            metrics: None,
            meter: None,
            trace_ratio: 1.0,
            trace_limit: Some(DEFAULT_MESSAGE_TRACE_LIMIT),
            log: MessageLog {
                messages: false,
                rejects: false,
                lines: None,
            },
            transport: mllp_actors::PlainTcp,
        }
    }
}

impl<T: Transport> ServerBuilder<T> {
    /// The router (dispatcher with its middleware, and its state if it has one). Default is a
    /// router with no routes, which answers every message AR (unsupported message type).
    pub fn router<S: Clone + Send + Sync + 'static>(mut self, router: Router<S>) -> Self {
        self.router = Some(router.without_state());
        self
    }

    /// Adds a parser plugin; plugins run in the order added, after the built-in
    /// [`RequireMshFields`] check (see [`without_default_plugins`](Self::without_default_plugins)).
    /// Default is no plugin besides that one.
    pub fn plugin(mut self, plugin: impl Plugin) -> Self {
        self.plugins.push(Arc::new(plugin));
        self
    }

    /// Drops the built-in [`RequireMshFields`] plugin (AR 101 for a missing MSH-9 or MSH-10).
    /// Default is to run it.
    pub fn without_default_plugins(mut self) -> Self {
        self.default_plugins = false;
        self
    }

    /// How acknowledgments are built (ERR-7, sending application override, ...).
    /// Default is [`AckOptions::default`].
    pub fn ack_options(mut self, options: AckOptions) -> Self {
        self.ack = options;
        self
    }

    /// How payloads are parsed. Default is the wire rules: segments end in CR only.
    pub fn parse_options(mut self, options: ParseOptions) -> Self {
        self.parse = options;
        self
    }

    /// Replaces every runtime setting at once with `config`: the timeouts (`idle_timeout`,
    /// `frame_timeout`, `handler_timeout`, `write_timeout`, `handshake_timeout`), the limits
    /// (`max_connections`, `max_in_flight`, `max_concurrent_handlers`), `handler_failure`,
    /// `restart` and `shutdown_grace`. Use it when the settings come from your own configuration
    /// rather than one setter at a time. Default is [`ServerConfig::default()`]: idle 60 s,
    /// frame 30 s, handler 60 s, write 30 s, handshake 5 s, 1024 connections, 1 message in flight
    /// per connection, no server-wide handler limit, AE 207 when a handler fails, 3 restarts
    /// within 5 s with a backoff of 100 ms doubling to 5 s, and a shutdown grace of 10 s.
    ///
    /// What the setters of those settings set before this call is replaced; a setter called
    /// after it changes its one setting. The framer's settings
    /// ([`max_message_size`](Self::max_message_size), [`framing`](Self::framing)) and message
    /// tracing ([`message_trace_ratio`](Self::message_trace_ratio),
    /// [`message_trace_limit`](Self::message_trace_limit)) are not part of a [`ServerConfig`] and
    /// are kept. As with the setters, nothing is checked until [`bind`](Self::bind), which
    /// returns [`ConfigError::Runtime`] for a value out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use mllp::server::{HandlerFailurePolicy, Server, ServerConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), mllp::Error> {
    /// let config = ServerConfig::default()
    ///     .idle_timeout(None) // a partner that keeps its link idle for hours
    ///     .handler_timeout(Duration::from_secs(10))
    ///     .handler_failure(HandlerFailurePolicy::Close)
    ///     .max_connections(64);
    /// let server = Server::builder()
    ///     .config(config)
    ///     .max_message_size(4 << 20) // the framer's setting: not part of `ServerConfig`
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// println!("listening on {}", server.local_addr());
    /// # Ok(())
    /// # }
    /// ```
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.runtime = config;
        self
    }

    /// Largest frame payload accepted, and the most bytes held before a start block. A larger
    /// frame closes the connection. Default is 10 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.frame.max_message_size = bytes;
        self
    }

    /// What happens to bytes outside a frame. Default is [`FramingPolicy::Strict`]: the
    /// connection is closed.
    pub fn framing(mut self, policy: FramingPolicy) -> Self {
        self.frame.framing = policy;
        self
    }

    /// Close a connection on which nothing arrived for this long while no message was in
    /// flight; `None` never closes idle connections. Default is 60 s.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.runtime = self.runtime.idle_timeout(timeout);
        self
    }

    /// Close a connection whose frame was started and not finished within this time (slow
    /// sender protection). Default is 30 s.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.runtime = self.runtime.frame_timeout(timeout);
        self
    }

    /// Abort a handler that runs longer than this, and answer per the handler-failure policy.
    /// Default is 60 s.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.runtime = self.runtime.handler_timeout(timeout);
        self
    }

    /// Close a connection whose ACK could not be written within this time. Default is 30 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.runtime = self.runtime.write_timeout(timeout);
        self
    }

    /// Close a connection whose TLS handshake did not finish within this time. Default is 5 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.runtime = self.runtime.handshake_timeout(timeout);
        self
    }

    /// Connections served at once; the acceptor waits at the limit and the kernel backlog
    /// holds the rest. Default is 1024.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.runtime = self.runtime.max_connections(limit);
        self
    }

    /// Messages a connection reads ahead while earlier ones are handled (pipelining); ACKs are
    /// still written in order. Default is 1: MLLP senders wait for each ACK.
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.runtime = self.runtime.max_in_flight(limit);
        self
    }

    /// Handlers running at once across all connections; `None` is unlimited. A message holds
    /// its permit until it is answered and its store write (any work its handler handed off
    /// with [`Request::lease`](crate::app::Request::lease)) has finished. Default is `None`.
    pub fn max_concurrent_handlers(mut self, limit: Option<usize>) -> Self {
        self.runtime = self.runtime.max_concurrent_handlers(limit);
        self
    }

    /// Bytes the server holds for messages at once, across every connection: read buffers,
    /// messages in flight and their parse indexes. At the limit connections stop reading, so
    /// TCP pushes back on the senders, until memory is given back; no read buffer or parse
    /// index is allocated past it. `None` is unlimited. Must be at least twice
    /// [`max_message_size`](Self::max_message_size) plus 64 KiB (checked by `bind`). Default is
    /// a quarter of the memory the process may use (its cgroup's limit, else the machine's),
    /// at least 64 MiB.
    pub fn max_buffered_bytes(mut self, limit: Option<usize>) -> Self {
        self.runtime = self.runtime.max_buffered_bytes(limit);
        self
    }

    /// Connections one peer may hold at once: counted by IP address when accepted, and by the
    /// client certificate's identity once a mutual-TLS handshake verified one. A peer past it
    /// is refused: its new socket is closed as soon as it is accepted (it sees the connection
    /// close before any byte; a TLS client, after its handshake), the refusal is logged at
    /// `warn` (at most once a second, the rest summed up) and reported as
    /// [`Event::ConnectionRefused`](crate::telemetry::Event). `None` is unlimited. Default is
    /// `None`: behind a load balancer or NAT every partner has the same address.
    pub fn max_connections_per_peer(mut self, limit: Option<usize>) -> Self {
        self.runtime = self.runtime.max_connections_per_peer(limit);
        self
    }

    /// New connections one IP address may open per second (a token bucket: that many at once,
    /// refilled continuously); past it new sockets are closed as soon as they are accepted and
    /// the refusal is logged as for [`max_connections_per_peer`](Self::max_connections_per_peer).
    /// `None` is unlimited. Default is `None`.
    pub fn accept_rate_per_peer(mut self, per_second: Option<u32>) -> Self {
        self.runtime = self.runtime.accept_rate_per_peer(per_second);
        self
    }

    /// Connection log lines (opened, closed) per second; past it they are counted and summed
    /// up in one `info` line per second, so a flood of connections cannot flood the log.
    /// `None` logs every connection. Default is 20.
    pub fn connection_log_rate(mut self, per_second: Option<u32>) -> Self {
        self.runtime = self.runtime.connection_log_rate(per_second);
        self
    }

    /// What happens when a handler panics or times out. Default is
    /// [`HandlerFailurePolicy::RespondWithFailure`]: AE with ERR-3 = 207.
    pub fn handler_failure(mut self, policy: HandlerFailurePolicy) -> Self {
        self.runtime = self.runtime.handler_failure(policy);
        self
    }

    /// How often the acceptor is restarted after its listener fails before the server gives
    /// up: a [`RestartPolicy`], or a [`RestartPolicy::builder()`] with named settings
    /// (`RestartPolicy::builder().max_restarts(5).window(Duration::from_secs(60))`). Default is
    /// 3 restarts within 5 s, backoff 100 ms doubling to 5 s.
    pub fn restart(mut self, policy: impl Into<RestartPolicy>) -> Self {
        self.runtime = self.runtime.restart(policy);
        self
    }

    /// How long shutdown waits for busy connections before aborting them. Default is 10 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.runtime = self.runtime.shutdown_grace(grace);
        self
    }

    /// Registers an observer of telemetry events (metrics, audit, tests); observers are called
    /// in the order registered, after the server's own span recorder and metrics. Default is
    /// none.
    pub fn observer(mut self, observer: impl Observer<Hl7>) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Records OpenTelemetry metrics on this meter. Default is the global meter provider
    /// (instrumentation scope `mllp`), a no-op until the embedding service installs one.
    ///
    /// Middleware that counts runs on the same meter: a
    /// [`StoreLayer`](crate::store::StoreLayer) in this server's router counts its
    /// `mllp.server.duplicates` and `mllp.server.reused_control_ids` here too, unless it was
    /// given a meter of its own.
    pub fn meter(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        self.metrics = Some(Metrics::new(meter));
        self.meter = Some(meter.clone());
        self
    }

    /// The fraction of messages that get an `mllp.message` span, from 0.0 (none) to 1.0 (every
    /// message). Default is 1.0.
    ///
    /// This is head sampling before `tracing`: a message left out costs no span at all, which
    /// is what makes tracing cheap at high rates (an exported span costs a few microseconds in
    /// `tracing-opentelemetry` and the SDK; docs/telemetry.md has the measurements), whereas the
    /// OpenTelemetry SDK's own sampler drops spans only after they were built. The
    /// `mllp.connection` span, log events and metrics are not sampled. Spans a handler opens for
    /// a message left out have no `mllp.message` parent: they start their own traces.
    pub fn message_trace_ratio(mut self, ratio: f64) -> Self {
        self.trace_ratio = ratio;
        self
    }

    /// At most this many `mllp.message` spans per second, server-wide; `None` for no limit.
    /// Default is `Some(1000)` ([`DEFAULT_MESSAGE_TRACE_LIMIT`]): every message is traced up to
    /// 1000 messages per second, which is more than most HL7 interfaces see at their peak.
    ///
    /// A cap keeps every message traced at ordinary rates and bounds what tracing costs in a
    /// burst (a backlog replayed after an outage, a batch load), where a ratio would drop the same
    /// share of messages at every rate: an exported span costs a few microseconds in `tracing`,
    /// `tracing-opentelemetry` and the SDK (docs/telemetry.md has the measurements), so 1000
    /// spans per second cost about 0.3% of one core whatever the message rate. It applies after
    /// [`message_trace_ratio`](Self::message_trace_ratio), counting only the messages the ratio
    /// kept. Seconds are counted from when the server was built, in fixed windows, so a burst
    /// that straddles the turn of a second may get up to twice the limit within one second of
    /// wall-clock time. `Some(0)` traces no message; `None` traces every message the ratio
    /// keeps, at any rate. As with the ratio, messages left out cost no span, and the
    /// `mllp.connection` span, log events and metrics are not limited.
    pub fn message_trace_limit(mut self, per_second: Option<u32>) -> Self {
        self.trace_limit = per_second;
        self
    }

    /// Logs one line per message at INFO, target `mllp::messages`
    /// ([`MESSAGES_TARGET`](crate::telemetry::MESSAGES_TARGET)): connection id, peer address,
    /// MSH-9 (type and trigger), MSH-10, the ACK code sent, the latency (from the read that
    /// completed the frame to the ACK written, in milliseconds) and the store id the pipeline
    /// recorded ([`Request::set_store_id`](crate::app::Request::set_store_id)). Messages that
    /// were refused (AR/CR) get the reject line instead (see
    /// [`log_rejects`](Self::log_rejects)). Default is off: the library logs nothing per
    /// message unless asked (`mllp serve` turns it on).
    pub fn log_messages(mut self, on: bool) -> Self {
        self.log.messages = on;
        self
    }

    /// Writes the per-message lines of [`log_messages`](Self::log_messages) as text straight
    /// to `sink`, one whole line (newline included) per call, instead of as `tracing` events:
    /// the bytes [`TextFormat`](crate::telemetry::TextFormat) writes for the event outside any
    /// span, without `tracing`'s dispatch and field visits (in `mllp serve` at 16 connections
    /// the line's share of the server's CPU fell from 8.4% to 5.4%). A line is written only
    /// when the global (or scoped) subscriber has `mllp::messages` at INFO enabled, so
    /// `RUST_LOG` still decides; a line with a value the text format would escape (quotes,
    /// control characters, non-ASCII) still goes through `tracing`. For a subscriber that
    /// formats text with `TextFormat`, without ANSI colours, into the writer `sink` writes to
    /// (`mllp serve` does this when its log format is text and stderr is not a terminal).
    /// Reject lines always go through `tracing`. Default: none.
    pub fn message_lines_to(mut self, sink: crate::telemetry::LineSink) -> Self {
        self.log.lines = Some(sink);
        self
    }

    /// Logs every reject at WARN, target `mllp::rejects`
    /// ([`REJECTS_TARGET`](crate::telemetry::REJECTS_TARGET)), with its reason (`not_hl7`,
    /// `missing_msh_field`, `refused`, `framing`, `oversize`, `truncated`), the connection, the
    /// ERR-3 code sent and the offset of the offending byte (in the payload for a message, in
    /// the connection's inbound stream for a framing fault); never the payload. Default is off
    /// (`mllp serve` turns it on).
    pub fn log_rejects(mut self, on: bool) -> Self {
        self.log.rejects = on;
        self
    }

    /// Serves over another transport (TLS, or a peer allow-list). Default is plain TCP.
    pub fn transport<U: Transport>(self, transport: U) -> ServerBuilder<U> {
        ServerBuilder {
            runtime: self.runtime,
            frame: self.frame,
            router: self.router,
            plugins: self.plugins,
            default_plugins: self.default_plugins,
            ack: self.ack,
            parse: self.parse,
            observers: self.observers,
            metrics: self.metrics,
            meter: self.meter,
            trace_ratio: self.trace_ratio,
            trace_limit: self.trace_limit,
            log: self.log,
            transport,
        }
    }

    /// Validates the configuration and binds the listening socket, so that
    /// [`Server::local_addr`] is known before serving (bind port 0 in tests).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad setting or route, [`Error::Bind`] when the address cannot be
    /// bound.
    pub async fn bind(self, addr: impl ToSocketAddrs + fmt::Display) -> Result<Server<T>, Error> {
        let shown = addr.to_string();
        self.validate()?;
        let listener = bind_listener(addr).await.map_err(|source| Error::Bind {
            addr: shown,
            source,
        })?;
        self.listen(listener)
    }

    /// Like [`bind`](Self::bind), on a listener you bound yourself.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad setting or route.
    pub fn listen(self, listener: TcpListener) -> Result<Server<T>, Error> {
        self.validate()?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: "listener".to_owned(),
            source,
        })?;
        let (pipeline, deadlines) = self
            .router
            .unwrap_or_default()
            .into_service()
            .map_err(ConfigError::from)?;
        if deadlines.has_zero() {
            return Err(ConfigError::Runtime(RuntimeConfigError::Zero {
                setting: "handler_timeout",
            })
            .into());
        }
        let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
        if self.default_plugins {
            plugins.push(Arc::new(RequireMshFields));
        }
        plugins.extend(self.plugins);
        let protocol = Hl7::new(protocol::Hl7Inner {
            pipeline,
            deadlines,
            plugins,
            ack: self.ack,
            parse: self.parse,
            codec: MllpCodec::from_config(self.frame),
            sampler: protocol::Sampler::new(self.trace_ratio, self.trace_limit),
            message_log: self.log.messages,
            meter: self.meter,
        });
        let activity = Arc::new(Activity::default());
        let mut observers = self.observers;
        if self.log.messages || self.log.rejects {
            observers.insert(0, Arc::new(self.log));
        }
        observers.insert(0, Arc::clone(&activity) as Arc<dyn Observer<Hl7>>);
        observers.insert(0, Arc::new(self.metrics.unwrap_or_else(Metrics::global)));
        observers.insert(0, Arc::new(SpanRecorder));
        Ok(Server {
            listener,
            local_addr,
            protocol,
            transport: self.transport,
            config: self.runtime,
            observers,
            activity,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.runtime.validate()?;
        if self.frame.max_message_size == 0 {
            return Err(ConfigError::MaxMessageSize);
        }
        if let Some(limit) = self.runtime.max_buffered_bytes {
            // A frame of the largest size is read into a buffer that grows by copying: the old
            // allocation and the new one (up to twice the frame) are held at once at the end.
            let needed = self
                .frame
                .max_message_size
                .saturating_mul(2)
                .saturating_add(64 * 1024);
            if limit < needed {
                return Err(ConfigError::MaxBufferedBytes { limit, needed });
            }
        }
        if !(0.0..=1.0).contains(&self.trace_ratio) {
            return Err(ConfigError::TraceRatio(self.trace_ratio));
        }
        Ok(())
    }
}

/// A bound server, not yet serving.
pub struct Server<T: Transport = mllp_actors::PlainTcp> {
    listener: TcpListener,
    local_addr: SocketAddr,
    protocol: Hl7,
    transport: T,
    config: ServerConfig,
    observers: Vec<Arc<dyn Observer<Hl7>>>,
    activity: Arc<Activity>,
}

impl<T: Transport> fmt::Debug for Server<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with every default.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

impl<T: Transport> Server<T> {
    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts serving in the background and returns a handle to watch and stop it.
    ///
    /// # Errors
    /// [`Error::Start`] when the supervision tree cannot be started.
    pub async fn spawn(self) -> Result<ServerHandle, Error> {
        let inner = mllp_actors::Server::start(
            self.listener,
            self.protocol,
            self.transport,
            self.config,
            self.observers,
        )
        .await
        .map_err(Error::Start)?;
        Ok(ServerHandle {
            inner,
            activity: self.activity,
        })
    }

    /// Serves until `signal` completes, then shuts down gracefully and returns the drain report.
    ///
    /// `signal` is first polled once the server runs: give it a future that listens from the
    /// moment it is made, as [`shutdown_signal`] does (an `async fn` that installs signal
    /// handlers installs them only when polled, and a signal before that ends the process).
    ///
    /// # Errors
    /// [`Error::Start`] when the server cannot start, [`Error::Stopped`] when it stopped by
    /// itself before the signal (acceptor restart limit exceeded).
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<ShutdownReport, Error> {
        let handle = self.spawn().await?;
        tokio::select! {
            () = signal => Ok(handle.shutdown().await),
            result = handle.wait() => match result {
                Ok(()) => Ok(handle.shutdown().await),
                Err(e) => Err(Error::Stopped(e)),
            },
        }
    }
}

/// A running server: its address, live connections, shutdown and failure.
#[derive(Clone)]
pub struct ServerHandle {
    inner: mllp_actors::ServerHandle,
    activity: Arc<Activity>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr())
            .finish()
    }
}

impl ServerHandle {
    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// The live connections: id, peer, start time, messages handled, messages in flight.
    pub async fn connections(&self) -> Vec<ConnectionSnapshot> {
        self.inner.connections().await
    }

    /// The current connection limit: `max_connections` as built, or as last set by
    /// [`set_max_connections`](Self::set_max_connections).
    pub fn max_connections(&self) -> usize {
        self.inner.max_connections()
    }

    /// Changes the connection limit while the server runs (Ranch's `set_max_connections`).
    /// Raising it lets waiting peers in at once; lowering it closes no connection: new peers
    /// wait in the kernel backlog until the server is under the new limit.
    ///
    /// # Errors
    /// [`ConfigError::Runtime`] when `limit` is zero or too large; the limit is unchanged.
    pub fn set_max_connections(&self, limit: usize) -> Result<(), ConfigError> {
        Ok(self.inner.set_max_connections(limit)?)
    }

    /// Stops accepting new connections (Ranch's `suspend_listener`) and returns once the
    /// acceptor has stopped; live connections are served as before. The listening socket stays
    /// bound (the port stays yours): peers that connect meanwhile wait in the kernel backlog
    /// and are served after [`resume`](Self::resume). Idempotent.
    pub async fn suspend(&self) {
        self.inner.suspend().await;
    }

    /// Starts accepting again after [`suspend`](Self::suspend) (Ranch's `resume_listener`).
    /// Idempotent.
    pub async fn resume(&self) {
        self.inner.resume().await;
    }

    /// Whether accepting is suspended.
    pub fn is_suspended(&self) -> bool {
        self.inner.is_suspended()
    }

    /// Closes the connection with this id (as in [`connections`](Self::connections) and the
    /// telemetry events) gracefully: it stops reading, answers the messages in flight, and
    /// closes with the reason `server_closed`. Returns whether such a connection was being
    /// served (a TLS connection still in its handshake is not). Returns at once.
    pub fn close_connection(&self, id: u64) -> bool {
        self.inner.close_connection(id)
    }

    /// Bytes held now of [`max_buffered_bytes`](ServerBuilder::max_buffered_bytes): read
    /// buffers, messages in flight and their parse indexes. Never more than the limit; `None`
    /// without one.
    pub fn buffered_bytes(&self) -> Option<usize> {
        self.inner.buffered_bytes()
    }

    /// Whether the server is running, draining or stopped, without a call into the tree: what
    /// a readiness probe asks.
    pub fn state(&self) -> ServerState {
        self.inner.state()
    }

    /// The server at a glance: state, listeners, every live connection with its counters and
    /// last message (MSH-9 and ACK code), the connections closed last with their reasons,
    /// answers by ACK code, rejects by kind, and message latency percentiles. MSH fields only:
    /// nothing in it can hold patient data.
    ///
    /// Cheap enough to poll every second with thousands of connections: one round trip to the
    /// connection supervisor, which copies its registry, and a read of the server's counters
    /// (docs/operations.md has the measured cost).
    pub async fn snapshot(&self) -> Snapshot {
        snapshot::take(self.inner.snapshot().await, &self.activity)
    }

    /// [`snapshot`](Self::snapshot) without the connection lists (`connections` and
    /// `recently_closed` are empty, `active_connections` counts the live ones): its cost does
    /// not grow with the number of connections. What `/status` serves.
    pub async fn summary(&self) -> Snapshot {
        snapshot::take(self.inner.summary().await, &self.activity)
    }

    /// Stops accepting, lets each connection finish the message in flight and write its ACK,
    /// closes idle connections at once, aborts what remains after the shutdown grace, and
    /// returns once every actor and task has ended. Safe to call more than once.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.inner.shutdown().await
    }

    /// Resolves when the server has stopped: `Ok` after [`shutdown`](Self::shutdown), `Err`
    /// when it stopped by itself (the acceptor failed more often than the restart policy
    /// allows). Observers see an `Event::Escalation` with the same error first.
    ///
    /// # Errors
    /// [`ServerError`], the escalated failure, when the server stopped by itself.
    pub async fn wait(&self) -> Result<(), ServerError> {
        self.inner.wait().await
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C): pass it to
/// [`Server::serve_with_shutdown`] or select on it next to your own tasks.
///
/// The handlers are in place as soon as this is called, before the future is first polled: a
/// SIGTERM that arrives while the server is still starting (inside `serve_with_shutdown`,
/// before it waits on the signal) is kept for the future, instead of ending the process
/// without a drain. So call it before you bind or announce the address, or in the same
/// statement that serves. Call it inside a Tokio runtime (it registers with the runtime's
/// signal driver). On platforms other than Unix it waits for Ctrl-C, registered when first
/// polled.
///
/// # Panics
///
/// Outside a Tokio runtime, as `tokio::signal` does.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let listening = mllp_actors::signal::listen();
    async move {
        match listening {
            Ok(signal) => signal.await,
            Err(error) => {
                // Without signal handlers the process cannot be stopped gracefully; stopping at
                // once would be worse, so keep serving and say why.
                tracing::error!(%error, "cannot listen for SIGTERM/SIGINT; graceful shutdown by signal is unavailable");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The accept queue of a listener [`ServerBuilder::bind`] binds: room for a burst of thousands
/// of connects while the acceptor catches up (the kernel caps it at `net.core.somaxconn`, 4096
/// on current Linux). The common default of 1024 overflowed when 10,000 senders connected at
/// once: the kernel dropped their handshakes, and each retried a second or more later.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the first address `addr` resolves to that can be bound (as `TcpListener::bind`,
/// `SO_REUSEADDR` on Unix), listening with [`LISTEN_BACKLOG`].
async fn bind_listener(addr: impl ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

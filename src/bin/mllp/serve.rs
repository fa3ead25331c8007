//! `mllp serve`: receive HL7 over MLLP and store every accepted message durably before its AA.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use mllp::app::{HandlerError, Request, Router};
use mllp::inbox::Inbox;
use mllp::server::{PlainTcp, Transport};
use mllp::tls::{Admission, Admitted, TlsConfig, TlsReloader};
use mllp::{RestartPolicy, Server, ShutdownReport};

use crate::config::{self, Framing, HandlerFailure, LogFormat, ServeFile, SettingError};
use crate::exit;

/// The address bound when neither `--bind` nor the file says otherwise.
pub(crate) const DEFAULT_BIND: &str = "127.0.0.1:2575";
/// The inbox used when neither `--inbox` nor the file says otherwise.
pub(crate) const DEFAULT_INBOX: &str = "mllp-inbox";

/// An idle timeout: a duration, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdleTimeout(pub(crate) Option<Duration>);

fn idle_timeout(s: &str) -> Result<IdleTimeout, String> {
    config::optional_duration(s).map(IdleTimeout)
}

/// A cap on message spans per second, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceLimit(pub(crate) Option<u32>);

fn trace_limit(s: &str) -> Result<TraceLimit, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(TraceLimit(None));
    }
    s.parse()
        .map(|n| TraceLimit(Some(n)))
        .map_err(|_| "expected a whole number of spans per second, or none".to_owned())
}

/// Receive HL7 v2 messages over MLLP and acknowledge them.
///
/// Every accepted message is written to the inbox directory (one file per message: write to a
/// temporary file, fsync, link to its final name, fsync the directory) BEFORE it is acknowledged
/// AA, so an AA means the message is on disk. A message that cannot be stored is answered AE.
/// Messages that are not HL7, or lack MSH-9 or MSH-10, are answered AR and never stored.
///
/// Prints `listening on IP:PORT` on stdout once bound. SIGTERM or SIGINT starts a graceful
/// drain: no new connections, each connection finishes its message in flight, then the drain
/// report is printed; exit status 0 after a clean drain.
///
/// Every setting can also come from a TOML file (`--config`), with the flag names as keys
/// (`max-message-size = "4MiB"`, `idle-timeout = "none"`); flags win over the file.
#[derive(Debug, clap::Args)]
#[command(after_long_help = SERVE_EXAMPLES)]
pub(crate) struct ServeArgs {
    /// Address to listen on, IP:PORT (port 0 picks a free port; the `listening on` line shows
    /// it) [default: 127.0.0.1:2575]
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,

    /// Directory that receives one file per accepted message, created if missing
    /// [default: ./mllp-inbox]
    #[arg(long, value_name = "DIR")]
    inbox: Option<PathBuf>,

    /// Do not store messages: only log and acknowledge them
    #[arg(long, conflicts_with = "inbox")]
    no_inbox: bool,

    /// TOML file holding any of these settings (keys as the flag names, e.g.
    /// `max-connections = 64`); unknown keys are rejected; flags win over the file
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Largest message accepted, in bytes (units: KiB, MiB, GiB, KB, MB, GB); a larger frame
    /// closes the connection [default: 10MiB]
    #[arg(long, value_name = "BYTES", value_parser = config::byte_size)]
    max_message_size: Option<usize>,

    /// Close a connection that sent nothing for this long (`none`: never) [default: 60s]
    #[arg(long, value_name = "DUR|none", value_parser = idle_timeout)]
    idle_timeout: Option<IdleTimeout>,

    /// Close a connection whose frame is not finished this long after its start block
    /// (slow-sender guard) [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    frame_timeout: Option<Duration>,

    /// Give up on storing a message that takes longer than this, and answer per
    /// --handler-failure (AE by default) [default: 60s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    handler_timeout: Option<Duration>,

    /// When storing a message panics or passes --handler-timeout: `respond` answers AE
    /// (ERR-3 = 207) so the sender resends, `no-response` sends nothing for that message,
    /// `close` sends nothing and closes the connection [default: respond]
    #[arg(long, value_name = "POLICY", value_enum)]
    handler_failure: Option<HandlerFailure>,

    /// Close a connection whose ACK cannot be written within this time [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    write_timeout: Option<Duration>,

    /// Close a connection whose TLS handshake is not done within this time [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    handshake_timeout: Option<Duration>,

    /// PEM certificate chain (leaf first); with --tls-key, serve MLLP over TLS 1.3/1.2.
    /// SIGHUP re-reads the certificate files [default: none: plain TCP]
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert (PKCS#8, PKCS#1 or SEC1; unencrypted)
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,

    /// Require client certificates issued by the CAs in this PEM bundle (mutual TLS)
    #[arg(long, value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,

    /// Admit only clients whose certificate CN or SAN DNS name is NAME (repeatable; needs
    /// --tls-client-ca) [default: any verified client]
    #[arg(long, value_name = "NAME")]
    allow_client_subject: Vec<String>,

    /// Admit only peers from this address or CIDR range, e.g. 10.20.0.0/16 (repeatable; plain
    /// TCP and TLS alike; refused peers are closed at once) [default: every address]
    #[arg(long, value_name = "CIDR")]
    allow_peer: Vec<String>,

    /// Connections served at once; more wait in the kernel's backlog [default: 1024]
    #[arg(long, value_name = "N", value_parser = config::positive_count)]
    max_connections: Option<usize>,

    /// Messages read ahead on one connection while earlier ones are handled (pipelining
    /// senders); ACKs stay in order [default: 1]
    #[arg(long, value_name = "N", value_parser = config::positive_count)]
    max_in_flight: Option<usize>,

    /// Handlers (inbox writes) running at once across all connections [default: unlimited]
    #[arg(long, value_name = "N", value_parser = config::positive_count)]
    max_concurrent_handlers: Option<usize>,

    /// Bytes outside a frame: `strict` closes the connection, `skip` discards them up to the
    /// next start block [default: strict]
    #[arg(long, value_name = "POLICY", value_enum)]
    framing: Option<Framing>,

    /// On SIGTERM/SIGINT, how long busy connections may finish before they are aborted
    /// [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = config::any_duration)]
    shutdown_grace: Option<Duration>,

    /// Restarts of a failed listener allowed within --restart-window; one more failure stops
    /// the server (exit status 1). `0`: never restart [default: 3]
    #[arg(long, value_name = "N", value_parser = config::restart_count, allow_negative_numbers = true)]
    max_restarts: Option<u32>,

    /// The sliding window over which listener restarts are counted [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    restart_window: Option<Duration>,

    /// Delay before the first listener restart, doubled after each one [default: 100ms]
    #[arg(long, value_name = "DUR", value_parser = config::any_duration)]
    restart_backoff: Option<Duration>,

    /// Upper bound of the doubling restart delay; not less than --restart-backoff
    /// [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = config::any_duration)]
    restart_max_backoff: Option<Duration>,

    /// The fraction of messages traced with an `mllp.message` span, `0` to `1` or `0%` to
    /// `100%`; messages left out cost no span (metrics and logs still count every message)
    /// [default: 1]
    #[arg(long, value_name = "RATIO", value_parser = config::ratio)]
    message_trace_ratio: Option<f64>,

    /// At most N `mllp.message` spans per second (of the messages --message-trace-ratio kept),
    /// so a burst cannot make tracing expensive; `none` for no limit [default: 1000]
    #[arg(long, value_name = "N|none", value_parser = trace_limit)]
    message_trace_limit: Option<TraceLimit>,

    /// Log line format on stderr; the `RUST_LOG` variable filters (default filter:
    /// `info,ractor=warn`) [default: text]
    #[arg(long, value_name = "FORMAT", value_enum)]
    log_format: Option<LogFormat>,

    /// Export traces and metrics over OTLP/HTTP (protobuf) to this base URL, e.g.
    /// `http://localhost:4318` (`/v1/traces`, `/v1/metrics` are appended; http:// only). The
    /// standard `OTEL_EXPORTER_OTLP_*` and `OTEL_SERVICE_NAME` variables apply too
    /// [default: none: logs only]
    #[cfg(feature = "otlp")]
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

const SERVE_EXAMPLES: &str = "\
Examples:
  mllp serve                                  # 127.0.0.1:2575, inbox ./mllp-inbox
  mllp serve --bind 0.0.0.0:2575 --inbox /var/lib/mllp/inbox --idle-timeout none
  mllp serve --bind 127.0.0.1:0 --no-inbox    # any free port, acknowledge only
  RUST_LOG=debug mllp serve --log-format json # per-message lines (MSH-9, MSH-10 only)

Signals: SIGTERM or SIGINT drains (see --shutdown-grace); a second one exits at once.
Exit status: 0 after a clean drain, 1 when the server failed, connections had to be aborted
at the end of --shutdown-grace, or a second signal cut the drain short; 2 for invalid flags or
configuration.";

/// Every setting, resolved: flags, then the file, then the defaults.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) bind: String,
    pub(crate) inbox: Option<PathBuf>,
    pub(crate) max_message_size: Option<usize>,
    pub(crate) idle_timeout: Option<IdleTimeout>,
    pub(crate) frame_timeout: Option<Duration>,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) handler_failure: Option<HandlerFailure>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) max_concurrent_handlers: Option<usize>,
    pub(crate) framing: Option<Framing>,
    pub(crate) shutdown_grace: Option<Duration>,
    pub(crate) restart: Option<RestartPolicy>,
    pub(crate) message_trace_ratio: Option<f64>,
    pub(crate) message_trace_limit: Option<TraceLimit>,
    pub(crate) handshake_timeout: Option<Duration>,
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) allow_peer: Vec<String>,
    pub(crate) log_format: LogFormat,
    #[cfg(feature = "otlp")]
    pub(crate) otlp_endpoint: Option<String>,
}

/// The TLS settings, resolved and checked for completeness.
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
    pub(crate) allow_client_subject: Vec<String>,
}

impl ServeArgs {
    /// Merges the flags over the config file over the defaults. Unset policies stay `None`, so
    /// the library's documented defaults apply.
    pub(crate) fn resolve(self) -> Result<Settings, SettingError> {
        let file = match &self.config {
            Some(path) => ServeFile::load(path)?,
            None => ServeFile::default(),
        };
        let path: &Path = self.config.as_deref().unwrap_or(Path::new(""));
        // Keys present but empty are mistakes (a template that expanded to nothing), not
        // defaults: an empty inbox path would be the working directory, and an empty allow-list
        // reads as "nobody" to a reader but would be taken as "no list".
        let empty = |key: &'static str, message: &str| SettingError::Value {
            path: path.to_path_buf(),
            key,
            message: message.to_owned(),
        };
        if file
            .inbox
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err(empty(
                "inbox",
                "must not be empty (no-inbox = true runs without storing)",
            ));
        }
        if file.allow_peer.as_ref().is_some_and(Vec::is_empty) {
            return Err(empty(
                "allow-peer",
                "an empty list would refuse every peer; remove the key to admit all",
            ));
        }
        if file
            .allow_client_subject
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            return Err(empty(
                "allow-client-subject",
                "an empty list would refuse every client; remove the key to admit any certificate the CA signed",
            ));
        }
        let inbox = if self.no_inbox {
            None
        } else if let Some(dir) = self.inbox {
            Some(dir)
        } else if file.no_inbox == Some(true) {
            None
        } else {
            Some(file.inbox.unwrap_or_else(|| PathBuf::from(DEFAULT_INBOX)))
        };
        let num = config::number_text;
        let tls_cert = self.tls_cert.or(file.tls_cert);
        let tls_key = self.tls_key.or(file.tls_key);
        let tls_client_ca = self.tls_client_ca.or(file.tls_client_ca);
        let allow_client_subject = if self.allow_client_subject.is_empty() {
            file.allow_client_subject.unwrap_or_default()
        } else {
            self.allow_client_subject
        };
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert,
                key,
                client_ca: tls_client_ca,
                allow_client_subject,
            }),
            (None, None) if tls_client_ca.is_some() || !allow_client_subject.is_empty() => {
                return Err(SettingError::Invalid(
                    "--tls-client-ca and --allow-client-subject need --tls-cert and --tls-key"
                        .to_owned(),
                ));
            }
            (None, None) => None,
            _ => {
                return Err(SettingError::Invalid(
                    "--tls-cert and --tls-key go together".to_owned(),
                ));
            }
        };
        let allow_peer = if self.allow_peer.is_empty() {
            file.allow_peer.unwrap_or_default()
        } else {
            self.allow_peer
        };
        let restart = restart_policy(
            self.max_restarts.or(config::file_value(
                path,
                "max-restarts",
                num(file.max_restarts),
                config::restart_count,
            )?),
            self.restart_window.or(config::file_value(
                path,
                "restart-window",
                file.restart_window,
                config::positive_duration,
            )?),
            self.restart_backoff.or(config::file_value(
                path,
                "restart-backoff",
                file.restart_backoff,
                config::any_duration,
            )?),
            self.restart_max_backoff.or(config::file_value(
                path,
                "restart-max-backoff",
                file.restart_max_backoff,
                config::any_duration,
            )?),
        )?;
        Ok(Settings {
            bind: self
                .bind
                .or(file.bind)
                .unwrap_or_else(|| DEFAULT_BIND.to_owned()),
            inbox,
            max_message_size: self.max_message_size.or(config::file_value(
                path,
                "max-message-size",
                num(file.max_message_size),
                config::byte_size,
            )?),
            idle_timeout: self.idle_timeout.or(config::file_value(
                path,
                "idle-timeout",
                file.idle_timeout,
                idle_timeout,
            )?),
            frame_timeout: self.frame_timeout.or(config::file_value(
                path,
                "frame-timeout",
                file.frame_timeout,
                config::positive_duration,
            )?),
            handler_timeout: self.handler_timeout.or(config::file_value(
                path,
                "handler-timeout",
                file.handler_timeout,
                config::positive_duration,
            )?),
            write_timeout: self.write_timeout.or(config::file_value(
                path,
                "write-timeout",
                file.write_timeout,
                config::positive_duration,
            )?),
            handler_failure: self.handler_failure.or(config::file_value(
                path,
                "handler-failure",
                file.handler_failure,
                config::handler_failure,
            )?),
            max_connections: self.max_connections.or(config::file_value(
                path,
                "max-connections",
                num(file.max_connections),
                config::positive_count,
            )?),
            max_in_flight: self.max_in_flight.or(config::file_value(
                path,
                "max-in-flight",
                num(file.max_in_flight),
                config::positive_count,
            )?),
            max_concurrent_handlers: self.max_concurrent_handlers.or(config::file_value(
                path,
                "max-concurrent-handlers",
                num(file.max_concurrent_handlers),
                config::positive_count,
            )?),
            framing: self.framing.or(file.framing),
            shutdown_grace: self.shutdown_grace.or(config::file_value(
                path,
                "shutdown-grace",
                file.shutdown_grace,
                config::any_duration,
            )?),
            restart,
            message_trace_ratio: self.message_trace_ratio.or(config::file_value(
                path,
                "message-trace-ratio",
                num(file.message_trace_ratio),
                config::ratio,
            )?),
            message_trace_limit: self.message_trace_limit.or(config::file_value(
                path,
                "message-trace-limit",
                num(file.message_trace_limit),
                trace_limit,
            )?),
            handshake_timeout: self.handshake_timeout.or(config::file_value(
                path,
                "handshake-timeout",
                file.handshake_timeout,
                config::positive_duration,
            )?),
            tls,
            allow_peer,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            #[cfg(feature = "otlp")]
            otlp_endpoint: self.otlp_endpoint.or(file.otlp_endpoint),
        })
    }
}

/// The acceptor's restart policy from its four settings, each unset one keeping the library
/// default's value; `None` when none is set. Checked here with the library's own rule, so a
/// combination the server would refuse is refused before anything is created on disk.
fn restart_policy(
    max_restarts: Option<u32>,
    window: Option<Duration>,
    backoff: Option<Duration>,
    max_backoff: Option<Duration>,
) -> Result<Option<RestartPolicy>, SettingError> {
    if max_restarts.is_none() && window.is_none() && backoff.is_none() && max_backoff.is_none() {
        return Ok(None);
    }
    let RestartPolicy::Backoff {
        max_restarts: default_restarts,
        window: default_window,
        backoff: default_backoff,
        max_backoff: default_max_backoff,
        ..
    } = RestartPolicy::default()
    else {
        unreachable!("the library's default restart policy restarts with backoff")
    };
    // Zero restarts is the library's "never restart"; the other settings are still checked.
    let policy = RestartPolicy::backoff(
        max_restarts.unwrap_or(default_restarts),
        window.unwrap_or(default_window),
        backoff.unwrap_or(default_backoff),
        max_backoff.unwrap_or(default_max_backoff),
    );
    match mllp_actors::ServerConfig::default()
        .restart(policy)
        .validate()
    {
        Ok(()) => Ok(Some(policy)),
        Err(e) => {
            // The values in force, defaults included: one of the two may not have been set.
            let values = if matches!(e, mllp_actors::ConfigError::BackoffRange) {
                let shown = |d: Duration| humantime::format_duration(d).to_string();
                format!(
                    " (--restart-backoff {}, --restart-max-backoff {})",
                    shown(backoff.unwrap_or(default_backoff)),
                    shown(max_backoff.unwrap_or(default_max_backoff)),
                )
            } else {
                String::new()
            };
            Err(SettingError::Invalid(format!(
                "invalid setting: {}{values}",
                flag_names(&e.into()),
            )))
        }
    }
}

/// Runs the server until SIGTERM/SIGINT.
pub(crate) async fn run(args: ServeArgs) -> ExitCode {
    let settings = match args.resolve() {
        Ok(s) => s,
        Err(e) => return exit::fail(exit::USAGE, &e),
    };
    // Before the server is built: it takes its metric instruments from the global meter
    // provider that `telemetry::init` installs.
    let telemetry = match telemetry::init(&settings) {
        Ok(t) => t,
        Err(text) => return exit::fail_text(exit::USAGE, &text),
    };
    let code = serve(settings).await;
    telemetry.shutdown().await;
    code
}

async fn serve(settings: Settings) -> ExitCode {
    // Registered before anything is printed: a signal that arrives right after `listening on`
    // must start a drain, not kill the process with the default disposition.
    let signal = match ShutdownSignal::register() {
        Ok(s) => s,
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };

    // Everything that can be refused as a usage error is checked before anything is created on
    // disk: a bad flag must not leave an inbox directory behind.
    // No --allow-peer means everyone; an empty allow-list would admit no one.
    let admission = if settings.allow_peer.is_empty() {
        Ok(Admission::any())
    } else {
        Admission::allow_list(&settings.allow_peer)
    };
    let admission = match admission {
        Ok(admission) => admission,
        Err(e) => {
            return exit::fail_text(
                exit::USAGE,
                &format!("invalid --allow-peer: {}", exit::chain(&e)),
            );
        }
    };
    let tls = match &settings.tls {
        None => None,
        Some(tls) => {
            let config = TlsConfig::new(&tls.cert, &tls.key);
            let config = match &tls.client_ca {
                Some(ca) => config.client_ca(ca),
                None => config,
            };
            match config
                .allow_client_subjects(tls.allow_client_subject.iter().cloned())
                .build()
            {
                Ok(transport) => Some(transport),
                Err(e) => return exit::fail(exit::USAGE, &e),
            }
        }
    };

    // An address that does not parse or whose host does not resolve is a usage error (exit 2);
    // the resolver's error kind does not tell that apart from a failure to bind, so resolve
    // here. Binding can still fail later (address in use): that is exit 1.
    if let Err(e) = tokio::net::lookup_host(settings.bind.as_str()).await {
        return exit::fail_text(
            exit::USAGE,
            &format!("invalid --bind {}: {e}", settings.bind),
        );
    }

    let inbox = match &settings.inbox {
        Some(dir) => match Inbox::open(dir) {
            Ok(inbox) => Some(inbox),
            Err(e) => return exit::fail(exit::FAILURE, &e),
        },
        None => None,
    };

    let mut builder = Server::builder().router(router(inbox.clone()));
    if let Some(v) = settings.max_message_size {
        builder = builder.max_message_size(v);
    }
    if let Some(IdleTimeout(v)) = settings.idle_timeout {
        builder = builder.idle_timeout(v);
    }
    if let Some(v) = settings.frame_timeout {
        builder = builder.frame_timeout(v);
    }
    if let Some(v) = settings.handler_timeout {
        builder = builder.handler_timeout(v);
    }
    if let Some(v) = settings.write_timeout {
        builder = builder.write_timeout(v);
    }
    if let Some(v) = settings.handler_failure {
        builder = builder.handler_failure(v.into());
    }
    if let Some(v) = settings.max_connections {
        builder = builder.max_connections(v);
    }
    if let Some(v) = settings.max_in_flight {
        builder = builder.max_in_flight(v);
    }
    if let Some(v) = settings.max_concurrent_handlers {
        builder = builder.max_concurrent_handlers(Some(v));
    }
    if let Some(v) = settings.framing {
        builder = builder.framing(v.into());
    }
    if let Some(v) = settings.shutdown_grace {
        builder = builder.shutdown_grace(v);
    }
    if let Some(v) = settings.restart {
        builder = builder.restart(v);
    }
    if let Some(v) = settings.handshake_timeout {
        builder = builder.handshake_timeout(v);
    }
    if let Some(v) = settings.message_trace_ratio {
        builder = builder.message_trace_ratio(v);
    }
    if let Some(TraceLimit(v)) = settings.message_trace_limit {
        builder = builder.message_trace_limit(v);
    }
    match tls {
        None => {
            serve_on(
                builder.transport(Admitted::new(PlainTcp, admission)),
                &settings,
                signal,
                inbox,
                None,
            )
            .await
        }
        Some(transport) => {
            let reloader = transport.reloader();
            serve_on(
                builder.transport(Admitted::new(transport, admission)),
                &settings,
                signal,
                inbox,
                Some(reloader),
            )
            .await
        }
    }
}

/// Binds and serves on one transport (plain TCP or TLS) until the signal.
async fn serve_on<T: Transport>(
    builder: mllp::ServerBuilder<T>,
    settings: &Settings,
    signal: ShutdownSignal,
    inbox: Option<Inbox>,
    reloader: Option<TlsReloader>,
) -> ExitCode {
    let server = match builder.bind(settings.bind.as_str()).await {
        Ok(server) => server,
        Err(mllp::Error::Config(e)) => {
            return exit::fail_text(exit::USAGE, &format!("invalid setting: {}", flag_names(&e)));
        }
        // An address that does not parse or resolve is a usage error; one in use is not.
        Err(e @ mllp::Error::Bind { .. })
            if std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidInput) =>
        {
            return exit::fail(exit::USAGE, &e);
        }
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    match &inbox {
        Some(inbox) => tracing::info!(inbox = %inbox.dir().display(), "storing messages"),
        None => tracing::warn!("--no-inbox: messages are acknowledged but not stored"),
    }
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut signal = signal;
    #[cfg(unix)]
    let hangup_task = signal
        .take_hangups()
        .map(|hangups| tokio::spawn(on_sighup(hangups, reloader)));
    #[cfg(not(unix))]
    let hangup_task: Option<tokio::task::JoinHandle<()>> = {
        let _ = reloader; // no SIGHUP here: certificates reload through the API only
        None
    };
    tracing::info!(address = %server.local_addr(), tls = settings.tls.is_some(), "listening");
    say!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();

    let result = server.serve_with_shutdown(signal.wait()).await;
    if let Some(task) = hangup_task {
        task.abort();
    }
    match result {
        Ok(report) => drain_report(&report),
        Err(e) => exit::fail(exit::FAILURE, &e),
    }
}

/// On every SIGHUP: re-reads the certificate files (new connections get the new certificate,
/// live ones keep theirs, and a failed reload keeps the old one and says why), or, without TLS,
/// logs that there is nothing to reload.
#[cfg(unix)]
async fn on_sighup(mut hangups: tokio::signal::unix::Signal, reloader: Option<TlsReloader>) {
    while hangups.recv().await.is_some() {
        let Some(reloader) = reloader.clone() else {
            tracing::info!("SIGHUP ignored: no TLS certificates to reload");
            continue;
        };
        match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(())) => tracing::info!("tls certificates reloaded"),
            Ok(Err(error)) => {
                tracing::error!(error = %exit::chain(&error), "tls reload failed; keeping the previous certificate");
            }
            Err(error) => tracing::error!(%error, "tls reload task failed"),
        }
    }
}

/// Prints the drain report; a drain that had to abort connections is not clean.
fn drain_report(report: &ShutdownReport) -> ExitCode {
    say!(
        "shutdown complete: {} connection(s) drained, {} aborted",
        report.drained,
        report.aborted
    );
    let _ = std::io::stdout().flush();
    tracing::info!(
        drained = report.drained,
        aborted = report.aborted,
        "shutdown complete"
    );
    if report.aborted == 0 {
        ExitCode::SUCCESS
    } else {
        complain!(
            "error: {} connection(s) were still busy at the end of the shutdown grace and were \
             aborted (their messages were not acknowledged)",
            report.aborted
        );
        ExitCode::from(exit::FAILURE)
    }
}

/// One route for every message type: store (unless `--no-inbox`), then accept.
///
/// The handler only sees messages that parsed and carry MSH-9 and MSH-10; everything else was
/// already answered AR by the library and is never stored.
fn router(inbox: Option<Inbox>) -> Router {
    Router::new().route("*", move |req: Request| {
        let inbox = inbox.clone();
        async move {
            let msg = req.message();
            // MSH fields only, under the telemetry contract's keys: MSH-9.1, MSH-9.2, MSH-10.
            let control_id = msg.control_id().unwrap_or_default();
            let message_type = msg.message_code().unwrap_or_default();
            let trigger_event = msg.trigger_event().unwrap_or_default();
            let Some(inbox) = inbox else {
                tracing::debug!(
                    hl7.message_type = message_type,
                    hl7.trigger_event = trigger_event,
                    hl7.control_id = control_id,
                    "message accepted (not stored)"
                );
                return Ok(());
            };
            // Awaited before returning: the AA is only built once the file and its directory
            // entry are on disk. If the handler times out, the store may still finish, but no
            // AA is sent, and the sender's resend is kept too (at-least-once).
            match inbox
                .store_bytes(msg.as_bytes().clone(), Some(control_id.as_bytes()))
                .await
            {
                Ok(path) => {
                    tracing::debug!(
                        hl7.message_type = message_type,
                        hl7.trigger_event = trigger_event,
                        hl7.control_id = control_id,
                        file = %path.file_name().unwrap_or_default().to_string_lossy(),
                        "message stored"
                    );
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(
                        hl7.message_type = message_type,
                        hl7.trigger_event = trigger_event,
                        hl7.control_id = control_id,
                        error = %exit::chain(&e),
                        "message could not be stored; answering AE"
                    );
                    Err(HandlerError::internal("message could not be stored"))
                }
            }
        }
    })
}

/// Rewrites the library's setting names (`max_connections`) as the flags (`--max-connections`).
fn flag_names(error: &mllp::ConfigError) -> String {
    let mut text = exit::chain(error);
    // The restart policy's settings first: their names contain the generic ones' words.
    for (setting, flag) in [
        (
            "restart max_backoff must not be less than backoff",
            "--restart-max-backoff must not be less than --restart-backoff",
        ),
        ("restart.window", "--restart-window"),
    ] {
        text = text.replace(setting, flag);
    }
    for setting in [
        "max_message_size",
        "idle_timeout",
        "frame_timeout",
        "handler_timeout",
        "write_timeout",
        "max_connections",
        "max_in_flight",
        "max_concurrent_handlers",
        "shutdown_grace",
        "message_trace_ratio",
    ] {
        text = text.replace(setting, &format!("--{}", setting.replace('_', "-")));
    }
    text
}

/// SIGTERM or SIGINT, registered at once so that none is missed between start-up and serving;
/// and SIGHUP, so that one never kills the server (its default action): it reloads the TLS
/// certificates, or is logged and ignored without TLS.
struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: Some(signal(SignalKind::hangup())?),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The SIGHUP stream, for the TLS reloader or to be ignored; taken once.
    #[cfg(unix)]
    fn take_hangups(&mut self) -> Option<tokio::signal::unix::Signal> {
        self.hup.take()
    }

    /// Completes on the first signal. A second one exits at once, without waiting for the
    /// drain: nothing acknowledged is lost by that (every AA'd message is already on disk), but
    /// messages in flight go unanswered and their senders will resend them.
    async fn wait(self) {
        #[cfg(unix)]
        {
            let Self {
                mut term, mut int, ..
            } = self;
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down: draining connections");
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                complain!("error: second signal received; exiting without waiting for the drain");
                std::process::exit(i32::from(exit::FAILURE));
            });
        }
        #[cfg(not(unix))]
        {
            let _ = self;
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!(signal = "ctrl-c", "shutting down: draining connections");
        }
    }
}

/// Logs, and with the `otlp` feature trace and metric export, for `serve`.
mod telemetry {
    use super::Settings;
    use crate::logging;

    /// What was installed; [`Telemetry::shutdown`] flushes the exporters.
    pub(super) struct Telemetry {
        #[cfg(feature = "otlp")]
        guard: mllp::otel::OtelGuard,
    }

    /// Installs the global subscriber (and exporters when `--otlp-endpoint` or the
    /// `OTEL_EXPORTER_OTLP_*` variables ask for them).
    #[cfg(feature = "otlp")]
    ///
    /// # Errors
    /// The reason, naming the flag or variable at fault.
    pub(super) fn init(settings: &Settings) -> Result<Telemetry, String> {
        use mllp::otel::{Export, LogFormat, OtelError, OtelOptions};

        let mut options = OtelOptions::default()
            .filter(logging::SERVE_FILTER)
            .log_format(match settings.log_format {
                crate::config::LogFormat::Text => LogFormat::Text,
                crate::config::LogFormat::Json => LogFormat::Json,
            });
        if let Some(endpoint) = &settings.otlp_endpoint {
            options = options.endpoint(endpoint.clone());
        }
        let guard = mllp::otel::init(options).map_err(|e| {
            let text = crate::exit::chain(&e);
            match e {
                OtelError::Endpoint { .. } | OtelError::Exporter { .. } => {
                    format!("invalid --otlp-endpoint (or OTEL_EXPORTER_OTLP_* variable): {text}")
                }
                OtelError::Filter { .. } => format!("invalid RUST_LOG: {text}"),
                _ => format!("cannot set up logging and telemetry: {text}"),
            }
        })?;
        match guard.export() {
            Export::Otlp { endpoint } => tracing::info!(
                endpoint = endpoint
                    .as_deref()
                    .unwrap_or("from OTEL_EXPORTER_OTLP_* variables"),
                "exporting traces and metrics over OTLP/HTTP"
            ),
            Export::Stdout => tracing::info!("exporting traces and metrics to stdout"),
            _ => {}
        }
        Ok(Telemetry { guard })
    }

    /// Installs the global subscriber.
    #[cfg(not(feature = "otlp"))]
    pub(super) fn init(settings: &Settings) -> Result<Telemetry, String> {
        logging::init(settings.log_format, logging::SERVE_FILTER)?;
        Ok(Telemetry {})
    }

    impl Telemetry {
        /// Exports what is still buffered (the spans of the last messages) and stops the
        /// exporters. A failed export is reported, not fatal: the messages themselves are safe.
        pub(super) async fn shutdown(self) {
            #[cfg(feature = "otlp")]
            {
                let guard = self.guard;
                // Blocks until the exporters finish (bounded by their timeouts).
                match tokio::task::spawn_blocking(move || guard.shutdown()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(
                        error = %crate::exit::chain(&e),
                        "telemetry export did not finish"
                    ),
                    Err(e) => tracing::warn!(error = %e, "telemetry shutdown task failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    /// No restart setting leaves the library's policy alone; each one set replaces only its
    /// own part of the default (3 within 5 s, 100 ms doubling to 5 s).
    #[test]
    fn restart_settings_change_only_their_part_of_the_default() {
        assert_eq!(restart_policy(None, None, None, None).unwrap(), None);
        assert_eq!(
            restart_policy(Some(0), None, Some(250 * MS), None).unwrap(),
            Some(RestartPolicy::backoff(0, 5 * S, 250 * MS, 5 * S))
        );
        assert_eq!(
            restart_policy(None, Some(S), None, Some(S)).unwrap(),
            Some(RestartPolicy::backoff(3, S, 100 * MS, S))
        );
    }

    /// Combinations the library refuses are refused naming the flags, never a library name.
    #[test]
    fn bad_restart_combinations_name_the_flags() {
        let err = restart_policy(None, None, Some(2 * S), Some(S))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--restart-max-backoff must not be less than --restart-backoff"),
            "{err}"
        );
        let err = restart_policy(None, Some(Duration::ZERO), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--restart-window must be greater than zero"),
            "{err}"
        );
        assert!(!err.contains('_'), "{err}");
    }
}

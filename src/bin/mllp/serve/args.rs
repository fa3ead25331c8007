//! The flags of `mllp serve` (clap), and the value types only `serve` parses.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, Framing, HandlerFailure, LogFormat};

/// An idle timeout: a duration, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IdleTimeout(pub(super) Option<Duration>);

/// Parses `--idle-timeout` and the `idle-timeout` key.
pub(super) fn idle_timeout(s: &str) -> Result<IdleTimeout, String> {
    config::optional_duration(s).map(IdleTimeout)
}

/// A duration, or none (`--dedup-window`, `--retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MaybeDuration(pub(super) Option<Duration>);

/// Parses a duration or `none`.
pub(super) fn maybe_duration(s: &str) -> Result<MaybeDuration, String> {
    config::optional_duration(s).map(MaybeDuration)
}

/// A number of bytes, or none (`--max-buffered-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MaybeBytes(pub(super) Option<usize>);

/// Parses a size in bytes (units as `--max-message-size`) or `none`.
pub(super) fn maybe_bytes(s: &str) -> Result<MaybeBytes, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(MaybeBytes(None));
    }
    let bytes = config::byte_size(s)?;
    if bytes == 0 {
        return Err("must be greater than zero (none: no limit)".to_owned());
    }
    Ok(MaybeBytes(Some(bytes)))
}

/// A count, or none (`--max-connections-per-peer`, `--accept-rate-per-peer`,
/// `--connection-log-rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MaybeCount(pub(super) Option<usize>);

/// Parses a positive whole number or `none`.
pub(super) fn maybe_count(s: &str) -> Result<MaybeCount, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(MaybeCount(None));
    }
    config::positive_count(s)
        .map(|n| MaybeCount(Some(n)))
        .map_err(|e| format!("{e} (or none)"))
}

/// A cap on message spans per second, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TraceLimit(pub(super) Option<u32>);

/// Parses `--message-trace-limit` and the `message-trace-limit` key.
pub(super) fn trace_limit(s: &str) -> Result<TraceLimit, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(TraceLimit(None));
    }
    s.parse()
        .map(|n| TraceLimit(Some(n)))
        .map_err(|_| "expected a whole number of spans per second, or none".to_owned())
}

/// Parses `--admin` and the `admin` key: an IP address and a port (the loopback rule needs the
/// address itself, not a name to resolve).
pub(super) fn admin_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected IP:PORT, such as 127.0.0.1:9575".to_owned())
}

/// Receive HL7 v2 messages over MLLP and acknowledge them.
///
/// Every accepted message is stored durably BEFORE it is acknowledged AA, so an AA means the
/// message survives a crash. The default store is one SQLite file (`sqlite:mllp-inbox.db`,
/// WAL, synchronous=FULL, many messages per commit under load) that also recognises resends:
/// the same message from the same sender within --dedup-window is acknowledged again and not
/// stored twice. `--store dir:DIR` (or `--inbox DIR`) keeps one file per message instead. A
/// message that cannot be stored is answered AE. Messages that are not HL7, or lack MSH-9 or
/// MSH-10, are answered AR and never stored. `mllp inbox` lists, shows, exports and replays
/// what was stored.
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
    pub(super) bind: Option<String>,

    /// Where accepted messages are stored: sqlite:PATH (one SQLite file, created if missing),
    /// dir:PATH (one file per message), nats://HOST:PORT[,HOST:PORT…]/STREAM (a NATS
    /// JetStream stream, for several receivers behind a balancer), or none
    /// [default: sqlite:mllp-inbox.db]
    #[arg(long, value_name = "STORE", conflicts_with_all = ["inbox", "no_store"])]
    pub(super) store: Option<mllp::store::StoreSpec>,

    /// Same as --store dir:DIR (one file per accepted message, directory created if missing)
    #[arg(long, value_name = "DIR", conflicts_with = "no_store")]
    pub(super) inbox: Option<PathBuf>,

    /// Do not store messages: only log and acknowledge them (same as --store none)
    #[arg(long, alias = "no-inbox")]
    pub(super) no_store: bool,

    #[command(flatten)]
    pub(super) store_options: StoreFlags,

    #[command(flatten)]
    pub(super) partner: super::partner::PartnerFlags,

    #[command(flatten)]
    pub(super) forward: super::forward::ForwardFlags,

    /// TOML file holding any of these settings (keys as the flag names, e.g.
    /// `max-connections = 64`); unknown keys are rejected; flags win over the file
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,

    /// Largest message accepted, in bytes (units: KiB, MiB, GiB, KB, MB, GB); a larger frame
    /// closes the connection [default: 10MiB]
    #[arg(long, value_name = "BYTES", value_parser = config::byte_size)]
    pub(super) max_message_size: Option<usize>,

    /// Close a connection that sent nothing for this long (`none`: never) [default: 60s]
    #[arg(long, value_name = "DUR|none", value_parser = idle_timeout)]
    pub(super) idle_timeout: Option<IdleTimeout>,

    /// Close a connection whose frame is not finished this long after its start block
    /// (slow-sender guard) [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    pub(super) frame_timeout: Option<Duration>,

    /// Give up on storing a message that takes longer than this, and answer per
    /// --handler-failure (AE by default) [default: 60s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    pub(super) handler_timeout: Option<Duration>,

    /// When storing a message panics or passes --handler-timeout: `respond` answers AE
    /// (ERR-3 = 207) so the sender resends, `no-response` sends nothing for that message,
    /// `close` sends nothing and closes the connection [default: respond]
    #[arg(long, value_name = "POLICY", value_enum)]
    pub(super) handler_failure: Option<HandlerFailure>,

    /// Close a connection whose ACK cannot be written within this time [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    pub(super) write_timeout: Option<Duration>,

    /// Close a connection whose TLS handshake is not done within this time [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    pub(super) handshake_timeout: Option<Duration>,

    /// PEM certificate chain (leaf first); with --tls-key, serve MLLP over TLS 1.3/1.2.
    /// SIGHUP re-reads the certificate files [default: none: plain TCP]
    #[arg(long, value_name = "PEM")]
    pub(super) tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert (PKCS#8, PKCS#1 or SEC1; unencrypted)
    #[arg(long, value_name = "PEM")]
    pub(super) tls_key: Option<PathBuf>,

    /// Require client certificates issued by the CAs in this PEM bundle (mutual TLS)
    #[arg(long, value_name = "PEM")]
    pub(super) tls_client_ca: Option<PathBuf>,

    /// Admit only clients whose certificate CN or SAN DNS name is NAME (repeatable; needs
    /// --tls-client-ca) [default: any verified client]
    #[arg(long, value_name = "NAME")]
    pub(super) allow_client_subject: Vec<String>,

    /// Admit only peers from this address or CIDR range, e.g. 10.20.0.0/16 (repeatable; plain
    /// TCP and TLS alike; refused peers are closed at once) [default: every address]
    #[arg(long, value_name = "CIDR")]
    pub(super) allow_peer: Vec<String>,

    /// Connections served at once; more wait in the kernel's backlog [default: 1024]
    #[arg(long, value_name = "N", value_parser = config::positive_count)]
    pub(super) max_connections: Option<usize>,

    /// Messages read ahead on one connection while earlier ones are handled (pipelining
    /// senders); ACKs stay in order [default: 1]
    #[arg(long, value_name = "N", value_parser = config::positive_count)]
    pub(super) max_in_flight: Option<usize>,

    /// Handlers (store writes) running at once across all connections; a store write that
    /// outlives --handler-timeout keeps its place until it finishes [default: unlimited]
    #[arg(long, value_name = "N", value_parser = config::positive_count)]
    pub(super) max_concurrent_handlers: Option<usize>,

    /// Bytes held for messages at once across all connections (read buffers, messages in
    /// flight, their parse indexes); at the limit connections stop reading until memory is
    /// freed; at least twice --max-message-size plus 64KiB; `none`: no limit (units as
    /// --max-message-size) [default: a quarter of the memory, at least 64MiB]
    #[arg(long, value_name = "BYTES|none", value_parser = maybe_bytes)]
    pub(super) max_buffered_bytes: Option<MaybeBytes>,

    /// Connections one peer may hold at once, counted by IP address (and by client certificate
    /// identity under mutual TLS); past it new connections are closed at once and the refusal
    /// logged; `none`: no limit (behind a load balancer or NAT every peer has one address)
    /// [default: none]
    #[arg(long, value_name = "N|none", value_parser = maybe_count)]
    pub(super) max_connections_per_peer: Option<MaybeCount>,

    /// New connections one IP address may open per second; past it they are closed at once and
    /// the refusal logged; `none`: no limit [default: none]
    #[arg(long, value_name = "N|none", value_parser = maybe_count)]
    pub(super) accept_rate_per_peer: Option<MaybeCount>,

    /// Connection log lines (opened, closed) per second; past it they are summed up in one line
    /// per second; `none`: log every connection [default: 20]
    #[arg(long, value_name = "N|none", value_parser = maybe_count)]
    pub(super) connection_log_rate: Option<MaybeCount>,

    /// Bytes outside a frame: `strict` closes the connection, `skip` discards them up to the
    /// next start block [default: strict]
    #[arg(long, value_name = "POLICY", value_enum)]
    pub(super) framing: Option<Framing>,

    /// On SIGTERM/SIGINT, how long busy connections may finish before they are aborted
    /// [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = config::any_duration)]
    pub(super) shutdown_grace: Option<Duration>,

    /// Restarts of a failed listener allowed within --restart-window; one more failure stops
    /// the server (exit status 1). `0`: never restart [default: 3]
    #[arg(long, value_name = "N", value_parser = config::restart_count, allow_negative_numbers = true)]
    pub(super) max_restarts: Option<u32>,

    /// The sliding window over which listener restarts are counted [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    pub(super) restart_window: Option<Duration>,

    /// Delay before the first listener restart, doubled after each one [default: 100ms]
    #[arg(long, value_name = "DUR", value_parser = config::any_duration)]
    pub(super) restart_backoff: Option<Duration>,

    /// Upper bound of the doubling restart delay; not less than --restart-backoff
    /// [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = config::any_duration)]
    pub(super) restart_max_backoff: Option<Duration>,

    /// The fraction of messages traced with an `mllp.message` span, `0` to `1` or `0%` to
    /// `100%`; messages left out cost no span (metrics and logs still count every message)
    /// [default: 1]
    #[arg(long, value_name = "RATIO", value_parser = config::ratio)]
    pub(super) message_trace_ratio: Option<f64>,

    /// At most N `mllp.message` spans per second (of the messages --message-trace-ratio kept),
    /// so a burst cannot make tracing expensive; `none` for no limit [default: 1000]
    #[arg(long, value_name = "N|none", value_parser = trace_limit)]
    pub(super) message_trace_limit: Option<TraceLimit>,

    /// Serve the admin HTTP endpoint on this address: /healthz, /readyz (for probes), /metrics
    /// (Prometheus), /status and /connections (JSON), read by `mllp top`. Port 0 picks a free
    /// port (the `admin on` line shows it). A non-loopback address needs --admin-token or
    /// --admin-public [default: off]
    #[arg(long, value_name = "ADDR", value_parser = admin_addr)]
    pub(super) admin: Option<std::net::SocketAddr>,

    /// Require `Authorization: Bearer TOKEN` on /metrics, /status and /connections (the probes
    /// stay open) [default: none]
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    pub(super) admin_token: Option<String>,

    /// Read the admin token from this file (its first line; keeps it out of `ps`)
    #[arg(long, value_name = "FILE")]
    pub(super) admin_token_file: Option<PathBuf>,

    /// Allow a non-loopback --admin address without a token (the network protects it)
    #[arg(long)]
    pub(super) admin_public: bool,

    /// One log line per message at info: MSH-9, MSH-10, ACK code, latency, inbox file
    /// (`--log-messages=false` to turn off) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) log_messages: Option<bool>,

    /// One log line per reject at warn: not HL7, missing MSH-9/MSH-10, framing error,
    /// oversize, with the reason, the connection and the offending byte offset, never the
    /// payload (`--log-rejects=false` to turn off) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) log_rejects: Option<bool>,

    /// Log line format on stderr; the `RUST_LOG` variable filters (default filter:
    /// `info,ractor=warn`) [default: text]
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub(super) log_format: Option<LogFormat>,

    /// Export traces and metrics over OTLP/HTTP (protobuf) to this base URL, e.g.
    /// `http://localhost:4318` (`/v1/traces`, `/v1/metrics` are appended; http:// only). The
    /// standard `OTEL_EXPORTER_OTLP_*` and `OTEL_SERVICE_NAME` variables apply too
    /// [default: none: logs only]
    #[cfg(feature = "otlp")]
    #[arg(long, value_name = "URL")]
    pub(super) otlp_endpoint: Option<String>,

    // Last: a flattened group's heading applies to every argument after it.
    #[cfg(feature = "nats")]
    #[command(
        flatten,
        next_help_heading = "NATS JetStream store (--store nats://HOST:PORT/STREAM)"
    )]
    pub(super) jetstream: crate::nats::JetStreamFlags,
}

const SERVE_EXAMPLES: &str = "\
Examples:
  mllp serve                                  # 127.0.0.1:2575, store ./mllp-inbox.db
  mllp serve --bind 0.0.0.0:2575 --store sqlite:/var/lib/mllp/inbox.db --retention 30d
  mllp serve --store dir:/var/lib/mllp/inbox --idle-timeout none
  mllp serve --bind 127.0.0.1:0 --no-store    # any free port, acknowledge only
  mllp serve --log-format json                # per-message lines as JSON (MSH fields only)
  mllp serve --admin 127.0.0.1:9575           # probes, Prometheus and `mllp top`
  mllp serve --log-format json --log-messages=false  # rejects only

Signals: SIGTERM or SIGINT drains (see --shutdown-grace); a second one exits at once.
Exit status: 0 after a clean drain, 1 when the server failed, connections had to be aborted
at the end of --shutdown-grace, the store did not close within 5 s (a stuck commit), or a second
signal cut the drain short; 2 for invalid flags or configuration.";

/// The SQLite store's settings (ignored by dir: stores, which keep every resend).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreFlags {
    /// How far back a resend (same MSH-3, MSH-4, MSH-10 and content, MSH-7 aside) is
    /// acknowledged without being stored again; none turns duplicate detection off
    /// [default: 24h]
    #[arg(long, value_name = "DUR", value_parser = maybe_duration)]
    pub(super) dedup_window: Option<MaybeDuration>,

    /// Delete messages older than this in the background; none keeps everything
    /// [default: none]
    #[arg(long, value_name = "DUR", value_parser = maybe_duration)]
    pub(super) retention: Option<MaybeDuration>,

    /// Refuse new messages (AE) once the store file reaches this size, until retention or
    /// `mllp inbox prune` frees room (units as --max-message-size) [default: no limit]
    #[arg(long, value_name = "BYTES", value_parser = config::byte_size)]
    pub(super) store_max_size: Option<usize>,

    /// How long a commit waits for a lock another process holds (a prune, a backup) before the
    /// messages are answered AE [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    pub(super) store_busy_timeout: Option<Duration>,

    /// Most messages in one commit [default: 1024]
    #[arg(long, value_name = "N", value_parser = config::positive_count)]
    pub(super) store_max_batch: Option<usize>,
}

#[cfg(all(test, feature = "nats"))]
mod tests {
    use clap::CommandFactory;

    /// The NATS heading holds the NATS flags only: the general options (`--config`,
    /// `--max-message-size`, ...) are not listed under it.
    #[test]
    fn only_nats_flags_are_under_the_nats_heading() {
        let mut cli = crate::Cli::command();
        let help = cli
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        let (before, nats) = help
            .split_once("NATS JetStream store")
            .expect("a NATS heading");
        // Up to the examples and notes after the options.
        let nats = nats.split_once("\nExamples:").map_or(nats, |(n, _)| n);
        for general in [
            "--config",
            "--max-message-size",
            "--idle-timeout",
            "--otlp-endpoint",
        ] {
            assert!(
                before.contains(general),
                "{general} not before the NATS heading"
            );
            assert!(!nats.contains(general), "{general} under the NATS heading");
        }
        assert!(nats.contains("--nats-ack-timeout"), "{nats}");
    }
}

//! `mllp relay`: send a store's messages downstream in order, marking each done only after the
//! downstream's AA/CA; dead-letter what it refuses; follow new messages until SIGTERM.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mllp::relay::{Relay, RelayConfig, RelayError};
use mllp::store::StoreSpec;
use mllp::tls::TlsClientConfig;
use mllp::{Backoff, ClientConfig};

use crate::config::{self, LogFormat};
use crate::{exit, logging};

/// Send the messages of a store to a receiver, in order, and keep sending new ones.
///
/// Reads an SQLite store (`sqlite:PATH`, beside the `mllp serve` that writes it; the relay's
/// position is a row named --name in the same file) or a JetStream stream
/// (`nats://HOST:PORT/STREAM`, through a durable consumer named --name). Each message is sent
/// with its MSH-10 unchanged and marked done only after the receiver's AA or CA, so a restart
/// resumes where the last run stopped.
///
/// An AR/CR goes to the dead letters at once (SQLite: the `dead_letters` table; JetStream: the
/// subject mllp.dead.NAME) with the ACK code and ERR-3 as the reason. An AE/CE, or a try
/// without a valid ACK, is retried after --retry-backoff, and dead-lettered after
/// --max-attempts tries. A receiver that refuses connections is waited for without end.
///
/// One line per message on stdout (`--json`: one JSON object per event), and a progress line
/// every --progress-interval while there is work. Runs until SIGTERM or SIGINT (the message in
/// flight is finished and marked first), or, with --no-follow, until caught up.
#[derive(Debug, clap::Args)]
#[command(after_long_help = RELAY_HELP)]
pub(crate) struct RelayArgs {
    /// The store to read: sqlite:PATH or nats://HOST:PORT[,HOST:PORT…]/STREAM
    #[arg(long, value_name = "STORE")]
    from: StoreSpec,

    /// The receiver, HOST:PORT
    #[arg(long, value_name = "HOST:PORT", value_parser = crate::send::host_port)]
    to: String,

    /// The relay's name: its position in the store (SQLite row, JetStream durable consumer);
    /// give each destination its own
    #[arg(long, value_name = "NAME", default_value = "relay")]
    name: String,

    /// How long to wait for each acknowledgment; on expiry the try fails and the connection is
    /// closed
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = config::positive_duration)]
    timeout: Duration,

    /// How long to wait for the TCP connection (and TLS handshake)
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = config::positive_duration)]
    connect_timeout: Duration,

    /// Tries per message (AE/CE answers, tries without a valid ACK) before it is
    /// dead-lettered; AR/CR is dead-lettered at once
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,

    /// Wait before the second try, doubled for each later one
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = config::any_duration)]
    retry_backoff: Duration,

    /// Longest wait between tries of a message; reconnects to a receiver that is down wait at
    /// most 10 s, or this if it is lower
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = config::positive_duration)]
    retry_max_backoff: Duration,

    /// Stop once every stored message is sent, instead of following new ones
    #[arg(long)]
    no_follow: bool,

    /// How often an SQLite store is checked for new messages once caught up
    #[arg(long, value_name = "DUR", default_value = "200ms", value_parser = config::positive_duration)]
    poll_interval: Duration,

    /// A progress line this often while messages are sent (0s: never)
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = config::any_duration)]
    progress_interval: Duration,

    /// One JSON object per line on stdout instead of text
    #[arg(long)]
    json: bool,

    /// Print only dead letters, retries and progress, not each delivered message
    #[arg(long, short)]
    quiet: bool,

    /// Speak TLS to the receiver, trusting only the CAs in this PEM bundle
    /// [default: none: plain TCP]
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,

    /// PEM client certificate chain for mutual TLS (with --tls-key; needs --tls-ca)
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// The name the receiver's certificate must carry [default: the host part of --to]
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,

    /// JetStream: relay the subjects PREFIX.> (the store's --nats-subject-prefix)
    #[arg(long, value_name = "PREFIX", default_value = "hl7")]
    subject_prefix: String,

    /// JetStream: publish dead letters here; a stream must capture it
    /// [default: mllp.dead.NAME]
    #[arg(long, value_name = "SUBJECT")]
    dead_letter_subject: Option<String>,

    /// JetStream: create a stream (STREAM_DEAD_NAME) for the dead letters when none captures
    /// the subject [default: one must exist]
    #[arg(long)]
    create_stream: bool,

    /// JetStream: how long the server waits for the relay's ack before handing the message
    /// out again (the relay extends it while retrying; after a crash, the message comes back
    /// after this long)
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = config::positive_duration)]
    ack_wait: Duration,

    #[cfg(feature = "nats")]
    #[command(flatten)]
    nats: crate::nats::NatsFlags,

    /// Log line format on stderr (`RUST_LOG` filters; default filter: warn)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

const RELAY_HELP: &str = "\
Delivery: at least once. A message is marked done only after its AA/CA, so nothing is lost; a
crash between the receiver's ACK and the mark sends that one message again on restart, with the
same MSH-10 (a receiver that deduplicates, like mllp serve, acknowledges it without a copy).
A stop by SIGTERM/SIGINT finishes and marks the message in flight first.
Exit status:
  0  stopped by SIGTERM/SIGINT, or caught up with --no-follow
  1  the relay failed
  2  invalid flags, or a source that cannot be opened (missing store, unreachable NATS, no
     dead-letter stream)
Examples:
  mllp relay --from sqlite:mllp-inbox.db --to lis.example:2575 --name lis
  mllp relay --from nats://10.0.0.1:4222,10.0.0.2:4222/HL7 --to 10.0.0.9:2575 --json
  mllp relay --from sqlite:inbox.db --to 127.0.0.1:6661 --no-follow --quiet";

/// Opens the source, then relays until a signal (or caught up, with --no-follow).
pub(crate) async fn run(args: RelayArgs) -> ExitCode {
    if let Err(text) = logging::init(args.log_format, logging::CLIENT_FILTER) {
        return exit::fail_text(exit::USAGE, &text);
    }
    if args.retry_backoff > args.retry_max_backoff {
        return exit::fail_text(
            exit::USAGE,
            &format!(
                "--retry-backoff {:?} is longer than --retry-max-backoff {:?}",
                args.retry_backoff, args.retry_max_backoff
            ),
        );
    }
    let config = match config_of(&args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let signal = match Signal::register() {
        Ok(signal) => signal,
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    let relay = match Relay::open(&args.from, args.to.clone(), config).await {
        Ok(relay) => relay,
        Err(e @ RelayError::Panicked) => return exit::fail(exit::FAILURE, &e),
        Err(e) => return exit::fail(exit::USAGE, &e),
    };
    let out = output::Output::new(
        args.json,
        args.quiet,
        !args.no_follow,
        &relay.source(),
        &args.to,
    );
    let relay = relay.on_event({
        let out = out.clone();
        move |event| out.event(event)
    });
    let progress = out.spawn_progress(args.progress_interval);
    let stats = relay.run_until(signal.wait()).await;
    if let Some(task) = progress {
        task.abort();
    }
    out.summary(&stats);
    ExitCode::SUCCESS
}

/// The library's settings from the flags; a bad TLS file is a usage error.
fn config_of(args: &RelayArgs) -> Result<RelayConfig, ExitCode> {
    let client = ClientConfig::default()
        .reply_timeout(args.timeout)
        .connect_timeout(args.connect_timeout)
        .reconnect(Backoff::new(
            Duration::from_millis(100).min(args.retry_max_backoff),
            args.retry_max_backoff.min(Duration::from_secs(10)),
        ));
    let tls = args.tls_ca.as_ref().map(|ca| {
        let mut tls = TlsClientConfig::new(ca);
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            tls = tls.client_cert(cert, key);
        }
        if let Some(name) = &args.tls_server_name {
            tls = tls.server_name(name);
        }
        tls
    });
    let config = RelayConfig::default()
        .name(args.name.clone())
        .client(client)
        .tls(tls)
        .max_attempts(args.max_attempts)
        .retry_backoff(Backoff::new(args.retry_backoff, args.retry_max_backoff))
        .follow(!args.no_follow)
        .poll_interval(args.poll_interval)
        .subject_prefix(args.subject_prefix.clone())
        .dead_letter_subject(args.dead_letter_subject.clone())
        .create_dead_letter_stream(args.create_stream)
        .ack_wait(args.ack_wait);
    #[cfg(feature = "nats")]
    let config = config.nats(args.nats.options("mllp relay"));
    Ok(config)
}

/// SIGTERM or SIGINT, registered before the relay starts so none is missed.
struct Signal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signal {
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Completes on the first signal; a second one exits at once (the message in flight is
    /// then left unmarked and sent again by the next run).
    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
            complain!("stopping: finishing the message in flight (a second signal exits at once)");
            tokio::spawn(async move {
                tokio::select! {
                    _ = self.term.recv() => {}
                    _ = self.int.recv() => {}
                }
                crate::logging::flush();
                std::process::exit(i32::from(exit::FAILURE));
            });
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

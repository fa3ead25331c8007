//! `mllp send`: send the messages in files and directories, one at a time, checking each ACK.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use mllp::ack::AckCode;
use mllp::tls::TlsClientConfig;
use mllp::{Acknowledgment, Client, ClientConfig, ClientError};

use crate::config::{self, LogFormat};
use crate::messages::{self, FileMessage};
use crate::{exit, logging};

/// Show a progress bar (on a terminal) from this many messages on.
const PROGRESS_THRESHOLD: usize = 20;

/// Send HL7 v2 messages over MLLP and check every acknowledgment.
///
/// Each FILE (`-`: standard input) may hold several messages: a message starts at every line
/// beginning with `MSH`;
/// segments may end in CR, LF or CRLF (sent as CR; in a message whose segments end in a bare CR,
/// a bare LF is data and kept); MLLP framing bytes and a UTF-8 byte order
/// mark in the file are ignored, as are blank lines and batch envelope segments (FHS, BHS, BTS,
/// FTS); a file ending right after a segment, without CR or LF, is sent without a final CR. A
/// DIR is read in file-name order, not recursively (its subdirectories are named on stderr,
/// not sent), skipping hidden files. Every message is checked before anything is sent: it
/// must parse as HL7 and carry MSH-10.
///
/// Messages go one at a time over one connection, each waiting for its ACK, whose MSA-2 must
/// be the MSH-10 sent (a negative ACK with an empty MSA-2 counts as this message's). One line
/// per message on stdout: file#n, control id, ACK code, and the ERR text if any (`FAILED` and
/// the reason without a valid ACK, `NOT SENT` for those left after a stop), and one `RETRY`
/// line before each retry; then a summary, with the number of attempts when there were retries.
#[derive(Debug, clap::Args)]
#[command(after_long_help = SEND_HELP)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    /// Stop at the first message not answered AA or CA (the rest count as not sent)
    #[arg(long)]
    pub(crate) stop_on_error: bool,

    /// Print only the messages not answered AA or CA, and the summary
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Send each file as one batch frame: a batch file (FHS/BHS … BTS/FTS) as it is, a file of
    /// plain messages wrapped in BHS … BTS; each message's outcome is read from the batch
    /// acknowledgment
    #[arg(long)]
    batch: bool,

    /// Log line format on stderr (`RUST_LOG` filters; default filter: warn)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Files and directories holding the messages, sent in the order given (`-`: standard
    /// input)
    #[arg(required = true, value_name = "FILE|DIR")]
    pub(crate) paths: Vec<PathBuf>,
}

/// Where and how to send: the receiver, timeouts, retries, TLS (shared by `send` and
/// `inbox replay`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnectArgs {
    /// The receiver, HOST:PORT
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    pub(crate) to: String,

    /// How long to wait for each acknowledgment; on expiry the connection is closed
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = config::positive_duration)]
    timeout: Duration,

    /// How long to wait for the TCP connection and, with TLS, the handshake
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = config::positive_duration)]
    connect_timeout: Duration,

    /// Times a message is sent again after a timeout, a lost connection or a failed connect
    /// (the receiver may then get it twice, with the same MSH-10); negative ACKs and refused
    /// TLS certificates are never retried
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) retries: u32,

    /// Speak TLS, trusting only the CAs in this PEM bundle to vouch for the receiver
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
}

const SEND_HELP: &str = "\
Exit status:
  0  every message was answered AA or CA
  1  at least one message was answered AE, AR, CE or CR (and no transport failure)
  2  invalid flags, or an input file that cannot be read or holds a message without MSH-10
     (nothing was sent)
  3  a transport failure: no connection, no ACK within --timeout, an ACK for another control
     id (MSA-2 mismatch), or a reply that is not an ACK
Examples:
  mllp send --to 10.0.0.5:2575 adt_a01.hl7
  mllp send --to partner.example:6661 --timeout 5s --stop-on-error ./outbox/";

/// What became of each message.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Every time a message was written, retries included.
    pub(crate) attempts: usize,
    pub(crate) accepted: usize,
    /// Sent with MSH-15 = NE, or ER and no error came back: accepted by the rules of MSH-15.
    pub(crate) unacknowledged: usize,
    pub(crate) errors: usize,
    pub(crate) rejected: usize,
    pub(crate) failed: usize,
    pub(crate) not_sent: usize,
    /// Why the run stopped before the last message, if it did.
    pub(crate) stopped: Option<String>,
}

/// Checks every input message, then sends them one at a time and reports each outcome.
pub(crate) async fn run(args: SendArgs) -> ExitCode {
    if let Err(text) = logging::init(args.log_format, logging::CLIENT_FILTER) {
        return exit::fail_text(exit::USAGE, &text);
    }
    if args.batch {
        return crate::send_batch::run(&args).await;
    }
    let messages = match checked_messages(&args.paths) {
        Ok(messages) => messages,
        Err(code) => return code,
    };
    let mut client = match client(&args.connect) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let tally = send_each(&mut client, &messages, &args).await;
    client.close().await;
    summary(&tally, messages.len())
}

/// Every message of the input files with its MSH-10, or, when one cannot be sent, the usage
/// exit status (reason printed): nothing is sent unless every message can be.
fn checked_messages(paths: &[PathBuf]) -> Result<Vec<(FileMessage, String)>, ExitCode> {
    let inputs = messages::read_inputs(paths).map_err(|e| exit::fail(exit::USAGE, &e))?;
    for dir in &inputs.subdirectories {
        complain!(
            "warning: {}: a subdirectory, not sent (directories are read one level deep)",
            dir.display()
        );
    }
    let messages = inputs.messages;
    let mut checked = Vec::with_capacity(messages.len());
    for m in messages {
        match control_id(&m) {
            Ok(id) => checked.push((m, id)),
            Err(reason) => {
                return Err(exit::fail_text(
                    exit::USAGE,
                    &format!("{}: {reason}; nothing was sent", label(&m)),
                ));
            }
        }
    }
    Ok(checked)
}

/// `--to`: HOST:PORT with a host and a port number, or a usage error (exit 2) naming the flag,
/// rather than a connect failure (exit 3) once messages are read.
pub(crate) fn host_port(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or("expected HOST:PORT (the port is missing)")?;
    if host.is_empty() || host == "[]" {
        return Err("expected HOST:PORT (the host is missing)".to_owned());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("expected HOST:PORT, {port:?} is not a port number")),
        Ok(_) => Ok(s.to_owned()),
    }
}

/// The client for `--to`, over TLS with `--tls-ca`; a bad TLS file is a usage error. It does
/// not retry by itself: [`deliver`] does, so that each retry can be shown.
pub(crate) fn client(args: &ConnectArgs) -> Result<Client, ExitCode> {
    let mut config = ClientConfig::default();
    config.reply_timeout = args.timeout;
    config.connect_timeout = args.connect_timeout;
    config.max_retries = 0;
    let Some(ca) = &args.tls_ca else {
        return Ok(Client::with_config(args.to.clone(), config));
    };
    let mut tls = TlsClientConfig::new(ca);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        tls = tls.client_cert(cert, key);
    }
    if let Some(name) = &args.tls_server_name {
        tls = tls.server_name(name);
    }
    Client::with_tls(args.to.clone(), config, tls).map_err(|e| exit::fail(exit::USAGE, &e))
}

/// Sends one message, retrying up to `retries` times after a transient failure (timeout, lost
/// connection) as the client would, but calling `on_retry(attempt, error)` before each retry.
/// Returns the last result and the number of attempts.
pub(crate) async fn deliver(
    client: &mut Client,
    payload: &Bytes,
    retries: u32,
    mut on_retry: impl FnMut(u32, &ClientError),
) -> (Result<Option<Acknowledgment>, ClientError>, usize) {
    let mut attempts = 0;
    loop {
        let result = client.send(payload.clone()).await;
        attempts += 1;
        match &result {
            Err(e) if e.is_transient() && attempts <= retries as usize => {
                on_retry(attempts as u32, e);
            }
            _ => return (result, attempts),
        }
    }
}

/// Why nothing more can be sent after `error`, when it is a failure to connect: the receiver
/// could not be reached, or it was and the TLS handshake failed (a refused or expired
/// certificate: "cannot reach" would send the operator to the network).
pub(crate) fn unreachable(error: &ClientError, to: &str) -> Option<String> {
    let ClientError::Connect { source, .. } = error else {
        return None;
    };
    Some(if mllp::tls::HandshakeError::from_io(source).is_some() {
        format!("the TLS handshake with {to} failed")
    } else {
        format!("cannot reach {to}")
    })
}

/// The `RETRY` line shown before a message is sent again.
pub(crate) fn retry_line(head: &str, attempt: u32, retries: u32, error: &ClientError) -> String {
    format!("{head}RETRY {attempt}/{retries}  {}", exit::chain(error))
}

/// Text from a message or an ACK as it is, but with control characters (CR, LF, tabs, ...)
/// escaped, so that one outcome stays on one line. Backslashes, the HL7 escape character, are
/// left alone: a control id `ID\E\1` is printed as it is on the wire.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A progress bar on stderr, for a long run on a terminal only.
pub(crate) fn progress_bar(total: usize) -> Option<ProgressBar> {
    (std::io::stderr().is_terminal() && total >= PROGRESS_THRESHOLD).then(|| {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
        {
            bar.set_style(style);
        }
        bar
    })
}

/// Sends the messages in order, one line each on stdout, until the last one or a stop
/// (`--stop-on-error`, or a receiver that cannot be reached); the rest are listed NOT SENT.
async fn send_each(
    client: &mut Client,
    messages: &[(FileMessage, String)],
    args: &SendArgs,
) -> Tally {
    let progress = progress_bar(messages.len());
    let say = |line: String| match &progress {
        Some(bar) => bar.suspend(|| say!("{line}")),
        None => say!("{line}"),
    };
    let mut tally = Tally::default();
    let retries = args.connect.retries;
    for (n, (message, id)) in messages.iter().enumerate() {
        let head = format!("{}  {}  ", label(message), printable(id));
        let (result, attempts) = deliver(client, &message.payload, retries, |attempt, e| {
            say(retry_line(&head, attempt, retries, e));
        })
        .await;
        tally.attempts += attempts;
        let mut line = head;
        let ok = tally.record(&result, &mut line);
        // Without a connection the rest cannot go either; say so once.
        if let Err(e) = &result
            && let Some(why) = unreachable(e, &args.connect.to)
        {
            tally.stopped = Some(why);
        }
        if !ok || !args.quiet {
            say(line);
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
        if !ok && args.stop_on_error && tally.stopped.is_none() {
            tally.stopped = Some("--stop-on-error".to_owned());
        }
        if tally.stopped.is_some() {
            tally.not_sent = messages.len() - n - 1;
            // Named one by one: the operator sends exactly these again.
            for (message, id) in &messages[n + 1..] {
                say(format!("{}  {}  NOT SENT", label(message), printable(id)));
            }
            break;
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    tally
}

impl Tally {
    /// Counts one message's outcome and writes it at the end of `line`; `true` when it was
    /// accepted (AA or CA, or no ACK as its MSH-15 asked).
    pub(crate) fn record(
        &mut self,
        result: &Result<Option<Acknowledgment>, ClientError>,
        line: &mut String,
    ) -> bool {
        match result {
            Ok(Some(ack)) => {
                self.accepted += 1;
                let _ = write!(line, "{}", ack.code());
                let text = ack.text();
                if !text.is_empty() {
                    let _ = write!(line, "  {}", printable(&text));
                }
                true
            }
            // MSH-15 asked for no ACK (NE), or for one only on error (ER) and none came.
            Ok(None) => {
                self.unacknowledged += 1;
                let _ = write!(line, "sent (no ACK requested by MSH-15)");
                true
            }
            Err(ClientError::Negative { code, text, .. }) => {
                match code {
                    AckCode::AR | AckCode::CR => self.rejected += 1,
                    _ => self.errors += 1,
                }
                let _ = write!(line, "{code}");
                if !text.is_empty() {
                    let _ = write!(line, "  {}", printable(text));
                }
                false
            }
            Err(e) => {
                self.failed += 1;
                let _ = write!(line, "FAILED  {}", exit::chain(e));
                false
            }
        }
    }
}

/// Prints the summary line, and on stderr why the run failed; the exit status follows the worst
/// outcome: a transport failure (3), then a negative acknowledgment (1).
pub(crate) fn summary(tally: &Tally, total: usize) -> ExitCode {
    let sent = total - tally.not_sent;
    // Retries are part of what happened: a receiver may have got a message more than once.
    let attempts = if tally.attempts > sent {
        format!(" in {} attempts", tally.attempts)
    } else {
        String::new()
    };
    say!(
        "sent {sent}{attempts}: {} accepted (AA/CA), {} without ACK by MSH-15 (NE/ER), {} error \
         (AE/CE), {} rejected (AR/CR), {} failed (no valid ACK), {} not sent",
        tally.accepted,
        tally.unacknowledged,
        tally.errors,
        tally.rejected,
        tally.failed,
        tally.not_sent
    );
    let _ = std::io::stdout().flush();
    if let Some(reason) = &tally.stopped {
        complain!(
            "error: stopped after a failure ({reason}); {} message(s) not sent",
            tally.not_sent
        );
    }
    if tally.failed > 0 {
        complain!(
            "error: {} message(s) got no valid acknowledgment",
            tally.failed
        );
        ExitCode::from(exit::TRANSPORT)
    } else if tally.errors + tally.rejected > 0 {
        complain!(
            "error: {} message(s) answered with a negative acknowledgment",
            tally.errors + tally.rejected
        );
        ExitCode::from(exit::FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// `file#n`, how a message is named in output.
fn label(m: &FileMessage) -> String {
    format!("{}#{}", m.file.display(), m.index)
}

/// MSH-10 of a message read from a file, or why it cannot be sent: the client's own check
/// ([`Client::check`]), so that what passes here is never refused half-way through the run.
fn control_id(m: &FileMessage) -> Result<String, String> {
    match Client::check(&m.payload) {
        Ok(id) if !id.is_empty() => Ok(id),
        Ok(_) | Err(ClientError::MissingControlId) => {
            Err("no MSH-10 (message control ID) to correlate the acknowledgment".to_owned())
        }
        Err(ClientError::InvalidMessage(e)) => Err(format!("not valid HL7 ({e})")),
        Err(e) => Err(e.to_string()),
    }
}

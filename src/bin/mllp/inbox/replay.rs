//! `mllp inbox replay`.

use std::process::ExitCode;

use mllp::store::sqlite::StoredMessage;

use super::StoreArg;
use super::filter::FilterArgs;
use crate::config::LogFormat;
use crate::send::{self, ConnectArgs, Tally};
use crate::{exit, logging};

/// Messages read from the store at a time (the store is never loaded whole).
const PAGE: usize = 256;

/// Send stored messages to a receiver, oldest first, byte for byte, one at a time, checking
/// each acknowledgment as `mllp send` does: one line per message (`store#ID`, control id, ACK
/// code), a progress bar on a terminal, a summary, and `mllp send`'s exit statuses.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    store: StoreArg,

    #[command(flatten)]
    filter: FilterArgs,

    #[command(flatten)]
    connect: ConnectArgs,

    /// Stop at the first message not answered AA or CA
    #[arg(long)]
    stop_on_error: bool,

    /// Print only the messages not answered AA or CA, and the summary
    #[arg(long, short)]
    quiet: bool,

    /// Log line format on stderr (`RUST_LOG` filters; default filter: warn)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub(crate) async fn run(args: ReplayArgs) -> ExitCode {
    if let Err(text) = logging::init(args.log_format, logging::CLIENT_FILTER) {
        return exit::fail_text(exit::USAGE, &text);
    }
    let reader = match args.store.reader() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut filter = args.filter.filter();
    filter.oldest_first = true;
    let total = match reader.count_matching(&filter) {
        Ok(n) => n as usize,
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    let mut client = match send::client(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let progress = send::progress_bar(total);
    let say = |line: String| match &progress {
        Some(bar) => bar.suspend(|| say!("{line}")),
        None => say!("{line}"),
    };
    let mut tally = Tally::default();
    let mut sent = 0;
    filter.limit = Some(PAGE);
    'pages: loop {
        let mut page: Vec<StoredMessage> = Vec::with_capacity(PAGE);
        if let Err(e) = reader.for_each(&filter, |m| {
            page.push(m);
            true
        }) {
            return exit::fail(exit::FAILURE, &e);
        }
        let Some(last) = page.last() else { break };
        filter.after_id = Some(last.summary.id);
        for message in page {
            let id = message.summary.id;
            let control_id = message.summary.control_id.clone();
            let result = client.send(message.payload).await;
            sent += 1;
            let mut line = format!("store#{id}  {}  ", control_id.escape_debug());
            let ok = tally.record(&result, &mut line);
            if matches!(result, Err(mllp::ClientError::Connect { .. })) {
                tally.stopped = Some(format!("cannot reach {}", args.connect.to));
            } else if !ok && args.stop_on_error {
                tally.stopped = Some("--stop-on-error".to_owned());
            }
            if !ok || !args.quiet {
                say(line);
            }
            if let Some(bar) = &progress {
                bar.inc(1);
            }
            if tally.stopped.is_some() {
                break 'pages;
            }
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    client.close().await;
    tally.not_sent = total.saturating_sub(sent);
    send::summary(&tally, total)
}

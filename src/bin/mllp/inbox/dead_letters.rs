//! `mllp inbox dead-letters`.

use std::io::Write as _;
use std::process::ExitCode;

use super::StoreArg;
use super::filter::rfc3339;
use crate::exit;
use crate::send::printable;

/// List the messages `mllp relay` gave up on (its dead letters), oldest first: when, which
/// relay, the stored message's id and why. `mllp inbox show ID` shows a message;
/// `mllp inbox replay --dead-letters RELAY --to HOST:PORT` sends them again.
#[derive(Debug, clap::Args)]
pub(crate) struct DeadLettersArgs {
    #[command(flatten)]
    store: StoreArg,

    /// Only this relay's (its --name) [default: every relay's]
    #[arg(long, value_name = "NAME")]
    relay: Option<String>,

    /// One JSON object per line instead of a table
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: DeadLettersArgs) -> ExitCode {
    let reader = match args.store.reader() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let letters = match reader.dead_letters(args.relay.as_deref()) {
        Ok(letters) => letters,
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut written = Ok(());
    if !args.json {
        written = writeln!(
            out,
            "{:<27}  {:<16}  {:>10}  REASON",
            "AT", "RELAY", "MESSAGE"
        );
    }
    for letter in &letters {
        if written.is_err() {
            break;
        }
        written = if args.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "id": letter.id,
                    "at": rfc3339(letter.at),
                    "relay": letter.relay,
                    "message_id": letter.message_id,
                    "reason": letter.reason,
                })
            )
        } else {
            writeln!(
                out,
                "{:<27}  {:<16}  {:>10}  {}",
                rfc3339(letter.at),
                printable(&letter.relay),
                letter.message_id,
                printable(&letter.reason)
            )
        };
    }
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => exit::fail_text(exit::FAILURE, &format!("cannot write the list: {e}")),
    }
}

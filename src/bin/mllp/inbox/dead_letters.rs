//! `mllp inbox dead-letters`.

use std::process::ExitCode;

use super::filter::rfc3339;
use super::{Out, StoreArg};
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
    let mut out = Out::new();
    if !args.json {
        out.line(&format!(
            "{:<27}  {:<16}  {:>10}  REASON",
            "AT", "RELAY", "MESSAGE"
        ));
    }
    for letter in &letters {
        let line = if args.json {
            serde_json::json!({
                "id": letter.id,
                "at": rfc3339(letter.at),
                "relay": letter.relay,
                "message_id": letter.message_id,
                "reason": letter.reason,
            })
            .to_string()
        } else {
            format!(
                "{:<27}  {:<16}  {:>10}  {}",
                rfc3339(letter.at),
                printable(&letter.relay),
                letter.message_id,
                printable(&letter.reason)
            )
        };
        if !out.line(&line) {
            break;
        }
    }
    out.finish()
}

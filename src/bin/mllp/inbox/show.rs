//! `mllp inbox show`.

use std::io::Write;
use std::process::ExitCode;

use mllp::hl7::Message;

use super::StoreArg;
use crate::exit;

/// Print one stored message: its bytes exactly as received (segments end in CR), or with
/// `--segments` one segment per line and one field per line under it, numbered (`PID-5`).
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    store: StoreArg,

    /// The store id (the ID column of `mllp inbox list`)
    id: u64,

    /// One segment per line, each field on its own line with its number
    #[arg(long)]
    segments: bool,
}

pub(crate) fn run(args: ShowArgs) -> ExitCode {
    let reader = match args.store.reader() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let message = match reader.get(args.id) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return exit::fail_text(exit::FAILURE, &format!("no message with id {}", args.id));
        }
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    let mut out = std::io::stdout().lock();
    if !args.segments {
        let _ = out.write_all(&message.payload);
        let _ = out.flush();
        return ExitCode::SUCCESS;
    }
    let parsed = match Message::parse(message.payload.clone()) {
        Ok(m) => m,
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    for segment in parsed.segments() {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(segment.as_bytes()));
        for (n, field) in segment.fields().enumerate() {
            if !field.is_empty() {
                let _ = writeln!(
                    out,
                    "  {}-{}: {}",
                    segment.id(),
                    n + 1,
                    String::from_utf8_lossy(field.as_bytes())
                );
            }
        }
    }
    ExitCode::SUCCESS
}

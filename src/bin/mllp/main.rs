//! `mllp`: receive HL7 v2 over MLLP into a durable inbox (`serve`), send HL7 files to a
//! receiver (`send`), measure a receiver (`bench`), operate the store (`inbox`), forward a
//! store downstream (`relay`), and watch a receiver live (`top`).
//!
//! Run `mllp help <command>` for every flag; docs/operations.md explains running `serve` in
//! production, the inbox layout and the exit codes.

/// `println!` that never panics: a closed stdout (a pipe whose reader went away) must not stop
/// a server or a send half-way.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics, for the same reason. Log lines still buffered go out first,
/// so stderr keeps its order.
macro_rules! complain {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        crate::logging::flush();
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod allocator;
mod bench;
mod config;
mod inbox;
mod logging;
mod messages;
#[cfg(feature = "nats")]
mod nats;
mod relay;
mod send;
mod send_batch;
mod serve;
mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// MLLP (HL7 v2 over TCP) receiver, sender and load generator.
#[derive(Debug, Parser)]
#[command(name = "mllp", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive HL7 messages and store each one durably before acknowledging it
    Serve(Box<serve::ServeArgs>),
    /// Send the HL7 messages in files or directories and check every acknowledgment
    Send(send::SendArgs),
    /// Load a receiver with unique messages and report throughput and latency
    Bench(bench::BenchArgs),
    /// List, show, export, import, replay and prune the messages `serve` stored
    Inbox(Box<inbox::InboxArgs>),
    /// Send a store's messages to a receiver in order, each marked done after its AA/CA
    Relay(Box<relay::RelayArgs>),
    /// Watch a running `mllp serve --admin` live: connections, msg/s, ACK codes, latency
    Top(top::TopArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Send(args) => send::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Inbox(args) => inbox::run(*args).await,
            Command::Relay(args) => relay::run(*args).await,
            Command::Top(args) => top::run(args).await,
        }
    });
    logging::flush();
    // Not the runtime's drop, which waits for every blocking task: one can be stuck for good
    // (`serve` closing a store whose commit waits on a lock, after it gave up waiting).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// Exit statuses and error printing, shared by the subcommands.
mod exit {
    use std::error::Error;
    use std::process::ExitCode;

    /// The server failed, or (send, bench) at least one message was answered AE, AR, CE or CR.
    pub(crate) const FAILURE: u8 = 1;
    /// Invalid flags, configuration or input files (clap uses 2 for usage errors too).
    pub(crate) const USAGE: u8 = 2;
    /// (send, bench) a transport failure: no connection, no ACK in time, a mismatched or
    /// unreadable ACK.
    pub(crate) const TRANSPORT: u8 = 3;

    /// `error`, then each `source()`, joined with ": ".
    pub(crate) fn chain(error: &dyn Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            // `#[error(transparent)]` layers repeat their source's text.
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }

    /// Prints `error: <chain>` on stderr and returns `code`.
    pub(crate) fn fail(code: u8, error: &dyn Error) -> ExitCode {
        fail_text(code, &chain(error))
    }

    /// The exit status for a store that cannot be used: 2 when the file or stream is the
    /// wrong one (not a store, not a database, newer, corrupt, no such stream, limits too
    /// small: a setting to change), 1 otherwise (cannot be reached, created or written).
    pub(crate) fn store_code(error: &mllp::store::StoreError) -> u8 {
        // The set-up errors but the one that says the store could not be reached or created.
        if error.is_startup() && !matches!(error, mllp::store::StoreError::Open { .. }) {
            USAGE
        } else {
            FAILURE
        }
    }

    /// Prints `error: <text>` on stderr and returns `code`.
    pub(crate) fn fail_text(code: u8, text: &str) -> ExitCode {
        complain!("error: {text}");
        ExitCode::from(code)
    }
}

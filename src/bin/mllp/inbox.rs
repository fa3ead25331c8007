//! `mllp inbox`: operate the message store that `mllp serve` writes (list, show, export,
//! import, replay, prune, and the relays' dead letters).

mod dead_letters;
mod export;
mod filter;
mod import;
mod list;
mod prune;
mod replay;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use mllp::store::StoreSpec;

use crate::exit;

/// The store every verb reads: `mllp serve`'s default.
pub(crate) const DEFAULT_STORE: &str = "sqlite:mllp-inbox.db";

/// Operate the message store that `mllp serve` writes.
#[derive(Debug, clap::Args)]
pub(crate) struct InboxArgs {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// List stored messages, newest first (MSH fields only)
    List(list::ListArgs),
    /// Print one stored message: its raw bytes, or one segment per line with field numbers
    Show(show::ShowArgs),
    /// Write stored messages to a directory, one file each, named like a `dir:` store's files
    Export(export::ExportArgs),
    /// Store the messages of a directory (a `dir:` store, an export) in the SQLite store
    Import(import::ImportArgs),
    /// Send stored messages to a receiver, checking every acknowledgment
    Replay(replay::ReplayArgs),
    /// Delete the messages received before a time
    Prune(prune::PruneArgs),
    /// List the messages `mllp relay` gave up on, with why and when
    DeadLetters(dead_letters::DeadLettersArgs),
}

/// `--store`, as `mllp serve` takes it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArg {
    /// The store: sqlite:PATH (these commands read SQLite stores)
    #[arg(long, value_name = "STORE", default_value = DEFAULT_STORE)]
    store: StoreSpec,
}

impl StoreArg {
    /// The SQLite file, or a usage error for another kind of store.
    fn sqlite(&self) -> Result<PathBuf, ExitCode> {
        match &self.store {
            StoreSpec::Sqlite(path) => Ok(path.clone()),
            other => Err(exit::fail_text(
                exit::USAGE,
                &format!(
                    "mllp inbox works on sqlite: stores, not {other} (a dir: store is a plain \
                     directory of .hl7 files; `mllp inbox import` moves one into SQLite)"
                ),
            )),
        }
    }

    /// Opens the SQLite file read-only; a missing file is a usage error (exit 2).
    fn reader(&self) -> Result<mllp::store::sqlite::SqliteReader, ExitCode> {
        let path = self.sqlite()?;
        if !path.exists() {
            return Err(exit::fail_text(
                exit::USAGE,
                &format!("no store at {} (see --store)", path.display()),
            ));
        }
        mllp::store::sqlite::SqliteReader::open(&path)
            .map_err(|e| exit::fail(exit::store_code(&e), &e))
    }
}

pub(crate) async fn run(args: InboxArgs) -> ExitCode {
    match args.verb {
        Verb::List(args) => list::run(args),
        Verb::Show(args) => show::run(args),
        Verb::Export(args) => export::run(args),
        Verb::Import(args) => import::run(args).await,
        Verb::Replay(args) => replay::run(args).await,
        Verb::Prune(args) => prune::run(args).await,
        Verb::DeadLetters(args) => dead_letters::run(args),
    }
}

/// Standard output for a listing, buffered (not a write per line); the first write error
/// stops the listing and is kept.
pub(super) struct Out {
    writer: std::io::BufWriter<std::io::StdoutLock<'static>>,
    error: Option<std::io::Error>,
}

impl Out {
    fn new() -> Self {
        Out {
            writer: std::io::BufWriter::new(std::io::stdout().lock()),
            error: None,
        }
    }

    /// Writes `line` and a newline; `false` once a write has failed.
    fn line(&mut self, line: &str) -> bool {
        use std::io::Write as _;
        if self.error.is_none()
            && let Err(e) = writeln!(self.writer, "{line}")
        {
            self.error = Some(e);
        }
        self.error.is_none()
    }

    /// Flushes; the exit status: a reader that went away (`| head`) got what it wanted, any
    /// other write error (a full disk) is a failure.
    fn finish(mut self) -> ExitCode {
        use std::io::Write as _;
        match self.error.take().map_or_else(|| self.writer.flush(), Err) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => exit::fail_text(exit::FAILURE, &format!("cannot write the list: {e}")),
        }
    }
}

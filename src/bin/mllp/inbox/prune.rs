//! `mllp inbox prune`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use mllp::store::{SqliteConfig, SqliteStore};

use super::StoreArg;
use crate::{config, exit};

/// Delete the messages received more than DUR ago, in small transactions (a running
/// `mllp serve` keeps committing in between).
#[derive(Debug, clap::Args)]
pub(crate) struct PruneArgs {
    #[command(flatten)]
    store: StoreArg,

    /// Delete what was received more than this long ago (`30d`, `12h`)
    #[arg(long, value_name = "DUR", value_parser = config::any_duration)]
    older_than: Duration,
}

pub(crate) async fn run(args: PruneArgs) -> ExitCode {
    // Checked as a reader first: a missing file is refused, never created.
    if let Err(code) = args.store.reader() {
        return code;
    }
    let Ok(path) = args.store.sqlite() else {
        unreachable!("reader() checked the kind")
    };
    let store = match SqliteStore::open(&path, SqliteConfig::default()).await {
        Ok(s) => s,
        Err(e) => return exit::fail(exit::store_code(&e), &e),
    };
    let cutoff = SystemTime::now()
        .checked_sub(args.older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let result = store.prune_before(cutoff).await;
    store.close().await;
    match result {
        Ok(n) => {
            say!(
                "deleted {n} message(s) received before {}",
                super::filter::rfc3339(cutoff)
            );
            ExitCode::SUCCESS
        }
        Err(e) => exit::fail(exit::FAILURE, &e),
    }
}

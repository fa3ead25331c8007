//! `mllp inbox import`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use bytes::Bytes;
use mllp::hl7::Message;
use mllp::store::{Receipt, Record, SqliteConfig, SqliteStore, Store};

use futures_util::StreamExt;

use super::StoreArg;
use crate::exit;

/// Store the `.hl7` files of DIR (a `dir:` store, an `mllp inbox export`) in the SQLite store,
/// in file-name order: one message per file, byte for byte. The receive time is taken from the
/// file name when it starts with a `dir:` store's timestamp, else from the file's modification
/// time. Duplicates (by the store's rules) are counted, not stored twice, so importing the
/// same directory again is harmless. Files that are not HL7 are listed and skipped (exit 1).
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    store: StoreArg,

    /// The directory to read
    dir: PathBuf,
}

pub(crate) async fn run(args: ImportArgs) -> ExitCode {
    let path = match args.store.sqlite() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let files = match hl7_files(&args.dir) {
        Ok(files) => files,
        Err(e) => {
            return exit::fail_text(
                exit::USAGE,
                &format!("cannot read {}: {e}", args.dir.display()),
            );
        }
    };
    let store = match SqliteStore::open(&path, SqliteConfig::default()).await {
        Ok(s) => s,
        Err(e) => return exit::fail(exit::store_code(&e), &e),
    };
    let unknown: SocketAddr = ([0, 0, 0, 0], 0).into();
    let (mut stored, mut duplicates, mut skipped) = (0u64, 0u64, 0u64);
    // Up to IN_FLIGHT appends wait at once, so the store commits them in groups; they are
    // queued in file order, which is the order of their ids.
    let mut outcomes = futures_util::stream::iter(&files)
        .map(|file| {
            let record = std::fs::read(file)
                .map_err(|e| e.to_string())
                .and_then(|bytes| Message::parse(Bytes::from(bytes)).map_err(|e| e.to_string()))
                .map(|m| Record::from_message(&m, received_at(file), unknown, unknown, None));
            let append = record.map(|r| store.append(r));
            async move {
                match append {
                    Ok(append) => (file, Ok(append.await)),
                    Err(reason) => (file, Err(reason)),
                }
            }
        })
        .buffered(IN_FLIGHT);
    while let Some((file, outcome)) = outcomes.next().await {
        match outcome {
            Err(reason) => {
                complain!("skipped {}: {reason}", file.display());
                skipped += 1;
            }
            Ok(Ok(Receipt::Duplicate { .. })) => duplicates += 1,
            Ok(Ok(_)) => stored += 1,
            Ok(Err(e)) => {
                drop(outcomes);
                store.close().await;
                return exit::fail_text(
                    exit::FAILURE,
                    &format!("{}: {}", file.display(), exit::chain(&e)),
                );
            }
        }
    }
    drop(outcomes);
    store.close().await;
    say!(
        "imported {} file(s): {stored} stored, {duplicates} duplicate(s), {skipped} skipped",
        files.len()
    );
    if skipped > 0 {
        ExitCode::from(exit::FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Appends waiting at once.
const IN_FLIGHT: usize = 64;

/// The `.hl7` files directly in `dir`, by name.
fn hl7_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "hl7") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The time in a `dir:` store's file name (`20261204T101500.123456Z-…`), else the file's
/// modification time, else now.
fn received_at(file: &Path) -> SystemTime {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let stamp = name.split('-').next().unwrap_or_default();
    let from_name = (stamp.len() == 23).then(|| {
        let b = stamp.as_bytes();
        let s = |r: std::ops::Range<usize>| std::str::from_utf8(&b[r]).unwrap_or("x");
        format!(
            "{}-{}-{}T{}:{}:{}{}",
            s(0..4),
            s(4..6),
            s(6..8),
            s(9..11),
            s(11..13),
            s(13..15),
            s(15..23)
        )
    });
    from_name
        .and_then(|t| humantime::parse_rfc3339(&t).ok())
        .or_else(|| std::fs::metadata(file).and_then(|m| m.modified()).ok())
        .unwrap_or_else(SystemTime::now)
}

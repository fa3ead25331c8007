//! `mllp inbox export`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::StoreArg;
use super::filter::FilterArgs;
use crate::exit;

/// Write stored messages to DIR, one file each, oldest first, byte for byte, named like a
/// `dir:` store's files (`<UTC time>-<control id>-<store id>.hl7`), so that `mllp send DIR`
/// or `--store dir:DIR` tools read them. Existing files are never overwritten.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    store: StoreArg,

    #[command(flatten)]
    filter: FilterArgs,

    /// The directory to write to (created if missing)
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
}

pub(crate) fn run(args: ExportArgs) -> ExitCode {
    let reader = match args.store.reader() {
        Ok(r) => r,
        Err(code) => return code,
    };
    // Patient data: readable by the owner and group only, as a `dir:` store's files are.
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o750);
    if let Err(e) = dirs.create(&args.to) {
        return exit::fail_text(
            exit::FAILURE,
            &format!("cannot create {}: {e}", args.to.display()),
        );
    }
    let mut filter = args.filter.filter();
    filter.oldest_first = true;
    let mut written = 0u64;
    let mut failure = None;
    let result = reader.for_each(&filter, |message| {
        let s = &message.summary;
        let name = mllp::inbox::file_name(
            s.received_at,
            Some(s.control_id.as_bytes()),
            &s.id.to_string(),
        );
        let path = args.to.join(name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        let write = options.open(&path).and_then(|mut f| {
            let written = f.write_all(&message.payload).and_then(|()| f.sync_all());
            if written.is_err() {
                // No partial file under a final name (a full disk): a re-run writes it.
                drop(f);
                let _ = std::fs::remove_file(&path);
            }
            written
        });
        match write {
            Ok(()) => {
                written += 1;
                true
            }
            Err(e) => {
                failure = Some(format!("cannot write {}: {e}", path.display()));
                false
            }
        }
    });
    if let Err(e) = result {
        return exit::fail(exit::FAILURE, &e);
    }
    say!("exported {written} message(s) to {}", args.to.display());
    match failure {
        Some(text) => exit::fail_text(exit::FAILURE, &text),
        None => ExitCode::SUCCESS,
    }
}

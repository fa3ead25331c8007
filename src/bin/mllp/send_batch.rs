//! `mllp send --batch`: each file as one batch frame, each message's outcome read from the
//! batch acknowledgment.

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use mllp::client::BatchItem;
use mllp::{Client, ClientError};

use crate::exit;
use crate::messages::{self, FileBatch};
use crate::send::{self, SendArgs, Tally, printable};

/// A batch ready to go: its file, payload and the MSH-10 of each of its messages.
struct Checked {
    batch: FileBatch,
    control_ids: Vec<String>,
}

/// Checks every batch, then sends them one at a time and reports each message.
pub(crate) async fn run(args: &SendArgs) -> ExitCode {
    let batches = match checked(&args.paths) {
        Ok(batches) => batches,
        Err(code) => return code,
    };
    let total = batches.iter().map(|b| b.control_ids.len()).sum();
    let mut client = match send::client(&args.connect) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let mut tally = Tally::default();
    let retries = args.connect.retries;
    for (n, checked) in batches.iter().enumerate() {
        let file = checked.batch.file.display().to_string();
        let head = format!("{file}  batch of {}  ", checked.control_ids.len());
        let (result, attempts) = deliver(
            &mut client,
            &checked.batch.payload,
            retries,
            |attempt, e| {
                say!("{}", send::retry_line(&head, attempt, retries, e));
            },
        )
        .await;
        tally.attempts += attempts * checked.control_ids.len();
        let mut all_ok = true;
        match result {
            Ok(items) => {
                for (i, item) in items.iter().enumerate() {
                    let BatchItem {
                        control_id, result, ..
                    } = item;
                    let mut line = format!("{file}#{}  {}  ", i + 1, printable(control_id));
                    let ok = tally.record(result, &mut line);
                    all_ok &= ok;
                    if !ok || !args.quiet {
                        say!("{line}");
                    }
                }
            }
            Err(e) => {
                all_ok = false;
                let reason = exit::chain(&e);
                for (i, id) in checked.control_ids.iter().enumerate() {
                    tally.failed += 1;
                    say!("{file}#{}  {}  FAILED  {reason}", i + 1, printable(id));
                }
                if let Some(why) = send::unreachable(&e, &args.connect.to) {
                    tally.stopped = Some(why);
                }
            }
        }
        if !all_ok && args.stop_on_error && tally.stopped.is_none() {
            tally.stopped = Some("--stop-on-error".to_owned());
        }
        if tally.stopped.is_some() {
            for rest in &batches[n + 1..] {
                let file = rest.batch.file.display();
                for (i, id) in rest.control_ids.iter().enumerate() {
                    tally.not_sent += 1;
                    say!("{file}#{}  {}  NOT SENT", i + 1, printable(id));
                }
            }
            break;
        }
    }
    client.close().await;
    send::summary(&tally, total)
}

/// Every input as a batch with its control ids, or the usage exit status (reason printed):
/// nothing is sent unless every batch can be.
fn checked(paths: &[std::path::PathBuf]) -> Result<Vec<Checked>, ExitCode> {
    let (batches, subdirectories) =
        messages::read_batches(paths).map_err(|e| exit::fail(exit::USAGE, &e))?;
    for dir in &subdirectories {
        complain!(
            "warning: {}: a subdirectory, not sent (directories are read one level deep)",
            dir.display()
        );
    }
    batches
        .into_iter()
        .map(|batch| match Client::check_batch(&batch.payload) {
            Ok(control_ids) => Ok(Checked { batch, control_ids }),
            Err(e) => Err(exit::fail_text(
                exit::USAGE,
                &format!(
                    "{}: {}; nothing was sent",
                    label(&batch.file),
                    exit::chain(&e)
                ),
            )),
        })
        .collect()
}

fn label(file: &Path) -> String {
    file.display().to_string()
}

/// Sends one batch, retrying the whole batch after a transient failure as [`send::deliver`]
/// does for a message.
async fn deliver(
    client: &mut Client,
    payload: &Bytes,
    retries: u32,
    mut on_retry: impl FnMut(u32, &ClientError),
) -> (Result<Vec<BatchItem>, ClientError>, usize) {
    let mut attempts = 0;
    loop {
        let result = client.send_batch(payload.clone()).await;
        attempts += 1;
        match &result {
            Err(e) if e.is_transient() && attempts <= retries as usize => {
                on_retry(attempts as u32, e);
            }
            _ => return (result, attempts),
        }
    }
}

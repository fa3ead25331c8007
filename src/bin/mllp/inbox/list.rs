//! `mllp inbox list`.

use std::process::ExitCode;

use mllp::store::sqlite::Summary;

use super::StoreArg;
use super::filter::{FilterArgs, rfc3339};
use crate::exit;
use crate::send::printable;

/// List stored messages, newest first: id, receive time, MSH-9, MSH-10, sender (MSH-3 and
/// MSH-4), peer, size. No field outside MSH is shown.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    store: StoreArg,

    #[command(flatten)]
    filter: FilterArgs,

    /// At most N messages
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,

    /// Oldest first
    #[arg(long)]
    oldest_first: bool,

    /// One JSON object per line instead of a table
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: ListArgs) -> ExitCode {
    let reader = match args.store.reader() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut filter = args.filter.filter();
    filter.limit = Some(args.limit);
    filter.oldest_first = args.oldest_first;
    let rows = match reader.list(&filter) {
        Ok(rows) => rows,
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    if args.json {
        for row in &rows {
            say!("{}", json(row));
        }
    } else {
        say!(
            "{:>8}  {:<27}  {:<16}  {:<20}  {:<20}  {:<21}  {:>8}",
            "ID",
            "RECEIVED",
            "TYPE",
            "CONTROL ID",
            "SENDER",
            "PEER",
            "BYTES"
        );
        for row in &rows {
            let flag = if row.reused_control_id {
                "  reused-id"
            } else {
                ""
            };
            say!(
                "{:>8}  {:<27}  {:<16}  {:<20}  {:<20}  {:<21}  {:>8}{flag}",
                row.id,
                rfc3339(row.received_at),
                printable(&row.message_type),
                printable(&row.control_id),
                printable(&format!(
                    "{}|{}",
                    row.sending_application, row.sending_facility
                )),
                printable(&row.peer),
                row.size
            );
        }
    }
    ExitCode::SUCCESS
}

fn json(row: &Summary) -> serde_json::Value {
    serde_json::json!({
        "id": row.id,
        "received_at": rfc3339(row.received_at),
        "listener": row.listener,
        "peer": row.peer,
        "tls_identity": row.tls_identity,
        "sending_application": row.sending_application,
        "sending_facility": row.sending_facility,
        "receiving_application": row.receiving_application,
        "receiving_facility": row.receiving_facility,
        "message_type": row.message_type,
        "control_id": row.control_id,
        "processing_id": row.processing_id,
        "version": row.version,
        "size": row.size,
        "reused_control_id": row.reused_control_id,
    })
}

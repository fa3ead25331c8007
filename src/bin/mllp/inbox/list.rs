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
        for line in table(&rows) {
            say!("{line}");
        }
    }
    ExitCode::SUCCESS
}

/// The text table: a header and one line per row, each column as wide as its widest cell (MSH
/// fields vary: an OID in MSH-4 is longer than a name), cells escaped with [`printable`].
fn table(rows: &[Summary]) -> Vec<String> {
    let header = [
        "ID",
        "RECEIVED",
        "TYPE",
        "CONTROL ID",
        "SENDER",
        "PEER",
        "BYTES",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            [
                row.id.to_string(),
                rfc3339(row.received_at),
                printable(&row.message_type),
                printable(&row.control_id),
                printable(&format!(
                    "{}|{}",
                    row.sending_application, row.sending_facility
                )),
                printable(&row.peer),
                row.size.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Numbers to the right, text to the left; the reused-id flag after the last column.
    let line = |cells: [&str; 7], flag: &str| {
        let mut line = String::new();
        for (n, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if n > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            if n == 0 || n == 6 {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if n < 6 {
                    line.push_str(&pad);
                }
            }
        }
        line.push_str(flag);
        line
    };
    let mut lines = vec![line(header, "")];
    for (row, cells) in rows.iter().zip(&cells) {
        let flag = if row.reused_control_id {
            "  reused-id"
        } else {
            ""
        };
        lines.push(line(cells.each_ref().map(String::as_str), flag));
    }
    lines
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

//! `mllp inbox list`.

use std::process::ExitCode;

use mllp::store::sqlite::Summary;

use super::filter::{FilterArgs, rfc3339};
use super::{Out, StoreArg};
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
    // Rows are written as they are read, so a long listing (`--limit 1000000 --json | jq`)
    // never holds the result whole; buffered, so it is not a write per line.
    let mut out = Out::new();
    let read = if args.json {
        reader.for_each_summary(&filter, |row| out.line(&json(&row).to_string()))
    } else {
        let mut table = Table::default();
        let read = reader.for_each_summary(&filter, |row| table.push(&row, &mut out));
        read.map(|()| {
            table.finish(&mut out);
        })
    };
    if let Err(e) = read {
        return exit::fail(exit::FAILURE, &e);
    }
    out.finish()
}

/// Rows the table's column widths are fitted to before anything is printed. The rows after
/// them are printed as they are read, in the same widths: a wider cell there pushes the rest
/// of its own line to the right.
const FIT_ROWS: usize = 1000;

/// One row's cells (escaped with [`printable`]) and whether its control id was reused.
type Cells = ([String; 7], bool);

/// The text table, written as it goes: the first [`FIT_ROWS`] rows are held to fit the
/// widths, then the header and every row go out.
#[derive(Default)]
struct Table {
    held: Vec<Cells>,
    widths: Option<Widths>,
}

impl Table {
    /// Adds a row; `false` once writing has failed.
    fn push(&mut self, row: &Summary, out: &mut Out) -> bool {
        let cells = cells(row);
        match &self.widths {
            Some(widths) => out.line(&widths.line(&cells)),
            None => {
                self.held.push(cells);
                self.held.len() < FIT_ROWS || self.finish(out)
            }
        }
    }

    /// Writes what is held (the header first, if it is not out yet); `false` if a write failed.
    fn finish(&mut self, out: &mut Out) -> bool {
        let widths = match &self.widths {
            Some(widths) => widths,
            None => {
                let widths = self.widths.insert(Widths::fit(&self.held));
                if !out.line(&widths.header()) {
                    return false;
                }
                widths
            }
        };
        self.held
            .drain(..)
            .all(|cells| out.line(&widths.line(&cells)))
    }
}

fn cells(row: &Summary) -> Cells {
    let sender = format!("{}|{}", row.sending_application, row.sending_facility);
    let cells = [
        row.id.to_string(),
        rfc3339(row.received_at),
        printable(&row.message_type),
        printable(&row.control_id),
        printable(&sender),
        printable(&row.peer),
        row.size.to_string(),
    ];
    (cells, row.reused_control_id)
}

const HEADER: [&str; 7] = [
    "ID",
    "RECEIVED",
    "TYPE",
    "CONTROL ID",
    "SENDER",
    "PEER",
    "BYTES",
];

/// Each column as wide as its widest cell (MSH fields vary: an OID in MSH-4 is longer than a
/// name) among the rows it was fitted to; the numbers (id, size) to the right, the rest to
/// the left, and `reused-id` after the row of a reused control id.
struct Widths([usize; 7]);

impl Widths {
    fn fit(rows: &[Cells]) -> Self {
        let mut w = HEADER.map(str::len);
        for (cells, _) in rows {
            for (width, cell) in w.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        Widths(w)
    }

    fn header(&self) -> String {
        self.format(HEADER, "")
    }

    fn line(&self, (cells, reused): &Cells) -> String {
        let flag = if *reused { "  reused-id" } else { "" };
        self.format(cells.each_ref().map(String::as_str), flag)
    }

    fn format(&self, c: [&str; 7], flag: &str) -> String {
        let w = &self.0;
        format!(
            "{:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {:<w5$}  {:>w6$}{flag}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
            w5 = w[5],
            w6 = w[6],
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column starts at the same place on every line, however long a cell is; numbers
    /// end at the same place; a reused control id is flagged at the end of its line.
    #[test]
    fn columns_fit_their_widest_cell() {
        let row = |id: &str, sender: &str, size: &str, reused| {
            let text = |s: &str| s.to_owned();
            (
                [
                    text(id),
                    text("2026-12-07T03:24:10.512594Z"),
                    text("ADT^A04"),
                    text("A04-0001"),
                    text(sender),
                    text("127.0.0.1:42594"),
                    text(size),
                ],
                reused,
            )
        };
        let rows = [
            row("12", "REGADT|GOODHEALTH^1.2.3.4.5.6^ISO", "1240", false),
            row("9", "LAB|LAB", "95", true),
        ];
        let widths = Widths::fit(&rows);
        let lines: Vec<String> = std::iter::once(widths.header())
            .chain(rows.iter().map(|r| widths.line(r)))
            .collect();
        let peer_at: Vec<usize> = lines
            .iter()
            .map(|l| l.find("127.0.0.1").unwrap_or(0))
            .collect();
        assert_eq!(peer_at[1], peer_at[2], "{lines:#?}");
        assert_eq!(lines[0].find("PEER"), Some(peer_at[1]), "{lines:#?}");
        let width = lines[0].len();
        assert_eq!(lines[1].len(), width, "{lines:#?}");
        assert_eq!(
            lines[2].trim_end_matches("  reused-id").len(),
            width,
            "{lines:#?}"
        );
        assert!(
            lines[2].ends_with("95  reused-id") && !lines[1].contains("reused-id"),
            "{lines:#?}"
        );
        assert_eq!(lines[1].find("12"), Some(0), "{lines:#?}");
        assert_eq!(lines[2].find('9'), Some(1), "{lines:#?}");
    }
}

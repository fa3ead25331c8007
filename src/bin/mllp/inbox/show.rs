//! `mllp inbox show`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use mllp::hl7::{Charset, Message};

use super::StoreArg;
use crate::exit;
use crate::send::printable;

/// Print one stored message: its bytes exactly as received (segments end in CR), or with
/// `--segments` one segment per line and one field per line under it, numbered (`PID-5`).
///
/// On a terminal the message is shown as text instead of its bytes: one segment per line,
/// decoded per MSH-18, control characters escaped (`\u{1b}`). The bytes go out unchanged only
/// when stdout is a file or a pipe.
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
        if out.is_terminal() {
            let _ = out.write_all(as_lines(&message.payload).as_bytes());
        } else {
            let _ = out.write_all(&message.payload);
        }
        let _ = out.flush();
        return ExitCode::SUCCESS;
    }
    let parsed = match Message::parse(message.payload.clone()) {
        Ok(m) => m,
        Err(e) => return exit::fail(exit::FAILURE, &e),
    };
    let _ = out.write_all(fields(&parsed).as_bytes());
    ExitCode::SUCCESS
}

/// The set MSH-18 declares, or UTF-8 (with U+FFFD for what does not decode) when the payload
/// does not parse or names a set this build does not decode.
fn charset_of(payload: &[u8]) -> Option<Charset> {
    let message = Message::parse(bytes::Bytes::copy_from_slice(payload)).ok()?;
    message.declared_charset().ok()
}

/// `bytes` as text for a terminal: decoded per `charset` (as UTF-8, lossily, when they are not
/// valid in it), control characters escaped as `mllp send` writes them ([`printable`]:
/// `\u{1b}`), so that a payload cannot move the cursor, change colours or retitle the window.
fn terminal_text(bytes: &[u8], charset: Option<&Charset>) -> String {
    let text = charset
        .and_then(|c| c.decode(bytes).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(bytes));
    printable(&text)
}

/// The payload one segment per line, as [`terminal_text`]. A segment ends at CR (or CR LF); in
/// a message with no CR at all (stored with lenient line endings), at LF. A bare LF in a
/// message whose segments end in CR is data, shown escaped (`\n`), not as a line of its own
/// that would look like another segment.
fn as_lines(payload: &[u8]) -> String {
    let charset = charset_of(payload);
    let by_cr = memchr::memchr(b'\r', payload).is_some();
    let mut out = String::with_capacity(payload.len() + 16);
    let mut rest = payload;
    while !rest.is_empty() {
        let end = if by_cr {
            memchr::memchr(b'\r', rest)
        } else {
            memchr::memchr(b'\n', rest)
        }
        .unwrap_or(rest.len());
        out.push_str(&terminal_text(&rest[..end], charset.as_ref()));
        out.push('\n');
        let skip = match rest[end..] {
            [b'\r', b'\n', ..] => 2,
            [] => 0,
            _ => 1,
        };
        rest = &rest[end + skip..];
    }
    out
}

/// `--segments`: each segment on a line, then each non-empty field on its own line under it,
/// numbered, all as [`terminal_text`] (also when written to a file: it is a view, not the
/// bytes).
fn fields(message: &Message) -> String {
    let charset = message.declared_charset().ok();
    let text = |bytes: &[u8]| terminal_text(bytes, charset.as_ref());
    let mut out = String::new();
    for segment in message.segments() {
        out.push_str(&text(segment.as_bytes()));
        out.push('\n');
        for (n, field) in segment.fields().enumerate() {
            if !field.is_empty() {
                out.push_str(&format!(
                    "  {}-{}: {}\n",
                    segment.id(),
                    n + 1,
                    text(field.as_bytes())
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATIN1: &[u8] =
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\rPID|1||7||M\xFCller\r";

    #[test]
    fn a_terminal_shows_one_segment_per_line_decoded_per_msh_18() {
        assert_eq!(
            as_lines(LATIN1),
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\nPID|1||7||M\u{fc}ller\n"
        );
    }

    #[test]
    fn line_feeds_and_crlf_end_segments_too_and_a_missing_last_terminator_is_added() {
        let crlf = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\r\nPID|1\r\nPV1|1";
        let lf = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\nPID|1\nPV1|1";
        for payload in [&crlf[..], &lf[..]] {
            assert_eq!(
                as_lines(payload),
                "MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\nPID|1\nPV1|1\n"
            );
        }
    }

    /// In a message whose segments end in CR, a bare LF is data (a report's text): shown
    /// escaped, not as a line of its own that would look like another segment.
    #[test]
    fn a_bare_line_feed_in_a_cr_message_is_shown_escaped() {
        let payload = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rNTE|x\ny\r";
        assert_eq!(
            as_lines(payload),
            "MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\nNTE|x\\ny\n"
        );
    }

    #[test]
    fn control_characters_reach_a_terminal_escaped() {
        // ESC ] 0 ; ... BEL retitles a terminal window; ESC [ 2 J clears it.
        let payload =
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rNTE|1||\x1b]0;owned\x07\x1b[2J\tok\x7f\r";
        let shown = as_lines(payload);
        assert_eq!(
            shown.lines().nth(1),
            Some("NTE|1||\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\tok\\u{7f}")
        );
        assert!(!shown.contains('\u{1b}'));
    }

    #[test]
    fn bytes_invalid_in_the_declared_set_still_show() {
        let payload = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||\xFF\r";
        assert_eq!(as_lines(payload).lines().nth(1), Some("PID|1||\u{fffd}"));
    }

    proptest::proptest! {
        /// Whatever bytes were stored, and whatever MSH-18 they claim, what `show` writes to a
        /// terminal holds no control character but its own line feeds.
        #[test]
        fn no_control_character_reaches_a_terminal(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            charset in proptest::sample::select(vec!["", "8859/1", "UNICODE UTF-8", "GB 18030", "ISO IR87"]),
        ) {
            let mut payload = format!("MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5||||||{charset}\r")
                .into_bytes();
            payload.extend_from_slice(&body);
            let shown = as_lines(&payload);
            proptest::prop_assert!(
                !shown.chars().any(|c| c.is_control() && c != '\n'),
                "{shown:?}"
            );
            if let Ok(message) = Message::parse(bytes::Bytes::from(payload)) {
                let shown = fields(&message);
                proptest::prop_assert!(
                    !shown.chars().any(|c| c.is_control() && c != '\n'),
                    "{shown:?}"
                );
            }
        }
    }

    #[test]
    fn fields_are_numbered_and_decoded() {
        let message = Message::parse(bytes::Bytes::from_static(LATIN1)).unwrap();
        let shown = fields(&message);
        assert!(shown.contains("\nPID|1||7||M\u{fc}ller\n"), "{shown}");
        assert!(shown.contains("\n  PID-5: M\u{fc}ller\n"), "{shown}");
        assert!(shown.contains("\n  MSH-18: 8859/1\n"), "{shown}");
    }
}

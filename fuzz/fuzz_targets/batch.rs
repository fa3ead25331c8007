//! Feeds arbitrary bytes to the batch envelope parser (`Batch::parse`) and builds what the
//! server answers: for an envelope that parses, an ACK per message (AA for one that parses, the
//! best-effort AR for one that does not) wrapped by `Ack::batch`; for one that does not, the
//! single AR of `Ack::reject_batch`.
//!
//! Checks: no panic; every message of a parsed batch starts with MSH and the counts agree; the
//! batch reply holds no MLLP block character (it could not be framed) and parses back as a batch
//! with the same groups and as many ACKs in each; the AR for a malformed envelope parses, with
//! MSA-1 AR. An envelope error's text never holds a byte the payload had past the segment ids:
//! a count that is not a number is not echoed.
//!
//! Run with: `cargo +nightly fuzz run batch` (from the repository root).
//!
//! Byte 0: bit 0 chooses strict (0) or lenient (1) line endings; the rest is the payload (one
//! with a block character is skipped: the framer never delivers one).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mllp::ack::{Ack, AckCode, AckOptions, Diagnostic};
use mllp::hl7::{Batch, BatchError, Message, ParseOptions};

/// Whether `bytes` hold no MLLP block character (so they can be framed).
fn frameable(bytes: &[u8]) -> bool {
    !bytes.iter().any(|&b| b == 0x0b || b == 0x1c)
}

fuzz_target!(|data: &[u8]| {
    let [control, payload @ ..] = data else {
        return;
    };
    // The framer never delivers a payload holding a block character.
    if !frameable(payload) {
        return;
    }
    let options = ParseOptions::default().lenient_line_endings(control & 1 == 1);
    // Replies are read back as a lenient peer reads them.
    let lenient = ParseOptions::default().lenient_line_endings(true);
    let acks = AckOptions::default();
    let raw = Bytes::copy_from_slice(payload);
    match Batch::parse(raw.clone(), &options) {
        Ok(batch) => {
            let mut total = 0;
            let mut answers = Vec::new();
            for group in batch.groups() {
                let mut answer = Vec::new();
                for message in group.messages() {
                    assert!(
                        message.starts_with(b"MSH"),
                        "a batch message starts with MSH"
                    );
                    answer.push(match Message::parse_with(message.clone(), &options) {
                        Ok(parsed) => Ack::build(&parsed, AckCode::AA, &[], &acks),
                        Err(error) => {
                            Ack::reject_unparseable(message, &error.to_diagnostic(), &acks)
                        }
                    });
                }
                total += group.messages().len();
                answers.push(answer);
            }
            assert_eq!(batch.message_count(), total);
            assert_eq!(batch.messages().count(), total);
            let reply = Ack::batch(&batch, &answers, &acks);
            let bytes = reply.as_bytes();
            assert!(
                frameable(bytes),
                "a batch reply holds an MLLP block character"
            );
            let back = Batch::parse(bytes.clone(), &lenient).unwrap_or_else(|e| {
                panic!(
                    "the batch reply does not parse: {e}\n{}",
                    String::from_utf8_lossy(bytes).replace("\r", "\n")
                )
            });
            assert_eq!(back.groups().len(), batch.groups().len());
            for (sent, answered) in batch.groups().iter().zip(back.groups()) {
                assert_eq!(answered.messages().len(), sent.messages().len());
                for ack in answered.messages() {
                    Message::parse_with(ack.clone(), &lenient).unwrap_or_else(|e| {
                        panic!("an ACK in the batch reply does not parse: {e}")
                    });
                }
            }
        }
        Err(error) => {
            let text = error.to_string();
            if let BatchError::CountMismatch { .. } = &error {
                // Only digits of the payload may appear: the count as declared, when it is one.
                let shape: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
                assert!(
                    shape.starts_with("BTS- declares ")
                        || shape.starts_with("FTS- declares ")
                        || shape.starts_with("BTS- is not a count")
                        || shape.starts_with("FTS- is not a count"),
                    "count error echoes payload: {text:?}"
                );
            }
            let diagnostic = Diagnostic::error(error.error_code(), text);
            let reply = Ack::reject_batch(&raw, AckCode::AR, &[diagnostic], &acks);
            assert!(
                frameable(reply.as_bytes()),
                "an AR holds an MLLP block character"
            );
            let parsed = Message::parse_with(reply.as_bytes().clone(), &lenient)
                .unwrap_or_else(|e| panic!("the AR for a bad envelope does not parse: {e}"));
            assert_eq!(
                parsed.get("MSA-1").ok().flatten().and_then(|v| v.to_str()),
                Some("AR")
            );
        }
    }
});

//! Feeds arbitrary bytes to the HL7 parser, walks every value it finds, and builds the ACK the
//! server would send: for a message that parses, an AE with a diagnostic; for one that does not,
//! the best-effort AR. Every ACK must itself parse, and its MSA-2 must be the message's MSH-10.
//! The MSH-9.1, MSH-9.2 and MSH-10 the parser locates up front (for routing, metrics and the
//! ACK) must equal what the general field accessors read.
//!
//! Run with: `cargo +nightly fuzz run parse` (from the repository root).
//!
//! Byte 0 chooses strict (even) or lenient (odd) line endings; the rest is the payload.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mllp::ack::{Ack, AckCode, AckOptions, Diagnostic, ErrorCode};
use mllp::hl7::{Message, ParseOptions};

fuzz_target!(|data: &[u8]| {
    let [control, payload @ ..] = data else {
        return;
    };
    let options = ParseOptions::default().lenient_line_endings(control & 1 == 1);
    let options_ack = AckOptions::default().include_err7(true);
    match Message::parse_with(Bytes::copy_from_slice(payload), &options) {
        Ok(message) => {
            let slow = |n: usize, component: Option<usize>| -> Option<String> {
                let field = message.msh().field(n)?;
                let value = match component {
                    Some(c) => field.component(c)?,
                    None => field,
                };
                value.to_str().filter(|s| !s.is_empty()).map(str::to_owned)
            };
            assert_eq!(message.message_code().map(str::to_owned), slow(9, Some(1)));
            assert_eq!(message.trigger_event().map(str::to_owned), slow(9, Some(2)));
            assert_eq!(message.control_id().map(str::to_owned), slow(10, None));
            for segment in message.segments() {
                for field in segment.fields() {
                    for repetition in field.repetitions() {
                        for component in repetition.components() {
                            for sub in component.subcomponents() {
                                let _ = sub.decoded();
                            }
                        }
                    }
                }
            }
            for path in ["MSH-9.1", "MSH-10", "PID-3(2).1", "OBX(3)-5", "PID-5.1.2"] {
                let _ = message.get(path).map(|v| v.map(|v| v.decoded()));
            }
            let diagnostic = Diagnostic::error(ErrorCode::ApplicationInternalError, "fuzz");
            let ack = Ack::build(&message, AckCode::AE, &[diagnostic], &options_ack);
            let reparsed = Message::parse(ack.as_bytes().clone()).expect("our ACK parses");
            let msa2 = reparsed.get("MSA-2").unwrap().map(|v| v.as_bytes().to_vec());
            let msh10 = message.get("MSH-10").unwrap().map(|v| v.as_bytes().to_vec());
            assert_eq!(msa2.unwrap_or_default(), msh10.unwrap_or_default());
        }
        Err(error) => {
            let ack = Ack::reject_unparseable(payload, &error.to_diagnostic(), &options_ack);
            Message::parse(ack.as_bytes().clone()).expect("the best-effort AR parses");
        }
    }
});

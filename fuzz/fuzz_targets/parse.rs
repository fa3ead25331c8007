//! Feeds arbitrary bytes to the HL7 parser, walks every value it finds, and builds the ACK the
//! server would send: for a message that parses, one of the six codes with a diagnostic; for one
//! that does not, the best-effort AR. It also reads the message as a received acknowledgment, as
//! the client does. Every ACK must itself parse, with MSA-1 its code and MSA-2 the message's
//! MSH-10.
//! The MSH-9.1, MSH-9.2 and MSH-10 the parser locates up front (for routing, metrics and the
//! ACK) must equal what the general field accessors read.
//!
//! Run with: `cargo +nightly fuzz run parse` (from the repository root).
//!
//! Byte 0: bit 0 chooses strict (0) or lenient (1) line endings, bits 1-3 the ACK code (AA, AE,
//! AR, CA, CE, CR), bit 4 turns ERR-8 off; the rest is the payload. The diagnostic text holds
//! every delimiter, an escape and the MLLP block characters, so the ACK's escaping is exercised
//! on every version (and the ACK must hold no block character, or it could not be framed).
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
    let codes = [
        AckCode::AA,
        AckCode::AE,
        AckCode::AR,
        AckCode::CA,
        AckCode::CE,
        AckCode::CR,
    ];
    let code = codes[usize::from((control >> 1) & 7) % codes.len()];
    let options_ack = AckOptions::default()
        .include_err7(true)
        .include_err8(control & 0x10 == 0);
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
            // What a client does with a reply: read it as an acknowledgment.
            if let Some(reply) = Ack::from_message(message.clone()) {
                let _ = (reply.code(), reply.acknowledged_control_id(), reply.control_id());
            }
            for path in ["MSH-9.1", "MSH-10", "PID-3(2).1", "OBX(3)-5", "PID-5.1.2"] {
                let _ = message.get(path).map(|v| v.map(|v| v.decoded()));
            }
            let diagnostic =
                Diagnostic::error(ErrorCode::ApplicationInternalError, "fuzz |^~\\&# \\E\\ x\u{1c}\u{0b}");
            let ack = Ack::build(&message, code, &[diagnostic], &options_ack);
            assert_eq!(ack.code(), code);
            // What the framer delivers never holds a block character; then neither may the ACK.
            let blocks = |bytes: &[u8]| bytes.iter().any(|&b| b == 0x0B || b == 0x1C);
            if !blocks(payload) {
                assert!(!blocks(ack.as_bytes()), "our ACK can be framed");
            }
            let reparsed = Message::parse(ack.as_bytes().clone()).expect("our ACK parses");
            let msa1 = reparsed.get("MSA-1").unwrap().map(|v| v.as_bytes().to_vec());
            assert_eq!(msa1.as_deref(), Some(code.as_str().as_bytes()));
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

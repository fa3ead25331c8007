//! Feeds arbitrary bytes to the character-set code that the `app::Charsets` plugin runs on
//! every message: MSH-18 read as a table 0211 name, the whole message checked against it, and
//! values decoded to UTF-8 text.
//!
//! Checks: no panic; for every set this library decodes, a check finds no invalid byte exactly
//! when decoding succeeds, and an invalid byte's offset lies inside the bytes, after a prefix
//! that decodes; `Message::check_charset`'s offset lies inside the message.
//!
//! Run with: `cargo +nightly fuzz run charset` (from the repository root).
//!
//! Byte 0: bit 0 chooses strict (0) or lenient (1) line endings; the rest is the payload, tried
//! both as a message and as raw bytes for each set.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mllp::hl7::{Charset, CharsetError, Message, ParseOptions};

const SETS: &[&[u8]] = &[
    b"ASCII",
    b"8859/1",
    b"8859/2",
    b"8859/5",
    b"8859/7",
    b"8859/9",
    b"8859/15",
    b"UNICODE UTF-8",
    b"GB 18030-2000",
    b"KS X 1001",
    b"BIG-5",
];

fuzz_target!(|data: &[u8]| {
    let [control, payload @ ..] = data else {
        return;
    };
    for name in SETS {
        let charset = Charset::from_msh18(name).expect("a supported set");
        match charset.first_invalid(payload) {
            None => {
                charset
                    .decode(payload)
                    .expect("no invalid byte, so it decodes");
            }
            Some(offset) => {
                assert!(offset < payload.len(), "{charset}: offset {offset} outside");
                assert!(
                    matches!(charset.decode(payload), Err(CharsetError::Invalid { offset: o, .. }) if o == offset)
                );
                charset
                    .decode(&payload[..offset])
                    .unwrap_or_else(|e| panic!("{charset}: the prefix before {offset}: {e}"));
            }
        }
    }
    let _ = Charset::from_msh18(payload);
    let options = ParseOptions::default().lenient_line_endings(control & 1 == 1);
    let Ok(message) = Message::parse_with(Bytes::copy_from_slice(payload), &options) else {
        return;
    };
    if let Err(CharsetError::Invalid { offset, .. }) = message.check_charset() {
        assert!(offset < message.as_bytes().len());
    }
    for path in [
        "MSH-3",
        "MSH-9.1",
        "MSH-10",
        "PID-5",
        "PID-5.1",
        "OBX-5(2).1.2",
        "NTE-3",
    ] {
        let _ = message.text(path);
    }
});

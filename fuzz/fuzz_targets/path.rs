//! Feeds arbitrary strings to the field path parser and resolves them against a real message.
//!
//! Run with: `cargo +nightly fuzz run path` (from the repository root).
//!
//! Checked: no panic; a path that parses prints in a canonical form that parses back to the same
//! path; `Message::get` agrees with the parser (an error exactly when the path does not parse)
//! and never panics, whatever the indexes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mllp::hl7::{FieldPath, Message};

const ADT: &[u8] = include_bytes!("../../tests/fixtures/adt_a01.hl7");

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = text.parse::<FieldPath>();
    if let Ok(path) = &parsed {
        let canonical = path.to_string();
        assert_eq!(canonical.parse::<FieldPath>().as_ref(), Ok(path), "{canonical}");
    }
    let message = Message::parse(Bytes::from_static(ADT)).expect("the fixture parses");
    match message.get(&text) {
        Ok(value) => {
            assert!(parsed.is_ok());
            if let Some(value) = value {
                let _ = value.decoded();
            }
        }
        Err(error) => assert_eq!(parsed.err(), Some(error)),
    }
});

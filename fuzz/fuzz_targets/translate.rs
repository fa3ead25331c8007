//! Feeds arbitrary messages and delimiter sets to `hl7::with_delimiters`, which rewrites a
//! message for a partner with other delimiters (custom replies, forwarding).
//!
//! Checks: no panic; the rewritten message parses under the same options; it has the same
//! segments, fields, repetitions, components and subcomponents; every value that holds no
//! escape sequence reads the same once decoded (a delimiter of the new set written as data
//! comes back as that byte; a truncation character becomes the new set's, where it has one); and the rewrite back to the original delimiters has that structure
//! too. Values with escape sequences are left out of the value check: `\H\`, `\X..\` and the
//! like are kept, under the new escape character, as they are.
//!
//! Run with: `cargo +nightly fuzz run translate` (from the repository root).
//!
//! Byte 0: bit 0 chooses strict (0) or lenient (1) line endings, bit 1 a truncation character
//! (v2.7) in the new set; bytes 1-6: the new field separator and encoding characters (an input
//! whose set `Delimiters::new` refuses is skipped); the rest is the message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mllp::hl7::{Delimiters, Message, ParseOptions, with_delimiters};

/// Where a subcomponent sits: segment, field, repetition, component, subcomponent.
type Position = [usize; 5];

/// Every subcomponent of every segment: its position, raw bytes and decoded bytes. Fields 1
/// and 2 of an MSH segment (also one that is not the first: a parse does not refuse it) are
/// left out: they are the delimiters themselves, not values.
fn values(message: &Message) -> Vec<(Position, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (s, segment) in message.segments().enumerate() {
        let skip = if segment.as_bytes().starts_with(b"MSH") {
            2
        } else {
            0
        };
        for (f, field) in segment.fields().enumerate().skip(skip) {
            for (r, repetition) in field.repetitions().enumerate() {
                for (c, component) in repetition.components().enumerate() {
                    for (u, sub) in component.subcomponents().enumerate() {
                        let raw = sub.as_bytes().to_vec();
                        out.push(([s, f, r, c, u], raw, sub.decoded().into_owned()));
                    }
                }
            }
        }
    }
    out
}

/// The positions alone: the message's structure.
fn positions(values: &[(Position, Vec<u8>, Vec<u8>)]) -> Vec<Position> {
    values.iter().map(|(p, _, _)| *p).collect()
}

fuzz_target!(|data: &[u8]| {
    let [control, f, c, r, e, s, t, payload @ ..] = data else {
        return;
    };
    let options = ParseOptions::default().lenient_line_endings(control & 1 == 1);
    let encoding: Vec<u8> = if control & 2 == 2 {
        vec![*c, *r, *e, *s, *t]
    } else {
        vec![*c, *r, *e, *s]
    };
    let Ok(to) = Delimiters::new(*f, &encoding) else {
        return;
    };
    // Line ending bytes cannot be delimiters on the wire.
    if [*f, *c, *r, *e, *s]
        .iter()
        .chain(to.truncation().iter())
        .any(|&b| b == b'\r' || b == b'\n')
    {
        return;
    }
    let Ok(message) = Message::parse_with(Bytes::copy_from_slice(payload), &options) else {
        return;
    };
    let from = *message.delimiters();
    let rewritten = with_delimiters(&message, &to);
    let parsed = Message::parse_with(rewritten.clone(), &options)
        .unwrap_or_else(|e| panic!("the rewritten message does not parse: {e}"));
    assert_eq!(*parsed.delimiters(), to);
    let before = values(&message);
    let after = values(&parsed);
    assert_eq!(positions(&before), positions(&after), "structure");
    // A truncation character keeps its role, as the new one, where the new set has one.
    let truncation = |b: u8| match (from.truncation(), to.truncation()) {
        (Some(old), Some(new)) if b == old => new,
        _ => b,
    };
    for ((position, raw, decoded), (_, _, again)) in before.iter().zip(&after) {
        if !raw.contains(&from.escape()) {
            let expected: Vec<u8> = decoded.iter().map(|&b| truncation(b)).collect();
            assert_eq!(&expected, again, "value at {position:?}");
        }
    }
    let back = with_delimiters(&parsed, &from);
    let back = Message::parse_with(back, &options)
        .unwrap_or_else(|e| panic!("the message rewritten back does not parse: {e}"));
    assert_eq!(
        positions(&values(&back)),
        positions(&before),
        "structure, back"
    );
});

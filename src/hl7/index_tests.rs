//! The parse index's size: bounded before the parse, at most 5 times the message above 64 KiB.

use bytes::Bytes;

use crate::hl7::{Message, ParseOptions};

/// A 1 MiB message of `fill` after its MSH.
fn flood(fill: &[u8]) -> Bytes {
    let mut message = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5".to_vec();
    while message.len() < 1 << 20 {
        message.extend_from_slice(fill);
    }
    Bytes::from(message)
}

/// Messages made only of delimiters (field separators, tiny segments, runs of segment
/// terminators) get an index of at most 5 times their size, allocated once at its exact
/// size: what `index_size_bound` promised before the parse.
#[test]
fn index_of_a_delimiter_flood_stays_within_five_times_the_message() {
    let options = ParseOptions::default();
    for fill in [&b"|"[..], b"\rZZZ", b"\rZZZ|", b"\r", b"\rZZZ|^~&"] {
        let bytes = flood(fill);
        let bound = Message::index_size_bound(&bytes, &options);
        let message = Message::parse(bytes.clone()).unwrap();
        let size = message.index_size();
        assert!(size <= bound, "{fill:?}: {size} > bound {bound}");
        assert!(
            size <= 5 * bytes.len() + 256,
            "{fill:?}: index {size} for {} bytes",
            bytes.len()
        );
    }
}

/// Below 64 KiB the bound covers the growth of the index's vectors.
#[test]
fn bound_covers_small_messages() {
    let options = ParseOptions::default();
    for fill in [&b"|"[..], b"\rZZZ", b"\rPID|1||123^^^H^MR||DOE^JOHN"] {
        for len in [64, 1000, 20_000, 60_000] {
            let mut message = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5".to_vec();
            while message.len() < len {
                message.extend_from_slice(fill);
            }
            let bytes = Bytes::from(message);
            let bound = Message::index_size_bound(&bytes, &options);
            let size = Message::parse(bytes).unwrap().index_size();
            assert!(size <= bound, "{fill:?} x {len}: {size} > {bound}");
        }
    }
}

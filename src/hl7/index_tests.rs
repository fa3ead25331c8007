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
        let ceiling = Message::index_size_ceiling(bytes.len());
        assert!(
            bound <= ceiling,
            "{fill:?}: bound {bound} > ceiling {ceiling}"
        );
        assert!(
            ceiling <= 9 * bytes.len() + 1024,
            "{fill:?}: ceiling {ceiling}"
        );
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
            let ceiling = Message::index_size_ceiling(bytes.len());
            let size = Message::parse(bytes).unwrap().index_size();
            assert!(size <= bound, "{fill:?} x {len}: {size} > {bound}");
            assert!(
                bound <= ceiling,
                "{fill:?} x {len}: {bound} > ceiling {ceiling}"
            );
        }
    }
}

/// A header-only route (router, ACK, store metadata, telemetry) never builds the index of the
/// segments after MSH; the first read past MSH builds it, once, for every clone.
#[test]
fn reading_the_header_does_not_index_the_rest() {
    let message = Message::parse(Bytes::from_static(
        b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240102030405||ORU^R01^ORU_R01|MSG001|P|2.5.1\r\
          PID|1||123^^^HOSP^MR||DOE^JANE\rOBX|1|NM|GLU||5.5\r",
    ))
    .unwrap();
    assert_eq!(message.control_id(), Some("MSG001"));
    assert_eq!(message.message_structure(), Some("ORU_R01"));
    assert_eq!(message.version(), Some("2.5.1"));
    assert_eq!(message.sending_facility(), b"HOSP");
    assert_eq!(message.get("MSH-9.2").unwrap().unwrap().as_bytes(), b"R01");
    assert_eq!(message.msh().field_count(), 12);
    assert_eq!(message.msh().sequence(), 1);
    assert_eq!(message.segment_count(), 3);
    assert!(
        !message.index_is_built(),
        "the header alone built the index"
    );

    let clone = message.clone();
    assert_eq!(message.get("OBX-5").unwrap().unwrap().as_bytes(), b"5.5");
    assert!(clone.index_is_built(), "the clone shares the index");
    assert_eq!(
        clone.segments().map(|s| s.id()).collect::<Vec<_>>(),
        ["MSH", "PID", "OBX"]
    );
    let before = message.index_size();
    assert_eq!(clone.get("PID-5.2").unwrap().unwrap().as_bytes(), b"JANE");
    assert_eq!(
        message.index_size(),
        before,
        "index_size counts the index before it is built"
    );
}

/// An MSH with more field separators than the parse keeps inline is indexed whole at parse
/// time, and reads the same.
#[test]
fn a_long_header_is_indexed_at_parse() {
    let mut raw = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|42|P|2.5".to_vec();
    raw.extend_from_slice(&b"|x".repeat(40));
    raw.extend_from_slice(b"|LAST\rPID|1\r");
    let message = Message::parse(Bytes::from(raw)).unwrap();
    assert!(message.index_is_built());
    assert_eq!(message.control_id(), Some("42"));
    assert_eq!(message.msh().field_count(), 53);
    assert_eq!(message.get("MSH-53").unwrap().unwrap().as_bytes(), b"LAST");
    assert_eq!(message.segment("PID").unwrap().field_count(), 1);
}

mod lazy {
    use proptest::prelude::*;

    use crate::hl7::ParseOptions;
    use crate::hl7::parse::{count_delimiters, eager_index, head, head_in_windows, index};

    /// Bytes that are mostly near-HL7: an MSH (sometimes damaged), then segments built from
    /// ids, delimiters, both line endings and a few letters.
    fn near_hl7() -> impl Strategy<Value = Vec<u8>> {
        let alphabet = prop::sample::select(b"MSHPIDOBXZ1a |^~\\&#\r\r\r\n\n".to_vec());
        let head = prop::sample::select(vec![
            &b"MSH|^~\\&|"[..],
            b"MSH|^~\\&",
            b"\rMSH|^~\\&|A|B",
            b"\nMSH|^~\\&|",
            b"MSH#^~\\&#",
            b"MSH|",
            b"MSH",
            b"PID|",
            b"",
        ]);
        (head, prop::collection::vec(alphabet, 0..120)).prop_map(|(head, tail)| {
            let mut bytes = head.to_vec();
            bytes.extend(tail);
            bytes
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The vectorised count of field separators and terminators is the plain count, on
        /// inputs long enough for its blocks of 8160 bytes and a remainder.
        #[test]
        fn delimiters_are_counted_exactly(
            bytes in prop::collection::vec(prop::sample::select(b"|#\r\nAB".to_vec()), 0..20_000),
            lenient in any::<bool>(),
        ) {
            let fs = b'|';
            let plain = (
                bytes.iter().filter(|&&x| x == fs).count(),
                bytes.iter().filter(|&&x| x == b'\r' || (lenient && x == b'\n')).count(),
            );
            prop_assert_eq!(count_delimiters(&bytes, fs, lenient), plain);
        }

        /// The parse checks the rest of the message without indexing it: it must accept and
        /// reject exactly what the one-pass index does, with the same error, and the index it
        /// builds later must be the same, at the size the parse counted.
        #[test]
        fn lazy_parse_finds_what_the_eager_parse_finds(bytes in near_hl7(), lenient in any::<bool>()) {
            let options = ParseOptions::default().lenient_line_endings(lenient);
            let eager = eager_index(&bytes, &options);
            // Windows of every small size put segments and terminators across their edges.
            let whole = format!("{:?}", head(&bytes, &options));
            for window in 1..12 {
                prop_assert_eq!(&format!("{:?}", head_in_windows(&bytes, &options, window)), &whole);
            }
            match (head(&bytes, &options), eager) {
                (Ok(head), Ok(eager)) => {
                    let lazy = index(&bytes, &options, &head).expect("accepted by the parse");
                    prop_assert_eq!(&lazy.separators, &eager.separators);
                    prop_assert_eq!(lazy.separators.len(), head.total_separators as usize);
                    prop_assert_eq!(lazy.separators.capacity(), lazy.separators.len());
                    prop_assert_eq!(lazy.segments.len(), head.total_segments as usize);
                    prop_assert_eq!(lazy.segments.capacity(), lazy.segments.len());
                    for (a, b) in lazy.segments.iter().zip(&eager.segments) {
                        prop_assert_eq!(
                            (a.start, a.end, a.first_separator, a.separators, a.id),
                            (b.start, b.end, b.first_separator, b.separators, b.id)
                        );
                    }
                    let msh = eager.segments[0];
                    prop_assert_eq!((head.msh.start, head.msh.end), (msh.start, msh.end));
                    if head.inline {
                        let count = head.msh.separators as usize;
                        prop_assert_eq!(count, msh.separators as usize);
                        prop_assert_eq!(&head.separators[..count], &eager.separators[..count]);
                    }
                }
                (Err(lazy), Err(eager)) => prop_assert_eq!(lazy, eager),
                (lazy, eager) => prop_assert!(
                    false,
                    "parse {:?}, eager index {:?}",
                    lazy.map(|_| ()),
                    eager.map(|_| ())
                ),
            }
        }
    }
}

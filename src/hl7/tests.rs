//! Unit tests of the message model.

use bytes::Bytes;

use super::diagnostic::ErrorCode;
use super::*;

const ADT: &[u8] = b"MSH|^~\\&|SEND|FAC^1.2.3^ISO|RECV|RFAC|20240102030405||ADT^A01^ADT_A01|CTRL42|P^T|2.5.1|||AL|ER||8859/1~UNICODE UTF-8\r\
EVN|A01|20240102030405\r\
PID|1||111^^^H^MR~222^^^S^SS||DOE^JOHN^Q^JR&SR||19700101|M|||1 MAIN ST^^TOWN^ST^12345\r\
OBX|1|TX|NOTE||A\\F\\B\\S\\C\r\
OBX|2|NM|WT||72|kg\r";

fn parse(bytes: &'static [u8]) -> Result<Message, ParseError> {
    Message::parse(Bytes::from_static(bytes))
}

fn adt() -> Message {
    parse(ADT).unwrap()
}

fn get<'a>(m: &'a Message, path: &str) -> Option<&'a [u8]> {
    m.get(path).unwrap().map(|v| v.as_bytes())
}

/// The MSH accessors read MSH-9..18 with the standard's numbering.
#[test]
fn msh_accessors_read_header_fields() {
    let m = adt();
    assert_eq!(m.message_code(), Some("ADT"));
    assert_eq!(m.trigger_event(), Some("A01"));
    assert_eq!(m.message_structure(), Some("ADT_A01"));
    assert_eq!(m.control_id(), Some("CTRL42"));
    assert_eq!(m.processing_id(), Some("P"));
    assert_eq!(m.version(), Some("2.5.1"));
    assert_eq!(m.accept_ack_type(), Some(AckRequirement::Always));
    assert_eq!(m.application_ack_type(), Some(AckRequirement::ErrorOnly));
    assert_eq!(m.charset(), Some("8859/1"));
    assert_eq!(m.sending_application(), b"SEND");
    assert_eq!(m.sending_facility(), b"FAC^1.2.3^ISO");
    assert_eq!(m.receiving_application(), b"RECV");
    assert_eq!(m.receiving_facility(), b"RFAC");
}

/// Absent or empty header fields give `None` (or an empty slice), never a panic.
#[test]
fn msh_accessors_are_none_when_absent() {
    let m = parse(b"MSH|^~\\&|||||||\r").unwrap();
    assert_eq!(m.message_code(), None);
    assert_eq!(m.trigger_event(), None);
    assert_eq!(m.control_id(), None);
    assert_eq!(m.version(), None);
    assert_eq!(m.accept_ack_type(), None);
    assert_eq!(m.charset(), None);
    assert_eq!(m.sending_application(), b"");
    assert_eq!(m.receiving_facility(), b"");
    let bare = parse(b"MSH|^~\\&").unwrap();
    assert_eq!(bare.segment_count(), 1);
    assert_eq!(bare.msh().field_count(), 2);
    assert_eq!(bare.sending_application(), b"");
}

/// Unknown MSH-15/16 values are treated as absent.
#[test]
fn unknown_ack_requirement_is_none() {
    let m = parse(b"MSH|^~\\&|||||||ADT^A01|1|P|2.5|||XX|al\r").unwrap();
    assert_eq!(m.accept_ack_type(), None);
    assert_eq!(m.application_ack_type(), None);
}

/// MSH-1 is the field separator and MSH-2 the encoding characters, both literal.
#[test]
fn msh_1_and_2_follow_the_standard_numbering() {
    let m = adt();
    assert_eq!(get(&m, "MSH-1"), Some(&b"|"[..]));
    assert_eq!(get(&m, "MSH-2"), Some(&b"^~\\&"[..]));
    assert_eq!(get(&m, "MSH-2.1"), Some(&b"^~\\&"[..]));
    assert_eq!(get(&m, "MSH-2.2"), None);
    assert_eq!(&*m.get("MSH-2").unwrap().unwrap().decoded(), b"^~\\&");
    assert_eq!(get(&m, "MSH-3"), Some(&b"SEND"[..]));
    assert_eq!(get(&m, "MSH-4.2"), Some(&b"1.2.3"[..]));
    assert_eq!(get(&m, "MSH-18(2)"), Some(&b"UNICODE UTF-8"[..]));
    assert_eq!(m.msh().field_count(), 18);
}

/// Paths reach repetitions, components and subcomponents, and occurrences of a segment.
#[test]
fn paths_reach_every_level() {
    let m = adt();
    assert_eq!(get(&m, "PID-3"), Some(&b"111^^^H^MR~222^^^S^SS"[..]));
    assert_eq!(get(&m, "PID-3.1"), Some(&b"111"[..]));
    assert_eq!(get(&m, "PID-3(2)"), Some(&b"222^^^S^SS"[..]));
    assert_eq!(get(&m, "PID-3(2).5"), Some(&b"SS"[..]));
    assert_eq!(get(&m, "PID-3(3)"), None);
    assert_eq!(get(&m, "PID-5.4"), Some(&b"JR&SR"[..]));
    assert_eq!(get(&m, "PID-5.4.2"), Some(&b"SR"[..]));
    assert_eq!(get(&m, "PID-5.4.3"), None);
    assert_eq!(get(&m, "PID-8"), Some(&b"M"[..]));
    assert_eq!(get(&m, "PID-8.1"), Some(&b"M"[..]));
    assert_eq!(get(&m, "PID-8.1.1"), Some(&b"M"[..]));
    assert_eq!(get(&m, "PID-8.2"), None);
    assert_eq!(get(&m, "PID-2"), Some(&b""[..]));
    assert_eq!(get(&m, "PID-12"), None);
    assert_eq!(get(&m, "OBX(2)-5"), Some(&b"72"[..]));
    assert_eq!(get(&m, "OBX(2)-6"), Some(&b"kg"[..]));
    assert_eq!(get(&m, "OBX(3)-5"), None);
    assert_eq!(get(&m, "ZZZ-1"), None);
    assert!(m.get("PID-x").is_err());
}

/// Escape sequences stay raw in `as_bytes` and are decoded by `decoded`.
#[test]
fn values_decode_escapes_on_access() {
    let m = adt();
    let v = m.get("OBX-5").unwrap().unwrap();
    assert_eq!(v.as_bytes(), b"A\\F\\B\\S\\C");
    assert_eq!(&*v.decoded(), b"A|B^C");
    assert_eq!(v.components().count(), 1);
}

/// Iterators split at each level, and a value below a level is its own single part.
#[test]
fn value_iterators_split_each_level() {
    let m = adt();
    let pid3 = m.get("PID-3").unwrap().unwrap();
    let reps: Vec<&[u8]> = pid3.repetitions().map(|v| v.as_bytes()).collect();
    assert_eq!(reps, [&b"111^^^H^MR"[..], b"222^^^S^SS"]);
    let comps: Vec<&[u8]> = pid3.components().map(|v| v.as_bytes()).collect();
    assert_eq!(comps, [&b"111"[..], b"", b"", b"H", b"MR"]);
    let name = m.get("PID-5").unwrap().unwrap();
    let subs: Vec<&[u8]> = name
        .component(4)
        .unwrap()
        .subcomponents()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(subs, [&b"JR"[..], b"SR"]);
    let sex = m.get("PID-8.1").unwrap().unwrap();
    assert_eq!(sex.repetitions().count(), 1);
    assert_eq!(sex.components().count(), 1);
    let empty = m.get("PID-2").unwrap().unwrap();
    assert_eq!(empty.repetitions().count(), 1);
    assert!(empty.is_empty());
    assert!(empty.component(0).is_none());
}

/// Segment lookup by id, occurrence and iteration.
#[test]
fn segments_by_id_and_sequence() {
    let m = adt();
    let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
    assert_eq!(ids, ["MSH", "EVN", "PID", "OBX", "OBX"]);
    let obx: Vec<usize> = m.segments_by_id("OBX").map(|s| s.sequence()).collect();
    assert_eq!(obx, [1, 2]);
    assert_eq!(m.segments_by_id("OBXX").count(), 0);
    let second = m.segments_by_id("OBX").nth(1).unwrap();
    assert_eq!(second.position(), 5);
    assert_eq!(second.location(), Location::new("OBX", 2));
    assert_eq!(second.as_bytes(), b"OBX|2|NM|WT||72|kg");
    assert_eq!(second.fields().count(), 6);
    assert_eq!(
        m.segment("EVN").unwrap().field(1).unwrap().as_bytes(),
        b"A01"
    );
    assert!(m.segment("NK1").is_none());
}

/// The HL7 explicit null `""` is told apart from an empty value.
#[test]
fn explicit_null_is_detected() {
    let m = parse(b"MSH|^~\\&\rPID|1|\"\"|\r").unwrap();
    assert!(m.get("PID-2").unwrap().unwrap().is_null());
    assert!(!m.get("PID-3").unwrap().unwrap().is_null());
}

/// Custom delimiters are read from MSH-1/MSH-2 and used for every split.
#[test]
fn custom_delimiters_drive_splitting() {
    let m = parse(b"MSH#$*@!#APP#FAC#####ORU$R01#X1#P#2.4\rOBX#1#ST#C$D#1#a@F@b$c!d*e\r").unwrap();
    let d = m.delimiters();
    assert_eq!(
        (
            d.field(),
            d.component(),
            d.repetition(),
            d.escape(),
            d.subcomponent()
        ),
        (b'#', b'$', b'*', b'@', b'!')
    );
    assert_eq!(m.trigger_event(), Some("R01"));
    assert_eq!(get(&m, "MSH-2"), Some(&b"$*@!"[..]));
    assert_eq!(get(&m, "OBX-5.2.2"), Some(&b"d"[..]));
    assert_eq!(get(&m, "OBX-5(2)"), Some(&b"e"[..]));
    assert_eq!(&*m.get("OBX-5.1").unwrap().unwrap().decoded(), b"a#b");
}

/// A v2.7 truncation character is the fifth encoding character and `\P\` decodes to it.
#[test]
fn truncation_character_is_read() {
    let m = parse(b"MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|1|P|2.7\rNTE|1||cut\\P\\\r").unwrap();
    assert_eq!(m.delimiters().truncation(), Some(b'#'));
    assert_eq!(get(&m, "MSH-2"), Some(&b"^~\\&#"[..]));
    assert_eq!(get(&m, "MSH-3"), Some(&b"A"[..]));
    assert_eq!(&*m.get("NTE-3").unwrap().unwrap().decoded(), b"cut#");
}

/// `Debug` shows ids and lengths, never content.
#[test]
fn debug_never_prints_content() {
    let m = parse(b"MSH|^~\\&|||||||ADT^A01|1|P|2.5\rPID|1||SENTINEL-4711^^^H||SENTINEL-NAME\r")
        .unwrap();
    let pid = m.segment("PID").unwrap();
    let field = pid.field(3).unwrap();
    for text in [
        format!("{m:?}"),
        format!("{m:#?}"),
        format!("{pid:?}"),
        format!("{field:?}"),
        format!("{:?}", field.components()),
        format!("{:?}", field.component(1).unwrap()),
    ] {
        assert!(!text.contains("SENTINEL"), "{text}");
    }
    assert_eq!(
        format!("{m:?}"),
        "Message { len: 71, segments: [MSH(30), PID(39)] }"
    );
}

/// Clones share the buffer: no copy of the payload.
#[test]
fn clone_shares_the_buffer() {
    let m = adt();
    let c = m.clone();
    assert_eq!(m.as_bytes().as_ptr(), c.as_bytes().as_ptr());
    assert_eq!(c.into_bytes(), Bytes::from_static(ADT));
}

/// Empty segments and a missing final CR are accepted; the bytes stay as received.
#[test]
fn tolerates_empty_segments_and_missing_final_cr() {
    let raw = b"\rMSH|^~\\&\r\rPID|1\r\r";
    let m = parse(raw).unwrap();
    assert_eq!(m.segment_count(), 2);
    assert_eq!(&m.as_bytes()[..], raw);
    assert_eq!(parse(b"MSH|^~\\&\rPID|1").unwrap().segment_count(), 2);
}

/// A segment with only its id (no fields) parses with no fields.
#[test]
fn segment_without_fields_parses() {
    let m = parse(b"MSH|^~\\&\rZX1\rPID|1\r").unwrap();
    let z = m.segment("ZX1").unwrap();
    assert_eq!(z.field_count(), 0);
    assert!(z.field(1).is_none());
}

/// Each parse failure maps to its variant, ERR-3 code and ERR-2 location.
#[test]
fn parse_errors_carry_codes_and_locations() {
    let msh = || Location::new("MSH", 1);
    let cases: Vec<(&[u8], ParseError, ErrorCode, Option<Location>)> = vec![
        (
            b"",
            ParseError::Empty,
            ErrorCode::SegmentSequenceError,
            None,
        ),
        (
            b"\r\r",
            ParseError::Empty,
            ErrorCode::SegmentSequenceError,
            None,
        ),
        (
            b"PID|1\r",
            ParseError::MissingMsh,
            ErrorCode::SegmentSequenceError,
            Some(msh()),
        ),
        (
            b"hello world",
            ParseError::MissingMsh,
            ErrorCode::SegmentSequenceError,
            Some(msh()),
        ),
        (
            b"MS",
            ParseError::MissingMsh,
            ErrorCode::SegmentSequenceError,
            Some(msh()),
        ),
        (
            b"MSH",
            ParseError::TruncatedMsh,
            ErrorCode::DataTypeError,
            Some(msh().field(2)),
        ),
        (
            b"MSH\r",
            ParseError::TruncatedMsh,
            ErrorCode::DataTypeError,
            Some(msh().field(2)),
        ),
        (
            b"MSHA^~\\&",
            ParseError::InvalidDelimiters {
                field: 1,
                source: DelimiterError::Forbidden { byte: b'A' },
            },
            ErrorCode::DataTypeError,
            Some(msh().field(1)),
        ),
        (
            b"MSH|^~\\|A",
            ParseError::InvalidDelimiters {
                field: 2,
                source: DelimiterError::EncodingCharacterCount { found: 3 },
            },
            ErrorCode::DataTypeError,
            Some(msh().field(2)),
        ),
        (
            b"MSH|^^\\&|A",
            ParseError::InvalidDelimiters {
                field: 2,
                source: DelimiterError::Duplicate { byte: b'^' },
            },
            ErrorCode::DataTypeError,
            Some(msh().field(2)),
        ),
        (
            b"MSH|||",
            ParseError::InvalidDelimiters {
                field: 2,
                source: DelimiterError::EncodingCharacterCount { found: 0 },
            },
            ErrorCode::DataTypeError,
            Some(msh().field(2)),
        ),
        (
            b"MSH|^~\\&\rPI|1\r",
            ParseError::InvalidSegmentId { position: 2 },
            ErrorCode::SegmentSequenceError,
            None,
        ),
        (
            b"MSH|^~\\&\rpid|1\r",
            ParseError::InvalidSegmentId { position: 2 },
            ErrorCode::SegmentSequenceError,
            None,
        ),
        (
            b"MSH|^~\\&\rPIDX\r",
            ParseError::InvalidSegmentId { position: 2 },
            ErrorCode::SegmentSequenceError,
            None,
        ),
        (
            b"MSH|^~\\&|A\nPID|1\n",
            ParseError::LineFeed { position: 1 },
            ErrorCode::SegmentSequenceError,
            Some(msh()),
        ),
        (
            b"MSH|^~\\&|A\r\nPID|1\r\n",
            ParseError::LineFeed { position: 2 },
            ErrorCode::SegmentSequenceError,
            None,
        ),
        (
            b"\nMSH|^~\\&",
            ParseError::LineFeed { position: 1 },
            ErrorCode::SegmentSequenceError,
            Some(msh()),
        ),
        // A UTF-8 byte order mark before MSH.
        (
            b"\xEF\xBB\xBFMSH|^~\\&|A\rPID|1\r",
            ParseError::ByteOrderMark,
            ErrorCode::SegmentSequenceError,
            Some(msh()),
        ),
        // Two messages in one frame: the second MSH is refused, not read as a segment.
        (
            b"MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rPID|2\r",
            ParseError::SegmentOutOfPlace {
                position: 3,
                id: "MSH",
            },
            ErrorCode::SegmentSequenceError,
            Some(Location::new("MSH", 2)),
        ),
        // A message followed by a batch, or by a batch trailer.
        (
            b"MSH|^~\\&|A\rBHS|^~\\&\rMSH|^~\\&|B\rBTS|1\r",
            ParseError::SegmentOutOfPlace {
                position: 2,
                id: "BHS",
            },
            ErrorCode::SegmentSequenceError,
            Some(Location::new("BHS", 1)),
        ),
        (
            b"MSH|^~\\&|A\rPID|1\rFTS",
            ParseError::SegmentOutOfPlace {
                position: 3,
                id: "FTS",
            },
            ErrorCode::SegmentSequenceError,
            Some(Location::new("FTS", 1)),
        ),
    ];
    for (raw, error, code, location) in cases {
        let got = Message::parse(Bytes::copy_from_slice(raw)).unwrap_err();
        let shown = String::from_utf8_lossy(raw);
        assert_eq!(got, error, "{shown:?}");
        assert_eq!(got.error_code(), code, "{shown:?}");
        assert_eq!(got.location(), location, "{shown:?}");
        let diagnostic = got.to_diagnostic();
        assert_eq!(diagnostic.code, code);
        assert_eq!(diagnostic.text, got.to_string());
    }
}

/// Error messages name positions, never content.
#[test]
fn parse_error_messages_have_no_content() {
    let e = parse(b"MSH|^~\\&|A\rSECRETDATA|x\r").unwrap_err();
    assert_eq!(e.to_string(), "segment 2 has an invalid segment id");
    let e = parse(b"SECRET|^~\\&").unwrap_err();
    assert!(!e.to_string().contains("SECRET"));
}

/// Lenient mode accepts LF and CRLF line endings and finds the same segments.
#[test]
fn lenient_mode_accepts_lf_and_crlf() {
    let options = ParseOptions::default().lenient_line_endings(true);
    for raw in [
        &b"MSH|^~\\&|A\nPID|1\nPV1|1\n"[..],
        b"MSH|^~\\&|A\r\nPID|1\r\nPV1|1\r\n",
        b"MSH|^~\\&|A\rPID|1\nPV1|1",
        b"\n\nMSH|^~\\&|A\n\nPID|1\r\n\r\nPV1|1\n\n",
    ] {
        let m = Message::parse_with(Bytes::copy_from_slice(raw), &options).unwrap();
        let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
        assert_eq!(
            ids,
            ["MSH", "PID", "PV1"],
            "{:?}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(get(&m, "MSH-3"), Some(&b"A"[..]));
        assert_eq!(&m.as_bytes()[..], raw);
    }
}

/// In strict mode a LF inside a non-MSH field is content, not a terminator.
#[test]
fn strict_mode_keeps_lf_inside_fields() {
    let m = parse(b"MSH|^~\\&\rNTE|1||line one\nline two\r").unwrap();
    assert_eq!(get(&m, "NTE-3"), Some(&b"line one\nline two"[..]));
}

/// Non-UTF-8 content is reachable as bytes; `to_str` refuses it.
#[test]
fn latin1_content_is_bytes() {
    let m = parse(b"MSH|^~\\&|||||||ADT^A08|1|P|2.5||||||8859/1\rPID|1||||M\xFCller\r").unwrap();
    let v = m.get("PID-5").unwrap().unwrap();
    assert_eq!(v.as_bytes(), b"M\xFCller");
    assert_eq!(v.to_str(), None);
}

/// The MSH-9.1, MSH-9.2 and MSH-10 located at parse time are exactly what the general field
/// accessors read (first repetition, components, non-empty UTF-8), on every fixture and on the
/// awkward shapes: repetitions, missing or empty parts, a lone field, bytes that are not UTF-8,
/// other delimiters.
#[test]
fn msh_fields_located_at_parse_match_the_field_accessors() {
    let slow = |m: &Message, n: usize, component: Option<usize>| -> Option<String> {
        let field = m.msh().field(n)?;
        let value = match component {
            Some(c) => field.component(c)?,
            None => field,
        };
        value.to_str().filter(|s| !s.is_empty()).map(str::to_owned)
    };
    let mut messages: Vec<Vec<u8>> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            // Files only: subdirectories hold other tests' fixtures (batches, for one).
            .filter(|path| path.is_file())
            .map(|path| std::fs::read(path).unwrap())
            .collect();
    for msh in [
        &b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01~ORU^R01|C1|P|2.5"[..],
        b"MSH|^~\\&|A|B|C|D|20240101||^A01|C1|P|2.5",
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^|C1|P|2.5",
        b"MSH|^~\\&|A|B|C|D|20240101||ADT||P|2.5",
        b"MSH|^~\\&|A|B|C|D|20240101||ADT",
        b"MSH|^~\\&|A|B|C|D|20240101|",
        b"MSH|^~\\&",
        b"MSH|^~\\&|A|B|C|D|20240101||AD\xffT^A\xfe01|C\xff1|P|2.5",
        b"MSH#$%*@#A#B#C#D#20240101##ADT$A01$ADT_A01#CTL$9#P#2.5",
    ] {
        messages.push(msh.to_vec());
    }
    let mut checked = 0;
    for bytes in messages {
        let Ok(m) = Message::parse_with(
            Bytes::from(bytes),
            &ParseOptions::default().lenient_line_endings(true),
        ) else {
            continue;
        };
        assert_eq!(m.message_code().map(str::to_owned), slow(&m, 9, Some(1)));
        assert_eq!(m.trigger_event().map(str::to_owned), slow(&m, 9, Some(2)));
        assert_eq!(m.control_id().map(str::to_owned), slow(&m, 10, None));
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} messages parsed");
}

/// A later segment whose id is `MSH`, even one too short to carry a field separator (found by
/// the `parse` fuzz target, when such a segment was still read as one with no fields), is
/// refused as out of place, at the position it has.
#[test]
fn short_trailing_msh_segment_is_out_of_place() {
    for bytes in [
        &b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rMSH"[..],
        b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rMSH\rPID|1",
    ] {
        let error = Message::parse(Bytes::copy_from_slice(bytes)).unwrap_err();
        assert_eq!(
            error,
            ParseError::SegmentOutOfPlace {
                position: 2,
                id: "MSH"
            }
        );
        let second_msh = bytes.windows(4).position(|w| w == b"\rMSH").unwrap() + 1;
        assert_eq!(
            error.offset(bytes, &ParseOptions::default()),
            Some(second_msh)
        );
    }
}

/// Each parse error points at the offending byte: what the reject log reports.
#[test]
fn parse_errors_name_the_offending_offset() {
    let strict = ParseOptions::default();
    let cases: [(&[u8], Option<usize>); 7] = [
        (b"", None),
        (b"\r\rPID|1\r", Some(2)),
        (b"MSH", Some(3)),
        (b"MSH|^~\\&|A\rEVN|1\r P1|x\r", Some(17)),
        (b"MSH|^~\\&|A\nEVN|1\r", Some(10)),
        (b"MSH|^~\\&|A\rEVN|1\r\nPID|x\r", Some(17)),
        (b"MSHA^~\\&|A\r", Some(3)),
    ];
    for (payload, offset) in cases {
        let error =
            Message::parse_with(Bytes::copy_from_slice(payload), &strict).expect_err("not HL7");
        assert_eq!(
            error.offset(payload, &strict),
            offset,
            "{error:?} in {:?}",
            String::from_utf8_lossy(payload)
        );
    }
}

/// A control id is logged whole up to 199 bytes; a longer one is cut at a character
/// boundary at or below that and marked.
#[test]
fn overlong_control_ids_are_cut_at_a_character_boundary() {
    let fits = "A".repeat(199);
    assert_eq!(logged_control_id(&fits), fits.as_str());
    let cut = logged_control_id(&"B".repeat(500)).into_owned();
    assert_eq!(cut, format!("{}…", "B".repeat(199)));
    // 198 ASCII bytes, then two-byte characters: byte 199 falls inside one.
    let wide = format!("{}{}", "C".repeat(198), "é".repeat(10));
    assert_eq!(
        logged_control_id(&wide),
        format!("{}…", "C".repeat(198)).as_str()
    );
}

//! Integration tests of the HL7 v2 message model on the fixture corpus, plus property tests.

use std::path::PathBuf;

use bytes::Bytes;
use mllp::hl7::{Delimiters, Message, ParseError, ParseOptions, decode, escape};
use proptest::prelude::*;

fn fixture(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn lenient() -> ParseOptions {
    ParseOptions::default().lenient_line_endings(true)
}

/// What a fixture is known to contain.
struct Expect {
    file: &'static str,
    lenient: bool,
    version: &'static str,
    code: &'static str,
    trigger: &'static str,
    control_id: &'static str,
    segments: usize,
    /// Path → raw bytes.
    raw: &'static [(&'static str, &'static [u8])],
    /// Path → bytes after escape decoding.
    decoded: &'static [(&'static str, &'static [u8])],
}

const ADT_A01_RAW: &[(&str, &[u8])] = &[
    ("MSH-1", b"|"),
    ("MSH-2", b"^~\\&"),
    ("MSH-4.2", b"1.2.3.4.5.6"),
    ("PID-3(2).1", b"ALT99887766"),
    ("PID-3.5", b"MR"),
    ("PID-5.2", b"ALEX"),
    ("PID-5(2).1", b"SAMPLE"),
    ("OBX(2)-5", b"72.5"),
    ("OBX(2)-6.1", b"kg"),
    ("PV1-19", b"VIS000456"),
    ("IN1-4", b"EXAMPLE INSURANCE CO"),
];

const FIXTURES: &[Expect] = &[
    Expect {
        file: "adt_a01.hl7",
        lenient: false,
        version: "2.5.1",
        code: "ADT",
        trigger: "A01",
        control_id: "ADT20240315083012001",
        segments: 12,
        raw: ADT_A01_RAW,
        decoded: &[],
    },
    Expect {
        file: "adt_a01_lf.hl7",
        lenient: true,
        version: "2.5.1",
        code: "ADT",
        trigger: "A01",
        control_id: "ADT20240315083012001",
        segments: 12,
        raw: ADT_A01_RAW,
        decoded: &[],
    },
    Expect {
        file: "adt_a01_crlf.hl7",
        lenient: true,
        version: "2.5.1",
        code: "ADT",
        trigger: "A01",
        control_id: "ADT20240315083012001",
        segments: 12,
        raw: ADT_A01_RAW,
        decoded: &[],
    },
    Expect {
        file: "adt_a04.hl7",
        lenient: false,
        version: "2.3",
        code: "ADT",
        trigger: "A04",
        control_id: "A04-0001",
        segments: 4,
        raw: &[
            ("PID-5.1", b"OUTPATIENT"),
            ("PID-11.2", b"APT 3"),
            ("PID-7", b"19921231"),
            ("MSH-9", b"ADT^A04"),
        ],
        decoded: &[],
    },
    Expect {
        file: "adt_a08.hl7",
        lenient: false,
        version: "2.8",
        code: "ADT",
        trigger: "A08",
        control_id: "UPD-88",
        segments: 5,
        raw: &[
            ("ROL-4(2).2", b"COVERING"),
            ("PID-5(2).1", b"TP"),
            ("MSH-15", b"ER"),
        ],
        decoded: &[],
    },
    Expect {
        file: "oru_r01.hl7",
        lenient: false,
        version: "2.5.1",
        code: "ORU",
        trigger: "R01",
        control_id: "LAB-000042",
        segments: 13,
        raw: &[
            ("OBX(4)-8", b"H"),
            ("OBX(6)-3.2", b"Albumin"),
            ("OBX(1)-5", b"95"),
            ("OBX(6)-5", b"4.1"),
            ("OBR-4.1", b"24323-8"),
            ("SPM-4.2", b"Serum"),
        ],
        decoded: &[(
            "NTE-3",
            b"Specimen slightly hemolyzed; potassium may be falsely elevated.",
        )],
    },
    Expect {
        file: "orm_o01.hl7",
        lenient: false,
        version: "2.3.1",
        code: "ORM",
        trigger: "O01",
        control_id: "ORM-31",
        segments: 6,
        raw: &[
            ("OBR(2)-4.1", b"58410-2"),
            ("ORC-1", b"NW"),
            ("ORC-7.4", b"20240315090000"),
        ],
        decoded: &[],
    },
    Expect {
        file: "siu_s12.hl7",
        lenient: false,
        version: "2.6",
        code: "SIU",
        trigger: "S12",
        control_id: "SIU-6001",
        segments: 7,
        raw: &[
            ("AIS-3.2", b"Chest X-ray"),
            ("SCH-11.4", b"20240325093000"),
            ("AIP-3.2", b"RADIOLOGIST"),
        ],
        decoded: &[],
    },
    Expect {
        file: "mdm_t02.hl7",
        lenient: false,
        version: "2.6",
        code: "MDM",
        trigger: "T02",
        control_id: "MDM-4242",
        segments: 6,
        raw: &[
            ("OBX-2", b"ED"),
            ("OBX-5.2", b"application"),
            ("OBX-5.4", b"Base64"),
            ("TXA-2", b"DS"),
        ],
        decoded: &[],
    },
    Expect {
        file: "custom_delimiters.hl7",
        lenient: false,
        version: "2.4",
        code: "ADT",
        trigger: "A01",
        control_id: "ODD-24",
        segments: 5,
        raw: &[
            ("MSH-1", b"#"),
            ("MSH-2", b"$*@!"),
            ("MSH-4.2", b"1.2.3"),
            ("PID-3(2).1", b"ODD2"),
            ("OBX-5(2).2.2", b"sub"),
            ("OBX-5(2).1", b"value two"),
        ],
        decoded: &[
            ("PID-5.1", b"PIPE#NAME"),
            ("PID-5.2", b"CARET$GIVEN"),
            ("NTE-3", b"uses | ^ ~ \\ & as plain text: 50% off!"),
            ("OBX-3.2", b"Text with hash # and dollar $ inside"),
        ],
    },
    Expect {
        file: "escapes.hl7",
        lenient: false,
        version: "2.5",
        code: "ORU",
        trigger: "R01",
        control_id: "ESC-1",
        segments: 7,
        raw: &[
            ("MSH-4", b"LAB\\S\\WEST"),
            ("OBX(2)-5(1)", b"tilde\\R\\inside"),
        ],
        decoded: &[
            ("MSH-3", b"ESC&APP"),
            ("MSH-4", b"LAB^WEST"),
            ("PID-3.4", b"LAB^WEST"),
            ("PID-5.1", b"O\\BRIEN"),
            ("PID-5.2", b"PAT|X"),
            ("OBR-4.2", b"Pipe|and|caret^test"),
            (
                "OBX-5",
                b"First line\\.br\\Second line\r\nThird \\H\\bold\\N\\ normal",
            ),
            ("OBX(2)-5(1)", b"tilde~inside"),
            ("OBX(2)-5(2).1.2", b"sub&part"),
            (
                "OBX(3)-5",
                b"\\C2842\\JIS text\\C2842\\ and \\Zlocal\\ and \\M2842\\",
            ),
            ("NTE-3", b"\\path\\to\\file and hex ABC"),
        ],
    },
    Expect {
        file: "latin1.hl7",
        lenient: false,
        version: "2.5.1",
        code: "ADT",
        trigger: "A08",
        control_id: "L1-0001",
        segments: 3,
        raw: &[
            ("PID-5.1", b"M\xfcller"),
            ("PID-5(2).2", b"Ren\xe9e"),
            ("PID-11.3", b"K\xf6ln"),
        ],
        decoded: &[],
    },
    Expect {
        file: "utf8.hl7",
        lenient: false,
        version: "2.6",
        code: "ADT",
        trigger: "A04",
        control_id: "U8-0001",
        segments: 3,
        raw: &[
            ("PID-5(2).1", "東京".as_bytes()),
            ("PID-5.2", "José".as_bytes()),
            ("NTE-3", "Grüße, ça va? Ελληνικά".as_bytes()),
        ],
        decoded: &[],
    },
    Expect {
        file: "truncation_v27.hl7",
        lenient: false,
        version: "2.7",
        code: "ORU",
        trigger: "R01",
        control_id: "TR-2700",
        segments: 5,
        raw: &[
            ("MSH-2", b"^~\\&#"),
            ("OBX(2)-5", b"A very long value that was cut#"),
        ],
        decoded: &[("OBX-5", b"Value ends with truncation#")],
    },
];

fn parse_fixture(e: &Expect) -> Message {
    let options = if e.lenient {
        lenient()
    } else {
        ParseOptions::default()
    };
    Message::parse_with(fixture(e.file), &options).unwrap_or_else(|err| panic!("{}: {err}", e.file))
}

/// Every fixture in the corpus is covered by the table above.
#[test]
fn every_fixture_is_checked() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".hl7"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|e| e.file.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

/// Every fixture parses, and re-encodes byte for byte.
#[test]
fn fixtures_parse_and_round_trip_byte_identically() {
    for e in FIXTURES {
        let bytes = fixture(e.file);
        let m = parse_fixture(e);
        assert_eq!(m.as_bytes(), &bytes, "{}", e.file);
        assert_eq!(m.clone().into_bytes(), bytes, "{}", e.file);
        assert_eq!(m.segment_count(), e.segments, "{}", e.file);
    }
}

/// The MSH accessors of every fixture give the known header values.
#[test]
fn fixtures_have_known_headers() {
    for e in FIXTURES {
        let m = parse_fixture(e);
        assert_eq!(m.version(), Some(e.version), "{}", e.file);
        assert_eq!(m.message_code(), Some(e.code), "{}", e.file);
        assert_eq!(m.trigger_event(), Some(e.trigger), "{}", e.file);
        assert_eq!(m.control_id(), Some(e.control_id), "{}", e.file);
        assert_eq!(m.processing_id(), Some("P"), "{}", e.file);
        assert_eq!(m.receiving_application(), b"MLLPRX", "{}", e.file);
    }
}

/// Paths on every fixture return the known raw and decoded values.
#[test]
fn fixtures_answer_paths_with_known_values() {
    for e in FIXTURES {
        let m = parse_fixture(e);
        for (path, want) in e.raw {
            let got = m
                .get(path)
                .unwrap()
                .unwrap_or_else(|| panic!("{} {path} missing", e.file));
            assert_eq!(got.as_bytes(), *want, "{} {path}", e.file);
        }
        for (path, want) in e.decoded {
            let got = m
                .get(path)
                .unwrap()
                .unwrap_or_else(|| panic!("{} {path} missing", e.file));
            assert_eq!(&*got.decoded(), *want, "{} {path}", e.file);
        }
    }
}

/// Header details that only some fixtures carry.
#[test]
fn fixture_specific_headers() {
    let adt = Message::parse(fixture("adt_a01.hl7")).unwrap();
    assert_eq!(adt.message_structure(), Some("ADT_A01"));
    assert_eq!(adt.charset(), Some("8859/1"));
    assert_eq!(adt.sending_facility(), b"GOODHEALTH^1.2.3.4.5.6^ISO");
    assert_eq!(adt.receiving_application(), b"MLLPRX");
    assert_eq!(
        adt.accept_ack_type(),
        Some(mllp::hl7::AckRequirement::Always)
    );
    assert_eq!(
        adt.application_ack_type(),
        Some(mllp::hl7::AckRequirement::Never)
    );

    let oru = Message::parse(fixture("oru_r01.hl7")).unwrap();
    assert_eq!(oru.segments_by_id("OBX").count(), 6);
    assert!(oru.get("OBX(7)-5").unwrap().is_none());

    let a04 = Message::parse(fixture("adt_a04.hl7")).unwrap();
    assert_eq!(a04.message_structure(), None, "v2.3 has no MSH-9.3");

    let utf8 = Message::parse(fixture("utf8.hl7")).unwrap();
    assert_eq!(utf8.charset(), Some("UNICODE UTF-8"));
    assert_eq!(
        utf8.get("PID-5.1").unwrap().unwrap().to_str(),
        Some("Łódź-Test")
    );

    let latin1 = Message::parse(fixture("latin1.hl7")).unwrap();
    assert_eq!(latin1.charset(), Some("8859/1"));
    assert_eq!(latin1.get("PID-5.1").unwrap().unwrap().to_str(), None);

    let custom = Message::parse(fixture("custom_delimiters.hl7")).unwrap();
    assert_eq!(
        *custom.delimiters(),
        Delimiters::new(b'#', b"$*@!").unwrap()
    );

    let v27 = Message::parse(fixture("truncation_v27.hl7")).unwrap();
    assert_eq!(v27.delimiters().truncation(), Some(b'#'));
}

/// The base64 ED payload of the MDM fixture is reachable whole and starts as a PDF.
#[test]
fn mdm_embedded_document_is_reachable() {
    let m = Message::parse(fixture("mdm_t02.hl7")).unwrap();
    let data = m.get("OBX-5.5").unwrap().unwrap();
    assert!(data.as_bytes().len() > 4000);
    assert!(
        data.as_bytes().starts_with(b"JVBERi0xLjQ"),
        "base64 of %PDF-1.4"
    );
    assert!(
        data.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
    );
}

/// The LF and CRLF fixtures are refused in strict mode and name the line feed.
#[test]
fn line_feed_fixtures_fail_in_strict_mode() {
    assert_eq!(
        Message::parse(fixture("adt_a01_lf.hl7")).unwrap_err(),
        ParseError::LineFeed { position: 1 }
    );
    assert_eq!(
        Message::parse(fixture("adt_a01_crlf.hl7")).unwrap_err(),
        ParseError::LineFeed { position: 2 }
    );
}

/// The lenient fixtures give the same segments as the CR one.
#[test]
fn lenient_fixtures_match_the_cr_fixture() {
    let cr = Message::parse(fixture("adt_a01.hl7")).unwrap();
    for file in ["adt_a01_lf.hl7", "adt_a01_crlf.hl7"] {
        let other = Message::parse_with(fixture(file), &lenient()).unwrap();
        let a: Vec<&[u8]> = cr.segments().map(|s| s.as_bytes()).collect();
        let b: Vec<&[u8]> = other.segments().map(|s| s.as_bytes()).collect();
        assert_eq!(a, b, "{file}");
    }
}

/// `Debug` of a parsed fixture never shows the patient's name or id.
#[test]
fn debug_of_fixture_hides_patient_data() {
    let m = Message::parse(fixture("adt_a01.hl7")).unwrap();
    let pid = m.segment("PID").unwrap();
    let text = format!("{m:?} {pid:?} {:?}", pid.field(5).unwrap());
    for secret in ["TESTPATIENT", "PAT000123", "19800101", "EXAMPLE STREET"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

/// The types the runtime moves between tasks are `Send + Sync + 'static`.
#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Message>();
    assert_send_sync::<ParseError>();
    assert_send_sync::<mllp::hl7::FieldPath>();
    assert_send_sync::<mllp::ack::Ack>();
    assert_send_sync::<mllp::ack::Diagnostic>();
    assert_send_sync::<mllp::ack::AckOptions>();
}

// ===== property tests =====

/// Characters that may serve as delimiters in generated messages.
const DELIMITER_POOL: &[u8] = b"|^~\\&#$*@!%+:;?/=<>";
/// Content characters: none of them is in the delimiter pool.
const CONTENT: &str = "[A-Za-z0-9 .,-]{0,6}";

type Field = Vec<Vec<Vec<String>>>; // repetitions → components → subcomponents

fn delimiters() -> impl Strategy<Value = Delimiters> {
    (Just(DELIMITER_POOL.to_vec()).prop_shuffle(), any::<bool>()).prop_map(|(pool, trunc)| {
        let enc = if trunc { &pool[1..6] } else { &pool[1..5] };
        Delimiters::new(pool[0], enc).unwrap()
    })
}

fn field() -> impl Strategy<Value = Field> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(CONTENT, 1..3), 1..3),
        1..3,
    )
}

fn segment() -> impl Strategy<Value = (String, Vec<Field>)> {
    (
        // A message refuses a second header: MSH, or a batch envelope's (`SegmentOutOfPlace`).
        "[A-Z]{2}[A-Z0-9]".prop_filter("not a header", |id| {
            !matches!(id.as_str(), "MSH" | "BHS" | "BTS" | "FHS" | "FTS")
        }),
        prop::collection::vec(field(), 0..6),
    )
}

fn encode_field(f: &Field, d: &Delimiters) -> Vec<u8> {
    let join = |parts: Vec<Vec<u8>>, sep: u8| parts.join(&[sep][..]);
    join(
        f.iter()
            .map(|rep| {
                join(
                    rep.iter()
                        .map(|comp| {
                            join(
                                comp.iter().map(|s| s.as_bytes().to_vec()).collect(),
                                d.subcomponent(),
                            )
                        })
                        .collect(),
                    d.component(),
                )
            })
            .collect(),
        d.repetition(),
    )
}

fn encode(
    d: &Delimiters,
    msh: &[Field],
    segments: &[(String, Vec<Field>)],
    final_cr: bool,
) -> Vec<u8> {
    let mut out = b"MSH".to_vec();
    out.push(d.field());
    out.extend([d.component(), d.repetition(), d.escape(), d.subcomponent()]);
    out.extend(d.truncation());
    for f in msh {
        out.push(d.field());
        out.extend(encode_field(f, d));
    }
    for (id, fields) in segments {
        out.push(b'\r');
        out.extend(id.as_bytes());
        for f in fields {
            out.push(d.field());
            out.extend(encode_field(f, d));
        }
    }
    if final_cr {
        out.push(b'\r');
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Generated messages with random delimiters parse, re-encode byte for byte, and every
    /// subcomponent is found at its path with the generated value.
    #[test]
    fn generated_messages_round_trip_and_resolve_paths(
        d in delimiters(),
        msh in prop::collection::vec(field(), 0..5),
        segments in prop::collection::vec(segment(), 0..5),
        final_cr in any::<bool>(),
    ) {
        let bytes = encode(&d, &msh, &segments, final_cr);
        let m = Message::parse(Bytes::from(bytes.clone())).unwrap();
        prop_assert_eq!(&m.as_bytes()[..], &bytes[..]);
        prop_assert_eq!(m.delimiters(), &d);
        prop_assert_eq!(m.segment_count(), 1 + segments.len());
        for (n, f) in msh.iter().enumerate() {
            let path = format!("MSH-{}", n + 3);
            prop_assert_eq!(m.get(&path).unwrap().unwrap().as_bytes(), &encode_field(f, &d)[..]);
        }
        for (i, (id, fields)) in segments.iter().enumerate() {
            let occurrence = 1 + segments[..i].iter().filter(|(other, _)| other == id).count();
            prop_assert_eq!(m.segments().nth(i + 1).unwrap().sequence(), occurrence);
            for (f, field) in fields.iter().enumerate() {
                let base = format!("{id}({occurrence})-{}", f + 1);
                prop_assert_eq!(m.get(&base).unwrap().unwrap().as_bytes(), &encode_field(field, &d)[..]);
                for (r, rep) in field.iter().enumerate() {
                    for (c, comp) in rep.iter().enumerate() {
                        for (s, sub) in comp.iter().enumerate() {
                            let path = format!("{base}({}).{}.{}", r + 1, c + 1, s + 1);
                            let got = m.get(&path).unwrap();
                            prop_assert_eq!(got.map(|v| v.as_bytes()), Some(sub.as_bytes()), "{}", path);
                        }
                        let beyond = format!("{base}({}).{}.{}", r + 1, c + 1, comp.len() + 1);
                        prop_assert!(m.get(&beyond).unwrap().is_none());
                    }
                }
                let beyond = format!("{base}({})", field.len() + 1);
                prop_assert!(m.get(&beyond).unwrap().is_none());
            }
            let beyond = format!("{id}({occurrence})-{}", fields.len() + 1);
            prop_assert!(m.get(&beyond).unwrap().is_none());
        }
    }

    /// Escaping then decoding any bytes gives them back, with any delimiters.
    #[test]
    fn escape_then_decode_is_identity(d in delimiters(), content in prop::collection::vec(any::<u8>(), 0..64)) {
        let escaped = escape(&content, &d);
        prop_assert!(!escaped.contains(&d.field()) && !escaped.contains(&b'\r'));
        prop_assert_eq!(&*decode(&escaped, &d), &content[..]);
    }

    /// Arbitrary bytes never panic the parser; what parses keeps its bytes and can be walked.
    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in prop_oneof![Just(&b""[..]), Just(&b"MSH|^~\\&|"[..]), Just(&b"MSH#$*@!%#"[..])],
        tail in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'|'), Just(b'^'), Just(b'\\')], 0..200),
        lenient_mode in any::<bool>(),
        path in "[A-Z]{3}(\\([0-9]\\))?-[0-9]{1,2}(\\([0-9]\\))?(\\.[0-9](\\.[0-9])?)?",
    ) {
        let mut raw = prefix.to_vec();
        raw.extend(tail);
        let options = ParseOptions::default().lenient_line_endings(lenient_mode);
        if let Ok(m) = Message::parse_with(Bytes::from(raw.clone()), &options) {
            prop_assert_eq!(&m.as_bytes()[..], &raw[..]);
            for s in m.segments() {
                for f in s.fields() {
                    for r in f.repetitions() {
                        for c in r.components() {
                            let _ = c.subcomponents().map(|v| v.decoded().len()).sum::<usize>();
                        }
                    }
                }
            }
            let _ = m.get(&path);
            let _ = (m.version(), m.control_id(), m.accept_ack_type(), m.charset(), format!("{m:?}"));
        }
    }
}

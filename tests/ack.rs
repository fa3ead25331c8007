//! Integration tests of the ACK builder on the fixture corpus, plus property tests.

use std::path::PathBuf;

use bytes::Bytes;
use mllp::ack::{Ack, AckCode, AckOptions, Diagnostic, ErrorCode, Severity};
use mllp::hl7::{Location, Message, ParseOptions};
use proptest::prelude::*;

fn fixture(name: &str) -> Message {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let bytes = Bytes::from(std::fs::read(&path).unwrap());
    Message::parse_with(bytes, &ParseOptions::default().lenient_line_endings(true)).unwrap()
}

fn raw<'a>(m: &'a Message, path: &str) -> &'a [u8] {
    m.get(path).unwrap().map_or(&[], |v| v.as_bytes())
}

const FIXTURES: &[&str] = &[
    "adt_a01.hl7",
    "adt_a01_lf.hl7",
    "adt_a01_crlf.hl7",
    "adt_a04.hl7",
    "adt_a08.hl7",
    "oru_r01.hl7",
    "orm_o01.hl7",
    "siu_s12.hl7",
    "mdm_t02.hl7",
    "custom_delimiters.hl7",
    "escapes.hl7",
    "latin1.hl7",
    "utf8.hl7",
    "truncation_v27.hl7",
];

/// Whether MSH-12.1 is before v2.5, where ERR-1 is the error field.
fn before_25(version: &str) -> bool {
    matches!(version, "2.1" | "2.2" | "2.3" | "2.3.1" | "2.4")
}

/// For every fixture, the ACK follows the header rules and the ERR layout of its version.
#[test]
fn acks_to_every_fixture_follow_the_rules() {
    for file in FIXTURES {
        let incoming = fixture(file);
        let diagnostics = [
            Diagnostic::error(ErrorCode::RequiredFieldMissing, "PID-3 is empty")
                .at(Location::new("PID", 1).field(3)),
            Diagnostic::warning(ErrorCode::TableValueNotFound, "odd code"),
        ];
        let ack = Ack::build(&incoming, AckCode::AE, &diagnostics, &AckOptions::default());
        let m = Message::parse(ack.as_bytes().clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(m.delimiters(), incoming.delimiters(), "{file}");
        assert_eq!(raw(&m, "MSH-2"), raw(&incoming, "MSH-2"), "{file}");
        assert_eq!(raw(&m, "MSH-3"), incoming.receiving_application(), "{file}");
        assert_eq!(raw(&m, "MSH-4"), incoming.receiving_facility(), "{file}");
        assert_eq!(raw(&m, "MSH-5"), incoming.sending_application(), "{file}");
        assert_eq!(raw(&m, "MSH-6"), incoming.sending_facility(), "{file}");
        assert_eq!(raw(&m, "MSH-11"), raw(&incoming, "MSH-11"), "{file}");
        assert_eq!(raw(&m, "MSH-12"), raw(&incoming, "MSH-12"), "{file}");
        assert_eq!(m.message_code(), Some("ACK"), "{file}");
        assert_eq!(m.trigger_event(), incoming.trigger_event(), "{file}");
        let version = incoming.version().unwrap();
        let structure = (!matches!(version, "2.1" | "2.2" | "2.3")).then_some("ACK");
        assert_eq!(m.message_structure(), structure, "{file}");
        assert_eq!(raw(&m, "MSA-1"), b"AE", "{file}");
        assert_eq!(raw(&m, "MSA-2"), raw(&incoming, "MSH-10"), "{file}");
        assert_ne!(m.control_id(), incoming.control_id(), "{file}");
        if before_25(version) {
            // The ACK structure before v2.5 is `MSH MSA [ERR]`: one ERR, ERR-1 repeating.
            assert_eq!(m.segments_by_id("ERR").count(), 1, "{file}");
            assert_eq!(raw(&m, "ERR-1(1).4.1"), b"101", "{file}");
            assert_eq!(raw(&m, "ERR-1(2).4.1"), b"103", "{file}");
            assert!(m.get("ERR-3").unwrap().is_none(), "{file}");
        } else {
            assert_eq!(m.segments_by_id("ERR").count(), 2, "{file}");
            assert_eq!(raw(&m, "ERR-1"), b"", "{file}");
            assert_eq!(
                raw(&m, "ERR-2"),
                b"PID^1^3".map(|b| match b {
                    b'^' => incoming.delimiters().component(),
                    b => b,
                }),
                "{file}"
            );
            assert_eq!(raw(&m, "ERR-3.1"), b"101", "{file}");
            assert_eq!(raw(&m, "ERR-4"), b"E", "{file}");
            assert_eq!(raw(&m, "ERR(2)-4"), b"W", "{file}");
        }
    }
}

/// AA with warnings carries ERR segments with severity W (v2.5+).
#[test]
fn aa_with_warnings_has_severity_w() {
    let incoming = fixture("oru_r01.hl7");
    let warning = Diagnostic::new(ErrorCode::ValueTooLong, Severity::Warning, "truncated note");
    let ack = Ack::build(&incoming, AckCode::AA, &[warning], &AckOptions::default());
    assert!(ack.code().is_success());
    assert_eq!(raw(ack.message(), "MSA-1"), b"AA");
    assert_eq!(raw(ack.message(), "ERR-4"), b"W");
    assert_eq!(raw(ack.message(), "ERR-3.1"), b"104");
}

/// Parse errors of real-looking payloads become a parseable AR with the error's code.
#[test]
fn parse_errors_become_parseable_rejects() {
    let adt =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adt_a01.hl7"))
            .unwrap();
    let mut broken_delims = adt.clone();
    broken_delims[5] = b'^'; // MSH-2 = "^^\&": a duplicate delimiter
    let lf = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adt_a01_lf.hl7"),
    )
    .unwrap();
    for (raw_bytes, code, msa2) in [
        (broken_delims, 102, &b""[..]),
        (lf, 100, &b"ADT20240315083012001"[..]),
        (b"\x00\x01binary".to_vec(), 100, &b""[..]),
        (Vec::new(), 100, &b""[..]),
    ] {
        let error = Message::parse(Bytes::from(raw_bytes.clone())).unwrap_err();
        let ack =
            Ack::reject_unparseable(&raw_bytes, &error.to_diagnostic(), &AckOptions::default());
        let m = Message::parse(ack.as_bytes().clone()).unwrap();
        let back = Ack::from_message(m).unwrap();
        assert_eq!(back.code(), AckCode::AR);
        assert_eq!(back.acknowledged_control_id(), msa2);
        assert_eq!(raw(back.message(), "ERR-3.1"), code.to_string().as_bytes());
    }
}

/// MSH-9 has the shape of the ACK's version: `ACK^<trigger>` up to v2.3, where MSH-9 is a
/// two-component CM of at most 7 characters, and `ACK^<trigger>^ACK` from v2.3.1, which added the
/// message structure; `ACK` alone when the incoming message names no trigger event.
#[test]
fn message_type_follows_the_version() {
    for (version, trigger, expected) in [
        ("2.1", "^A01", &b"ACK^A01"[..]),
        ("2.2", "^A01", b"ACK^A01"),
        ("2.3", "^A01^ADT_A01", b"ACK^A01"),
        ("2.3.1", "^A01^ADT_A01", b"ACK^A01^ACK"),
        ("2.4", "^A01", b"ACK^A01^ACK"),
        ("2.5.1", "^A01^ADT_A01", b"ACK^A01^ACK"),
        ("2.8", "^A01^ADT_A01", b"ACK^A01^ACK"),
        ("", "^A01", b"ACK^A01^ACK"),
        ("2.3", "", b"ACK"),
        ("2.5", "", b"ACK^^ACK"),
    ] {
        let incoming = Message::parse(Bytes::from(format!(
            "MSH|^~\\&|A|B|C|D|20240101||ADT{trigger}|X1|P|{version}\rPID|1\r"
        )))
        .unwrap();
        let ack = Ack::build(&incoming, AckCode::AA, &[], &AckOptions::default());
        assert_eq!(
            raw(ack.message(), "MSH-9"),
            expected,
            "version {version:?}, MSH-9 ADT{trigger}"
        );
    }
}

/// Before v2.5 the standard caps MSA-3 (text message) and each ERR-1 repetition at 80
/// characters: a long diagnostic text is cut to fit, at a whole character and never inside an
/// escape sequence, and the ACK still parses.
#[test]
fn legacy_texts_fit_their_field_lengths() {
    let text = format!("{}|{}", "ä^b".repeat(30), "z".repeat(100));
    for version in ["2.1", "2.3", "2.3.1", "2.4"] {
        let incoming = Message::parse(Bytes::from(format!(
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|{version}\rPID|1\r"
        )))
        .unwrap();
        let diagnostics = [
            Diagnostic::error(ErrorCode::ApplicationInternalError, text.clone())
                .at(Location::new("PID", 1).field(3)),
            Diagnostic::error(ErrorCode::DataTypeError, text.clone()),
        ];
        let ack = Ack::build(&incoming, AckCode::AE, &diagnostics, &AckOptions::default());
        let m = Message::parse(ack.as_bytes().clone()).unwrap();
        let msa3 = m.get("MSA-3").unwrap().map(|v| v.as_bytes().to_vec());
        if let Some(msa3) = msa3 {
            assert!(msa3.len() <= 80, "{version}: MSA-3 is {} long", msa3.len());
            let decoded = m.get("MSA-3").unwrap().unwrap().decoded().into_owned();
            let decoded = String::from_utf8(decoded).expect("cut at a character boundary");
            assert!(
                !decoded.is_empty() && text.starts_with(&decoded),
                "{version}"
            );
        }
        let err1 = m.segment("ERR").unwrap().field(1).unwrap();
        assert_eq!(err1.repetitions().count(), 2, "{version}");
        for repetition in err1.repetitions() {
            assert!(
                repetition.as_bytes().len() <= 80,
                "{version}: ERR-1 repetition is {} long",
                repetition.as_bytes().len()
            );
            assert_eq!(
                repetition
                    .component(4)
                    .unwrap()
                    .subcomponent(3)
                    .unwrap()
                    .as_bytes(),
                b"HL70357"
            );
            let code_text = repetition.component(4).unwrap().subcomponent(2).unwrap();
            let decoded = String::from_utf8(code_text.decoded().into_owned()).unwrap();
            assert!(
                !decoded.is_empty() && text.starts_with(&decoded),
                "{version}"
            );
        }
    }
}

/// The ACK copies MSH-18, so the texts it writes itself are in that character set: Latin-1
/// bytes for `8859/1` (`?` for what Latin-1 cannot hold), `?` for non-ASCII under other
/// single-byte sets, and UTF-8 unchanged for `UNICODE UTF-8` or when MSH-18 is absent.
#[test]
fn texts_are_written_in_the_declared_character_set() {
    let text = "Prüfung fehlgeschlagen – 5 €";
    let ack_to = |file: &str, charset: Option<&str>| {
        let mut incoming = fixture(file);
        if let Some(charset) = charset {
            let raw = String::from_utf8_lossy(incoming.as_bytes())
                .replace("|8859/1\r", &format!("|{charset}\r"))
                .into_bytes();
            incoming = Message::parse(Bytes::from(raw)).unwrap();
        }
        let options = AckOptions::default()
            .include_err7(true)
            .sending_application("Empfänger");
        let diagnostic = Diagnostic::error(ErrorCode::ApplicationInternalError, text);
        let ack = Ack::build(&incoming, AckCode::AE, &[diagnostic], &options);
        let m = Message::parse(ack.as_bytes().clone()).unwrap();
        let err7 = raw(&m, "ERR-7").to_vec();
        (raw(&m, "MSH-18").to_vec(), raw(&m, "MSH-3").to_vec(), err7)
    };
    let (charset, app, err7) = ack_to("latin1.hl7", None);
    assert_eq!(charset, b"8859/1");
    assert_eq!(app, b"Empf\xe4nger");
    assert_eq!(err7, b"Pr\xfcfung fehlgeschlagen ? 5 ?");
    let (charset, app, err7) = ack_to("latin1.hl7", Some("8859/2"));
    assert_eq!(charset, b"8859/2");
    assert_eq!(app, b"Empf?nger");
    assert_eq!(err7, b"Pr?fung fehlgeschlagen ? 5 ?");
    let (charset, app, err7) = ack_to("utf8.hl7", None);
    assert_eq!(charset, b"UNICODE UTF-8");
    assert_eq!(app, "Empfänger".as_bytes());
    assert_eq!(err7, text.as_bytes());
    let (charset, _, err7) = ack_to("oru_r01.hl7", None);
    assert_eq!(charset, b"");
    assert_eq!(
        err7,
        text.as_bytes(),
        "no MSH-18: the text is left as it is"
    );
}

proptest! {
    /// Whatever the payload, the best-effort AR parses as an ACK with code AR.
    #[test]
    fn reject_unparseable_always_parses(
        prefix in prop_oneof![Just(&b""[..]), Just(&b"MSH|^~\\&|"[..]), Just(&b"MSH"[..])],
        tail in prop::collection::vec(any::<u8>(), 0..120),
        text in ".{0,40}",
    ) {
        let mut raw_bytes = prefix.to_vec();
        raw_bytes.extend(tail);
        let diagnostic = Diagnostic::error(ErrorCode::SegmentSequenceError, text);
        let options = AckOptions::default().include_err7(true).include_err8(true);
        let ack = Ack::reject_unparseable(&raw_bytes, &diagnostic, &options);
        let m = Message::parse(ack.as_bytes().clone()).unwrap();
        let back = Ack::from_message(m).unwrap();
        prop_assert_eq!(back.code(), AckCode::AR);
    }

    /// Any diagnostic text and override survive escaping: the ACK parses and ERR-7 decodes back.
    #[test]
    fn texts_are_escaped_with_incoming_delimiters(text in ".{0,40}", app in "[ -~]{0,12}") {
        let incoming = fixture("custom_delimiters.hl7");
        let incoming25 = Message::parse(Bytes::from(
            String::from_utf8_lossy(incoming.as_bytes()).replace("#2.4\r", "#2.5\r").into_bytes(),
        )).unwrap();
        let diagnostic = Diagnostic::error(ErrorCode::ApplicationInternalError, text.clone())
            .at(Location::new("PID", 1).field(5));
        let options = AckOptions::default().include_err7(true).sending_application(app);
        let ack = Ack::build(&incoming25, AckCode::AE, &[diagnostic], &options);
        let m = Message::parse(ack.as_bytes().clone()).unwrap();
        prop_assert_eq!(m.segment_count(), 3);
        let err7 = m.get("ERR-7").unwrap().map(|v| v.decoded().into_owned()).unwrap_or_default();
        prop_assert_eq!(err7, text.into_bytes());
    }
}

//! Unit tests of the ACK builder.

use bytes::Bytes;

use super::*;
use crate::hl7::{Location, Message, ParseOptions};

fn msg(raw: &'static [u8]) -> Message {
    Message::parse(Bytes::from_static(raw)).unwrap()
}

fn field<'a>(m: &'a Message, path: &str) -> &'a [u8] {
    m.get(path).unwrap().map_or(&[], |v| v.as_bytes())
}

const V23: &[u8] = b"MSH|^~\\&|LAB|HOSP|EHR|WARD|20240102030405||ORU^R01|C23|P|2.3\rPID|1\r";
const V251: &[u8] = b"MSH|^~\\&|LAB|HOSP^1.2^ISO|EHR|WARD|20240102030405||ADT^A01^ADT_A01|C251|T|2.5.1^DEU\rPID|1\r";

fn missing_pid3() -> Diagnostic {
    Diagnostic::error(ErrorCode::RequiredFieldMissing, "PID-3 is empty")
        .at(Location::new("PID", 1).field(3))
}

/// The header swaps sender and receiver, copies MSH-11/12 verbatim and answers MSH-10 in MSA-2.
#[test]
fn header_swaps_parties_and_copies_version() {
    let incoming = msg(V251);
    let ack = Ack::build(&incoming, AckCode::AA, &[], &AckOptions::default());
    let m = ack.message();
    assert_eq!(field(m, "MSH-3"), b"EHR");
    assert_eq!(field(m, "MSH-4"), b"WARD");
    assert_eq!(field(m, "MSH-5"), b"LAB");
    assert_eq!(field(m, "MSH-6"), b"HOSP^1.2^ISO");
    assert_eq!(field(m, "MSH-9"), b"ACK^A01^ACK");
    assert_eq!(field(m, "MSH-11"), b"T");
    assert_eq!(field(m, "MSH-12"), b"2.5.1^DEU");
    assert_eq!(field(m, "MSA-1"), b"AA");
    assert_eq!(field(m, "MSA-2"), b"C251");
    assert_eq!(ack.acknowledged_control_id(), b"C251");
    assert_eq!(ack.code(), AckCode::AA);
    assert_eq!(m.segment_count(), 2, "no ERR without diagnostics");
    assert_ne!(ack.control_id(), incoming.control_id());
}

/// A message without MSH-11 and MSH-12 gets an ACK with both (required fields): `P` and `2.5`,
/// as for bytes that cannot be read, and ERR in both layouts, its version being unknown.
#[test]
fn missing_processing_id_and_version_get_defaults() {
    for raw in [
        &b"MSH|^~\\&|A|B|C|D|20261207||ADT^A01|NOVER\rPID|1\r"[..],
        b"MSH|^~\\&|A|B|C|D|20261207||ADT^A01|NOVER|||\rPID|1\r",
    ] {
        let incoming = Message::parse(Bytes::copy_from_slice(raw)).unwrap();
        let ack = Ack::build(
            &incoming,
            AckCode::AE,
            &[missing_pid3()],
            &AckOptions::default(),
        );
        let m = ack.message();
        assert_eq!(field(m, "MSH-11"), b"P");
        assert_eq!(field(m, "MSH-12"), b"2.5");
        assert_eq!(field(m, "MSA-2"), b"NOVER");
        // Still both ERR layouts: the sender's version is unknown, whatever the ACK declares.
        assert!(field(m, "ERR-1").starts_with(b"PID^1^3^101&"));
        assert_eq!(field(m, "ERR-2"), b"PID^1^3");
    }
}

/// MSH-7 is the current UTC time with an explicit +0000 offset.
#[test]
fn timestamp_is_utc_with_offset() {
    let ack = Ack::build(&msg(V251), AckCode::AA, &[], &AckOptions::default());
    let ts = field(ack.message(), "MSH-7");
    assert_eq!(ts.len(), 19);
    assert!(ts.ends_with(b"+0000"));
    assert!(ts[..14].iter().all(u8::is_ascii_digit));
    assert!(ts.starts_with(b"20"));
}

/// Without a trigger event MSH-9 is `ACK^^ACK` from v2.3.1 on (MSH-9.3 is required there, and
/// parsers such as hl7apy look it up), and just `ACK` before.
#[test]
fn message_type_without_trigger_keeps_the_structure() {
    let ack = Ack::build(
        &msg(b"MSH|^~\\&|A|B|C|D|20240101||ADT|X1|P|2.5\r"),
        AckCode::AA,
        &[],
        &AckOptions::default(),
    );
    assert_eq!(field(ack.message(), "MSH-9"), b"ACK^^ACK");
    assert_eq!(ack.message().message_structure(), Some("ACK"));
    let old = Ack::build(
        &msg(b"MSH|^~\\&|A|B|C|D|20240101||ADT|X1|P|2.3\r"),
        AckCode::AA,
        &[],
        &AckOptions::default(),
    );
    assert_eq!(field(old.message(), "MSH-9"), b"ACK");
}

/// From v2.5 each diagnostic becomes ERR-2 (location), ERR-3 (code) and ERR-4 (severity).
#[test]
fn v25_writes_err2_err3_err4() {
    let warning = Diagnostic::warning(ErrorCode::TableValueNotFound, "unknown sex code");
    let ack = Ack::build(
        &msg(V251),
        AckCode::AE,
        &[missing_pid3(), warning],
        &AckOptions::default().include_err8(false),
    );
    let m = ack.message();
    let text = String::from_utf8_lossy(m.as_bytes());
    assert!(
        text.contains("\rERR||PID^1^3|101^Required field missing^HL70357|E\r"),
        "{text}"
    );
    assert!(
        text.ends_with("\rERR|||103^Table value not found^HL70357|W\r"),
        "{text}"
    );
    assert_eq!(m.segments_by_id("ERR").count(), 2);
    assert_eq!(field(m, "ERR-1"), b"");
    assert_eq!(field(m, "MSA-3"), b"", "MSA-3 is deprecated from v2.4");
    assert!(
        !text.contains("PID-3 is empty"),
        "diagnostic text only when enabled"
    );
}

/// Before v2.5 a diagnostic becomes ERR-1, and MSA-3 carries the description before v2.4.
#[test]
fn v23_writes_err1_and_msa3() {
    let ack = Ack::build(
        &msg(V23),
        AckCode::AE,
        &[missing_pid3()],
        &AckOptions::default().include_err8(false),
    );
    let m = ack.message();
    assert_eq!(
        field(m, "ERR-1"),
        b"PID^1^3^101&Required field missing&HL70357"
    );
    assert_eq!(
        m.segment("ERR").unwrap().field_count(),
        1,
        "nothing past ERR-1"
    );
    assert_eq!(field(m, "MSA-3"), b"Required field missing");
    assert_eq!(field(m, "MSH-9"), b"ACK^R01", "v2.3 has no MSH-9.3");
    assert_eq!(field(m, "MSH-12"), b"2.3");
}

/// v2.4 uses ERR-1 but no longer writes MSA-3.
#[test]
fn v24_writes_err1_without_msa3() {
    let ack = Ack::build(
        &msg(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|X|P|2.4\r"),
        AckCode::AR,
        &[Diagnostic::error(
            ErrorCode::UnsupportedEventCode,
            "no route",
        )],
        &AckOptions::default().include_err8(false),
    );
    let m = ack.message();
    assert_eq!(field(m, "ERR-1"), b"^^^201&Unsupported event code&HL70357");
    assert_eq!(m.segment("MSA").unwrap().field_count(), 2);
}

/// With no version in MSH-12, each ERR carries both ERR-1 and ERR-2..4; the ACK's MSH-12 (a
/// required field) says `2.5`, as for bytes that cannot be read.
#[test]
fn unknown_version_writes_both_layouts() {
    let ack = Ack::build(
        &msg(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X\r"),
        AckCode::AR,
        &[missing_pid3()],
        &AckOptions::default().include_err8(false),
    );
    let m = ack.message();
    assert_eq!(field(m, "MSH-12"), b"2.5");
    assert_eq!(
        field(m, "ERR-1"),
        b"PID^1^3^101&Required field missing&HL70357"
    );
    assert_eq!(field(m, "ERR-2"), b"PID^1^3");
    assert_eq!(field(m, "ERR-3.1"), b"101");
    assert_eq!(field(m, "ERR-4"), b"E");
}

/// ERR-7 and ERR-8 carry the escaped diagnostic text only when enabled.
#[test]
fn err7_and_err8_only_when_enabled() {
    let d = Diagnostic::error(ErrorCode::ApplicationInternalError, "db|down^now");
    let both = AckOptions::default().include_err7(true).include_err8(true);
    let ack = Ack::build(&msg(V251), AckCode::AE, std::slice::from_ref(&d), &both);
    let m = ack.message();
    assert_eq!(field(m, "ERR-7"), b"db\\F\\down\\S\\now");
    assert_eq!(&*m.get("ERR-7").unwrap().unwrap().decoded(), b"db|down^now");
    assert_eq!(field(m, "ERR-8"), b"db\\F\\down\\S\\now");
    let only8 = AckOptions::default().include_err8(true);
    let ack = Ack::build(&msg(V251), AckCode::AE, std::slice::from_ref(&d), &only8);
    assert_eq!(field(ack.message(), "ERR-7"), b"");
    assert_eq!(field(ack.message(), "ERR-8"), b"db\\F\\down\\S\\now");
    let legacy = Ack::build(
        &msg(V23),
        AckCode::AE,
        &[d],
        &AckOptions::default().include_err7(true),
    );
    assert_eq!(field(legacy.message(), "MSA-3"), b"db\\F\\down\\S\\now");
}

/// A full ERL location is written with every index, trailing empties dropped.
#[test]
fn err2_writes_full_location() {
    let d = Diagnostic::error(ErrorCode::DataTypeError, "bad").at(Location::new("OBX", 2)
        .field(5)
        .repetition(1)
        .component(3)
        .subcomponent(2));
    let ack = Ack::build(&msg(V251), AckCode::AE, &[d], &AckOptions::default());
    assert_eq!(field(ack.message(), "ERR-2"), b"OBX^2^5^1^3^2");
    let d =
        Diagnostic::error(ErrorCode::DataTypeError, "bad").at(Location::new("OBX", 2).component(3));
    let ack = Ack::build(&msg(V251), AckCode::AE, &[d], &AckOptions::default());
    assert_eq!(field(ack.message(), "ERR-2"), b"OBX^2^^^3");
}

/// The incoming delimiters, truncation character included, are reused everywhere.
#[test]
fn reuses_incoming_delimiters() {
    let incoming = msg(b"MSH#$*@!%#APP#FAC#ME#MYFAC#20240101##ORU$R01#Q1#P#2.7\rPID#1\r");
    let d =
        Diagnostic::error(ErrorCode::DataTypeError, "x#y%z").at(Location::new("PID", 1).field(3));
    let ack = Ack::build(
        &incoming,
        AckCode::AE,
        &[d],
        &AckOptions::default().include_err7(true),
    );
    let m = ack.message();
    assert_eq!(m.delimiters(), incoming.delimiters());
    let raw = m.as_bytes();
    assert!(
        raw.starts_with(b"MSH#$*@!%#ME#MYFAC#APP#FAC#"),
        "{:?}",
        String::from_utf8_lossy(raw)
    );
    assert_eq!(field(m, "MSH-9"), b"ACK$R01$ACK");
    assert_eq!(field(m, "ERR-3"), b"102$Data type error$HL70357");
    assert_eq!(field(m, "ERR-7"), b"x@F@y@P@z");
    assert_eq!(&*m.get("ERR-7").unwrap().unwrap().decoded(), b"x#y%z");
    assert_eq!(field(m, "MSA-2"), b"Q1");
}

/// Overrides replace MSH-3/4 and are re-encoded with the incoming component separator.
#[test]
fn overrides_replace_sender() {
    let incoming = msg(b"MSH#$*@!#APP#FAC#ME#MYFAC#20240101##ORU$R01#Q1#P#2.5\r");
    let options = AckOptions::default()
        .sending_application("RX^1.2.3^ISO")
        .sending_facility("SITE#1")
        .control_id_prefix("RX");
    let ack = Ack::build(&incoming, AckCode::AA, &[], &options);
    let m = ack.message();
    assert_eq!(field(m, "MSH-3"), b"RX$1.2.3$ISO");
    assert_eq!(field(m, "MSH-4"), b"SITE@F@1");
    assert!(ack.control_id().unwrap().starts_with("RX"));
}

/// MSH-18 is carried over, since the ACK reuses bytes in that character set.
#[test]
fn charset_is_copied() {
    let incoming = msg(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X|P|2.5||||||8859/1\r");
    let ack = Ack::build(&incoming, AckCode::AA, &[], &AckOptions::default());
    assert_eq!(ack.message().charset(), Some("8859/1"));
}

/// Each ACK gets a new control id, unique across many builds.
#[test]
fn control_ids_are_unique() {
    let incoming = msg(V251);
    let ids: std::collections::HashSet<String> = (0..2000)
        .map(|_| {
            let ack = Ack::build(&incoming, AckCode::AA, &[], &AckOptions::default());
            ack.control_id().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 2000);
    assert!(ids.iter().all(|id| id.len() <= 20));
}

/// Enhanced-mode codes use the same layout as original mode.
#[test]
fn enhanced_codes_use_the_same_layout() {
    for code in [AckCode::CA, AckCode::CE, AckCode::CR] {
        let ack = Ack::build(&msg(V251), code, &[missing_pid3()], &AckOptions::default());
        assert_eq!(ack.code(), code);
        assert_eq!(field(ack.message(), "MSA-1"), code.as_str().as_bytes());
        assert_eq!(field(ack.message(), "ERR-2"), b"PID^1^3");
    }
}

/// `accept_ack_wanted` follows table 0155 for every requirement and outcome.
#[test]
fn accept_ack_wanted_truth_table() {
    use AckRequirement::*;
    for (req, on_success, on_error) in [
        (Some(Always), true, true),
        (Some(Never), false, false),
        (Some(ErrorOnly), false, true),
        (Some(SuccessOnly), true, false),
        (None, false, false),
    ] {
        assert_eq!(accept_ack_wanted(req, true), on_success, "{req:?} success");
        assert_eq!(accept_ack_wanted(req, false), on_error, "{req:?} error");
    }
}

/// An AR to bytes that are not HL7 is a well-formed ACK: default delimiters, empty MSA-2, ERR 100.
#[test]
fn reject_unparseable_garbage_is_a_valid_ack() {
    let raw = b"this is not HL7 at all";
    let error = Message::parse(Bytes::from_static(raw)).unwrap_err();
    let ack = Ack::reject_unparseable(
        raw,
        &error.to_diagnostic(),
        &AckOptions::default().include_err8(false),
    );
    let reparsed = Ack::from_message(Message::parse(ack.as_bytes().clone()).unwrap()).unwrap();
    assert_eq!(reparsed.code(), AckCode::AR);
    let m = reparsed.message();
    assert_eq!(m.delimiters(), &crate::hl7::Delimiters::default());
    assert_eq!(reparsed.acknowledged_control_id(), b"");
    assert_eq!(field(m, "MSH-9"), b"ACK^^ACK");
    assert_eq!(field(m, "MSH-11"), b"P");
    assert_eq!(field(m, "MSH-12"), b"2.5");
    assert_eq!(
        field(m, "ERR-1"),
        b"MSH^1^^100&Segment sequence error&HL70357"
    );
    assert_eq!(field(m, "ERR-2"), b"MSH^1");
    assert_eq!(field(m, "ERR-3.1"), b"100");
    assert!(!String::from_utf8_lossy(m.as_bytes()).contains("not HL7"));
}

/// A damaged MSH is not mined for values; bad delimiters give ERR 102.
#[test]
fn reject_unparseable_ignores_a_damaged_msh() {
    let raw = b"MSH|^^\\&|APP|FAC|||20240101||ADT^A01|SECRET1|P|2.3\r";
    let error = Message::parse(Bytes::from_static(raw)).unwrap_err();
    let ack = Ack::reject_unparseable(raw, &error.to_diagnostic(), &AckOptions::default());
    let m = ack.message();
    assert_eq!(ack.acknowledged_control_id(), b"");
    assert_eq!(field(m, "ERR-3.1"), b"102");
    assert_eq!(field(m, "ERR-2"), b"MSH^1^2");
    assert!(!String::from_utf8_lossy(m.as_bytes()).contains("SECRET1"));
}

/// A message behind a UTF-8 byte order mark is refused (AR 100, "byte order mark"), and the
/// MSH behind the mark names it: MSA-2 is its control id, the header is swapped, so the sender
/// can tell which message to fix.
#[test]
fn reject_unparseable_reads_the_msh_behind_a_byte_order_mark() {
    let raw = b"\xEF\xBB\xBFMSH|^~\\&|APP|FAC|ME|MYFAC|20240101||ADT^A04|BOM1|P|2.5\rPID|1\r";
    let error = Message::parse(Bytes::from_static(raw)).unwrap_err();
    assert_eq!(error, crate::hl7::ParseError::ByteOrderMark);
    let ack = Ack::reject_unparseable(raw, &error.to_diagnostic(), &AckOptions::default());
    let m = ack.message();
    assert_eq!(ack.code(), AckCode::AR);
    assert_eq!(ack.acknowledged_control_id(), b"BOM1");
    assert_eq!(field(m, "MSH-3"), b"ME");
    assert_eq!(field(m, "MSH-5"), b"APP");
    assert_eq!(field(m, "ERR-3.1"), b"100");
    assert_eq!(field(m, "ERR-2"), b"MSH^1");
    assert_eq!(
        field(m, "ERR-8"),
        b"message starts with a UTF-8 byte order mark before MSH"
    );
}

/// When only later segments are damaged, the intact MSH gives the usual swapped header.
#[test]
fn reject_unparseable_uses_an_intact_msh() {
    let raw = b"MSH|^~\\&|APP|FAC|ME|MYFAC|20240101||ADT^A04|C9|P|2.3\nPID|1\n";
    let error = Message::parse(Bytes::from_static(raw)).unwrap_err();
    assert!(
        Message::parse_with(
            Bytes::from_static(raw),
            &ParseOptions::default().lenient_line_endings(true)
        )
        .is_ok()
    );
    let ack = Ack::reject_unparseable(raw, &error.to_diagnostic(), &AckOptions::default());
    let m = ack.message();
    assert_eq!(ack.code(), AckCode::AR);
    assert_eq!(ack.acknowledged_control_id(), b"C9");
    assert_eq!(field(m, "MSH-3"), b"ME");
    assert_eq!(field(m, "MSH-12"), b"2.3");
    assert_eq!(field(m, "ERR-1.4.1"), b"100");
}

/// `from_message` reads a received ACK and refuses messages without a valid MSA-1.
#[test]
fn from_message_reads_received_acks() {
    let ack = Ack::from_message(msg(
        b"MSH|^~\\&|A|B|C|D|1||ACK^A01^ACK|9|P|2.5\rMSA|CE|C1\r",
    ))
    .unwrap();
    assert_eq!(ack.code(), AckCode::CE);
    assert_eq!(ack.acknowledged_control_id(), b"C1");
    assert_eq!(ack.control_id(), Some("9"));
    assert!(Ack::from_message(msg(b"MSH|^~\\&\rMSA|XX|1\r")).is_none());
    assert!(Ack::from_message(msg(V251)).is_none());
}

/// `Debug` of an ACK shows the code and segment summary only.
#[test]
fn ack_debug_has_no_content() {
    let ack = Ack::build(&msg(V251), AckCode::AA, &[], &AckOptions::default());
    let text = format!("{ack:?}");
    assert!(
        text.starts_with("Ack { code: AA, message: Message {"),
        "{text}"
    );
    assert!(!text.contains("C251"));
}

/// By default the diagnostic's text reaches the sender: ERR-8 (user message) from v2.5, the
/// text of ERR-1's code and MSA-3 before; ERR-3.2 always keeps the table description.
#[test]
fn diagnostic_text_is_sent_by_default() {
    let no_route = Diagnostic::error(ErrorCode::UnsupportedEventCode, "no route for ADT^A99");
    let modern = Ack::build(
        &msg(V251),
        AckCode::AR,
        std::slice::from_ref(&no_route),
        &AckOptions::default(),
    );
    assert_eq!(
        field(modern.message(), "ERR-3.2"),
        b"Unsupported event code"
    );
    assert_eq!(field(modern.message(), "ERR-7"), b"");
    assert_eq!(
        field(modern.message(), "ERR-8"),
        b"no route for ADT\\S\\A99"
    );
    let legacy = Ack::build(&msg(V23), AckCode::AR, &[no_route], &AckOptions::default());
    assert_eq!(
        field(legacy.message(), "ERR-1"),
        b"^^^201&no route for ADT\\S\\A99&HL70357"
    );
    assert_eq!(
        field(legacy.message(), "MSA-3"),
        b"no route for ADT\\S\\A99"
    );
}

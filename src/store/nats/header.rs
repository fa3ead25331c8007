//! The headers each message is published with: the store metadata (receive time, listener,
//! peer, TLS identity, MSH fields 3, 4, 5, 6, 9, 10, 11 and 12, content digest) and
//! `Nats-Msg-Id`. Never a field outside MSH: the headers are what a stream browser shows.
//!
//! Values are the raw field text, made safe for a header line: control characters become
//! spaces, and a value is cut at [`MAX_VALUE`] bytes (the payload, which holds the whole MSH, is
//! the source of truth). Empty fields are left out.

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use aws_lc_rs::digest::{Context, SHA256};

use crate::store::Record;

/// `Nats-Msg-Id`: the stream's deduplication key (see [`message_id`]).
pub const MSG_ID: &str = "Nats-Msg-Id";
/// When the receiver got the message, RFC 3339 in UTC with microseconds
/// (`2026-12-04T17:01:42.123456Z`).
pub const RECEIVED_AT: &str = "Mllp-Received-At";
/// The local address the message came in on (`10.0.0.2:2575`).
pub const LISTENER: &str = "Mllp-Listener";
/// The sender's address.
pub const PEER: &str = "Mllp-Peer";
/// The sender's verified TLS client identity (mutual TLS), when there is one.
pub const TLS_IDENTITY: &str = "Mllp-Tls-Identity";
/// SHA-256 of the payload with MSH-7 left out, in hex: equal digests are the same message.
pub const DIGEST: &str = "Mllp-Digest";
/// MSH-3, sending application.
pub const SENDING_APPLICATION: &str = "Hl7-Sending-Application";
/// MSH-4, sending facility.
pub const SENDING_FACILITY: &str = "Hl7-Sending-Facility";
/// MSH-5, receiving application.
pub const RECEIVING_APPLICATION: &str = "Hl7-Receiving-Application";
/// MSH-6, receiving facility.
pub const RECEIVING_FACILITY: &str = "Hl7-Receiving-Facility";
/// MSH-9, message type, whole (`ADT^A01^ADT_A01`).
pub const MESSAGE_TYPE: &str = "Hl7-Message-Type";
/// MSH-10, message control id.
pub const CONTROL_ID: &str = "Hl7-Control-Id";
/// MSH-11, processing id.
pub const PROCESSING_ID: &str = "Hl7-Processing-Id";
/// MSH-12, version id.
pub const VERSION: &str = "Hl7-Version";

/// The longest header value, in bytes; longer values are cut (at a character boundary).
pub const MAX_VALUE: usize = 200;

/// Room kept for the headers when checking size limits: every header at [`MAX_VALUE`] fits.
pub(crate) const BUDGET: usize = 4096;

/// `Nats-Msg-Id` of `record`: SHA-256 over the duplicate key (MSH-3, MSH-4, MSH-10) and the
/// content digest (MSH-7 left out), first 16 bytes in hex. Any receiver computes the same id
/// for a resend, so the stream stores it once inside its duplicate window.
pub fn message_id(record: &Record) -> String {
    let mut context = Context::new(&SHA256);
    context.update(&record.dedup_key());
    context.update(record.digest());
    hex(&context.finish().as_ref()[..16])
}

/// The headers of `record`, `Nats-Msg-Id` included.
pub(crate) fn headers(record: &Record) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID, message_id(record).as_str());
    headers.insert(RECEIVED_AT, rfc3339(record.received_at()).as_str());
    headers.insert(LISTENER, record.listener().to_string().as_str());
    headers.insert(PEER, record.peer().to_string().as_str());
    if let Some(identity) = record.tls_identity() {
        put(&mut headers, TLS_IDENTITY, identity.as_bytes());
    }
    headers.insert(DIGEST, hex(record.digest()).as_str());
    put(
        &mut headers,
        SENDING_APPLICATION,
        record.sending_application(),
    );
    put(&mut headers, SENDING_FACILITY, record.sending_facility());
    put(
        &mut headers,
        RECEIVING_APPLICATION,
        record.receiving_application(),
    );
    put(
        &mut headers,
        RECEIVING_FACILITY,
        record.receiving_facility(),
    );
    put(&mut headers, MESSAGE_TYPE, record.message_type());
    put(&mut headers, CONTROL_ID, record.control_id());
    put(&mut headers, PROCESSING_ID, record.processing_id());
    put(&mut headers, VERSION, record.version());
    headers
}

/// Inserts `raw` as a safe header value, unless it is empty.
fn put(headers: &mut HeaderMap, name: &'static str, raw: &[u8]) {
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let value = text.trim();
    if value.is_empty() {
        return;
    }
    let mut end = value.len().min(MAX_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    headers.insert(name, value[..end].trim_end());
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// `time` in RFC 3339, UTC, with microseconds. Times before 1970 (a broken clock) are written
/// as the epoch.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (year, month, day) = crate::ack::civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::hl7::Message;

    fn record(text: &str) -> Record {
        let message = Message::parse(Bytes::from(text.to_owned())).unwrap();
        Record::from_message(
            &message,
            UNIX_EPOCH + std::time::Duration::from_micros(1_764_867_702_123_456),
            "127.0.0.1:2575".parse().unwrap(),
            "10.1.2.3:40000".parse().unwrap(),
            Some("CN=lab".to_owned()),
        )
    }

    #[test]
    fn headers_carry_msh_metadata_and_nothing_else() {
        let r = record(
            "MSH|^~\\&|LAB|HOSP|EHR|WARD|20240101||ADT^A01^ADT_A01|C1|P|2.5\rPID|1||SECRET\r",
        );
        let h = headers(&r);
        let get = |n: &str| h.get(n).map(|v| v.as_str().to_owned());
        assert_eq!(get(SENDING_APPLICATION).as_deref(), Some("LAB"));
        assert_eq!(get(RECEIVING_FACILITY).as_deref(), Some("WARD"));
        assert_eq!(get(MESSAGE_TYPE).as_deref(), Some("ADT^A01^ADT_A01"));
        assert_eq!(get(CONTROL_ID).as_deref(), Some("C1"));
        assert_eq!(get(PEER).as_deref(), Some("10.1.2.3:40000"));
        assert_eq!(get(TLS_IDENTITY).as_deref(), Some("CN=lab"));
        assert_eq!(
            get(RECEIVED_AT).as_deref(),
            Some("2025-12-04T17:01:42.123456Z")
        );
        assert_eq!(get(MSG_ID).unwrap().len(), 32);
        let all: String = h.iter().map(|(_, v)| format!("{v:?}")).collect();
        assert!(!all.contains("SECRET"));
    }

    #[test]
    fn the_message_id_ignores_msh_7_and_follows_sender_id_and_content() {
        let a = record("MSH|^~\\&|LAB|HOSP|EHR|WARD|20240101||ADT^A01|C1|P|2.5\rPID|1\r");
        let resend = record("MSH|^~\\&|LAB|HOSP|EHR|WARD|20250101||ADT^A01|C1|P|2.5\rPID|1\r");
        let other = record("MSH|^~\\&|LAB|HOSP|EHR|WARD|20240101||ADT^A01|C1|P|2.5\rPID|2\r");
        let elsewhere = record("MSH|^~\\&|RAD|HOSP|EHR|WARD|20240101||ADT^A01|C1|P|2.5\rPID|1\r");
        assert_eq!(message_id(&a), message_id(&resend));
        assert_ne!(message_id(&a), message_id(&other));
        assert_ne!(message_id(&a), message_id(&elsewhere));
    }

    #[test]
    fn long_or_hostile_values_fit_the_budget() {
        let long = "É".repeat(1000);
        let text = format!(
            "MSH|^~\\&|{long}|{long}|{long}|{long}|20240101||{long}^A01|{long}|{long}|{long}\rPID|1\r"
        );
        let mut r = record(&text);
        let h = headers(&r);
        let size: usize = 12
            + h.iter()
                .flat_map(|(n, vs)| {
                    vs.iter()
                        .map(move |v| n.to_string().len() + v.as_str().len() + 4)
                })
                .sum::<usize>();
        assert!(size <= BUDGET, "{size}");
        assert!(
            h.iter()
                .all(|(_, vs)| vs.iter().all(|v| v.as_str().len() <= MAX_VALUE))
        );
        r = record("MSH|^~\\&|A\x01B|||||20240101||ADT^A01|C\x7f1|P|2.5\rPID|1\r");
        let h = headers(&r);
        assert_eq!(h.get(SENDING_APPLICATION).unwrap().as_str(), "A B");
        assert!(h.get(SENDING_FACILITY).is_none());
    }
}

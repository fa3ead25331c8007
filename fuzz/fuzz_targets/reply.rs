//! Feeds arbitrary incoming messages and replies to `Reply::finish`, the check the server runs
//! on a handler's reply before it writes it in the place of the ACK: a raw reply, kept as
//! written or rewritten with the sender's delimiters (`keep_sender_delimiters`), and a reply
//! built with `Reply::builder` from arbitrary texts.
//!
//! Checks: no panic; a finished reply holds no MLLP reserved byte and parses again as it is
//! sent; rewritten, it carries the sender's delimiters and the same segments; its code is its
//! MSA-1 (AA without one); a refusal for a reserved byte points at one. A built reply from
//! plain ASCII text (no standard delimiter, no control byte) always finishes, and each field
//! reads back, decoded, as the text given, whatever delimiters the sender uses.
//!
//! Run with: `cargo +nightly fuzz run reply` (from the repository root).
//!
//! Byte 0: bit 0 sets `keep_sender_delimiters`, bit 1 chooses the builder; bytes 1-2: the
//! length of the incoming message (big-endian, capped at what is there); then the incoming
//! message, then the reply (raw) or the builder's texts separated by NUL bytes: the message
//! type, the segment id, then its fields.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mllp::ack::{Ack, AckCode, AckOptions, Reply, ReplyError};
use mllp::hl7::Message;

/// Whether a text is written as one plain value: printable ASCII without the standard
/// delimiters the builder reads as structure.
fn plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && !b"|^~\\&".contains(&b))
}

fn segment_ids(message: &Message) -> Vec<String> {
    message.segments().map(|s| s.id().to_owned()).collect()
}

/// What every finished reply must be.
fn check_sent(ack: &Ack) {
    let bytes = ack.message().as_bytes();
    assert!(
        memchr::memchr2(0x0B, 0x1C, bytes).is_none(),
        "a finished reply holds a reserved byte"
    );
    let again = Message::parse(Bytes::copy_from_slice(bytes)).expect("sent bytes parse again");
    // Read back as a receiver reads an ACK; a reply without a table 0008 MSA-1 counts as AA.
    let read = Ack::from_message(again).map_or(AckCode::AA, |received| received.code());
    assert_eq!(ack.code(), read);
}

fuzz_target!(|data: &[u8]| {
    let [control, hi, lo, rest @ ..] = data else {
        return;
    };
    let keep = control & 1 == 1;
    let split = (usize::from(*hi) << 8 | usize::from(*lo)).min(rest.len());
    let (incoming, reply) = rest.split_at(split);
    // The framer never hands over a message holding a reserved byte.
    if memchr::memchr2(0x0B, 0x1C, incoming).is_some() {
        return;
    }
    let Ok(incoming) = Message::parse(Bytes::copy_from_slice(incoming)) else {
        return;
    };

    if control & 2 == 0 {
        let original = Message::parse(Bytes::copy_from_slice(reply)).ok();
        match Reply::raw(Bytes::copy_from_slice(reply))
            .keep_sender_delimiters(keep)
            .finish(&incoming)
        {
            Ok(ack) => {
                check_sent(&ack);
                let original = original.expect("a finished raw reply parsed as written");
                if keep {
                    assert_eq!(ack.message().delimiters(), incoming.delimiters());
                } else {
                    assert_eq!(ack.message().as_bytes(), original.as_bytes());
                }
                assert_eq!(segment_ids(ack.message()), segment_ids(&original));
            }
            Err(ReplyError::Unframeable { offset }) => {
                assert!(matches!(reply.get(offset), Some(0x0B | 0x1C)));
            }
            Err(_) => {}
        }
        return;
    }

    let Ok(texts) = std::str::from_utf8(reply) else {
        return;
    };
    let mut texts = texts.split('\0');
    let message_type = texts.next().unwrap_or("");
    let id = texts.next().unwrap_or("");
    let fields: Vec<&str> = texts.collect();
    let built = Reply::builder(&incoming, message_type, &AckOptions::default())
        .segment(id, &fields)
        .build()
        .keep_sender_delimiters(keep);
    let finished = built.finish(&incoming);
    let plain_input = plain(message_type)
        && !message_type.is_empty()
        && id.len() == 3
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && id != "MSH"
        && fields.iter().all(|f| plain(f));
    if !plain_input {
        if let Ok(ack) = finished {
            check_sent(&ack);
        }
        return;
    }
    let ack = finished.expect("a reply built from plain text finishes");
    check_sent(&ack);
    let segment = ack
        .message()
        .segments()
        .find(|s| s.id() == id)
        .expect("the added segment is there");
    for (n, text) in fields.iter().enumerate() {
        let value = segment.field(n + 1).map(|v| v.decoded().into_owned());
        assert_eq!(
            value.as_deref().unwrap_or(b""),
            text.as_bytes(),
            "field {} of {id}",
            n + 1
        );
    }
});

//! The content digest behind duplicate detection.

use aws_lc_rs::digest::{Context, SHA256};

use crate::hl7::Message;

/// SHA-256 of the message's bytes with MSH-7 (date/time of message) left out, so that a resend
/// whose only change is a fresh MSH-7 has the same digest. The MSH-7 field's own bytes are
/// skipped; its separators stay, so moving bytes across the field boundary changes the digest.
pub(crate) fn content_digest(message: &Message) -> [u8; 32] {
    let bytes = message.as_bytes();
    let mut context = Context::new(&SHA256);
    match message.msh().field(7).map(|v| v.as_bytes()) {
        Some(field) => {
            // `field` is a slice of `bytes`: its offset is the pointer difference.
            let start = field.as_ptr() as usize - bytes.as_ptr() as usize;
            let end = start + field.len();
            context.update(&bytes[..start]);
            context.update(&[0x00]); // marks where MSH-7 was
            context.update(&bytes[end..]);
        }
        None => context.update(bytes),
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn digest(text: &str) -> [u8; 32] {
        content_digest(&Message::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap())
    }

    #[test]
    fn a_new_msh_7_leaves_the_digest_unchanged() {
        let a = digest("MSH|^~\\&|A|B|C|D|20240101000000||ADT^A01|1|P|2.5\rPID|1\r");
        let b = digest("MSH|^~\\&|A|B|C|D|20251231235959||ADT^A01|1|P|2.5\rPID|1\r");
        let empty = digest("MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rPID|1\r");
        assert_eq!(a, b);
        assert_eq!(a, empty);
    }

    #[test]
    fn any_other_change_changes_the_digest() {
        let a = digest("MSH|^~\\&|A|B|C|D|20240101000000||ADT^A01|1|P|2.5\rPID|1\r");
        let b = digest("MSH|^~\\&|A|B|C|D|20240101000000||ADT^A01|1|P|2.5\rPID|2\r");
        let c = digest("MSH|^~\\&|A|B|C|D|2024010100000||0ADT^A01|1|P|2.5\rPID|1\r");
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}

//! Re-encoding content from one set of delimiters to another.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use super::{Delimiters, Message};

/// `raw`, written with the delimiters `from`, rewritten with the delimiters `to` so that it
/// reads the same: each separator becomes the same separator of `to`; a data byte that is a
/// delimiter of `to` is written as its escape sequence (`\F\`, `\S\`, `\R\`, `\T\`, `\E\`,
/// `\P\`); a delimiter escape of `from` (which stands for one of `from`'s characters) becomes
/// that character as data under `to`; other escape sequences (`\H\`, `\X0D\`, ...) are kept
/// with `to`'s escape character. Borrowed when the delimiters are the same.
///
/// Meant for the fields of a segment (the segment id included), not for MSH-1 and MSH-2,
/// which hold the delimiters themselves: [`with_delimiters`] handles a whole message.
///
/// # Examples
///
/// ```
/// use mllp::hl7::{translate, Delimiters};
/// let to = Delimiters::new(b'#', b"$*@!").unwrap();
/// let written = translate(b"QAK|Q1^A#2|OK", &Delimiters::default(), &to);
/// assert_eq!(&*written, b"QAK#Q1$A@F@2#OK");
/// ```
pub fn translate<'a>(raw: &'a [u8], from: &Delimiters, to: &Delimiters) -> Cow<'a, [u8]> {
    if from == to {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + 8);
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b == from.escape() {
            let Some(len) = raw[i..].iter().position(|&c| c == from.escape()) else {
                // An escape character that opens nothing: data.
                data(&mut out, b, to);
                continue;
            };
            let sequence = &raw[i..i + len];
            i += len + 1;
            // The delimiter escapes name `from`'s characters: under `to` they are data.
            let literal = match sequence {
                b"F" => Some(from.field()),
                b"S" => Some(from.component()),
                b"R" => Some(from.repetition()),
                b"T" => Some(from.subcomponent()),
                b"E" => Some(from.escape()),
                b"P" => from.truncation(),
                _ => None,
            };
            match literal {
                Some(c) => data(&mut out, c, to),
                None => {
                    out.push(to.escape());
                    out.extend_from_slice(sequence);
                    out.push(to.escape());
                }
            }
            continue;
        }
        let separator = if b == from.field() {
            Some(to.field())
        } else if b == from.component() {
            Some(to.component())
        } else if b == from.repetition() {
            Some(to.repetition())
        } else if b == from.subcomponent() {
            Some(to.subcomponent())
        } else {
            None
        };
        match separator {
            Some(s) => out.push(s),
            // A truncation character keeps its role only where `to` has one.
            None if from.truncation() == Some(b) && to.truncation().is_some() => {
                out.extend(to.truncation());
            }
            None => data(&mut out, b, to),
        }
    }
    Cow::Owned(out)
}

/// Writes the data byte `b` under `to`: as it is, or as its escape sequence when it is one of
/// `to`'s delimiters.
fn data(out: &mut Vec<u8>, b: u8, to: &Delimiters) {
    let code = if b == to.field() {
        b'F'
    } else if b == to.component() {
        b'S'
    } else if b == to.repetition() {
        b'R'
    } else if b == to.subcomponent() {
        b'T'
    } else if b == to.escape() {
        b'E'
    } else if to.truncation() == Some(b) {
        b'P'
    } else {
        out.push(b);
        return;
    };
    out.extend_from_slice(&[to.escape(), code, to.escape()]);
}

/// The whole message rewritten with the delimiters `to`: MSH-1 and MSH-2 are `to`'s, every
/// other byte goes through [`translate`], segments end in CR. The bytes are returned as they
/// are when the delimiters are already `to`.
pub fn with_delimiters(message: &Message, to: &Delimiters) -> Bytes {
    let from = message.delimiters();
    if from == to {
        return message.as_bytes().clone();
    }
    let bytes = message.as_bytes();
    let mut out = BytesMut::with_capacity(bytes.len() + 16);
    for (i, segment) in message.segments().enumerate() {
        let raw = segment.as_bytes();
        if i == 0 {
            // "MSH", MSH-1, MSH-2, then the rest of MSH from its next separator on.
            out.extend_from_slice(b"MSH");
            out.extend_from_slice(&[
                to.field(),
                to.component(),
                to.repetition(),
                to.escape(),
                to.subcomponent(),
            ]);
            if let Some(t) = to.truncation() {
                out.extend_from_slice(&[t]);
            }
            let rest = raw
                .get(4..)
                .and_then(|after| {
                    after
                        .iter()
                        .position(|&b| b == from.field())
                        .map(|p| &after[p..])
                })
                .unwrap_or_default();
            out.extend_from_slice(&translate(rest, from, to));
        } else {
            out.extend_from_slice(&translate(raw, from, to));
        }
        out.extend_from_slice(b"\r");
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom() -> Delimiters {
        Delimiters::new(b'#', b"$*@!").unwrap()
    }

    /// A message moved to other delimiters reads the same field values (decoded), data bytes
    /// that collide with the new delimiters and delimiter escapes included; moved back, it is
    /// the original byte for byte.
    #[test]
    fn round_trips_and_keeps_values() {
        let original = Message::parse(Bytes::from_static(
            b"MSH|^~\\&|A|B|C|D|20240101||RSP^K22^RSP_K21|R1|P|2.5\rQAK|Q1#2|OK\rPID|1||A\\S\\B^^^H&1~X\r",
        ))
        .unwrap();
        let moved = Message::parse(with_delimiters(&original, &custom())).unwrap();
        assert_eq!(moved.delimiters(), &custom());
        assert_eq!(
            moved.get("MSH-9").unwrap().unwrap().as_bytes(),
            b"RSP$K22$RSP_K21"
        );
        for path in ["QAK-1", "PID-3.1", "PID-3(1).4.2", "PID-3(2)", "MSH-10"] {
            assert_eq!(
                moved.get(path).unwrap().unwrap().decoded(),
                original.get(path).unwrap().unwrap().decoded(),
                "{path}"
            );
        }
        let back = with_delimiters(&moved, &Delimiters::default());
        assert_eq!(&back[..], &original.as_bytes()[..]);
    }
}

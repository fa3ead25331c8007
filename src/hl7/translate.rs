//! Re-encoding content from one set of delimiters to another.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use super::{Delimiters, Message};

/// `raw`, written with the delimiters `from`, rewritten with the delimiters `to` so that it
/// reads the same: each separator becomes the same separator of `to`; a data byte that is a
/// delimiter of `to` is written as its escape sequence (`\F\`, `\S\`, `\R\`, `\T\`, `\E\`,
/// `\P\`); a delimiter escape of `from` (which stands for one of `from`'s characters) becomes
/// that character as data under `to`; other escape sequences (`\H\`, `\X0D\`, ...) are kept
/// with `to`'s escape character, unless their text holds one of `to`'s delimiters: then the
/// sequence is written as data, as it reads under `from`. An escape character with no closing
/// one before the next separator (`C:\temp|`) is data. Borrowed when the delimiters are the
/// same.
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
            // A sequence ends within its value: a separator or a line end before the closing
            // escape character (a lone `\` in `C:\temp|...`) makes this one data, as the parser,
            // which splits on separators first, reads it.
            let end = raw[i..].iter().position(|&c| {
                c == from.escape() || is_separator(c, from) || c == b'\r' || c == b'\n'
            });
            let Some(len) = end.filter(|&len| raw[i + len] == from.escape()) else {
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
                // A sequence naming one of `to`'s delimiters in its text cannot stay a sequence
                // (it would split the value): written as data, it reads as it did under `from`,
                // where an unknown sequence reads as its own text.
                None if sequence
                    .iter()
                    .any(|&c| c == to.escape() || is_separator(c, to)) =>
                {
                    data(&mut out, from.escape(), to);
                    for &c in sequence {
                        data(&mut out, c, to);
                    }
                    data(&mut out, from.escape(), to);
                }
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

/// Whether `b` is one of `d`'s separators (field, component, repetition, subcomponent).
fn is_separator(b: u8, d: &Delimiters) -> bool {
    b == d.field() || b == d.component() || b == d.repetition() || b == d.subcomponent()
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

    /// `text` parsed, and moved to [`custom`] and parsed again.
    fn move_to_custom(text: &'static [u8]) -> (Message, Message) {
        let original = Message::parse(Bytes::from_static(text)).unwrap();
        let moved = Message::parse(with_delimiters(&original, &custom())).unwrap();
        (original, moved)
    }

    /// The decoded value at `path`.
    fn value(message: &Message, path: &str) -> Vec<u8> {
        message.get(path).unwrap().unwrap().decoded().into_owned()
    }

    /// How many fields the OBX segment has.
    fn obx_fields(message: &Message) -> usize {
        message.segment("OBX").unwrap().fields().count()
    }

    /// A message moved to other delimiters reads the same field values (decoded), data bytes
    /// that collide with the new delimiters and delimiter escapes included; moved back, it is
    /// the original byte for byte.
    #[test]
    fn round_trips_and_keeps_values() {
        let (original, moved) = move_to_custom(
            b"MSH|^~\\&|A|B|C|D|20240101||RSP^K22^RSP_K21|R1|P|2.5\rQAK|Q1#2|OK\rPID|1||A\\S\\B^^^H&1~X\r",
        );
        assert_eq!(moved.delimiters(), &custom());
        assert_eq!(
            moved.get("MSH-9").unwrap().unwrap().as_bytes(),
            b"RSP$K22$RSP_K21"
        );
        for path in ["QAK-1", "PID-3.1", "PID-3(1).4.2", "PID-3(2)", "MSH-10"] {
            assert_eq!(value(&moved, path), value(&original, path), "{path}");
        }
        let back = with_delimiters(&moved, &Delimiters::default());
        assert_eq!(&back[..], &original.as_bytes()[..]);
    }

    /// An escape character with no closing one in its own value (a sender's unescaped
    /// `C:\temp`) is data: the fields after it keep their places. Found by the `translate`
    /// fuzz target: the sequence used to run on to the next escape character, across
    /// separators, and fields merged.
    #[test]
    fn a_lone_escape_character_does_not_swallow_the_fields_after_it() {
        let (original, moved) = move_to_custom(
            b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|M1|P|2.5\rOBX|1|ST|C:\\temp|x^y|ends\\H\\z\r",
        );
        assert_eq!(obx_fields(&moved), obx_fields(&original));
        for path in ["OBX-3", "OBX-4.1", "OBX-4.2"] {
            assert_eq!(value(&moved, path), value(&original, path), "{path}");
        }
        assert_eq!(value(&moved, "OBX-3"), b"C:\\temp");
        // A whole sequence in one value is still a sequence, under the new escape character.
        assert_eq!(moved.get("OBX-5").unwrap().unwrap().as_bytes(), b"ends@H@z");
    }

    /// A sequence whose text holds a delimiter of the new set (`\Za#b\` moved to `#` fields)
    /// is written as data, reading as it did (an unknown sequence reads as its own text); a
    /// sequence with no such character stays a sequence. Found by the `translate` fuzz target.
    #[test]
    fn a_sequence_holding_a_new_delimiter_is_written_as_data() {
        let (original, moved) = move_to_custom(
            b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|M1|P|2.5\rOBX|1|ST|\\Za#b!\\|\\Zok\\|z\r",
        );
        assert_eq!(obx_fields(&moved), obx_fields(&original));
        assert_eq!(value(&moved, "OBX-3"), b"\\Za#b!\\");
        assert_eq!(value(&moved, "OBX-3"), value(&original, "OBX-3"));
        assert_eq!(moved.get("OBX-4").unwrap().unwrap().as_bytes(), b"@Zok@");
        assert_eq!(moved.get("OBX-5").unwrap().unwrap().as_bytes(), b"z");
    }
}

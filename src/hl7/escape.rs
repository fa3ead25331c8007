//! Escape sequences: decoded on access, encoded on write (HL7 v2 chapter 2, "Use of escape
//! sequences in text fields").

use std::borrow::Cow;

use memchr::memchr;

use super::Delimiters;

/// Decodes the escape sequences of a raw value.
///
/// | sequence | becomes |
/// |---|---|
/// | `\F\` `\S\` `\T\` `\R\` `\E\` | the field, component, subcomponent, repetition or escape delimiter |
/// | `\P\` | the truncation character, when the message declares one (v2.7+) |
/// | `\Xhh…\` | the bytes given by the hexadecimal pairs |
/// | `\.br\`, `\H\`, `\N\`, `\Zxx\`, `\Cxxyy\`, … anything else | kept as it is, escape characters included |
///
/// Formatting (`\.br\`, `\H\`) and character-set (`\C…\`, `\M…\`) sequences are kept because
/// they are instructions for a display or a charset decoder, not characters; a malformed `\X…\`
/// (odd length, not hexadecimal) and an escape character with no closing one are kept too.
/// Returns the input borrowed when it holds no escape character.
///
/// # Examples
///
/// ```
/// use mllp::hl7::{decode, Delimiters};
/// let d = Delimiters::default();
/// assert_eq!(&*decode(br"A\S\B\X0D0A\\.br\", &d), b"A^B\r\n\\.br\\");
/// ```
pub fn decode<'a>(raw: &'a [u8], delimiters: &Delimiters) -> Cow<'a, [u8]> {
    let esc = delimiters.escape();
    let Some(first) = memchr(esc, raw) else {
        return Cow::Borrowed(raw);
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut at = first;
    // Invariant at the top of the loop: raw[at] is an escape character, and everything before
    // `at` has been written to `out`.
    loop {
        let Some(len) = memchr(esc, &raw[at + 1..]) else {
            out.extend_from_slice(&raw[at..]);
            break;
        };
        let close = at + 1 + len;
        let body = &raw[at + 1..close];
        match body {
            b"F" => out.push(delimiters.field()),
            b"S" => out.push(delimiters.component()),
            b"T" => out.push(delimiters.subcomponent()),
            b"R" => out.push(delimiters.repetition()),
            b"E" => out.push(esc),
            b"P" if delimiters.truncation().is_some() => {
                out.extend(delimiters.truncation());
            }
            [b'X', hex @ ..] if is_hex_pairs(hex) => {
                out.extend(
                    hex.chunks_exact(2)
                        .map(|p| (hex_val(p[0]) << 4) | hex_val(p[1])),
                );
            }
            _ => out.extend_from_slice(&raw[at..=close]),
        }
        let rest = close + 1;
        match memchr(esc, &raw[rest..]) {
            Some(n) => {
                out.extend_from_slice(&raw[rest..rest + n]);
                at = rest + n;
            }
            None => {
                out.extend_from_slice(&raw[rest..]);
                break;
            }
        }
    }
    Cow::Owned(out)
}

fn is_hex_pairs(hex: &[u8]) -> bool {
    !hex.is_empty() && hex.len().is_multiple_of(2) && hex.iter().all(u8::is_ascii_hexdigit)
}

/// The value of one ASCII hexadecimal digit (the caller has checked it is one).
const fn hex_val(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Escapes content for writing into a message with these delimiters.
///
/// Each delimiter becomes its escape sequence (`\F\ \S\ \T\ \R\ \E\`, and `\P\` for the
/// truncation character when there is one); CR and LF, which would end a segment, become
/// `\X0D\` and `\X0A\`, and the MLLP block characters 0x0B and 0x1C, which no framed message
/// may hold, `\X0B\` and `\X1C\`. Every other byte, including non-ASCII ones, is kept. Returns the input
/// borrowed when nothing needs escaping. [`decode`] reverses it exactly.
///
/// # Examples
///
/// ```
/// use mllp::hl7::{escape, decode, Delimiters};
/// let d = Delimiters::default();
/// let written = escape(b"50|50 ^_^\r\n", &d);
/// assert_eq!(&*written, br"50\F\50 \S\_\S\\X0D\\X0A\");
/// assert_eq!(&*decode(&written, &d), b"50|50 ^_^\r\n");
/// ```
pub fn escape<'a>(content: &'a [u8], delimiters: &Delimiters) -> Cow<'a, [u8]> {
    let Some(first) = content.iter().position(|&b| delimiters.is_special(b)) else {
        return Cow::Borrowed(content);
    };
    let esc = delimiters.escape();
    let mut out = Vec::with_capacity(content.len() + 8);
    out.extend_from_slice(&content[..first]);
    for &b in &content[first..] {
        let code: &[u8] = if b == delimiters.field() {
            b"F"
        } else if b == delimiters.component() {
            b"S"
        } else if b == delimiters.subcomponent() {
            b"T"
        } else if b == delimiters.repetition() {
            b"R"
        } else if b == esc {
            b"E"
        } else if Some(b) == delimiters.truncation() {
            b"P"
        } else if b == b'\r' {
            b"X0D"
        } else if b == b'\n' {
            b"X0A"
        } else if b == 0x0B {
            // The MLLP block characters may not appear in a message at all.
            b"X0B"
        } else if b == 0x1C {
            b"X1C"
        } else {
            out.push(b);
            continue;
        };
        out.push(esc);
        out.extend_from_slice(code);
        out.push(esc);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom() -> Delimiters {
        Delimiters::new(b'#', b"$*@!%").unwrap()
    }

    /// Each delimiter escape decodes to the message's own delimiter.
    #[test]
    fn delimiter_escapes_decode_to_the_message_delimiters() {
        let d = Delimiters::default();
        assert_eq!(&*decode(br"\F\\S\\T\\R\\E\", &d), b"|^&~\\");
        let c = custom();
        assert_eq!(&*decode(b"@F@@S@@T@@R@@E@@P@", &c), b"#$!*@%");
    }

    /// `\P\` is only the truncation character when the message declares one.
    #[test]
    fn truncation_escape_needs_a_truncation_character() {
        assert_eq!(&*decode(br"a\P\b", &Delimiters::default()), br"a\P\b");
        let d = Delimiters::new(b'|', b"^~\\&#").unwrap();
        assert_eq!(&*decode(br"a\P\b", &d), b"a#b");
    }

    /// Hexadecimal escapes decode to raw bytes, upper or lower case, several pairs at once.
    #[test]
    fn hex_escapes_decode_to_bytes() {
        let d = Delimiters::default();
        assert_eq!(&*decode(br"M\XFC\ller\X0d0A\", &d), b"M\xFCller\r\n");
    }

    /// Formatting, charset and malformed sequences pass through unchanged.
    #[test]
    fn unknown_and_malformed_sequences_pass_through() {
        let d = Delimiters::default();
        for raw in [
            &br"line\.br\next"[..],
            br"\H\bold\N\",
            br"\Zlocal\",
            br"\C2842\",
            br"\X0\",
            br"\XZZ\",
            br"\X\",
            br"\\",
            br"tail\",
            br"a\F",
        ] {
            assert_eq!(&*decode(raw, &d), raw, "{}", String::from_utf8_lossy(raw));
        }
    }

    /// Content without an escape character is borrowed, not copied.
    #[test]
    fn plain_content_is_borrowed() {
        let d = Delimiters::default();
        assert!(matches!(decode(b"plain text", &d), Cow::Borrowed(_)));
        assert!(matches!(escape(b"plain text", &d), Cow::Borrowed(_)));
    }

    /// Escaping replaces every delimiter, CR and LF, and decoding restores the content.
    #[test]
    fn escape_then_decode_restores_content() {
        for d in [Delimiters::default(), custom()] {
            let content: Vec<u8> = (0u8..=255).collect();
            let escaped = escape(&content, &d);
            assert!(!escaped.contains(&b'\r') && !escaped.contains(&b'\n'));
            for delim in [d.field(), d.component(), d.repetition(), d.subcomponent()] {
                assert!(!escaped.contains(&delim));
            }
            assert_eq!(&*decode(&escaped, &d), &content[..]);
        }
    }
}

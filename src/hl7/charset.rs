//! Character sets (MSH-18, HL7 table 0211): decoding text into UTF-8, and checking that a
//! message's bytes are valid in the set it declares.

use std::borrow::Cow;
use std::fmt;

use encoding_rs::Encoding;

use super::{Message, PathError, Value};

/// A character set of HL7 table 0211, as declared in MSH-18 (its first repetition).
///
/// The sets that fit HL7's one-byte delimiters are supported: ASCII (no MSH-18), the ISO 8859
/// parts, UTF-8, and the multi-byte sets encoding_rs covers (GB 18030, KS X 1001 as EUC-KR,
/// BIG-5). UTF-16, UTF-32, UCS-2 (`UNICODE`), the ISO 2022 sets (`ISO IR14`, `ISO IR87`,
/// `ISO IR159`), CNS 11643 and several values in MSH-18 (code extension) are
/// [`CharsetError::Unsupported`].
///
/// # Examples
///
/// ```
/// use mllp::hl7::Charset;
/// let latin1 = Charset::from_msh18(b"8859/1")?;
/// assert_eq!(latin1.decode(b"M\xfcller")?, "Müller");
/// assert!(Charset::from_msh18(b"UNICODE UTF-8")?.decode(b"M\xfcller").is_err());
/// assert_eq!(Charset::from_msh18(b"")?, Charset::Ascii);
/// # Ok::<(), mllp::hl7::CharsetError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Charset {
    /// `ASCII`, or MSH-18 empty or absent (the standard's default): bytes up to 0x7F.
    Ascii,
    /// `8859/1`, Latin-1: every byte is its code point. Invalid: the C1 controls (0x80–0x9F),
    /// which no text holds (they are where UTF-8 or Windows-1252 bytes show), and a UTF-8
    /// multi-byte sequence (`Ã¼` for `ü`), taken as mislabelled UTF-8: a heuristic, as such
    /// pairs are legal Latin-1 but all but absent from real text.
    Latin1,
    /// Another ISO 8859 part (`8859/2` … `8859/9`, `8859/15`), decoded by encoding_rs; C1
    /// controls invalid as in [`Charset::Latin1`].
    Iso8859(&'static Encoding, &'static str),
    /// `UNICODE UTF-8`.
    Utf8,
    /// A multi-byte set encoding_rs covers: `GB 18030-2000`, `KS X 1001`, `BIG-5`.
    MultiByte(&'static Encoding, &'static str),
}

/// Why text could not be decoded, or a character set not used. Never holds content: only the
/// MSH-18 value (an HL7 table code) and positions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CharsetError {
    /// MSH-18 names a set that is not in table 0211.
    #[error("unknown character set {0:?} in MSH-18")]
    Unknown(String),
    /// MSH-18 names a set this library does not decode (see [`Charset`]).
    #[error("character set {name:?} in MSH-18 is not supported: {why}")]
    Unsupported {
        /// The MSH-18 value.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// Bytes that are not valid in the declared set.
    #[error("bytes invalid for character set {charset} at offset {offset}")]
    Invalid {
        /// The declared set's table 0211 name.
        charset: &'static str,
        /// Where the first invalid byte is, in the text decoded (or in the message, for
        /// [`Message::check_charset`]).
        offset: usize,
    },
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Charset {
    /// The set an MSH-18 value names: its first repetition (`~`-separated values are ISO 2022
    /// code extension, refused as unsupported), spaces around it ignored.
    ///
    /// # Errors
    /// [`CharsetError::Unknown`] or [`CharsetError::Unsupported`].
    pub fn from_msh18(value: &[u8]) -> Result<Charset, CharsetError> {
        Self::from_msh18_with(value, b'~')
    }

    fn from_msh18_with(value: &[u8], repetition: u8) -> Result<Charset, CharsetError> {
        let text = String::from_utf8_lossy(value);
        let mut values = text
            .split(repetition as char)
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let Some(first) = values.next() else {
            return Ok(Charset::Ascii);
        };
        if values.next().is_some() {
            return Err(CharsetError::Unsupported {
                name: text.into_owned(),
                why: "several character sets (ISO 2022 code extension)",
            });
        }
        let unsupported = |why| {
            Err(CharsetError::Unsupported {
                name: first.to_owned(),
                why,
            })
        };
        Ok(match first {
            "ASCII" => Charset::Ascii,
            "8859/1" => Charset::Latin1,
            "8859/2" => Charset::Iso8859(encoding_rs::ISO_8859_2, "8859/2"),
            "8859/3" => Charset::Iso8859(encoding_rs::ISO_8859_3, "8859/3"),
            "8859/4" => Charset::Iso8859(encoding_rs::ISO_8859_4, "8859/4"),
            "8859/5" => Charset::Iso8859(encoding_rs::ISO_8859_5, "8859/5"),
            "8859/6" => Charset::Iso8859(encoding_rs::ISO_8859_6, "8859/6"),
            "8859/7" => Charset::Iso8859(encoding_rs::ISO_8859_7, "8859/7"),
            "8859/8" => Charset::Iso8859(encoding_rs::ISO_8859_8, "8859/8"),
            // encoding_rs knows 8859-9 as Windows-1254, its superset (they differ only in the
            // C1 range, which the 8859 check refuses).
            "8859/9" => Charset::Iso8859(encoding_rs::WINDOWS_1254, "8859/9"),
            "8859/15" => Charset::Iso8859(encoding_rs::ISO_8859_15, "8859/15"),
            "UNICODE UTF-8" => Charset::Utf8,
            "GB 18030-2000" => Charset::MultiByte(encoding_rs::GB18030, "GB 18030-2000"),
            "KS X 1001" => Charset::MultiByte(encoding_rs::EUC_KR, "KS X 1001"),
            "BIG-5" => Charset::MultiByte(encoding_rs::BIG5, "BIG-5"),
            "UNICODE" | "UNICODE UTF-16" | "UNICODE UTF-32" => {
                return unsupported("its code units are wider than HL7's one-byte delimiters");
            }
            "ISO IR14" | "ISO IR87" | "ISO IR159" => {
                return unsupported("ISO 2022 escape sequences are not decoded");
            }
            "CNS 11643-1992" => return unsupported("no decoder for this set"),
            other => return Err(CharsetError::Unknown(other.to_owned())),
        })
    }

    /// The table 0211 name (`ASCII` for the default).
    pub fn name(&self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Iso8859(_, name) | Charset::MultiByte(_, name) => name,
        }
    }

    /// Where the first byte invalid in this set is, if any.
    pub fn first_invalid(&self, bytes: &[u8]) -> Option<usize> {
        let c1 = || bytes.iter().position(|b| (0x80..=0x9F).contains(b));
        // Each rule finds its own first offence; the earliest is the first invalid byte (a
        // UTF-8 sequence whose continuation byte is a C1 byte starts before that byte).
        let earliest = |found: &[Option<usize>]| found.iter().flatten().min().copied();
        match self {
            Charset::Ascii => bytes.iter().position(|b| !b.is_ascii()),
            Charset::Latin1 => earliest(&[c1(), utf8_sequence_at(bytes)]),
            // 8859/15 is Latin-1's successor for the same languages: the same heuristic holds.
            // In the other parts (Cyrillic, Greek, ...) such pairs are ordinary letters.
            Charset::Iso8859(encoding, "8859/15") => {
                earliest(&[c1(), utf8_sequence_at(bytes), malformed_at(encoding, bytes)])
            }
            Charset::Iso8859(encoding, _) => earliest(&[c1(), malformed_at(encoding, bytes)]),
            Charset::Utf8 => std::str::from_utf8(bytes).err().map(|e| e.valid_up_to()),
            Charset::MultiByte(encoding, _) => malformed_at(encoding, bytes),
        }
    }

    /// `bytes` (escape sequences already decoded) as UTF-8 text.
    ///
    /// # Errors
    /// [`CharsetError::Invalid`] at the first byte that is not valid in this set.
    pub fn decode<'b>(&self, bytes: &'b [u8]) -> Result<Cow<'b, str>, CharsetError> {
        if let Some(offset) = self.first_invalid(bytes) {
            return Err(CharsetError::Invalid {
                charset: self.name(),
                offset,
            });
        }
        Ok(match self {
            // Checked above: ASCII, and UTF-8, are valid UTF-8 as they are.
            Charset::Ascii | Charset::Utf8 => {
                Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default())
            }
            Charset::Latin1 if bytes.is_ascii() => {
                Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default())
            }
            Charset::Latin1 => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
            Charset::Iso8859(encoding, _) | Charset::MultiByte(encoding, _) => encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .unwrap_or_default(),
        })
    }
}

/// Where the first UTF-8 multi-byte sequence in `bytes` starts (a lead byte 0xC2–0xF4 and its
/// continuation bytes, valid as UTF-8).
fn utf8_sequence_at(bytes: &[u8]) -> Option<usize> {
    bytes.iter().enumerate().find_map(|(i, &b)| {
        let len = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return None,
        };
        let sequence = bytes.get(i..i + len)?;
        std::str::from_utf8(sequence).is_ok().then_some(i)
    })
}

/// Where encoding_rs finds the first malformed sequence in `bytes`.
fn malformed_at(encoding: &'static Encoding, bytes: &[u8]) -> Option<usize> {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(
        decoder
            .max_utf8_buffer_length_without_replacement(bytes.len())
            .unwrap_or(bytes.len() * 3),
    );
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
    match result {
        encoding_rs::DecoderResult::Malformed(bad, after) => {
            Some(read.saturating_sub(usize::from(bad) + usize::from(after)))
        }
        _ => None,
    }
}

/// Why [`Message::text`] could not give a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// The field path is malformed.
    #[error(transparent)]
    Path(#[from] PathError),
    /// MSH-18 cannot be used, or the value is not valid in it.
    #[error(transparent)]
    Charset(#[from] CharsetError),
}

impl Message {
    /// The character set MSH-18 declares ([`Charset::Ascii`] without one).
    ///
    /// # Errors
    /// [`CharsetError::Unknown`] or [`CharsetError::Unsupported`] for an MSH-18 this library
    /// does not decode.
    pub fn declared_charset(&self) -> Result<Charset, CharsetError> {
        let msh18 = self.msh().field(18).map_or(&[][..], |v| v.as_bytes());
        Charset::from_msh18_with(msh18, self.delimiters().repetition())
    }

    /// The value at `path` as UTF-8 text: escape sequences decoded, then the bytes decoded from
    /// the character set MSH-18 declares. `Ok(None)` when the message does not reach that far.
    ///
    /// # Errors
    /// [`TextError`] for a malformed path, an MSH-18 that cannot be used, or bytes invalid in it.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use mllp::hl7::Message;
    /// let m = Message::parse(Bytes::from_static(
    ///     b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\rPID|1||||M\xfcller^J\\S\\R\r",
    /// ))?;
    /// assert_eq!(m.text("PID-5.1")?.as_deref(), Some("Müller"));
    /// assert_eq!(m.text("PID-5.2")?.as_deref(), Some("J^R"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn text(&self, path: &str) -> Result<Option<String>, TextError> {
        let charset = self.declared_charset()?;
        match self.get(path)? {
            Some(value) => Ok(Some(value.text(charset)?.into_owned())),
            None => Ok(None),
        }
    }

    /// Checks that every byte of the message is valid in the set MSH-18 declares, and returns
    /// that set. A check of the whole message, for receivers that refuse mislabelled text
    /// (UTF-8 sent as `8859/1` shows as C1 control bytes; Latin-1 sent as UTF-8 is malformed
    /// UTF-8); [`Message::text`] checks only what it decodes.
    ///
    /// # Errors
    /// [`CharsetError`]: an MSH-18 that cannot be used, or [`CharsetError::Invalid`] with the
    /// offset of the first invalid byte in the message.
    pub fn check_charset(&self) -> Result<Charset, CharsetError> {
        let charset = self.declared_charset()?;
        match charset.first_invalid(self.as_bytes()) {
            None => Ok(charset),
            Some(offset) => Err(CharsetError::Invalid {
                charset: charset.name(),
                offset,
            }),
        }
    }
}

impl<'a> Value<'a> {
    /// The value as UTF-8 text in `charset`: escape sequences decoded first (`\X..\` hex data
    /// is in the message's set), then the bytes decoded.
    ///
    /// # Errors
    /// [`CharsetError::Invalid`] when the bytes are not valid in `charset`.
    pub fn text(&self, charset: Charset) -> Result<Cow<'a, str>, CharsetError> {
        match self.decoded() {
            Cow::Borrowed(raw) => charset.decode(raw),
            Cow::Owned(raw) => charset
                .decode(&raw)
                .map(|text| Cow::Owned(text.into_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// Table 0211 names map to their sets; unknown and unsupported ones are told apart.
    #[test]
    fn msh18_values_name_their_sets() {
        assert_eq!(Charset::from_msh18(b" 8859/1 "), Ok(Charset::Latin1));
        assert_eq!(Charset::from_msh18(b"UNICODE UTF-8"), Ok(Charset::Utf8));
        assert_eq!(Charset::from_msh18(b"8859/7").unwrap().name(), "8859/7");
        assert!(matches!(
            Charset::from_msh18(b"UNICODE UTF-16"),
            Err(CharsetError::Unsupported { .. })
        ));
        assert!(matches!(
            Charset::from_msh18(b"ASCII~ISO IR87"),
            Err(CharsetError::Unsupported { .. })
        ));
        assert_eq!(
            Charset::from_msh18(b"latin1"),
            Err(CharsetError::Unknown("latin1".to_owned()))
        );
    }

    /// Each set decodes its own bytes and finds the first byte it cannot hold.
    #[test]
    fn decodes_and_finds_invalid_bytes() {
        let greek = Charset::from_msh18(b"8859/7").unwrap();
        assert_eq!(greek.decode(b"\xe1\xe2\xe3").unwrap(), "αβγ");
        let gb = Charset::from_msh18(b"GB 18030-2000").unwrap();
        assert_eq!(gb.decode(b"\xd6\xd0\xce\xc4").unwrap(), "中文");
        // UTF-8 in Latin-1: "€" (E2 82 AC) holds a C1 byte, and is a UTF-8 sequence from its
        // first byte on, which is where it is invalid; "ü" (C3 BC) is two legal Latin-1 bytes
        // ("Ã¼"), caught as a UTF-8 sequence; Latin-1's own "ü" (FC) is fine. A C1 byte on its
        // own is invalid where it stands.
        assert_eq!(Charset::Latin1.first_invalid("ab€".as_bytes()), Some(2));
        assert_eq!(Charset::Latin1.first_invalid(b"ab\x85"), Some(2));
        let fifteen = Charset::from_msh18(b"8859/15").unwrap();
        assert_eq!(fifteen.first_invalid("x€".as_bytes()), Some(1));
        assert_eq!(Charset::Latin1.first_invalid("Müller".as_bytes()), Some(1));
        assert_eq!(Charset::Latin1.first_invalid(b"M\xfcller \xc0 la"), None);
        let cyrillic = Charset::from_msh18(b"8859/5").unwrap();
        assert_eq!(cyrillic.decode(b"\xc2\xb0").unwrap(), "ТА");
        assert_eq!(Charset::Utf8.first_invalid(b"ab\xfc"), Some(2));
        assert_eq!(Charset::Ascii.first_invalid(b"ab\xfc"), Some(2));
        assert_eq!(
            Charset::Utf8.decode(b"ab\xfc"),
            Err(CharsetError::Invalid {
                charset: "UNICODE UTF-8",
                offset: 2
            })
        );
    }

    /// `Message::text` decodes by MSH-18; `check_charset` points at the first bad byte.
    #[test]
    fn message_text_follows_msh18() {
        let utf8 = Message::parse(Bytes::from(
            "MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||||Müller\r",
        ))
        .unwrap();
        assert_eq!(utf8.text("PID-5").unwrap().as_deref(), Some("Müller"));
        assert_eq!(utf8.check_charset(), Ok(Charset::Utf8));
        let mislabelled = Message::parse(Bytes::from_static(
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||||M\xfcller\r",
        ))
        .unwrap();
        assert!(matches!(
            mislabelled.text("PID-5"),
            Err(TextError::Charset(CharsetError::Invalid { offset: 1, .. }))
        ));
        assert!(matches!(
            mislabelled.check_charset(),
            Err(CharsetError::Invalid { .. })
        ));
    }
}

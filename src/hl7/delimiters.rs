//! The message delimiters, read from MSH-1 (field separator) and MSH-2 (encoding characters).

/// The delimiters of one message, from MSH-1 and MSH-2.
///
/// HL7 v2 lets every message choose its own delimiters; `|^~\&` is only the recommendation.
/// From v2.7 on MSH-2 may carry a fifth character, the truncation character (usually `#`).
///
/// Every delimiter is a printable ASCII character that is not a letter or a digit, and no two are
/// the same: [`Delimiters::new`] and the parser enforce both rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    field: u8,
    component: u8,
    repetition: u8,
    escape: u8,
    subcomponent: u8,
    truncation: Option<u8>,
}

/// Why a set of delimiters was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelimiterError {
    /// MSH-2 did not hold 4 characters (5 with the v2.7 truncation character).
    #[error("expected 4 or 5 encoding characters, found {found}")]
    EncodingCharacterCount {
        /// How many characters MSH-2 held.
        found: usize,
    },
    /// A delimiter is not a printable ASCII punctuation character (it is a letter, a digit,
    /// a space, a control character such as CR, or a non-ASCII byte).
    #[error("byte {byte:#04x} cannot be a delimiter")]
    Forbidden {
        /// The refused byte (delimiters are MSH content, never patient data).
        byte: u8,
    },
    /// The same character was given two roles.
    #[error("byte {byte:#04x} is used as two different delimiters")]
    Duplicate {
        /// The byte used twice.
        byte: u8,
    },
}

impl Default for Delimiters {
    /// The recommended delimiters, `|^~\&`, without a truncation character.
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: b'\\',
            subcomponent: b'&',
            truncation: None,
        }
    }
}

/// Whether `byte` may serve as a delimiter: printable ASCII punctuation only.
pub(crate) const fn allowed(byte: u8) -> bool {
    byte.is_ascii_graphic() && !byte.is_ascii_alphanumeric()
}

impl Delimiters {
    /// Builds delimiters from a field separator (MSH-1) and the encoding characters (MSH-2):
    /// component, repetition, escape, subcomponent, and optionally the truncation character.
    ///
    /// # Errors
    ///
    /// [`DelimiterError`] when MSH-2 does not hold 4 or 5 characters, when a character is not
    /// printable ASCII punctuation, or when a character is used twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use mllp::hl7::Delimiters;
    /// let d = Delimiters::new(b'#', b"$*@!").unwrap();
    /// assert_eq!((d.field(), d.component(), d.escape()), (b'#', b'$', b'@'));
    /// assert!(Delimiters::new(b'|', b"^~\\^").is_err());
    /// ```
    pub fn new(field: u8, encoding_characters: &[u8]) -> Result<Self, DelimiterError> {
        let (&[component, repetition, escape, subcomponent], truncation) = match encoding_characters
        {
            [c, r, e, s] => (&[*c, *r, *e, *s], None),
            [c, r, e, s, t] => (&[*c, *r, *e, *s], Some(*t)),
            other => {
                return Err(DelimiterError::EncodingCharacterCount { found: other.len() });
            }
        };
        let all = [
            Some(field),
            Some(component),
            Some(repetition),
            Some(escape),
            Some(subcomponent),
            truncation,
        ];
        for (i, byte) in all.iter().enumerate() {
            let Some(byte) = *byte else { continue };
            if !allowed(byte) {
                return Err(DelimiterError::Forbidden { byte });
            }
            if all[..i].contains(&Some(byte)) {
                return Err(DelimiterError::Duplicate { byte });
            }
        }
        Ok(Delimiters {
            field,
            component,
            repetition,
            escape,
            subcomponent,
            truncation,
        })
    }

    /// The field separator (MSH-1). Usually `|`.
    pub const fn field(&self) -> u8 {
        self.field
    }

    /// The component separator (MSH-2, first character). Usually `^`.
    pub const fn component(&self) -> u8 {
        self.component
    }

    /// The repetition separator (MSH-2, second character). Usually `~`.
    pub const fn repetition(&self) -> u8 {
        self.repetition
    }

    /// The escape character (MSH-2, third character). Usually `\`.
    pub const fn escape(&self) -> u8 {
        self.escape
    }

    /// The subcomponent separator (MSH-2, fourth character). Usually `&`.
    pub const fn subcomponent(&self) -> u8 {
        self.subcomponent
    }

    /// The truncation character (MSH-2, fifth character, v2.7 and later), if the message has one.
    /// Usually `#`.
    pub const fn truncation(&self) -> Option<u8> {
        self.truncation
    }

    /// Whether `byte` is one of these delimiters, the segment terminator CR, or LF: the bytes
    /// that [`escape`](crate::hl7::escape) must replace in content.
    pub(crate) const fn is_special(&self, byte: u8) -> bool {
        byte == self.field
            || byte == self.component
            || byte == self.repetition
            || byte == self.escape
            || byte == self.subcomponent
            || byte == b'\r'
            || byte == b'\n'
            || byte == 0x0B
            || byte == 0x1C
            || matches!(self.truncation, Some(t) if t == byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default set is the recommended `|^~\&` with no truncation character.
    #[test]
    fn default_is_the_recommended_set() {
        let d = Delimiters::default();
        assert_eq!(
            [
                d.field(),
                d.component(),
                d.repetition(),
                d.escape(),
                d.subcomponent()
            ],
            *b"|^~\\&"
        );
        assert_eq!(d.truncation(), None);
    }

    /// A fifth encoding character becomes the truncation character.
    #[test]
    fn fifth_encoding_character_is_truncation() {
        let d = Delimiters::new(b'|', b"^~\\&#").unwrap();
        assert_eq!(d.truncation(), Some(b'#'));
    }

    /// Letters, digits, spaces, control and non-ASCII bytes are refused as delimiters.
    #[test]
    fn refuses_non_punctuation_delimiters() {
        for bad in [b'A', b'7', b' ', b'\r', b'\n', 0u8, 0xE9] {
            assert_eq!(
                Delimiters::new(bad, b"^~\\&"),
                Err(DelimiterError::Forbidden { byte: bad })
            );
            assert_eq!(
                Delimiters::new(b'|', &[b'^', bad, b'\\', b'&']),
                Err(DelimiterError::Forbidden { byte: bad })
            );
        }
    }

    /// A character given two roles is refused, including the field separator reused in MSH-2.
    #[test]
    fn refuses_duplicate_delimiters() {
        assert_eq!(
            Delimiters::new(b'|', b"^~\\^"),
            Err(DelimiterError::Duplicate { byte: b'^' })
        );
        assert_eq!(
            Delimiters::new(b'|', b"^|\\&"),
            Err(DelimiterError::Duplicate { byte: b'|' })
        );
        assert_eq!(
            Delimiters::new(b'|', b"^~\\&^"),
            Err(DelimiterError::Duplicate { byte: b'^' })
        );
    }

    /// MSH-2 must hold exactly 4 or 5 characters.
    #[test]
    fn refuses_wrong_number_of_encoding_characters() {
        for enc in [&b""[..], b"^~\\", b"^~\\&#!"] {
            assert_eq!(
                Delimiters::new(b'|', enc),
                Err(DelimiterError::EncodingCharacterCount { found: enc.len() })
            );
        }
    }
}

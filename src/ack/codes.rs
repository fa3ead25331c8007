//! The code table an acknowledgment speaks: 0008 (acknowledgment code). Tables 0357 and 0516
//! and [`Diagnostic`](super::Diagnostic) live with the message model (`hl7/diagnostic.rs`) and
//! are re-exported by [`ack`](super).

use std::fmt;

/// MSA-1, the acknowledgment code: HL7 table 0008.
///
/// Original mode uses `AA`/`AE`/`AR` (application acknowledgment); enhanced mode uses
/// `CA`/`CE`/`CR` for the accept (commit) acknowledgment. Table 0008 has held exactly these six
/// codes since v2.2 and every later version keeps them, so the enum is exhaustive on purpose:
/// callers can `match` without a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)] // the codes are the standard's own spelling
pub enum AckCode {
    /// Application accept (original mode): the message was processed.
    AA,
    /// Application error: the message was received but processing failed.
    AE,
    /// Application reject: the message was refused (bad syntax, unsupported type or version…).
    AR,
    /// Commit accept (enhanced mode): the message was safely stored.
    CA,
    /// Commit error: the message could not be stored.
    CE,
    /// Commit reject: the message was refused before being stored.
    CR,
}

impl AckCode {
    /// The two-letter code, e.g. `"AA"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// Reads a table 0008 code (exact case); `None` for anything else.
    pub fn from_code(code: &[u8]) -> Option<Self> {
        Some(match code {
            b"AA" => AckCode::AA,
            b"AE" => AckCode::AE,
            b"AR" => AckCode::AR,
            b"CA" => AckCode::CA,
            b"CE" => AckCode::CE,
            b"CR" => AckCode::CR,
            _ => return None,
        })
    }

    /// Whether the code reports success (`AA` or `CA`).
    pub const fn is_success(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }

    /// Whether the code belongs to enhanced mode (`CA`, `CE`, `CR`).
    pub const fn is_enhanced(self) -> bool {
        matches!(self, AckCode::CA | AckCode::CE | AckCode::CR)
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The acknowledgment codes read and print as the table's two letters.
    #[test]
    fn ack_codes_round_trip() {
        for code in [
            AckCode::AA,
            AckCode::AE,
            AckCode::AR,
            AckCode::CA,
            AckCode::CE,
            AckCode::CR,
        ] {
            assert_eq!(AckCode::from_code(code.as_str().as_bytes()), Some(code));
            assert_eq!(code.to_string(), code.as_str());
            assert_eq!(code.is_success(), matches!(code, AckCode::AA | AckCode::CA));
            assert_eq!(code.is_enhanced(), code.as_str().starts_with('C'));
        }
        assert_eq!(AckCode::from_code(b"aa"), None);
    }
}

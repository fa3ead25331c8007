//! The message error tables: 0357 (message error condition) and 0516 (error severity), and the
//! [`Diagnostic`] that carries them.
//!
//! They belong to the message model, not to acknowledgments: the parser reports its errors as
//! diagnostics, and so do plugins and handlers. `ack` re-exports all three
//! (`mllp::ack::ErrorCode` is their public path) and writes them into ERR segments.

use std::fmt;

use super::Location;

/// An HL7 table 0357 message error condition code: ERR-3 (from v2.5) or ERR-1.4 (before).
///
/// Names follow the table. 198 and 199 were added in v2.9; 204 and 205 are kept by the standard
/// for backward compatibility. The table grows between versions, hence `#[non_exhaustive]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 0: Message accepted. Success; optional, since AA already says so.
    MessageAccepted,
    /// 100: Segment sequence error. Segments out of order, or a required segment missing
    /// (this crate also uses it for payloads that are not HL7 at all).
    SegmentSequenceError,
    /// 101: Required field missing.
    RequiredFieldMissing,
    /// 102: Data type error. A field holds data of the wrong type (also malformed MSH-1/MSH-2).
    DataTypeError,
    /// 103: Table value not found. A coded value is not in its table.
    TableValueNotFound,
    /// 104: Value too long.
    ValueTooLong,
    /// 198: Non-Conformant Cardinality. Content breaks the cardinality of the applicable
    /// specification or profile (v2.9).
    NonConformantCardinality,
    /// 199: Other HL7 Error. Any other HL7 syntax error (v2.9).
    OtherHl7Error,
    /// 200: Unsupported message type.
    UnsupportedMessageType,
    /// 201: Unsupported event code.
    UnsupportedEventCode,
    /// 202: Unsupported processing id.
    UnsupportedProcessingId,
    /// 203: Unsupported version id.
    UnsupportedVersionId,
    /// 204: Unknown key identifier. The patient, order… does not exist.
    UnknownKeyIdentifier,
    /// 205: Duplicate key identifier. The patient, order… already exists.
    DuplicateKeyIdentifier,
    /// 206: Application record locked. E.g. the database row is locked.
    ApplicationRecordLocked,
    /// 207: Application internal error. The catch-all for internal failures.
    ApplicationInternalError,
}

impl ErrorCode {
    const ALL: [ErrorCode; 16] = [
        ErrorCode::MessageAccepted,
        ErrorCode::SegmentSequenceError,
        ErrorCode::RequiredFieldMissing,
        ErrorCode::DataTypeError,
        ErrorCode::TableValueNotFound,
        ErrorCode::ValueTooLong,
        ErrorCode::NonConformantCardinality,
        ErrorCode::OtherHl7Error,
        ErrorCode::UnsupportedMessageType,
        ErrorCode::UnsupportedEventCode,
        ErrorCode::UnsupportedProcessingId,
        ErrorCode::UnsupportedVersionId,
        ErrorCode::UnknownKeyIdentifier,
        ErrorCode::DuplicateKeyIdentifier,
        ErrorCode::ApplicationRecordLocked,
        ErrorCode::ApplicationInternalError,
    ];

    /// The numeric code, e.g. 207.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::MessageAccepted => 0,
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::ValueTooLong => 104,
            ErrorCode::NonConformantCardinality => 198,
            ErrorCode::OtherHl7Error => 199,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKeyIdentifier => 204,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationRecordLocked => 206,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The table's description, written as the code's text in ERR-3.2 / ERR-1.4.2.
    pub const fn description(self) -> &'static str {
        match self {
            ErrorCode::MessageAccepted => "Message accepted",
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::ValueTooLong => "Value too long",
            ErrorCode::NonConformantCardinality => "Non-Conformant Cardinality",
            ErrorCode::OtherHl7Error => "Other HL7 Error",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }

    /// The code with this number; `None` if table 0357 has no such code.
    pub fn from_code(code: u16) -> Option<Self> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for ErrorCode {
    /// `207 (Application internal error)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

/// ERR-4, the error severity: HL7 table 0516 (v2.5 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// `E`: an error; the message was not (fully) processed.
    Error,
    /// `W`: a warning; the message was processed (sent with AA/CA).
    Warning,
    /// `I`: information only.
    Information,
    /// `F`: a fatal error (v2.7 and later).
    Fatal,
}

impl Severity {
    /// The one-letter code, e.g. `"E"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Information => "I",
            Severity::Fatal => "F",
        }
    }

    /// Reads a table 0516 code; `None` for anything else.
    pub fn from_code(code: &[u8]) -> Option<Self> {
        Some(match code {
            b"E" => Severity::Error,
            b"W" => Severity::Warning,
            b"I" => Severity::Information,
            b"F" => Severity::Fatal,
            _ => return None,
        })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finding about a message: what became an ERR segment in the acknowledgment.
///
/// Produced by the parser ([`ParseError::to_diagnostic`](crate::hl7::ParseError::to_diagnostic)),
/// by validation plugins (warnings as well as errors) and by handlers. `text` is free text for
/// people; it goes into the ACK only when [`AckOptions`](crate::ack::AckOptions) allows it (ERR-7,
/// ERR-8), since it may describe content. It must not carry patient data: it may be logged.
///
/// # Examples
///
/// ```
/// use mllp::ack::{Diagnostic, ErrorCode, Severity};
/// use mllp::hl7::Location;
/// let d = Diagnostic::error(ErrorCode::RequiredFieldMissing, "PID-3 is empty")
///     .at(Location::new("PID", 1).field(3));
/// assert_eq!(d.severity, Severity::Error);
/// assert_eq!(d.location.unwrap().to_string(), "PID(1)-3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostic {
    /// The table 0357 code (ERR-3).
    pub code: ErrorCode,
    /// How bad it is (ERR-4).
    pub severity: Severity,
    /// Where it is (ERR-2), when known.
    pub location: Option<Location>,
    /// A description for people, without patient data.
    pub text: String,
}

impl Diagnostic {
    /// A diagnostic without a location.
    pub fn new(code: ErrorCode, severity: Severity, text: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity,
            location: None,
            text: text.into(),
        }
    }

    /// An error-severity diagnostic.
    pub fn error(code: ErrorCode, text: impl Into<String>) -> Self {
        Diagnostic::new(code, Severity::Error, text)
    }

    /// A warning-severity diagnostic (the message is still accepted).
    pub fn warning(code: ErrorCode, text: impl Into<String>) -> Self {
        Diagnostic::new(code, Severity::Warning, text)
    }

    /// An information-severity diagnostic (a note for the sender; the message is accepted).
    pub fn information(code: ErrorCode, text: impl Into<String>) -> Self {
        Diagnostic::new(code, Severity::Information, text)
    }

    /// Sets where the problem is.
    #[must_use]
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table 0357 code round-trips through its number, and the numbers are the table's.
    #[test]
    fn error_codes_round_trip_through_numbers() {
        let numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            numbers,
            [
                0, 100, 101, 102, 103, 104, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207
            ]
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ErrorCode::from_code(105), None);
        assert_eq!(
            ErrorCode::ApplicationInternalError.to_string(),
            "207 (Application internal error)"
        );
        assert_eq!(ErrorCode::OtherHl7Error.description(), "Other HL7 Error");
    }

    /// Severities read and print as the table's letters.
    #[test]
    fn severities_round_trip() {
        for s in [
            Severity::Error,
            Severity::Warning,
            Severity::Information,
            Severity::Fatal,
        ] {
            assert_eq!(Severity::from_code(s.as_str().as_bytes()), Some(s));
        }
        assert_eq!(Severity::from_code(b"X"), None);
    }
}

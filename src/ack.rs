//! Acknowledgments: original mode (AA/AE/AR), enhanced mode (CA/CE/CR), MSA and ERR by version.
//!
//! Only this module builds ACKs; handlers report outcomes and [`Diagnostic`]s. The rules
//! ([`Ack::build`] lists them) follow DESIGN.md "Errors and acknowledgements": sender and
//! receiver swapped, a new control id, MSA-2 = the incoming MSH-10, the incoming delimiters,
//! version and processing id reused as they are, ERR-1 before v2.5 and ERR-2/3/4 from v2.5.
//!
//! ```
//! use bytes::Bytes;
//! use mllp::ack::{Ack, AckCode, AckOptions, Diagnostic, ErrorCode};
//! use mllp::hl7::{Location, Message};
//!
//! let incoming = Message::parse(Bytes::from_static(
//!     b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240102030405||ORU^R01^ORU_R01|MSG001|P|2.5.1\rPID|1\r",
//! ))?;
//! let missing = Diagnostic::error(ErrorCode::RequiredFieldMissing, "PID-3 is empty")
//!     .at(Location::new("PID", 1).field(3));
//! let ack = Ack::build(&incoming, AckCode::AE, &[missing], &AckOptions::default());
//!
//! assert_eq!(ack.code(), AckCode::AE);
//! assert_eq!(ack.acknowledged_control_id(), b"MSG001");
//! let msg = ack.message();
//! assert_eq!(msg.get("MSH-3")?.unwrap().as_bytes(), b"EHR");
//! assert_eq!(msg.get("MSH-9")?.unwrap().as_bytes(), b"ACK^R01^ACK");
//! assert_eq!(msg.version(), Some("2.5.1"));
//! assert_eq!(msg.get("ERR-2")?.unwrap().as_bytes(), b"PID^1^3");
//! assert_eq!(msg.get("ERR-3")?.unwrap().as_bytes(), b"101^Required field missing^HL70357");
//! assert_eq!(msg.get("ERR-4")?.unwrap().as_bytes(), b"E");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod build;
mod clock;
pub(crate) use clock::civil_from_days;
mod codes;
mod reply;

pub use build::{Ack, AckOptions};
pub use codes::AckCode;
pub use reply::{Reply, ReplyBuilder, ReplyError};

pub use crate::hl7::AckRequirement;
pub use crate::hl7::diagnostic::{Diagnostic, ErrorCode, Severity};

/// The MSH-15 rule: should an accept acknowledgment (CA/CE/CR) be sent for this outcome?
///
/// `AL` always, `NE` never, `ER` only when `success` is false, `SU` only when it is true
/// (HL7 table 0155). The same table governs MSH-16 for application acknowledgments, so the
/// function answers for either field.
///
/// `None` (MSH-15 absent, empty or not a table 0155 code) answers `false`: no accept
/// acknowledgment exists in original mode. Deciding the mode is the caller's job: a message with
/// MSH-15 and MSH-16 both absent is in original mode and gets its one AA/AE/AR as usual.
///
/// # Examples
///
/// ```
/// use mllp::ack::{accept_ack_wanted, AckRequirement};
/// assert!(accept_ack_wanted(Some(AckRequirement::ErrorOnly), false));
/// assert!(!accept_ack_wanted(Some(AckRequirement::ErrorOnly), true));
/// assert!(!accept_ack_wanted(None, true));
/// ```
pub fn accept_ack_wanted(requirement: Option<AckRequirement>, success: bool) -> bool {
    match requirement {
        Some(AckRequirement::Always) => true,
        Some(AckRequirement::Never) | None => false,
        Some(AckRequirement::ErrorOnly) => !success,
        Some(AckRequirement::SuccessOnly) => success,
    }
}

#[cfg(test)]
mod tests;

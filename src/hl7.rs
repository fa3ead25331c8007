//! The HL7 v2 message model: zero-copy parsing, delimiters, escapes, field paths, MSH accessors.
//!
//! A [`Message`] is one [`bytes::Bytes`] buffer plus an index of segment and field offsets,
//! built in one pass. Everything below a field (repetitions, components, subcomponents) is
//! split on access, and escape sequences are decoded on access, so a message that is only
//! routed and stored costs one scan. No I/O happens here: the module works on byte slices.
//!
//! ```
//! use bytes::Bytes;
//! use mllp::hl7::{AckRequirement, Message};
//!
//! let msg = Message::parse(Bytes::from_static(
//!     b"MSH|^~\\&|ADT1|GOOD HEALTH|GHH LAB|ELAB-3|20240102030405||ADT^A01^ADT_A01|MSG00001|P|2.5|||AL|NE\r\
//!       EVN|A01|20240102030405\r\
//!       PID|1||PATID1234^5^M11^ADT1^MR^GOOD HEALTH~123456789^^^USSSA^SS||EVERYMAN^ADAM^A^III\r",
//! ))?;
//! assert_eq!(msg.version(), Some("2.5"));
//! assert_eq!(msg.accept_ack_type(), Some(AckRequirement::Always));
//! assert_eq!(msg.get("MSH-1")?.unwrap().as_bytes(), b"|");
//! assert_eq!(msg.get("MSH-2")?.unwrap().as_bytes(), b"^~\\&");
//! assert_eq!(msg.get("PID-3(2).1")?.unwrap().as_bytes(), b"123456789");
//! assert_eq!(msg.get("PID-5.2")?.unwrap().to_str(), Some("ADAM"));
//! assert_eq!(msg.segment("PID").unwrap().field_count(), 5);
//! assert!(msg.get("PID-99")?.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Field numbering follows the standard: in MSH, field 1 is the field separator and field 2 the
//! encoding characters; in every other segment field 1 is the first field after the id.
//!
//! Patient data: `Debug` output of [`Message`], [`Segment`] and [`Value`] shows segment ids,
//! positions and lengths only, and [`ParseError`] messages name positions only.

mod delimiters;
// Public as `mllp::ack::{Diagnostic, ErrorCode, Severity}`, the paths they have always had.
pub(crate) mod diagnostic;
mod escape;
mod message;
mod parse;
mod path;

pub use delimiters::{DelimiterError, Delimiters};
pub use escape::{decode, escape};
pub use message::{AckRequirement, Message, Segment, Value, Values};
pub use parse::{ParseError, ParseOptions};
pub use path::{FieldPath, Location, PathError};

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod tests;

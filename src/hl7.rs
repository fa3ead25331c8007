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

mod batch;
mod charset;
mod delimiters;
// Public as `mllp::ack::{Diagnostic, ErrorCode, Severity}`, the paths they have always had.
pub(crate) mod diagnostic;
mod escape;
#[cfg(test)]
mod index_tests;
mod message;
mod parse;
mod path;
mod translate;

pub(crate) use batch::header_field as batch_header_field;
pub use batch::{Batch, BatchError, BatchGroup, is_batch};
pub use charset::{Charset, CharsetError, TextError};
pub use delimiters::{DelimiterError, Delimiters};
pub use escape::{decode, escape};
pub use message::{AckRequirement, Message, Segment, Value, Values};
pub use parse::{ParseError, ParseOptions};
pub use path::{FieldPath, Location, PathError};
pub use translate::{translate, with_delimiters};

#[cfg(test)]
mod tests;

/// The longest MSH-10 that log lines and spans carry whole: the field's length from v2.7 (20
/// before). A longer one (nothing a conformant sender writes) is cut there, so that one message
/// cannot put its whole size into every line about it; the ACK still echoes it verbatim.
pub(crate) const LOGGED_CONTROL_ID: usize = 199;

/// `id` as log lines and spans carry it: whole up to [`LOGGED_CONTROL_ID`] bytes, else cut at
/// a character boundary there and ended with `…`.
pub(crate) fn logged_control_id(id: &str) -> std::borrow::Cow<'_, str> {
    if id.len() <= LOGGED_CONTROL_ID {
        return std::borrow::Cow::Borrowed(id);
    }
    let mut end = LOGGED_CONTROL_ID;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &id[..end]))
}

//! The character-set plugin: which MSH-18 values are taken, and what to do with bytes that are
//! invalid in the set a message declares.

use std::fmt;

use crate::ack::{Diagnostic, ErrorCode, Severity};
use crate::app::plugin::Plugin;
use crate::app::{Request, Response};
use crate::hl7::{Charset, CharsetError, Location, Message};

/// What [`Charsets`] does with a message whose bytes are invalid in the character set its
/// MSH-18 declares (UTF-8 labelled `8859/1`, Latin-1 labelled `UNICODE UTF-8`, 8-bit text
/// without MSH-18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InvalidText {
    /// Accept it (the stored bytes are what was received either way) and log a warning with
    /// the MSH fields and the segment. The default: many senders mislabel, and refusing would
    /// stop a feed that worked.
    #[default]
    Accept,
    /// Refuse it: AR with ERR-3 = 102 (data type error) and ERR-2 = the segment.
    Reject,
}

/// Checks MSH-18 (character set, HL7 table 0211) and that the message's bytes are valid in it.
/// Off by default; add it with [`ServerBuilder::plugin`](crate::ServerBuilder::plugin).
///
/// - An MSH-18 not on the allow-list (when one is set; `ASCII` stands for an empty MSH-18) is
///   refused with AR, ERR-3 = 103 (table value not found).
/// - An MSH-18 this library cannot decode (unknown, or one of the sets [`Charset`] lists as
///   unsupported) is taken without a byte check when the allow-list names it; otherwise it
///   follows [`InvalidText`] (AR with ERR-3 = 103 under `Reject`).
/// - Bytes invalid in the declared set follow [`InvalidText`] (AR with ERR-3 = 102 under
///   `Reject`, ERR-2 = the segment).
///
/// ```
/// use mllp::app::{Charsets, InvalidText};
/// let plugin = Charsets::new()
///     .allow(["8859/1", "UNICODE UTF-8"])
///     .invalid_text(InvalidText::Reject);
/// let server = mllp::Server::builder().plugin(plugin);
/// # let _ = server;
/// ```
#[derive(Clone, Default)]
pub struct Charsets {
    allowed: Option<Vec<String>>,
    invalid: InvalidText,
}

impl fmt::Debug for Charsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Charsets")
            .field("allowed", &self.allowed)
            .field("invalid", &self.invalid)
            .finish()
    }
}

impl Charsets {
    /// Every set the library decodes is taken; invalid bytes are accepted and logged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes only these MSH-18 values (table 0211 names, such as `8859/1`; `ASCII` for a
    /// message without MSH-18). Default is every set the library decodes.
    #[must_use]
    pub fn allow<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// What to do with bytes invalid in the declared set. Default is [`InvalidText::Accept`].
    #[must_use]
    pub fn invalid_text(mut self, policy: InvalidText) -> Self {
        self.invalid = policy;
        self
    }

    fn allows(&self, name: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == name))
    }
}

/// MSH-18 as named in an allow-list: its text, `ASCII` when empty.
fn declared_name(message: &Message) -> String {
    let raw = message.msh().field(18).map_or(&[][..], |v| v.as_bytes());
    let text = String::from_utf8_lossy(raw).trim().to_owned();
    if text.is_empty() {
        "ASCII".to_owned()
    } else {
        text
    }
}

/// The segment holding byte `offset` of the message.
fn segment_at(message: &Message, offset: usize) -> Option<Location> {
    let base = message.as_bytes().as_ptr() as usize;
    message
        .segments()
        .take_while(|s| s.as_bytes().as_ptr() as usize - base <= offset)
        .last()
        .map(|s| s.location())
}

impl Plugin for Charsets {
    fn name(&self) -> &'static str {
        "charsets"
    }

    fn inspect(&self, request: &mut Request) -> Result<(), Response> {
        let message = request.message();
        let name = declared_name(message);
        if !self.allows(&name) {
            return Err(Response::reject(
                ErrorCode::TableValueNotFound,
                format!("character set {name:?} in MSH-18 is not accepted here"),
            ));
        }
        let charset: Charset = match message.declared_charset() {
            Ok(charset) => charset,
            // Named on the allow-list: taken as it is, unchecked.
            Err(_) if self.allowed.is_some() => return Ok(()),
            Err(error) if self.invalid == InvalidText::Reject => {
                return Err(Response::reject(
                    ErrorCode::TableValueNotFound,
                    error.to_string(),
                ));
            }
            Err(error) => {
                tracing::warn!(
                    hl7.control_id = crate::hl7::logged_control_id(message.control_id().unwrap_or_default()).as_ref(),
                    error = %error,
                    "character set in MSH-18 not decodable; accepted unchecked"
                );
                return Ok(());
            }
        };
        let Some(offset) = charset.first_invalid(message.as_bytes()) else {
            return Ok(());
        };
        let location = segment_at(message, offset);
        let segment = location.as_ref().map_or("?", |l| l.segment.as_str());
        match self.invalid {
            InvalidText::Accept => {
                tracing::warn!(
                    hl7.control_id =
                        crate::hl7::logged_control_id(message.control_id().unwrap_or_default())
                            .as_ref(),
                    hl7.charset = charset.name(),
                    segment,
                    "message bytes are invalid in its declared character set; accepted"
                );
                Ok(())
            }
            InvalidText::Reject => {
                let error = CharsetError::Invalid {
                    charset: charset.name(),
                    offset,
                };
                let mut diagnostic = Diagnostic::new(
                    ErrorCode::DataTypeError,
                    Severity::Error,
                    format!("{error} (segment {segment})"),
                );
                diagnostic.location = location;
                Err(Response::new(
                    crate::app::Status::Rejected,
                    vec![diagnostic],
                ))
            }
        }
    }
}

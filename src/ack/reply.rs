//! Replies other than an acknowledgment: a whole message a handler sends back (RSP^K22 to a
//! QBP^Q22, ORL to an OML, ...), built with the ACK builder's header rules or given raw.

use std::fmt;

use bytes::Bytes;

use super::build::{Header, MessageType, Writer, write_msa, write_msh};
use super::{Ack, AckCode, AckOptions};
use crate::hl7::{Message, ParseError, with_delimiters};

/// A message sent back instead of the automatic acknowledgment.
///
/// Build one from the message it answers with [`Reply::builder`] (the MSH is written by the
/// same rules as an ACK's: sender and receiver swapped, a new MSH-10, MSH-11/12 and MSH-18
/// copied, the sender's delimiters), or take bytes you wrote yourself with [`Reply::raw`]. A
/// handler returns it (it is [`IntoResponse`](crate::app::IntoResponse)); the server then
/// checks it ([`Reply::finish`]: it must parse as HL7 and be frameable) and writes it in the
/// place of the ACK, in arrival order. A reply that fails the check is not sent: the message is
/// answered AE with ERR-3 = 207 instead.
///
/// `Debug` shows the segment ids and lengths, never content.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use mllp::ack::{AckCode, AckOptions, Reply};
/// use mllp::hl7::Message;
///
/// let query = Message::parse(Bytes::from_static(
///     b"MSH|^~\\&|EHR|WARD|MPI|HOSP|20240101||QBP^Q22^QBP_Q21|Q0001|P|2.5\r\
///       QPD|Q22^Find Candidates^HL7nnn|QRY0001|@PID.5.1^SMITH\r",
/// ))?;
/// let reply = Reply::builder(&query, "RSP^K22^RSP_K21", &AckOptions::default())
///     .msa(AckCode::AA)
///     .segment("QAK", ["QRY0001", "OK"])
///     .line("QPD|Q22^Find Candidates^HL7nnn|QRY0001|@PID.5.1^SMITH")
///     .build();
/// let ack = reply.finish(&query)?;
/// let rsp = ack.message();
/// assert_eq!(rsp.get("MSH-9")?.unwrap().as_bytes(), b"RSP^K22^RSP_K21");
/// assert_eq!(rsp.get("MSH-3")?.unwrap().as_bytes(), b"MPI");
/// assert_eq!(rsp.get("MSA-2")?.unwrap().as_bytes(), b"Q0001");
/// assert_eq!(rsp.get("QAK-2")?.unwrap().as_bytes(), b"OK");
/// assert_eq!(ack.code(), AckCode::AA);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    bytes: Bytes,
    sender_delimiters: bool,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Reply");
        match Message::parse(self.bytes.clone()) {
            Ok(message) => d.field("message", &message),
            Err(_) => d.field("unparsed_bytes", &self.bytes.len()),
        };
        d.field("sender_delimiters", &self.sender_delimiters)
            .finish()
    }
}

/// Why a handler's [`Reply`] cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The reply does not parse as HL7 (under the wire rules: segments end in CR).
    #[error("reply is not a valid hl7 message")]
    NotHl7(#[source] ParseError),
    /// The reply holds a byte that MLLP reserves (`0x0B` or `0x1C`), so it cannot be framed.
    #[error("reply holds an mllp reserved byte at offset {offset}")]
    Unframeable {
        /// Where the first such byte is.
        offset: usize,
    },
}

impl Reply {
    /// A reply from bytes you wrote (one HL7 message, segments ending in CR, no MLLP framing).
    /// Nothing is checked here; [`Reply::finish`] (the server, before sending) does.
    pub fn raw(bytes: impl Into<Bytes>) -> Reply {
        Reply {
            bytes: bytes.into(),
            sender_delimiters: false,
        }
    }

    /// A reply from a parsed message, sent as it is.
    pub fn from_message(message: Message) -> Reply {
        Reply::raw(message.into_bytes())
    }

    /// Starts a reply to `incoming` whose MSH-9 is `message_type` (such as `RSP^K22^RSP_K21`,
    /// written with `^` between components). The MSH follows [`Ack::build`]'s rules (sender
    /// and receiver swapped or overridden by `options`, MSH-7 now, a new MSH-10, MSH-11, MSH-12
    /// and MSH-18 copied) and the whole reply uses `incoming`'s delimiters and character set.
    pub fn builder(incoming: &Message, message_type: &str, options: &AckOptions) -> ReplyBuilder {
        let header = Header::from_message(incoming);
        let mut writer = Writer::for_header(&header, 512);
        let mut type_writer = Writer::for_header(&header, message_type.len());
        type_writer.standard_text(message_type);
        let message_type = type_writer.finish();
        write_msh(
            &mut writer,
            &header,
            options,
            MessageType::Given(&message_type),
        );
        ReplyBuilder {
            incoming: incoming.clone(),
            writer,
        }
    }

    /// Starts an acknowledgment of `incoming` written by [`Ack::build`]'s rules (MSH-9
    /// `ACK^<trigger>^ACK`, MSA-1 = `code`, MSA-2 = the incoming MSH-10), to which segments
    /// are added as to any reply: for acknowledgments whose ERR segments come from elsewhere
    /// (a downstream receiver's, relayed).
    pub fn acknowledgment(incoming: &Message, code: AckCode, options: &AckOptions) -> ReplyBuilder {
        let header = Header::from_message(incoming);
        let mut writer = Writer::for_header(&header, 256);
        write_msh(&mut writer, &header, options, MessageType::Ack);
        ReplyBuilder {
            incoming: incoming.clone(),
            writer,
        }
        .msa(code)
    }

    /// Whether the server rewrites this reply with the delimiters of the message it answers
    /// (MSH-1 and MSH-2, every separator, escapes where data collides), for replies written
    /// with other delimiters than the sender's (usually the standard `|^~\&`). Default is
    /// `false` for [`Reply::raw`] (sent as written); a built reply already has them.
    #[must_use]
    pub fn keep_sender_delimiters(mut self, keep: bool) -> Self {
        self.sender_delimiters = keep;
        self
    }

    /// The reply as written, before [`Reply::finish`].
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Checks the reply and makes it what the server sends: it must parse as HL7 under the wire
    /// rules and hold no MLLP reserved byte; with [`Reply::keep_sender_delimiters`] it is first
    /// rewritten with `incoming`'s delimiters. The [`Ack::code`] of the result is its MSA-1,
    /// or AA when it has none (that is what telemetry records as `hl7.ack_code`).
    ///
    /// # Errors
    /// [`ReplyError`] when the reply is not HL7 or cannot be framed.
    pub fn finish(self, incoming: &Message) -> Result<Ack, ReplyError> {
        // MLLP's start and end blocks (`frame` sits beside this module, not below it).
        if let Some(offset) = memchr::memchr2(0x0B, 0x1C, &self.bytes) {
            return Err(ReplyError::Unframeable { offset });
        }
        let mut message = Message::parse(self.bytes).map_err(ReplyError::NotHl7)?;
        if self.sender_delimiters && message.delimiters() != incoming.delimiters() {
            let rewritten = with_delimiters(&message, incoming.delimiters());
            message = Message::parse(rewritten).map_err(ReplyError::NotHl7)?;
        }
        let code = message
            .get("MSA-1")
            .ok()
            .flatten()
            .and_then(|v| AckCode::from_code(v.as_bytes()))
            .unwrap_or(AckCode::AA);
        Ok(Ack::from_parts(code, message))
    }
}

/// Writes a [`Reply`] segment by segment; from [`Reply::builder`].
///
/// Segment texts are written with the standard delimiters `|^~\&` (`^` between components,
/// `~` between repetitions, `&` between subcomponents, `\F\`-style escapes for literal
/// delimiters) and rewritten with the incoming message's; non-ASCII text is written in the
/// character set of its MSH-18, as ACK texts are.
pub struct ReplyBuilder {
    incoming: Message,
    writer: Writer,
}

impl fmt::Debug for ReplyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyBuilder")
            .field("written", &self.writer.len())
            .finish_non_exhaustive()
    }
}

impl ReplyBuilder {
    /// Adds the MSA segment: MSA-1 = `code`, MSA-2 = the incoming MSH-10.
    #[must_use]
    pub fn msa(mut self, code: AckCode) -> Self {
        let header = Header::from_message(&self.incoming);
        write_msa(&mut self.writer, &header, code);
        self.writer.segment_end();
        self
    }

    /// Adds a segment: its three-character id and its fields, from field 1 on.
    #[must_use]
    pub fn segment<I, S>(mut self, id: &str, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.writer.standard_text(id);
        for field in fields {
            self.writer.separator();
            self.writer.standard_text(field.as_ref());
        }
        self.writer.segment_end();
        self
    }

    /// Adds a segment written whole with the standard delimiters, as `QAK|Q1|OK`.
    #[must_use]
    pub fn line(mut self, segment: &str) -> Self {
        self.writer.standard_text(segment);
        self.writer.segment_end();
        self
    }

    /// Adds a segment as raw bytes, already written with the incoming message's delimiters and
    /// character set (copied from it, for instance).
    #[must_use]
    pub fn raw_segment(mut self, segment: &[u8]) -> Self {
        self.writer.bytes(segment);
        self.writer.segment_end();
        self
    }

    /// The reply (checked when the server sends it, or by [`Reply::finish`]).
    pub fn build(self) -> Reply {
        Reply::raw(self.writer.finish())
    }
}

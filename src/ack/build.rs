//! Writing the acknowledgment message.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::clock::{timestamp, write_control_id};
use super::{AckCode, Diagnostic};
use crate::hl7::{Delimiters, Location, Message, escape};

/// How [`Ack::build`] and [`Ack::reject_unparseable`] write an acknowledgment.
///
/// # Examples
///
/// ```
/// use mllp::ack::AckOptions;
/// let options = AckOptions::default()
///     .sending_application("MLLPRX")
///     .control_id_prefix("RX");
/// assert!(!options.include_err7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckOptions {
    /// Write each diagnostic's text as ERR-7 (diagnostic information) from v2.5 on, and the
    /// first diagnostic's text as MSA-3 (text message) before v2.4. Default is `false`: the text
    /// may describe message content, and the table description in ERR-3 already says what kind
    /// of error it is.
    pub include_err7: bool,
    /// Send each diagnostic's text to the sender: as ERR-8 (user message) from v2.5 on, and
    /// before v2.5 as the text of ERR-1's code and, before v2.4, as MSA-3 (text message), both
    /// cut to the 80 characters those versions allow.
    /// Default is `true`: these texts are written by this library (naming only MSH values, such
    /// as the unrouted trigger event) or by your handler, which must keep patient data out of
    /// them; the partner needs them to fix what it sent. `false` sends table descriptions only.
    pub include_err8: bool,
    /// MSH-3 (sending application) of the ACK. Default is `None`: the incoming MSH-5 (receiving
    /// application), as the standard asks. Components are separated by `^` whatever the
    /// incoming message's delimiters; the value is re-encoded with them.
    pub sending_application: Option<String>,
    /// MSH-4 (sending facility) of the ACK. Default is `None`: the incoming MSH-6. Written as
    /// [`AckOptions::sending_application`] is.
    pub sending_facility: Option<String>,
    /// Text put before every generated control id (MSH-10). Default is empty. The generated
    /// part is at most 20 characters in practice, so a prefix makes the id longer than the
    /// 20 characters that versions before 2.5 allow: keep it out for such partners.
    pub control_id_prefix: String,
    /// Answer every message in original mode (AA/AE/AR, always sent), whatever its MSH-15
    /// (accept acknowledgment type) asks. Default is `false`: with MSH-15 present the answer is
    /// an enhanced-mode accept ACK (CA/CE/CR), sent or not per MSH-15. Turn it on for senders
    /// that fill MSH-15 (often `NE` or `ER` from a template) but wait for an ACK regardless,
    /// and hang or resend without one.
    pub original_mode_only: bool,
}

impl Default for AckOptions {
    fn default() -> Self {
        Self {
            include_err7: false,
            include_err8: true,
            sending_application: None,
            sending_facility: None,
            control_id_prefix: String::new(),
            original_mode_only: false,
        }
    }
}

impl AckOptions {
    /// Sets [`AckOptions::include_err7`]. Default is `false`.
    #[must_use]
    pub fn include_err7(mut self, include: bool) -> Self {
        self.include_err7 = include;
        self
    }

    /// Sets [`AckOptions::include_err8`]. Default is `true`.
    #[must_use]
    pub fn include_err8(mut self, include: bool) -> Self {
        self.include_err8 = include;
        self
    }

    /// Sets [`AckOptions::sending_application`]. Default is `None`: the incoming MSH-5.
    #[must_use]
    pub fn sending_application(mut self, application: impl Into<String>) -> Self {
        self.sending_application = Some(application.into());
        self
    }

    /// Sets [`AckOptions::sending_facility`]. Default is `None`: the incoming MSH-6.
    #[must_use]
    pub fn sending_facility(mut self, facility: impl Into<String>) -> Self {
        self.sending_facility = Some(facility.into());
        self
    }

    /// Sets [`AckOptions::control_id_prefix`]. Default is empty.
    #[must_use]
    pub fn control_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.control_id_prefix = prefix.into();
        self
    }

    /// Sets [`AckOptions::original_mode_only`]. Default is `false`.
    #[must_use]
    pub fn original_mode_only(mut self, original: bool) -> Self {
        self.original_mode_only = original;
        self
    }
}

/// An encoded acknowledgment message (the payload, without MLLP framing).
///
/// Built with [`Ack::build`] from the message it answers, or with [`Ack::reject_unparseable`]
/// for bytes that are not HL7. A received ACK can be read with [`Ack::from_message`].
///
/// A built ACK is parsed only when [`Ack::message`] (or an accessor that reads a field) is first
/// called: the server sends the bytes and never needs the parse.
///
/// `Debug` shows the code and the message's segment ids and lengths; never field contents.
#[derive(Clone)]
pub struct Ack {
    code: AckCode,
    bytes: Bytes,
    parsed: OnceLock<Message>,
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack")
            .field("code", &self.code)
            .field("message", self.message())
            .finish()
    }
}

/// Which ERR fields the ACK's version calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Before v2.5: ERR-1 (error code and location). `msa3` before v2.4, where MSA-3 (text
    /// message) was still current.
    Legacy { msa3: bool },
    /// v2.5 and later: ERR-2 (location), ERR-3 (code), ERR-4 (severity), ERR-7/8 as configured.
    Modern,
    /// Unknown or absent version: both ERR-1 and ERR-2..4. Receivers ignore fields they do not
    /// know (a rule of the standard), and v2.5+ still defines ERR-1 for backward compatibility.
    Both,
}

fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    // By hand: through `str::parse` this was a tenth of building an AA.
    digits.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

/// An MSH-12.1 value such as `2.3.1` as `(major, minor, patch)`, the patch 0 when absent;
/// `None` when it does not start with `major.minor` in digits.
fn version_number(version: &[u8]) -> Option<(u32, u32, u32)> {
    let mut parts = version.split(|&b| b == b'.');
    let major = parts.next().and_then(number)?;
    let minor = parts.next().and_then(number)?;
    let patch = parts.next().and_then(number).unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether MSH-9 of this version has a third component, the message structure: from v2.3.1 on.
/// Up to v2.3 MSH-9 is `<message type>^<trigger event>`, at most 7 characters. An unreadable
/// version gets the current shape.
fn has_message_structure(version: Option<(u32, u32, u32)>) -> bool {
    version.is_none_or(|v| v >= (2, 3, 1))
}

impl Layout {
    /// The layout for a parsed MSH-12.1 (such as `2.3.1`); `None` (unreadable) writes both.
    fn for_number(version: Option<(u32, u32, u32)>) -> Layout {
        let Some((major, minor, _)) = version else {
            return Layout::Both;
        };
        match (major, minor) {
            (0 | 1, _) => Layout::Legacy { msa3: true },
            (2, m) if m < 4 => Layout::Legacy { msa3: true },
            (2, 4) => Layout::Legacy { msa3: false },
            _ => Layout::Modern,
        }
    }
}

/// Component `n` (1-based) of a raw field's first repetition, as `Value::component` reads it;
/// empty when absent. Cut here from the field's bytes: through `Value` these two lookups were
/// a tenth of building an AA.
fn component<'a>(field: &'a [u8], d: &Delimiters, n: usize) -> &'a [u8] {
    let first = field
        .split(|&b| b == d.repetition())
        .next()
        .unwrap_or_default();
    first
        .split(|&b| b == d.component())
        .nth(n.saturating_sub(1))
        .unwrap_or_default()
}

/// What the ACK takes from the message it answers, raw (already encoded with `delimiters`).
pub(super) struct Header<'a> {
    delimiters: Delimiters,
    encoding_characters: &'a [u8],
    /// Incoming MSH-5/6, which become the ACK's MSH-3/4.
    sender: (&'a [u8], &'a [u8]),
    /// Incoming MSH-3/4, which become the ACK's MSH-5/6.
    receiver: (&'a [u8], &'a [u8]),
    trigger: &'a [u8],
    acknowledged_id: &'a [u8],
    processing_id: &'a [u8],
    version: &'a [u8],
    charset: &'a [u8],
    layout: Layout,
    /// Whether MSH-9 carries the message structure (`ACK^<trigger>^ACK`), from v2.3.1 on.
    message_structure: bool,
}

impl<'a> Header<'a> {
    pub(super) fn from_message(m: &'a Message) -> Self {
        let msh = m.msh();
        let delimiters = *m.delimiters();
        let field = |n: usize| msh.field(n).map_or(&[][..], |v| v.as_bytes());
        let version_field = field(12);
        // MSH-12.1, read once for both the ERR layout and the MSH-9 shape.
        let version = version_number(component(version_field, &delimiters, 1));
        Header {
            delimiters,
            encoding_characters: field(2),
            sender: (field(5), field(6)),
            receiver: (field(3), field(4)),
            trigger: component(field(9), &delimiters, 2),
            acknowledged_id: field(10),
            // Both are required in the ACK's MSH: the defaults of an unreadable message when
            // the sender left them out.
            processing_id: Some(field(11)).filter(|f| !f.is_empty()).unwrap_or(b"P"),
            version: Some(version_field)
                .filter(|f| !f.is_empty())
                .unwrap_or(b"2.5"),
            charset: field(18),
            layout: Layout::for_number(version),
            message_structure: has_message_structure(version),
        }
    }

    /// The header of an ACK to bytes that are not HL7: nothing is taken from them.
    fn unknown() -> Self {
        Header {
            delimiters: Delimiters::default(),
            encoding_characters: b"^~\\&",
            sender: (b"", b""),
            receiver: (b"", b""),
            trigger: b"",
            acknowledged_id: b"",
            processing_id: b"P",
            version: b"2.5",
            charset: b"",
            layout: Layout::Both,
            message_structure: true,
        }
    }
}

/// How the texts the ACK writes itself (diagnostics, overrides, the control id prefix) are
/// encoded: in the character set the ACK declares in MSH-18, copied from the incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextEncoding {
    /// `UNICODE UTF-8`, or no MSH-18: the text is written as it is. Without MSH-18 the standard
    /// assumes ASCII, but many senders mean UTF-8 or their local character set by it, so the
    /// text is not altered.
    Utf8,
    /// `8859/1`: characters up to U+00FF as one byte each, `?` for the others.
    Latin1,
    /// Any other character set: ASCII as it is, `?` for every other character (ASCII is common
    /// to the single-byte sets of table 0211; this writer has no tables for their upper halves).
    Ascii,
}

impl TextEncoding {
    /// The encoding for an MSH-18 value (its first repetition names the default character set).
    fn for_charset(msh18: &[u8], d: &Delimiters) -> Self {
        let first = msh18.split(|&b| b == d.repetition()).next().unwrap_or(&[]);
        match first {
            b"" | b"UNICODE UTF-8" => TextEncoding::Utf8,
            b"8859/1" => TextEncoding::Latin1,
            _ => TextEncoding::Ascii,
        }
    }

    fn encode(self, text: &str) -> Cow<'_, [u8]> {
        if self == TextEncoding::Utf8 || text.is_ascii() {
            return Cow::Borrowed(text.as_bytes());
        }
        let limit = if self == TextEncoding::Latin1 {
            0xFF
        } else {
            0x7F
        };
        Cow::Owned(
            text.chars()
                .map(|c| {
                    u8::try_from(u32::from(c))
                        .ok()
                        .filter(|&b| u32::from(b) <= limit)
                })
                .map(|b| b.unwrap_or(b'?'))
                .collect(),
        )
    }
}

/// Writes a `^`-separated override with the message's own delimiters.
fn encode_override(value: &str, d: &Delimiters, encoding: TextEncoding) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for (i, part) in value.split('^').enumerate() {
        if i > 0 {
            out.push(d.component());
        }
        out.extend_from_slice(&escape(&encoding.encode(part), d));
    }
    out
}

/// The coding system of table 0357 codes, in ERR-1.4.3 and ERR-3.3.
const CODING_SYSTEM: &[u8] = b"HL70357";

/// The maximum length of MSA-3 (text message) and of each ERR-1 repetition in v2.1 to v2.4.
const LEGACY_TEXT_MAX: usize = 80;

pub(super) struct Writer {
    out: BytesMut,
    d: Delimiters,
    encoding: TextEncoding,
}

impl Writer {
    fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn text(&mut self, text: &str) {
        let encoded = self.encoding.encode(text);
        let escaped = escape(&encoded, &self.d);
        self.out.extend_from_slice(&escaped);
    }

    /// Writes `text` escaped, keeping only the leading whole characters whose escaped form fits
    /// in `max` bytes. Used for the fields that the versions before v2.5 cap at 80 characters
    /// (MSA-3, each ERR-1 repetition); bytes are counted, so non-ASCII text is cut a little
    /// early rather than too late, and an escape sequence is never split.
    fn text_within(&mut self, text: &str, max: usize) {
        let mut left = max;
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let encoded = self.encoding.encode(c.encode_utf8(&mut buf));
            let escaped = escape(&encoded, &self.d);
            if escaped.len() > left {
                break;
            }
            left -= escaped.len();
            self.out.extend_from_slice(&escaped);
        }
    }

    fn field(&mut self) {
        self.out.extend_from_slice(&[self.d.field()]);
    }

    fn repetition(&mut self) {
        self.out.extend_from_slice(&[self.d.repetition()]);
    }

    fn component(&mut self) {
        self.out.extend_from_slice(&[self.d.component()]);
    }

    fn subcomponent(&mut self) {
        self.out.extend_from_slice(&[self.d.subcomponent()]);
    }

    fn number(&mut self, n: Option<usize>) {
        if let Some(n) = n {
            self.raw(n.to_string().as_bytes());
        }
    }

    fn end_segment(&mut self) {
        self.out.extend_from_slice(b"\r");
    }

    /// `segment^sequence^field^code&text&HL70357`: ERR-1 (CM_ELD), used before v2.5. The text
    /// is cut so that the repetition stays within ERR-1's 80 characters.
    fn err1(&mut self, diagnostic: &Diagnostic, options: &AckOptions) {
        let start = self.out.len();
        if let Some(loc) = &diagnostic.location {
            self.text(&loc.segment);
            self.component();
            self.number(Some(loc.sequence));
            self.component();
            self.number(loc.field);
        } else {
            self.component();
            self.component();
        }
        self.component();
        self.number(Some(usize::from(diagnostic.code.code())));
        self.subcomponent();
        // What follows the text: a subcomponent separator and the coding system.
        let used = self.out.len() - start + 1 + CODING_SYSTEM.len();
        let room = LEGACY_TEXT_MAX.saturating_sub(used);
        if options.include_err8 && !diagnostic.text.is_empty() {
            self.text_within(&diagnostic.text, room);
        } else {
            self.text_within(diagnostic.code.description(), room);
        }
        self.subcomponent();
        self.raw(CODING_SYSTEM);
    }

    /// ERR-2 (ERL): segment^sequence^field^repetition^component^subcomponent, trailing empty
    /// components left out.
    fn erl(&mut self, loc: &Location) {
        self.text(&loc.segment);
        self.component();
        self.number(Some(loc.sequence));
        let rest = [loc.field, loc.repetition, loc.component, loc.subcomponent];
        let used = rest.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        for n in &rest[..used] {
            self.component();
            self.number(*n);
        }
    }

    fn err(&mut self, diagnostic: &Diagnostic, layout: Layout, options: &AckOptions) {
        self.raw(b"ERR");
        self.field();
        if matches!(layout, Layout::Legacy { .. } | Layout::Both) {
            self.err1(diagnostic, options);
        }
        if matches!(layout, Layout::Modern | Layout::Both) {
            self.field();
            if let Some(loc) = &diagnostic.location {
                self.erl(loc);
            }
            self.field();
            self.number(Some(usize::from(diagnostic.code.code())));
            self.component();
            self.text(diagnostic.code.description());
            self.component();
            self.raw(CODING_SYSTEM);
            self.field();
            self.raw(diagnostic.severity.as_str().as_bytes());
            if options.include_err7 || options.include_err8 {
                // ERR-5 (application error code) and ERR-6 (parameter) stay empty.
                self.raw(&[self.d.field(); 3]);
                if options.include_err7 {
                    self.text(&diagnostic.text);
                }
                if options.include_err8 {
                    self.field();
                    self.text(&diagnostic.text);
                }
            }
        }
        self.end_segment();
    }
}

/// What MSH-9 of a written message says.
#[derive(Clone, Copy)]
pub(super) enum MessageType<'a> {
    /// `ACK^<trigger>^ACK` by the version's rules.
    Ack,
    /// This value, already encoded with the message's delimiters (a reply's own type).
    Given(&'a [u8]),
}

impl Writer {
    /// A writer in the character set and with the delimiters of `header`.
    pub(super) fn for_header(header: &Header<'_>, capacity: usize) -> Writer {
        let d = header.delimiters;
        Writer {
            out: BytesMut::with_capacity(capacity),
            d,
            encoding: TextEncoding::for_charset(header.charset, &d),
        }
    }

    /// Writes `text`, whose delimiters are the standard `|^~\&`, with this writer's delimiters
    /// and character set: separators become this message's, escape sequences are kept (with
    /// this message's escape character), and data bytes that are delimiters here are escaped.
    pub(super) fn standard_text(&mut self, text: &str) {
        let encoded = self.encoding.encode(text);
        let translated = crate::hl7::translate(&encoded, &Delimiters::default(), &self.d);
        self.out.extend_from_slice(&translated);
    }

    /// Writes a field separator (for the reply builder).
    pub(super) fn separator(&mut self) {
        self.field();
    }

    /// Writes raw bytes and a segment terminator (for the reply builder).
    pub(super) fn segment_end(&mut self) {
        self.end_segment();
    }

    /// Writes raw bytes (for the reply builder).
    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        self.raw(bytes);
    }

    /// How many bytes were written so far.
    pub(super) fn len(&self) -> usize {
        self.out.len()
    }

    /// What was written so far.
    pub(super) fn finish(self) -> Bytes {
        self.out.freeze()
    }
}

/// Writes the MSH segment of a message answering `header`'s message: sender and receiver
/// swapped (or overridden in `options`), MSH-7 now, a new MSH-10, MSH-11/12 copied, MSH-18
/// copied when present.
pub(super) fn write_msh(
    w: &mut Writer,
    header: &Header<'_>,
    options: &AckOptions,
    message_type: MessageType<'_>,
) {
    let d = header.delimiters;
    let encoding = w.encoding;
    let sending_application = options
        .sending_application
        .as_deref()
        .map_or(Cow::Borrowed(header.sender.0), |s| {
            Cow::Owned(encode_override(s, &d, encoding))
        });
    let sending_facility = options
        .sending_facility
        .as_deref()
        .map_or(Cow::Borrowed(header.sender.1), |s| {
            Cow::Owned(encode_override(s, &d, encoding))
        });
    let prefix = encoding.encode(&options.control_id_prefix);
    let prefix = escape(&prefix, &d);

    w.raw(b"MSH");
    w.field();
    w.raw(header.encoding_characters);
    for part in [
        &sending_application[..],
        &sending_facility[..],
        header.receiver.0,
        header.receiver.1,
    ] {
        w.field();
        w.raw(part);
    }
    w.field();
    let stamp = timestamp(SystemTime::now());
    w.raw(stamp.for_delimiters(&w.d).as_bytes());
    w.field(); // MSH-8, security
    w.field();
    match message_type {
        MessageType::Given(value) => w.raw(value),
        MessageType::Ack => {
            w.raw(b"ACK");
            // From v2.3.1 MSH-9.3 (message structure) is always `ACK`, with or without a
            // trigger: parsers that look the structure up (hl7apy) cannot read an ACK without it.
            if header.message_structure {
                w.component();
                w.raw(header.trigger);
                w.component();
                w.raw(b"ACK");
            } else if !header.trigger.is_empty() {
                w.component();
                w.raw(header.trigger);
            }
        }
    }
    w.field();
    write_control_id(&prefix, &mut w.out);
    w.field();
    w.raw(header.processing_id);
    w.field();
    w.raw(header.version);
    if !header.charset.is_empty() {
        // MSH-13..17 empty, then MSH-18: the ACK reuses bytes of the incoming MSH, so it is in
        // the incoming character set.
        w.raw(&[d.field(); 6]);
        w.raw(header.charset);
    }
    w.end_segment();
}

/// Writes MSA-1 and MSA-2 (the acknowledged MSH-10), without a segment terminator.
pub(super) fn write_msa(w: &mut Writer, header: &Header<'_>, code: AckCode) {
    w.raw(b"MSA");
    w.field();
    w.raw(code.as_str().as_bytes());
    w.field();
    w.raw(header.acknowledged_id);
}

fn write(
    header: &Header<'_>,
    code: AckCode,
    diagnostics: &[Diagnostic],
    options: &AckOptions,
) -> Bytes {
    let mut w = Writer::for_header(header, 256 + diagnostics.len() * 64);
    write_msh(&mut w, header, options, MessageType::Ack);
    write_msa(&mut w, header, code);
    if let (Layout::Legacy { msa3: true }, Some(first)) = (header.layout, diagnostics.first()) {
        w.field();
        if (options.include_err7 || options.include_err8) && !first.text.is_empty() {
            w.text_within(&first.text, LEGACY_TEXT_MAX);
        } else {
            w.text_within(first.code.description(), LEGACY_TEXT_MAX);
        }
    }
    w.end_segment();

    match header.layout {
        // Before v2.5 the ACK holds at most one ERR (`MSH MSA [ERR]`); ERR-1 repeats instead.
        Layout::Legacy { .. } if !diagnostics.is_empty() => {
            w.raw(b"ERR");
            w.field();
            for (i, diagnostic) in diagnostics.iter().enumerate() {
                if i > 0 {
                    w.repetition();
                }
                w.err1(diagnostic, options);
            }
            w.end_segment();
        }
        _ => {
            for diagnostic in diagnostics {
                w.err(diagnostic, header.layout, options);
            }
        }
    }
    w.out.freeze()
}

impl Ack {
    /// The acknowledgment of `incoming`, per DESIGN.md "Errors and acknowledgements".
    ///
    /// - MSH: the incoming delimiters (MSH-1, and MSH-2 verbatim, truncation character
    ///   included); MSH-3/4 = incoming MSH-5/6 (unless overridden in `options`) and MSH-5/6 =
    ///   incoming MSH-3/4; MSH-7 = now, UTC, `YYYYMMDDHHMMSS+0000`; MSH-9 = `ACK^<trigger>^ACK`
    ///   with the incoming MSH-9.2 (`ACK^<trigger>` before v2.3.1, whose MSH-9 has no message
    ///   structure component), or `ACK^^ACK` when it is absent (`ACK` before v2.3.1); MSH-10 = a new unique control id;
    ///   MSH-11 and MSH-12 copied verbatim, never "upgraded" (a sender that gets a version it
    ///   does not speak may resend forever), or `P` and `2.5` when the incoming message leaves
    ///   them empty (both are required); MSH-18 copied when present.
    /// - MSA: MSA-1 = `code`; MSA-2 = incoming MSH-10 verbatim; MSA-3 only before v2.4, where
    ///   it was still current (deprecated from v2.4): the first diagnostic's code description,
    ///   or its text with [`AckOptions::include_err7`], cut to the field's 80 characters.
    /// - Before v2.5 (by MSH-12.1), one ERR segment (the ACK structure allows one) whose ERR-1
    ///   repeats once per diagnostic, in order: `segment^sequence^field^code&description&HL70357`,
    ///   each repetition within ERR-1's 80 characters (a long text is cut).
    ///   From v2.5, one ERR segment per diagnostic, in order: ERR-2 = location (ERL),
    ///   ERR-3 = `code^description^HL70357`, ERR-4 = severity, ERR-7/ERR-8 = the diagnostic text
    ///   only when enabled. With no readable version, both layouts are written in each ERR.
    ///
    /// Every text is escaped with the incoming delimiters, and written in the character set of
    /// the incoming MSH-18, which the ACK copies: Latin-1 for `8859/1`, UTF-8 for
    /// `UNICODE UTF-8` or no MSH-18, and ASCII for any other set, with `?` for what the set
    /// cannot hold. The code does not have to match the
    /// diagnostics: AA with warning diagnostics is how warnings are reported.
    pub fn build(
        incoming: &Message,
        code: AckCode,
        diagnostics: &[Diagnostic],
        options: &AckOptions,
    ) -> Ack {
        let bytes = write(&Header::from_message(incoming), code, diagnostics, options);
        Ack::from_written(code, bytes)
    }

    /// A best-effort AR for bytes that could not be parsed as HL7.
    ///
    /// When the payload starts with an MSH segment (after a UTF-8 byte order mark, if one
    /// precedes it) that parses on its own (the damage is
    /// further on: a bad segment id, LF line endings), the ACK is [`Ack::build`] of that MSH:
    /// its delimiters, version and processing id, and MSA-2 = its MSH-10. Nothing is guessed from
    /// a damaged MSH, though: otherwise the ACK uses `|^~\&`, empty MSH-3..6 (or the overrides),
    /// MSH-9 `ACK^^ACK`, MSH-11 `P`, MSH-12 `2.5`, an empty MSA-2, and an ERR carrying both ERR-1 and
    /// ERR-2..4, since the sender's version is unknown. One ERR holds `diagnostic` (typically
    /// [`ParseError::to_diagnostic`](crate::hl7::ParseError::to_diagnostic): code 100 or 102).
    pub fn reject_unparseable(raw: &[u8], diagnostic: &Diagnostic, options: &AckOptions) -> Ack {
        let diagnostics = std::slice::from_ref(diagnostic);
        let start = raw
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(raw.len());
        let head = &raw[start..];
        // After a UTF-8 byte order mark (refused, but the MSH behind it names the message).
        let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let end = memchr::memchr2(b'\r', b'\n', head).unwrap_or(head.len());
        if head.starts_with(b"MSH")
            && let Ok(msh) = Message::parse(Bytes::copy_from_slice(&head[..end]))
        {
            return Ack::build(&msh, AckCode::AR, diagnostics, options);
        }
        let bytes = write(&Header::unknown(), AckCode::AR, diagnostics, options);
        Ack::from_written(AckCode::AR, bytes)
    }

    fn from_written(code: AckCode, bytes: Bytes) -> Ack {
        // The writer copies only whole MSH fields of a parsed message (no delimiter, CR or LF
        // inside) and escapes every text, so what it writes parses; debug builds (the tests, the
        // proptests, the fuzz target) check that on every ACK.
        debug_assert!(
            Message::parse(bytes.clone()).is_ok(),
            "the ACK writer produced an unparseable message"
        );
        Ack {
            code,
            bytes,
            parsed: OnceLock::new(),
        }
    }

    /// A batch acknowledgment: its bytes, its worst code, and the message that stands for it.
    pub(super) fn from_batch(code: AckCode, bytes: Bytes, first: Message) -> Ack {
        Ack {
            code,
            bytes,
            parsed: OnceLock::from(first),
        }
    }

    /// The same ACK recorded with another code (its bytes unchanged).
    pub(super) fn with_code(mut self, code: AckCode) -> Ack {
        self.code = code;
        self
    }

    /// A message sent as the answer with `code` recorded for it (a handler's reply).
    pub(super) fn from_parts(code: AckCode, message: Message) -> Ack {
        Ack {
            code,
            bytes: message.as_bytes().clone(),
            parsed: OnceLock::from(message),
        }
    }

    /// Reads a received acknowledgment: `None` when the message has no MSA segment or MSA-1 is
    /// not a table 0008 code.
    pub fn from_message(message: Message) -> Option<Ack> {
        let code = AckCode::from_code(message.get("MSA-1").ok()??.as_bytes())?;
        Some(Ack {
            code,
            bytes: message.as_bytes().clone(),
            parsed: OnceLock::from(message),
        })
    }

    /// MSA-1, the acknowledgment code.
    pub fn code(&self) -> AckCode {
        self.code
    }

    /// The encoded ACK, without MLLP framing.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The encoded ACK, without MLLP framing.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The ACK's own MSH-10 (message control ID). Always present in a built ACK.
    pub fn control_id(&self) -> Option<&str> {
        self.message().control_id()
    }

    /// MSA-2: the control id of the message being acknowledged, raw (empty for an AR to bytes
    /// with no readable MSH). A sender compares it with the MSH-10 it sent.
    pub fn acknowledged_control_id(&self) -> &[u8] {
        self.message()
            .get("MSA-2")
            .ok()
            .flatten()
            .map_or(&[], |v| v.as_bytes())
    }

    /// The ACK as a parsed message (parsed on first use).
    ///
    /// # Panics
    /// Only on a bug in the ACK writer: every ACK it writes parses (checked in debug builds).
    pub fn message(&self) -> &Message {
        self.parsed.get_or_init(|| {
            Message::parse(self.bytes.clone()).expect("every ACK this module writes parses")
        })
    }

    /// The ACK as a parsed message.
    ///
    /// # Panics
    /// As [`Ack::message`].
    pub fn into_message(self) -> Message {
        match self.parsed.into_inner() {
            Some(message) => message,
            None => Message::parse(self.bytes).expect("every ACK this module writes parses"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version strings map to the ERR layout of their version; unreadable ones to both.
    #[test]
    fn layout_follows_the_version() {
        for (v, layout) in [
            (&b"2.1"[..], Layout::Legacy { msa3: true }),
            (b"2.3", Layout::Legacy { msa3: true }),
            (b"2.3.1", Layout::Legacy { msa3: true }),
            (b"2.4", Layout::Legacy { msa3: false }),
            (b"2.5", Layout::Modern),
            (b"2.5.1", Layout::Modern),
            (b"2.8.2", Layout::Modern),
            (b"2.10", Layout::Modern),
            (b"", Layout::Both),
            (b"2", Layout::Both),
            (b"V2.5", Layout::Both),
            (b"2.x", Layout::Both),
        ] {
            assert_eq!(
                Layout::for_number(version_number(v)),
                layout,
                "{}",
                String::from_utf8_lossy(v)
            );
        }
    }

    /// The fallback ACK used if the writer ever failed is itself a valid ACK.
    #[test]
    fn fallback_ack_parses() {
        let bytes = write(&Header::unknown(), AckCode::AR, &[], &AckOptions::default());
        let ack = Ack::from_message(Message::parse(bytes).unwrap()).unwrap();
        assert_eq!(ack.code(), AckCode::AR);
    }

    proptest::proptest! {
        /// The ACK header's MSH-9.2 and MSH-12.1, cut from the raw fields, are what
        /// `Value::component` reads, whatever repetitions and components the fields hold.
        #[test]
        fn header_components_match_value_component(
            nine in "[A-Z0-9^~&]{0,12}",
            twelve in "[0-9.^~&]{0,10}",
        ) {
            let text = format!("MSH|^~\\&|A|B|C|D|1||{nine}|ID1|P|{twelve}\r");
            let Ok(message) = Message::parse(Bytes::from(text)) else {
                return Ok(());
            };
            let header = Header::from_message(&message);
            let msh = message.msh();
            let expected = |n: usize, c: usize| {
                msh.field(n)
                    .and_then(|v| v.component(c))
                    .map_or(&b""[..], |v| v.as_bytes())
            };
            proptest::prop_assert_eq!(header.trigger, expected(9, 2));
            // An empty MSH-12 gets the default version (a required field).
            let version = if msh.field(12).is_none_or(|v| v.as_bytes().is_empty()) {
                &b"2.5"[..]
            } else {
                expected(12, 1)
            };
            proptest::prop_assert_eq!(
                component(header.version, message.delimiters(), 1),
                version
            );
        }
    }
}

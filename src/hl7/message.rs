//! The parsed message and the borrowed views into it.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use memchr::memchr;

use super::parse::{self, Head, Index, SegmentEntry};
use super::{Delimiters, FieldPath, Location, ParseError, ParseOptions, PathError, decode};

/// An HL7 v2 message: the bytes as received, plus an index of segment and field offsets.
///
/// Parsing reads the delimiters from MSH-1/MSH-2, finds MSH's field separators, and checks
/// every later segment (its id, its line ending) in one pass. The field separators of the
/// other segments are indexed on the first access past MSH ([`Message::segments`],
/// [`Message::segment`], a path outside MSH), once for every clone: a route that only reads
/// the header (store and acknowledge, forward) never pays for them. Repetitions, components
/// and subcomponents are split on access, and escape sequences are decoded on access
/// ([`Value::decoded`]). Nothing is copied: every view borrows the one [`Bytes`] buffer, and
/// cloning a `Message` costs one reference-count increment.
///
/// The bytes are never changed, so [`Message::as_bytes`] re-encodes an unmodified message
/// byte for byte. Content is bytes, not text: HL7 allows other character sets than UTF-8
/// (MSH-18), so accessors return `&[u8]`, with `to_str` helpers for ASCII/UTF-8 content.
///
/// `Debug` prints segment ids and lengths only, never content: HL7 carries patient data.
///
/// The index holds 4 bytes per field separator and 20 per segment: typically less than the
/// message itself, and at most 5 times its size (a payload made only of delimiters). It is
/// allocated once at its exact size, known from the parse ([`Message::index_size`]), so the
/// frame size limit bounds it.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use mllp::hl7::Message;
/// let msg = Message::parse(Bytes::from_static(
///     b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240102030405||ORU^R01^ORU_R01|MSG001|P|2.5.1\r\
///       PID|1||123^^^HOSP^MR~456^^^SSA^SS||DOE^JANE^Q\\S\\R\r",
/// ))?;
/// assert_eq!(msg.message_code(), Some("ORU"));
/// assert_eq!(msg.trigger_event(), Some("R01"));
/// assert_eq!(msg.control_id(), Some("MSG001"));
/// assert_eq!(msg.get("PID-3(2).4")?.unwrap().as_bytes(), b"SSA");
/// assert_eq!(msg.get("PID-5.3")?.unwrap().as_bytes(), b"Q\\S\\R");
/// assert_eq!(&*msg.get("PID-5.3")?.unwrap().decoded(), b"Q^R");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Message {
    /// One allocation shared by every clone: a clone is one reference-count increment.
    inner: Arc<Inner>,
}

struct Inner {
    bytes: Bytes,
    options: ParseOptions,
    head: Head,
    /// Where MSH-9.1 (message code), MSH-9.2 (trigger event) and MSH-10 (control ID) are, when
    /// present and non-empty (in any character set): read by the router, the plugins,
    /// telemetry and the ACK for every message, so found once.
    msh_cache: [Option<(u32, u32)>; 3],
    /// Every segment and field separator: built on first access past MSH (at parse time when
    /// MSH has more separators than [`Head`] holds).
    index: OnceLock<Index>,
}

impl Inner {
    /// The full index, built now if nothing asked for it before.
    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            parse::index(&self.bytes, &self.options, &self.head).unwrap_or_else(|_| {
                // `head` found every error the index can: tested against the eager parse
                // (`lazy_parse_finds_what_the_eager_parse_finds`). Were it ever wrong, the
                // message keeps its header rather than panic in someone's handler.
                // Only an inline head gets here (a longer MSH is indexed at parse time).
                debug_assert!(false, "the parse accepted what the index rejects");
                let msh = self.head.msh;
                Index {
                    segments: vec![msh],
                    separators: self.head.separators[..msh.separators as usize].to_vec(),
                }
            })
        })
    }

    /// MSH's entry and the separator array its `first_separator` indexes into.
    fn msh(&self) -> (&SegmentEntry, &[u32]) {
        if self.head.inline {
            (&self.head.msh, &self.head.separators)
        } else {
            let index = self.index();
            (&index.segments[0], &index.separators)
        }
    }
}

/// What MSH-15 (accept acknowledgment type) or MSH-16 (application acknowledgment type) asks
/// for: HL7 table 0155.
///
/// Table 0155 has had these four values since v2.2 and no version adds one, so the enum is
/// exhaustive: a `match` on it needs no wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckRequirement {
    /// `AL`: always send the acknowledgment.
    Always,
    /// `NE`: never send it.
    Never,
    /// `ER`: only for error or reject conditions.
    ErrorOnly,
    /// `SU`: only on successful completion.
    SuccessOnly,
}

impl AckRequirement {
    /// Reads a table 0155 code (`AL`, `NE`, `ER`, `SU`, exact case). Any other value is `None`.
    pub fn from_code(code: &[u8]) -> Option<Self> {
        match code {
            b"AL" => Some(AckRequirement::Always),
            b"NE" => Some(AckRequirement::Never),
            b"ER" => Some(AckRequirement::ErrorOnly),
            b"SU" => Some(AckRequirement::SuccessOnly),
            _ => None,
        }
    }

    /// The table 0155 code.
    pub const fn as_str(self) -> &'static str {
        match self {
            AckRequirement::Always => "AL",
            AckRequirement::Never => "NE",
            AckRequirement::ErrorOnly => "ER",
            AckRequirement::SuccessOnly => "SU",
        }
    }
}

impl fmt::Display for AckRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where MSH-9.1, MSH-9.2 and MSH-10 are (see `Inner::msh_cache`): read straight from MSH's
/// separators, as the accessors would (first repetition, then components), kept when
/// non-empty, whatever their character set (a Latin-1 MSH-10 is present, not missing).
fn msh_cache(inner: &Inner) -> [Option<(u32, u32)>; 3] {
    let bytes = &inner.bytes[..];
    let (msh, separators) = inner.msh();
    let seps = &separators[msh.first_separator as usize..][..msh.separators as usize];
    // MSH-n (n >= 2) is the text after field separator n - 1.
    let field = |n: usize| -> Option<(usize, usize)> {
        let from = *seps.get(n - 2)? as usize + 1;
        let to = seps.get(n - 1).map_or(msh.end as usize, |&s| s as usize);
        Some((from, to))
    };
    let keep = |from: usize, to: usize| -> Option<(u32, u32)> {
        (from < to).then_some((from as u32, to as u32))
    };
    let d = &inner.head.delimiters;
    let mut cache = [None; 3];
    if let Some((from, to)) = field(9) {
        // One pass over MSH-9: its first repetition ends the scan; the first two component
        // separators split the code from the event and the event from the rest.
        let (repetition, component) = (d.repetition(), d.component());
        let mut end = to;
        let mut splits = [None; 2];
        let mut found = 0;
        for (i, &b) in bytes[from..to].iter().enumerate() {
            if b == repetition {
                end = from + i;
                break;
            }
            if b == component && found < 2 {
                splits[found] = Some(from + i);
                found += 1;
            }
        }
        let code_end = splits[0].unwrap_or(end);
        cache[0] = keep(from, code_end);
        if let Some(split) = splits[0] {
            cache[1] = keep(split + 1, splits[1].unwrap_or(end));
        }
    }
    if let Some((from, to)) = field(10) {
        cache[2] = keep(from, to);
    }
    cache
}

fn non_empty_str(value: Option<Value<'_>>) -> Option<&str> {
    value.and_then(|v| v.to_str()).filter(|s| !s.is_empty())
}

impl Message {
    /// Parses a message under the wire rules: segments end in CR (the last one may omit it).
    ///
    /// Empty segments are skipped. Segments after MSH are not checked against any message
    /// structure: that is validation, not parsing.
    ///
    /// # Errors
    ///
    /// [`ParseError`] when the bytes are empty, do not start with MSH, have unusable delimiters,
    /// hold a malformed segment id, or use LF line endings.
    pub fn parse(bytes: Bytes) -> Result<Message, ParseError> {
        Message::parse_with(bytes, &ParseOptions::default())
    }

    /// Parses a message with explicit [`ParseOptions`].
    ///
    /// # Errors
    ///
    /// As [`Message::parse`]; with lenient line endings, LF never causes an error.
    pub fn parse_with(bytes: Bytes, options: &ParseOptions) -> Result<Message, ParseError> {
        let head = parse::head(&bytes, options)?;
        let mut inner = Inner {
            bytes,
            options: options.clone(),
            head,
            msh_cache: [None; 3],
            index: OnceLock::new(),
        };
        if !inner.head.inline {
            // MSH alone has more separators than the head holds: index everything now.
            let index = parse::index(&inner.bytes, options, &inner.head)?;
            let _ = inner.index.set(index);
        }
        inner.msh_cache = msh_cache(&inner);
        Ok(Message {
            inner: Arc::new(inner),
        })
    }

    /// Whether the full index has been built (it is, once anything reads past MSH).
    #[cfg(test)]
    pub(crate) fn index_is_built(&self) -> bool {
        self.inner.index.get().is_some()
    }

    /// A field found at parse time (see `Inner::msh_cache`).
    fn cached(&self, slot: usize) -> Option<&str> {
        // Checked again: the crate forbids `unsafe`. Internal callers that only compare or
        // test presence use the `*_bytes` accessors.
        std::str::from_utf8(self.cached_bytes(slot)?).ok()
    }

    /// The bytes of a field found at parse time, known to be non-empty.
    fn cached_bytes(&self, slot: usize) -> Option<&[u8]> {
        let (start, end) = self.inner.msh_cache[slot]?;
        Some(&self.inner.bytes[start as usize..end as usize])
    }

    /// MSH-9.1, the message code, raw: in whatever character set MSH-18 declares. `None` when
    /// absent or empty. [`Message::message_code`] is the same as `&str` when it is UTF-8.
    pub fn message_code_bytes(&self) -> Option<&[u8]> {
        self.cached_bytes(0)
    }

    /// MSH-9.2, the trigger event, raw; `None` when absent or empty.
    pub fn trigger_event_bytes(&self) -> Option<&[u8]> {
        self.cached_bytes(1)
    }

    /// MSH-10, the message control ID, raw and whole: in whatever character set MSH-18
    /// declares (a Latin-1 id is present, not missing). `None` when absent or empty. This is
    /// what an ACK's MSA-2 repeats; [`Message::control_id_text`] is it as text.
    pub fn control_id_bytes(&self) -> Option<&[u8]> {
        self.cached_bytes(2)
    }

    /// MSH-10 as text, decoded per MSH-18 ([`Message::decode_text`]): for logs, telemetry and
    /// searches. `None` when absent or empty.
    pub fn control_id_text(&self) -> Option<Cow<'_, str>> {
        self.control_id_bytes().map(|id| self.decode_text(id))
    }

    /// Bytes of this message (a field, a component) as text, decoded per the character set
    /// MSH-18 declares: `8859/1` as Latin-1 (every byte is a character); `UNICODE UTF-8`, no
    /// MSH-18 (ASCII), and the other sets as UTF-8, with U+FFFD for bytes that do not decode
    /// (their ASCII range is the same; this decoder has no tables for their upper halves).
    /// Escape sequences are left as they are (see [`Value::decoded`]). Borrows when nothing
    /// needs converting.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use mllp::hl7::Message;
    /// let latin1 = Message::parse(Bytes::from_static(
    ///     b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M\xFCller-1|P|2.5||||||8859/1\r",
    /// ))?;
    /// assert_eq!(latin1.control_id(), None); // not UTF-8
    /// assert_eq!(latin1.control_id_bytes(), Some(&b"M\xFCller-1"[..]));
    /// assert_eq!(latin1.control_id_text().as_deref(), Some("Müller-1"));
    /// # Ok::<(), mllp::hl7::ParseError>(())
    /// ```
    pub fn decode_text<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        if bytes.is_ascii() {
            // ASCII is the same in every set of table 0211 that this decodes.
            return Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default());
        }
        if self.is_latin1() {
            Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())
        } else {
            String::from_utf8_lossy(bytes)
        }
    }

    /// Whether MSH-18 (its first repetition) declares `8859/1`.
    pub(crate) fn is_latin1(&self) -> bool {
        self.msh_field(18)
            .and_then(|v| v.repetition(1))
            .is_some_and(|v| v.as_bytes() == b"8859/1")
    }

    /// The memory the index takes beside the message's bytes, in bytes, once it is built:
    /// counted from the parse whether or not anything has read past MSH yet, since any
    /// handler may. At most 5 times the message's size (a payload made only of delimiters).
    pub fn index_size(&self) -> usize {
        let head = &self.inner.head;
        std::mem::size_of::<Inner>()
            + parse::SEPARATOR_BYTES * head.total_separators as usize
            + parse::SEGMENT_BYTES * head.total_segments as usize
    }

    /// The most [`Message::index_size`] can be for a message of these bytes, known before it
    /// is parsed: exact for a message above 64 KiB (a quick count of its delimiters); below,
    /// one field separator per byte and one segment per four. A server draws this from its
    /// memory budget (`max_buffered_bytes`) before it parses, so that parsing never allocates
    /// past it.
    pub fn index_size_bound(bytes: &[u8], options: &ParseOptions) -> usize {
        std::mem::size_of::<Inner>() + parse::index_size_bound(bytes, options)
    }

    /// The most [`Message::index_size`] can be for any message of `len` bytes, from the length
    /// alone: free to compute, and at most about 9 times `len` (one field separator per byte,
    /// one segment per four). A server draws this from its memory budget when the budget can
    /// spare it, and counts with [`Message::index_size_bound`] only when it cannot.
    pub fn index_size_ceiling(len: usize) -> usize {
        std::mem::size_of::<Inner>() + parse::index_size_ceiling(len)
    }

    /// The message exactly as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.inner.bytes
    }

    /// The message exactly as received, giving up the index.
    pub fn into_bytes(self) -> Bytes {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.bytes,
            Err(shared) => shared.bytes.clone(),
        }
    }

    /// The delimiters declared in MSH-1 and MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.inner.head.delimiters
    }

    /// Every segment, in order; MSH first.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = Segment<'_>> + '_ {
        let index = self.inner.index();
        index
            .segments
            .iter()
            .enumerate()
            .map(move |(i, entry)| Segment {
                message: self,
                separators: &index.separators,
                entry,
                position: i + 1,
            })
    }

    /// How many segments the message has (empty segments are not counted).
    pub fn segment_count(&self) -> usize {
        self.inner.head.total_segments as usize
    }

    /// The MSH segment (always present in a parsed message).
    pub fn msh(&self) -> Segment<'_> {
        let (entry, separators) = self.inner.msh();
        Segment {
            message: self,
            separators,
            entry,
            position: 1,
        }
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<Segment<'_>> {
        self.segments_by_id(id).next()
    }

    /// Every segment with this id, in order. An id that is not three bytes matches nothing.
    pub fn segments_by_id<'a>(&'a self, id: &str) -> impl Iterator<Item = Segment<'a>> + use<'a> {
        let id: Option<[u8; 3]> = id.as_bytes().try_into().ok();
        self.segments().filter(move |s| Some(s.entry.id) == id)
    }

    /// Resolves a field path such as `PID-5.1`, `PID-3(2).1`, `OBX(3)-5` or `MSH-9.2`.
    ///
    /// `Ok(None)` means the path is well formed but the message does not reach that far (no such
    /// segment, field, repetition, component or subcomponent). A present but empty position is
    /// `Some` of an empty value.
    ///
    /// # Errors
    ///
    /// [`PathError`] when the path string is malformed. See [`FieldPath`] for the grammar.
    pub fn get(&self, path: &str) -> Result<Option<Value<'_>>, PathError> {
        let path: FieldPath = path.parse()?;
        Ok(self.lookup(&path))
    }

    /// Resolves a field path parsed beforehand.
    pub fn lookup(&self, path: &FieldPath) -> Option<Value<'_>> {
        let segment = if path.segment == *b"MSH" && path.occurrence == 1 {
            // The header is always the first segment: no need for the full index.
            self.msh()
        } else {
            self.segments()
                .filter(|s| s.entry.id == path.segment)
                .nth(path.occurrence - 1)?
        };
        let mut value = segment.field(path.field)?;
        if let Some(r) = path.repetition {
            value = value.repetition(r)?;
        }
        if let Some(c) = path.component {
            value = value.component(c)?;
        }
        if let Some(s) = path.subcomponent {
            value = value.subcomponent(s)?;
        }
        Some(value)
    }

    fn msh_field(&self, n: usize) -> Option<Value<'_>> {
        self.msh().field(n)
    }

    fn msh_raw(&self, n: usize) -> &[u8] {
        self.msh_field(n).map_or(&[], |v| v.as_bytes())
    }

    /// MSH-9.1, the message code (e.g. `"ADT"`). `None` when absent, empty or not UTF-8.
    pub fn message_code(&self) -> Option<&str> {
        self.cached(0)
    }

    /// MSH-9.2, the trigger event (e.g. `"A01"`). `None` when absent, empty or not UTF-8.
    pub fn trigger_event(&self) -> Option<&str> {
        self.cached(1)
    }

    /// MSH-9.3, the message structure (e.g. `"ADT_A01"`). `None` when absent, empty or not
    /// UTF-8 (it only exists from v2.3.1 on).
    pub fn message_structure(&self) -> Option<&str> {
        non_empty_str(self.msh_field(9).and_then(|v| v.component(3)))
    }

    /// MSH-10, the message control ID, whole and raw. `None` when absent, empty or not UTF-8
    /// (a Latin-1 id: see [`Message::control_id_bytes`] and [`Message::control_id_text`]).
    pub fn control_id(&self) -> Option<&str> {
        self.cached(2)
    }

    /// MSH-11.1, the processing ID (`P`, `T`, `D`). `None` when absent, empty or not UTF-8.
    pub fn processing_id(&self) -> Option<&str> {
        non_empty_str(self.msh_field(11).and_then(|v| v.component(1)))
    }

    /// MSH-12.1, the version ID (e.g. `"2.5.1"`). `None` when absent, empty or not UTF-8.
    pub fn version(&self) -> Option<&str> {
        non_empty_str(self.msh_field(12).and_then(|v| v.component(1)))
    }

    /// MSH-15, the accept acknowledgment type. `None` when absent, empty, or not a table 0155
    /// code: an unknown value is treated like no value (original acknowledgment rules).
    pub fn accept_ack_type(&self) -> Option<AckRequirement> {
        self.msh_field(15)
            .and_then(|v| v.component(1))
            .and_then(|v| AckRequirement::from_code(v.as_bytes()))
    }

    /// MSH-16, the application acknowledgment type; `None` as for [`Message::accept_ack_type`].
    pub fn application_ack_type(&self) -> Option<AckRequirement> {
        self.msh_field(16)
            .and_then(|v| v.component(1))
            .and_then(|v| AckRequirement::from_code(v.as_bytes()))
    }

    /// MSH-18, the character set, first repetition (e.g. `"8859/1"`, `"UNICODE UTF-8"`).
    /// `None` when absent or empty (which means ASCII), or not UTF-8.
    pub fn charset(&self) -> Option<&str> {
        non_empty_str(self.msh_field(18).and_then(|v| v.repetition(1)))
    }

    /// MSH-3, the sending application, raw and whole (every component); empty when absent.
    pub fn sending_application(&self) -> &[u8] {
        self.msh_raw(3)
    }

    /// MSH-4, the sending facility, raw and whole; empty when absent.
    pub fn sending_facility(&self) -> &[u8] {
        self.msh_raw(4)
    }

    /// MSH-5, the receiving application, raw and whole; empty when absent.
    pub fn receiving_application(&self) -> &[u8] {
        self.msh_raw(5)
    }

    /// MSH-6, the receiving facility, raw and whole; empty when absent.
    pub fn receiving_facility(&self) -> &[u8] {
        self.msh_raw(6)
    }
}

impl fmt::Debug for Message {
    /// Segment ids and lengths only: content may be patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Summary<'a>(&'a Message);
        impl fmt::Debug for Summary<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for s in self.0.segments() {
                    list.entry(&format_args!("{}({})", s.id(), s.as_bytes().len()));
                }
                list.finish()
            }
        }
        f.debug_struct("Message")
            .field("len", &self.inner.bytes.len())
            .field("segments", &Summary(self))
            .finish()
    }
}

/// One segment of a [`Message`].
#[derive(Clone, Copy)]
pub struct Segment<'a> {
    message: &'a Message,
    /// The separator array that `entry.first_separator` indexes into.
    separators: &'a [u32],
    entry: &'a SegmentEntry,
    position: usize,
}

impl<'a> Segment<'a> {
    /// The three-character segment id, e.g. `"PID"`.
    pub fn id(&self) -> &'a str {
        // The parser only accepts ASCII uppercase letters and digits.
        std::str::from_utf8(&self.entry.id).unwrap_or("")
    }

    /// 1-based position in the message (MSH is 1).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Which segment with this id it is (1 = the first): the ERR-2 segment sequence.
    pub fn sequence(&self) -> usize {
        if self.position == 1 {
            return 1;
        }
        1 + self.message.inner.index().segments[..self.position - 1]
            .iter()
            .filter(|e| e.id == self.entry.id)
            .count()
    }

    /// This segment as an error [`Location`].
    pub fn location(&self) -> Location {
        Location::new(self.id(), self.sequence())
    }

    /// The raw segment, id included, terminator excluded.
    pub fn as_bytes(&self) -> &'a [u8] {
        &self.message.inner.bytes[self.entry.start as usize..self.entry.end as usize]
    }

    /// A header-shaped segment: its id is `MSH` and a byte follows the id (MSH-1, the field
    /// separator). A later segment that is just `MSH` is an ordinary segment with no fields.
    fn is_msh(&self) -> bool {
        self.entry.id == *b"MSH" && self.entry.end > self.entry.start + 3
    }

    /// The number of fields. For an MSH segment this counts MSH-1 (the field separator) and
    /// MSH-2.
    pub fn field_count(&self) -> usize {
        self.entry.separators as usize + usize::from(self.is_msh())
    }

    /// Field `n` (1-based), whole: every repetition, raw.
    ///
    /// For MSH, field 1 is the field separator and field 2 the encoding characters, as in the
    /// standard; both are literal values (never split, never unescaped).
    pub fn field(&self, n: usize) -> Option<Value<'a>> {
        let delimiters = &self.message.inner.head.delimiters;
        let bytes: &'a [u8] = &self.message.inner.bytes;
        let start = self.entry.start as usize;
        let (split, level) = match (self.is_msh(), n) {
            (_, 0) => return None,
            (true, 1) => {
                return Some(Value::new(
                    &bytes[start + 3..start + 4],
                    delimiters,
                    Level::Literal,
                ));
            }
            (true, 2) => (1, Level::Literal),
            (true, n) => (n - 1, Level::Field),
            (false, n) => (n, Level::Field),
        };
        let count = self.entry.separators as usize;
        if split > count {
            return None;
        }
        let seps = &self.separators[self.entry.first_separator as usize..][..count];
        let from = seps[split - 1] as usize + 1;
        let to = seps
            .get(split)
            .map_or(self.entry.end as usize, |&s| s as usize);
        Some(Value::new(&bytes[from..to], delimiters, level))
    }

    /// Every field, from field 1 on.
    pub fn fields(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let segment = *self;
        (1..=self.field_count()).filter_map(move |n| segment.field(n))
    }
}

impl fmt::Debug for Segment<'_> {
    /// The id, position and sizes only: content may be patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("id", &self.id())
            .field("position", &self.position)
            .field("len", &self.as_bytes().len())
            .field("fields", &self.field_count())
            .finish()
    }
}

/// How deep in the field a [`Value`] sits; decides what the next split uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Field,
    Repetition,
    Component,
    Subcomponent,
    /// MSH-1 and MSH-2: the delimiters themselves; never split, never unescaped.
    Literal,
}

/// A field, field repetition, component or subcomponent of a [`Message`]: raw bytes borrowed
/// from the message, plus the delimiters needed to split or decode them.
///
/// Going down a level follows the HL7 rule that a value without deeper structure is its own
/// first part: on a component, `component(1)` and `subcomponent(1)` are the component itself.
/// On a whole field, `component(n)` and `subcomponent(n)` look into the first repetition.
/// Index 0 is never valid.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    raw: &'a [u8],
    delimiters: &'a Delimiters,
    level: Level,
}

/// The `n`-th (1-based) piece of `raw` split on `sep`.
fn nth_piece(raw: &[u8], sep: u8, n: usize) -> Option<&[u8]> {
    let mut rest = raw;
    for _ in 1..n {
        let i = find(sep, rest)?;
        rest = &rest[i + 1..];
    }
    let end = find(sep, rest).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `memchr`, with a plain loop for the short values most fields hold (MSH-9 is `ADT^A01^ADT_A01`):
/// below a few words, setting up the vector search costs more than it saves.
#[inline]
fn find(needle: u8, haystack: &[u8]) -> Option<usize> {
    if haystack.len() < 32 {
        haystack.iter().position(|&b| b == needle)
    } else {
        memchr(needle, haystack)
    }
}

impl<'a> Value<'a> {
    const fn new(raw: &'a [u8], delimiters: &'a Delimiters, level: Level) -> Self {
        Value {
            raw,
            delimiters,
            level,
        }
    }

    /// The raw bytes, escape sequences and inner delimiters included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the value is empty (not present in the sense of HL7: no data).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether the value is the HL7 explicit null `""` (delete the value at the receiver),
    /// which differs from an empty value (leave it unchanged).
    pub fn is_null(&self) -> bool {
        self.raw == b"\"\""
    }

    /// The raw bytes as `&str`, or `None` when they are not valid UTF-8 (Latin-1 content, for
    /// example; see MSH-18). Escape sequences are not decoded.
    pub fn to_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.raw).ok()
    }

    /// The content with escape sequences decoded (see [`decode`](crate::hl7::decode)); borrowed
    /// when there is nothing to decode. MSH-1 and MSH-2 are returned as they are.
    pub fn decoded(&self) -> Cow<'a, [u8]> {
        if self.level == Level::Literal {
            Cow::Borrowed(self.raw)
        } else {
            decode(self.raw, self.delimiters)
        }
    }

    /// The separator that splits this value into the parts of `target` level, when this value
    /// sits right above it.
    fn separator_for(&self, target: Level) -> Option<u8> {
        match (self.level, target) {
            (Level::Field, Level::Repetition) => Some(self.delimiters.repetition()),
            (Level::Repetition, Level::Component) => Some(self.delimiters.component()),
            (Level::Component, Level::Subcomponent) => Some(self.delimiters.subcomponent()),
            _ => None,
        }
    }

    /// Steps down to the value directly above `target`: a field's first repetition for
    /// components, a repetition's first component for subcomponents.
    fn parent_of(self, target: Level) -> Option<Value<'a>> {
        match (self.level, target) {
            (Level::Field, Level::Component) => self.repetition(1),
            (Level::Field | Level::Repetition, Level::Subcomponent) => self.component(1),
            _ => Some(self),
        }
    }

    fn nth(self, target: Level, n: usize) -> Option<Value<'a>> {
        if n == 0 {
            return None;
        }
        let parent = self.parent_of(target)?;
        match parent.separator_for(target) {
            Some(sep) => nth_piece(parent.raw, sep, n).map(|raw| Value {
                raw,
                level: target,
                ..parent
            }),
            // Already at or below the target level: the value is its own first part.
            None => (n == 1).then_some(parent),
        }
    }

    fn all(self, target: Level) -> Values<'a> {
        let parent = self.parent_of(target);
        Values {
            rest: parent.map(|p| p.raw),
            separator: parent.and_then(|p| p.separator_for(target)),
            delimiters: self.delimiters,
            level: parent.map_or(target, |p| match p.separator_for(target) {
                Some(_) => target,
                None => p.level,
            }),
        }
    }

    /// Repetition `n` (1-based) of a field. Below field level only `n == 1` exists.
    pub fn repetition(&self, n: usize) -> Option<Value<'a>> {
        self.nth(Level::Repetition, n)
    }

    /// Component `n` (1-based). On a whole field, taken from the first repetition.
    pub fn component(&self, n: usize) -> Option<Value<'a>> {
        self.nth(Level::Component, n)
    }

    /// Subcomponent `n` (1-based). On a field or repetition, taken from the first component.
    pub fn subcomponent(&self, n: usize) -> Option<Value<'a>> {
        self.nth(Level::Subcomponent, n)
    }

    /// Every repetition of a field (an empty field has one, empty).
    pub fn repetitions(&self) -> Values<'a> {
        self.all(Level::Repetition)
    }

    /// Every component (of the first repetition, on a whole field).
    pub fn components(&self) -> Values<'a> {
        self.all(Level::Component)
    }

    /// Every subcomponent (of the first component, on a field or repetition).
    pub fn subcomponents(&self) -> Values<'a> {
        self.all(Level::Subcomponent)
    }
}

impl fmt::Debug for Value<'_> {
    /// The level and length only: content may be patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("level", &self.level)
            .field("len", &self.raw.len())
            .finish()
    }
}

/// Iterator over the repetitions, components or subcomponents of a [`Value`].
#[derive(Clone)]
pub struct Values<'a> {
    rest: Option<&'a [u8]>,
    separator: Option<u8>,
    delimiters: &'a Delimiters,
    level: Level,
}

impl<'a> Iterator for Values<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        let rest = self.rest?;
        let (raw, next) = match self.separator.and_then(|s| memchr(s, rest)) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        self.rest = next;
        Some(Value::new(raw, self.delimiters, self.level))
    }
}

impl fmt::Debug for Values<'_> {
    /// The remaining length only: content may be patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Values")
            .field("level", &self.level)
            .field("remaining_len", &self.rest.map_or(0, <[u8]>::len))
            .finish()
    }
}

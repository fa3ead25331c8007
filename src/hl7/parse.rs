//! One pass over the bytes: find the delimiters, then every segment and field separator.

use memchr::memchr;

use super::diagnostic::{Diagnostic, ErrorCode, Severity};
use super::path::is_segment_id;
use super::{DelimiterError, Delimiters, Location};

/// How strictly [`Message::parse_with`](crate::hl7::Message::parse_with) reads its input.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use mllp::hl7::{Message, ParseOptions};
/// let file = Bytes::from_static(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\r\nPID|1\r\n");
/// assert!(Message::parse(file.clone()).is_err());
/// let options = ParseOptions::default().lenient_line_endings(true);
/// assert_eq!(Message::parse_with(file, &options).unwrap().segments().count(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseOptions {
    /// Accept LF and CRLF as segment terminators, as well as CR. Default is `false`: on the wire
    /// a segment ends in CR only, and a LF where a segment should end is a
    /// [`ParseError::LineFeed`]. Turn it on for files edited on Unix or Windows.
    pub lenient_line_endings: bool,
}

impl ParseOptions {
    /// Sets [`ParseOptions::lenient_line_endings`]. Default is `false`.
    #[must_use]
    pub fn lenient_line_endings(mut self, lenient: bool) -> Self {
        self.lenient_line_endings = lenient;
        self
    }
}

/// Why bytes could not be read as an HL7 v2 message.
///
/// Messages name positions only, never content. [`ParseError::error_code`] and
/// [`ParseError::location`] give what the AR needs (ERR-3 and ERR-2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The payload is empty, or holds nothing but segment terminators.
    #[error("empty message")]
    Empty,
    /// The first segment is not `MSH` (batch headers `FHS`/`BHS` included: batches are not
    /// messages).
    #[error("message does not start with an MSH segment")]
    MissingMsh,
    /// The message starts with a UTF-8 byte order mark (`EF BB BF`, as some Windows tools
    /// write), then MSH: HL7 allows nothing before MSH. The reply still names the message
    /// (MSA-2), read from the MSH after the mark.
    #[error("message starts with a UTF-8 byte order mark before MSH")]
    ByteOrderMark,
    /// The MSH segment ends before its field separator (MSH-1) and the field that holds the
    /// encoding characters (MSH-2) could be read.
    #[error("truncated MSH segment")]
    TruncatedMsh,
    /// MSH-1 or MSH-2 does not define a usable set of delimiters.
    #[error("invalid delimiters in MSH-{field}")]
    InvalidDelimiters {
        /// 1 when the field separator is at fault, 2 for the encoding characters.
        field: usize,
        /// What is wrong with them.
        #[source]
        source: DelimiterError,
    },
    /// A segment id is not three characters `A-Z`/`0-9` followed by the field separator or the
    /// end of the segment.
    #[error("segment {position} has an invalid segment id")]
    InvalidSegmentId {
        /// 1-based position of the segment in the message (MSH is 1).
        position: usize,
    },
    /// A segment after the first is `MSH` or a batch header or trailer (`BHS`, `BTS`, `FHS`,
    /// `FTS`): typically two messages sent in one frame, or a message followed by a batch. A
    /// message has one MSH, first; a batch is read by [`Batch::parse`](super::Batch::parse).
    #[error(
        "segment {position} ({id}) is out of place: a message has one MSH, first, and no batch header or trailer"
    )]
    SegmentOutOfPlace {
        /// 1-based position of the segment in the message (MSH is 1).
        position: usize,
        /// The segment's id: one of `MSH`, `BHS`, `BTS`, `FHS`, `FTS`.
        id: &'static str,
    },
    /// Strict mode only: a LF ends a segment (it starts the next segment, or sits inside MSH),
    /// which means the sender used LF or CRLF line endings. See
    /// [`ParseOptions::lenient_line_endings`].
    #[error("segment {position} is delimited by a line feed")]
    LineFeed {
        /// 1-based position of the segment that the LF starts or sits in.
        position: usize,
    },
    /// The message is larger than 4 GiB, the limit of the offset index.
    #[error("message larger than 4 GiB")]
    TooLarge,
}

impl ParseError {
    /// The HL7 table 0357 code for the AR: 100 (segment sequence error) when there is no
    /// usable segment structure (empty, no MSH, bad segment id, LF line endings), 102 (data type
    /// error) when MSH-1/MSH-2 are malformed, 104 (value too long) for [`ParseError::TooLarge`].
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ParseError::TruncatedMsh | ParseError::InvalidDelimiters { .. } => {
                ErrorCode::DataTypeError
            }
            ParseError::TooLarge => ErrorCode::ValueTooLong,
            ParseError::Empty
            | ParseError::MissingMsh
            | ParseError::ByteOrderMark
            | ParseError::InvalidSegmentId { .. }
            | ParseError::SegmentOutOfPlace { .. }
            | ParseError::LineFeed { .. } => ErrorCode::SegmentSequenceError,
        }
    }

    /// Where the error is, for ERR-2: the MSH segment, or MSH-1/MSH-2 for delimiter errors.
    /// `None` when no segment id can be named (an empty message, an unreadable segment id, a
    /// line feed past MSH).
    pub fn location(&self) -> Option<Location> {
        let msh = Location::new("MSH", 1);
        match self {
            ParseError::MissingMsh | ParseError::ByteOrderMark => Some(msh),
            ParseError::TruncatedMsh => Some(msh.field(2)),
            ParseError::InvalidDelimiters { field, .. } => Some(msh.field(*field)),
            ParseError::LineFeed { position: 1 } => Some(msh),
            // The second MSH; a batch segment's first occurrence.
            ParseError::SegmentOutOfPlace { id, .. } => {
                Some(Location::new(*id, if *id == "MSH" { 2 } else { 1 }))
            }
            ParseError::Empty
            | ParseError::InvalidSegmentId { .. }
            | ParseError::LineFeed { .. }
            | ParseError::TooLarge => None,
        }
    }

    /// Where the error is in `payload` (the bytes that failed to parse with `options`), as a
    /// byte offset from 0: the first byte of a payload that does not start with `MSH`, MSH-1 or
    /// MSH-2 for bad delimiters, the start of a segment with an invalid id, the offending line
    /// feed. `None` for an empty payload or one too large to index. Used by the reject log: an
    /// offset says where to look in a capture without quoting the content.
    pub fn offset(&self, payload: &[u8], options: &ParseOptions) -> Option<usize> {
        let lenient = options.lenient_line_endings;
        let is_end = |byte: u8| byte == CR || (lenient && byte == LF);
        let msh = payload.iter().position(|&byte| !is_end(byte));
        match self {
            ParseError::Empty | ParseError::TooLarge => None,
            ParseError::MissingMsh | ParseError::ByteOrderMark => msh,
            ParseError::TruncatedMsh => msh.map(|at| (at + 3).min(payload.len())),
            ParseError::InvalidDelimiters { field, .. } => msh.map(|at| at + 2 + field),
            ParseError::InvalidSegmentId { position }
            | ParseError::SegmentOutOfPlace { position, .. } => {
                segment_start(payload, *position, is_end)
            }
            ParseError::LineFeed { position } => {
                let start = segment_start(payload, *position, |byte| byte == CR)
                    .or_else(|| msh.filter(|_| *position == 1))?;
                memchr(LF, &payload[start..]).map(|at| start + at)
            }
        }
    }

    /// An error-severity [`Diagnostic`] for this error: its code, its location, and its
    /// `Display` text (positions only, no content).
    pub fn to_diagnostic(&self) -> Diagnostic {
        let mut diagnostic = Diagnostic::new(self.error_code(), Severity::Error, self.to_string());
        diagnostic.location = self.location();
        diagnostic
    }
}

/// The offset of the `position`th non-empty segment (from 1), segments ending where `is_end`.
fn segment_start(payload: &[u8], position: usize, is_end: impl Fn(u8) -> bool) -> Option<usize> {
    let mut seen = 0;
    let mut start = 0;
    for (at, &byte) in payload.iter().enumerate().chain([(payload.len(), &CR)]) {
        if at == payload.len() || is_end(byte) {
            if at > start {
                seen += 1;
                if seen == position {
                    return Some(start);
                }
            }
            start = at + 1;
        }
    }
    None
}

/// Where one segment lies in the message, and which field separators belong to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentEntry {
    /// Offset of the segment id.
    pub(crate) start: u32,
    /// Offset one past the last byte (the terminator is not included).
    pub(crate) end: u32,
    /// Index in [`Index::separators`] of this segment's first field separator.
    pub(crate) first_separator: u32,
    /// How many field separators the segment holds.
    pub(crate) separators: u32,
    pub(crate) id: [u8; 3],
}

/// The offsets of every segment and field separator of a parsed message: built on first
/// access past MSH (see [`Head`]), once, at its exact size, shared by every clone.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) segments: Vec<SegmentEntry>,
    /// Offsets of every field separator, in order.
    pub(crate) separators: Vec<u32>,
}

/// How many field separators MSH may have for [`Head`] to hold them inline: MSH has 27 in
/// v2.9 (MSH-2 to MSH-28). A longer MSH gets the whole index at parse time.
pub(crate) const HEAD_SEPARATORS: usize = 32;

/// What the parse finds in one pass: the delimiters, MSH's field separators, and that every
/// later segment is well formed (its id, its line ending), with the exact size of the full
/// [`Index`]. The index itself is only built when something reads past MSH: a store-and-ACK
/// route reads MSH alone, and skips the separator offsets of every other segment (about a
/// quarter of the CPU a 1 KB message costs the server, and the bulk of a 1 MiB one).
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) delimiters: Delimiters,
    /// MSH's entry; its separators are `separators[..msh.separators]`.
    pub(crate) msh: SegmentEntry,
    pub(crate) separators: [u32; HEAD_SEPARATORS],
    /// Whether MSH's separators fit in `separators`.
    pub(crate) inline: bool,
    /// Field separators in the whole message: the full index's exact size.
    pub(crate) total_separators: u32,
    /// Non-empty segments in the whole message, MSH included.
    pub(crate) total_segments: u32,
}

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// Reads the delimiters of a message whose MSH starts at offset `msh`.
fn delimiters(b: &[u8], msh: usize, lenient: bool) -> Result<Delimiters, ParseError> {
    let is_end = |byte: u8| byte == CR || (lenient && byte == LF);
    let field = match b.get(msh + 3) {
        None => return Err(ParseError::TruncatedMsh),
        Some(&byte) if is_end(byte) => return Err(ParseError::TruncatedMsh),
        Some(&byte) => byte,
    };
    let rest = &b[msh + 4..];
    let len = rest
        .iter()
        .position(|&byte| byte == field || is_end(byte))
        .unwrap_or(rest.len());
    // The field separator is checked on its own first, so that a bad MSH-1 is reported as MSH-1
    // even when MSH-2 is also unreadable.
    if !super::delimiters::allowed(field) {
        return Err(ParseError::InvalidDelimiters {
            field: 1,
            source: DelimiterError::Forbidden { byte: field },
        });
    }
    Delimiters::new(field, &rest[..len])
        .map_err(|source| ParseError::InvalidDelimiters { field: 2, source })
}

/// Finds MSH and reads its delimiters: what every parse does first. Returns MSH's offset.
fn start(b: &[u8], lenient: bool) -> Result<(usize, Delimiters), ParseError> {
    if u32::try_from(b.len()).is_err() {
        return Err(ParseError::TooLarge);
    }
    let is_end = |byte: u8| byte == CR || (lenient && byte == LF);
    // Empty segments (a doubled terminator, a leading CR) are skipped everywhere: they carry
    // nothing, and senders that emit them are common.
    let Some(msh) = b.iter().position(|&byte| !is_end(byte)) else {
        return Err(ParseError::Empty);
    };
    if !b[msh..].starts_with(b"MSH") {
        if !lenient && b[msh] == LF {
            return Err(ParseError::LineFeed { position: 1 });
        }
        if b[msh..].starts_with(BOM_MSH) {
            return Err(ParseError::ByteOrderMark);
        }
        return Err(ParseError::MissingMsh);
    }
    Ok((msh, delimiters(b, msh, lenient)?))
}

/// Where the segment that starts at `from` ends: at the next terminator, or the end.
#[inline]
fn segment_end(b: &[u8], from: usize, lenient: bool) -> usize {
    let rest = &b[from..];
    let at = if lenient {
        memchr::memchr2(CR, LF, rest)
    } else {
        memchr(CR, rest)
    };
    at.map_or(b.len(), |at| from + at)
}

/// Reads MSH and checks the rest of the message: every error [`index`] could find is found
/// here, in the same order, without recording the offsets of the fields after MSH.
pub(crate) fn head(b: &[u8], options: &ParseOptions) -> Result<Head, ParseError> {
    head_in_windows(b, options, WINDOW)
}

/// [`head`], scanning what follows MSH `window` bytes at a time (tests vary it, so that
/// segments and terminators fall across window edges).
pub(crate) fn head_in_windows(
    b: &[u8],
    options: &ParseOptions,
    window: usize,
) -> Result<Head, ParseError> {
    let lenient = options.lenient_line_endings;
    let (msh, delimiters) = start(b, lenient)?;
    let fs = delimiters.field();
    let msh_end = segment_end(b, msh, lenient);
    if !lenient && memchr(LF, &b[msh..msh_end]).is_some() {
        return Err(ParseError::LineFeed { position: 1 });
    }
    let mut separators = [0u32; HEAD_SEPARATORS];
    let mut count = 0;
    let mut inline = true;
    for at in memchr::memchr_iter(fs, &b[msh..msh_end]) {
        let Some(slot) = separators.get_mut(count) else {
            inline = false;
            break;
        };
        *slot = (msh + at) as u32;
        count += 1;
    }
    // The rest in windows: each window's field separators are counted and its terminators
    // found while it is in cache (one read of a large message from memory, not two); every
    // segment is checked at its terminator, in order.
    let mut total_separators = if inline {
        count
    } else {
        count_byte(&b[msh..msh_end], fs)
    };
    let mut walk = Walk {
        b,
        fs,
        lenient,
        from: msh_end + 1,
        segments: 1,
    };
    for (w, part) in b[msh_end..].chunks(window).enumerate() {
        total_separators += count_byte(part, fs);
        let base = msh_end + w * window;
        if lenient {
            walk.ends(memchr::memchr2_iter(CR, LF, part).map(|at| base + at))?;
        } else {
            walk.ends(memchr::memchr_iter(CR, part).map(|at| base + at))?;
        }
    }
    walk.ends(std::iter::once(b.len()))?;
    let segments = walk.segments;
    Ok(Head {
        delimiters,
        msh: SegmentEntry {
            start: msh as u32,
            end: msh_end as u32,
            first_separator: 0,
            separators: count as u32,
            id: *b"MSH",
        },
        separators,
        inline,
        total_separators: total_separators as u32,
        total_segments: segments as u32,
    })
}

/// Bytes of a large message that [`head`] scans twice (separators counted, terminators found)
/// before it moves on: small enough to stay in cache between the two.
const WINDOW: usize = 16 * 1024;

/// [`head`]'s walk over the segments after MSH, fed their ends in order.
struct Walk<'a> {
    b: &'a [u8],
    fs: u8,
    lenient: bool,
    /// Where the next segment starts.
    from: usize,
    /// Segments kept so far, MSH included: the position of the last one checked.
    segments: usize,
}

impl Walk<'_> {
    /// Checks each segment that ends at one of `ends` (terminators, or the message's end): an
    /// empty one (a run of terminators) is skipped; any other is counted, and must not start
    /// with LF (unless lenient) and must have a valid id. Ends before `from` (MSH's own
    /// terminator) are ignored.
    #[inline]
    fn ends(&mut self, ends: impl Iterator<Item = usize>) -> Result<(), ParseError> {
        for end in ends {
            if end < self.from {
                continue;
            }
            let segment = &self.b[self.from..end];
            self.from = end + 1;
            if segment.is_empty() {
                continue;
            }
            self.segments += 1;
            let position = self.segments;
            if !self.lenient && segment[0] == LF {
                return Err(ParseError::LineFeed { position });
            }
            // The id runs to the first field separator (which is never alphanumeric) or the
            // end of the segment, and must be three characters.
            let id_ends = segment.len() == 3 || segment.get(3) == Some(&self.fs);
            if !(id_ends && is_segment_id(&segment[..3])) {
                return Err(ParseError::InvalidSegmentId { position });
            }
            if let Some(id) = envelope_id(&segment[..3]) {
                return Err(ParseError::SegmentOutOfPlace { position, id });
            }
        }
        Ok(())
    }
}

/// A UTF-8 byte order mark, then MSH.
const BOM_MSH: &[u8] = b"\xEF\xBB\xBFMSH";

/// The id of a segment that only ever comes first (`MSH`) or only in a batch envelope.
#[inline]
fn envelope_id(id: &[u8]) -> Option<&'static str> {
    match id {
        b"MSH" => Some("MSH"),
        b"BHS" => Some("BHS"),
        b"BTS" => Some("BTS"),
        b"FHS" => Some("FHS"),
        b"FTS" => Some("FTS"),
        _ => None,
    }
}

/// How many times `byte` occurs in `b`: a loop the compiler vectorises.
fn count_byte(b: &[u8], byte: u8) -> usize {
    let mut count = 0;
    for chunk in b.chunks(255) {
        // A u8 sum per chunk of at most 255 cannot overflow, and stays in vector lanes.
        let hits: u8 = chunk.iter().map(|&x| u8::from(x == byte)).sum();
        count += usize::from(hits);
    }
    count
}

/// How many field separators and segment terminators `b` holds, in one pass.
///
/// Counted in 32 byte lanes of `u8` counters, emptied every 255 steps: a layout the compiler
/// turns into vector compares and adds (as fast as counting one byte, where a loop with two
/// scalar counters per chunk was 1.7 times slower).
pub(crate) fn count_delimiters(b: &[u8], fs: u8, lenient: bool) -> (usize, usize) {
    const LANES: usize = 32;
    let lf = u8::from(lenient);
    let (mut separators, mut ends) = (0, 0);
    let mut blocks = b.chunks_exact(LANES * 255);
    for block in &mut blocks {
        let (mut s, mut e) = ([0u8; LANES], [0u8; LANES]);
        for lane in block.chunks_exact(LANES) {
            for i in 0..LANES {
                let x = lane[i];
                s[i] += u8::from(x == fs);
                // LF counts only when lenient (a multiply, not a branch, keeps it vectorised).
                e[i] += u8::from(x == CR) + u8::from(x == LF) * lf;
            }
        }
        separators += s.iter().map(|&n| usize::from(n)).sum::<usize>();
        ends += e.iter().map(|&n| usize::from(n)).sum::<usize>();
    }
    for &x in blocks.remainder() {
        separators += usize::from(x == fs);
        ends += usize::from(x == CR || (lenient && x == LF));
    }
    (separators, ends)
}

/// Builds the full index of a message that [`head`] accepted, at its exact size.
///
/// # Errors
///
/// What [`head`] would have returned: never, for bytes it accepted with these options.
pub(crate) fn index(b: &[u8], options: &ParseOptions, head: &Head) -> Result<Index, ParseError> {
    build(
        b,
        options.lenient_line_endings,
        head.msh.start as usize,
        head.delimiters.field(),
        head.total_separators as usize,
        head.total_segments as usize,
    )
}

/// Records every segment and field separator from `msh` on, checking each segment as it ends.
fn build(
    b: &[u8],
    lenient: bool,
    msh: usize,
    fs: u8,
    separators: usize,
    segments: usize,
) -> Result<Index, ParseError> {
    let mut builder = Builder {
        bytes: b,
        lenient,
        segments: Vec::with_capacity(segments),
        separators: Vec::with_capacity(separators),
        segment_start: msh,
        first_separator: 0,
    };
    if lenient {
        scan::<true>(&mut builder, msh, fs)?;
    } else {
        scan::<false>(&mut builder, msh, fs)?;
    }
    builder.end_segment(b.len())?;
    Ok(Index {
        segments: builder.segments,
        separators: builder.separators,
    })
}

/// The whole index in one checked pass, as the parse built it before [`head`] existed: the
/// reference that [`head`]'s checks are tested against.
#[cfg(test)]
pub(crate) fn eager_index(b: &[u8], options: &ParseOptions) -> Result<Index, ParseError> {
    let lenient = options.lenient_line_endings;
    let (msh, delimiters) = start(b, lenient)?;
    build(b, lenient, msh, delimiters.field(), 0, 0)
}

/// Messages larger than this have their delimiters counted before the parse, so that the
/// memory their index may take is drawn exactly ([`index_size_bound`]); below it, a bound
/// from the length alone costs nothing and is trimmed to the exact size after the parse.
const EXACT_FROM: usize = 64 * 1024;

/// Bytes of one index entry: a field separator, a segment.
pub(crate) const SEPARATOR_BYTES: usize = std::mem::size_of::<u32>();
pub(crate) const SEGMENT_BYTES: usize = std::mem::size_of::<SegmentEntry>();

/// The most the index of the message in `b` can take, in bytes, before it is parsed: exact
/// above [`EXACT_FROM`] bytes (at most 5 times the message: 20 bytes per segment of at least 4
/// bytes, 4 per field separator); below, one separator per byte and one segment per four.
pub(crate) fn index_size_bound(b: &[u8], options: &ParseOptions) -> usize {
    let lenient = options.lenient_line_endings;
    let len = b.len();
    if len <= EXACT_FROM {
        return index_size_ceiling(len);
    }
    let is_end = |byte: u8| byte == CR || (lenient && byte == LF);
    let Some(msh) = b.iter().position(|&byte| !is_end(byte)) else {
        return 0;
    };
    let Some(&fs) = b.get(msh + 3) else {
        return 0;
    };
    let rest = &b[msh..];
    let (separators, ends) = count_delimiters(rest, fs, lenient);
    // Every segment but the last ends at a terminator; empty ones (a run of terminators) are
    // not kept, and a kept one takes at least 4 bytes (its id and its terminator).
    let segments = (ends + 1).min(rest.len() / 4 + 1);
    SEPARATOR_BYTES * separators + SEGMENT_BYTES * segments
}

/// The most the index of any message of `len` bytes can take, from its length alone: one
/// field separator per byte and one segment per four (a kept segment takes at least its id and
/// its terminator). At most 9 times the length.
pub(crate) const fn index_size_ceiling(len: usize) -> usize {
    SEPARATOR_BYTES * len + SEGMENT_BYTES * (len / 4 + 1)
}

/// `0x80` in every byte of `word` that is zero, `0x00` elsewhere (exact: no false positives).
#[inline(always)]
const fn zero_bytes(word: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    !((word & LOW7).wrapping_add(LOW7) | word | LOW7)
}

/// Reports every field separator and segment terminator from `from` on to the builder.
///
/// HL7 is dense in delimiters (one every 5 to 10 bytes), so a SIMD search that restarts at each
/// hit spends most of its time starting; testing 8 bytes per step in a plain `u64` (SWAR) and
/// walking the set bits is about twice as fast on typical messages, and still linear on long
/// base64 fields.
fn scan<const LENIENT: bool>(
    builder: &mut Builder<'_>,
    from: usize,
    fs: u8,
) -> Result<(), ParseError> {
    let bytes = builder.bytes;
    let splat = |byte: u8| u64::from_ne_bytes([byte; 8]);
    let (fs_word, cr_word, lf_word) = (splat(fs), splat(CR), splat(LF));
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let mut hits = zero_bytes(word ^ fs_word) | zero_bytes(word ^ cr_word);
        if LENIENT {
            hits |= zero_bytes(word ^ lf_word);
        }
        while hits != 0 {
            builder.hit(at + (hits.trailing_zeros() / 8) as usize, fs)?;
            hits &= hits - 1;
        }
        at += 8;
    }
    for (i, &byte) in bytes[at..].iter().enumerate() {
        if byte == fs || byte == CR || (LENIENT && byte == LF) {
            builder.hit(at + i, fs)?;
        }
    }
    Ok(())
}

struct Builder<'b> {
    bytes: &'b [u8],
    lenient: bool,
    segments: Vec<SegmentEntry>,
    separators: Vec<u32>,
    segment_start: usize,
    first_separator: usize,
}

impl Builder<'_> {
    #[inline]
    fn hit(&mut self, at: usize, fs: u8) -> Result<(), ParseError> {
        if self.bytes[at] == fs {
            self.separators.push(at as u32);
            Ok(())
        } else {
            self.end_segment(at)?;
            self.segment_start = at + 1;
            Ok(())
        }
    }

    fn end_segment(&mut self, end: usize) -> Result<(), ParseError> {
        let start = self.segment_start;
        let first = self.first_separator;
        let count = self.separators.len() - first;
        if start == end {
            return Ok(());
        }
        let position = self.segments.len() + 1;
        let segment = &self.bytes[start..end];
        if !self.lenient && (segment[0] == LF || (position == 1 && memchr(LF, segment).is_some())) {
            return Err(ParseError::LineFeed { position });
        }
        let id_end = if count > 0 {
            self.separators[first] as usize
        } else {
            end
        };
        let id = &self.bytes[start..id_end];
        if !is_segment_id(id) {
            return Err(ParseError::InvalidSegmentId { position });
        }
        if position > 1
            && let Some(id) = envelope_id(id)
        {
            return Err(ParseError::SegmentOutOfPlace { position, id });
        }
        self.segments.push(SegmentEntry {
            start: start as u32,
            end: end as u32,
            first_separator: first as u32,
            separators: count as u32,
            id: [id[0], id[1], id[2]],
        });
        self.first_separator = self.separators.len();
        Ok(())
    }
}

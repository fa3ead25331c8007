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
            | ParseError::InvalidSegmentId { .. }
            | ParseError::LineFeed { .. } => ErrorCode::SegmentSequenceError,
        }
    }

    /// Where the error is, for ERR-2: the MSH segment, or MSH-1/MSH-2 for delimiter errors.
    /// `None` when no segment id can be named (an empty message, an unreadable segment id, a
    /// line feed past MSH).
    pub fn location(&self) -> Option<Location> {
        let msh = Location::new("MSH", 1);
        match self {
            ParseError::MissingMsh => Some(msh),
            ParseError::TruncatedMsh => Some(msh.field(2)),
            ParseError::InvalidDelimiters { field, .. } => Some(msh.field(*field)),
            ParseError::LineFeed { position: 1 } => Some(msh),
            ParseError::Empty
            | ParseError::InvalidSegmentId { .. }
            | ParseError::LineFeed { .. }
            | ParseError::TooLarge => None,
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

/// The offsets of a parsed message: built once, shared by every clone.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) delimiters: Delimiters,
    pub(crate) segments: Vec<SegmentEntry>,
    /// Offsets of every field separator, in order.
    pub(crate) separators: Vec<u32>,
    /// Where MSH-9.1 (message code), MSH-9.2 (trigger event) and MSH-10 (control ID) are, when
    /// present and non-empty (in any character set): read by the router, the plugins,
    /// telemetry and the ACK for every message, so found once. Filled in by
    /// [`Message::parse_with`](super::Message).
    pub(crate) msh_cache: [Option<(u32, u32)>; 3],
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

pub(crate) fn index(b: &[u8], options: &ParseOptions) -> Result<Index, ParseError> {
    if u32::try_from(b.len()).is_err() {
        return Err(ParseError::TooLarge);
    }
    let lenient = options.lenient_line_endings;
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
        return Err(ParseError::MissingMsh);
    }
    let delimiters = delimiters(b, msh, lenient)?;
    let fs = delimiters.field();
    let (separators, segments) = capacities(b, msh, fs, lenient);

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
        delimiters,
        segments: builder.segments,
        separators: builder.separators,
        msh_cache: [None; 3],
    })
}

/// Messages larger than this get an index allocated once at its exact size, from a first
/// pass that counts the delimiters: no growth, so no slack and no copies, and a size known
/// before anything is allocated ([`index_size_bound`]).
const EXACT_FROM: usize = 64 * 1024;

/// The capacities of the index (separators, segments) for the message in `b`, whose MSH starts
/// at `msh`: exact above [`EXACT_FROM`] bytes; below, a typical segment's worth, grown as
/// needed (a few reallocations of small vectors cost less than a counting pass).
fn capacities(b: &[u8], msh: usize, fs: u8, lenient: bool) -> (usize, usize) {
    if b.len() <= EXACT_FROM {
        // A typical segment has one separator per 5-10 bytes.
        return ((b.len() / 4).clamp(16, 1024), 16);
    }
    let rest = &b[msh..];
    let (separators, ends) = count_delimiters(rest, fs, lenient);
    // Every segment but the last ends at a terminator; empty ones (a run of terminators) are
    // not kept, and a kept one takes at least 4 bytes (its id and its terminator).
    (separators, (ends + 1).min(rest.len() / 4 + 1))
}

/// How many field separators and segment terminators `b` holds.
fn count_delimiters(b: &[u8], fs: u8, lenient: bool) -> (usize, usize) {
    let splat = |byte: u8| u64::from_ne_bytes([byte; 8]);
    let (fs_word, cr_word, lf_word) = (splat(fs), splat(CR), splat(LF));
    let (mut separators, mut ends) = (0usize, 0usize);
    let mut chunks = b.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        separators += zero_bytes(word ^ fs_word).count_ones() as usize;
        let mut end = zero_bytes(word ^ cr_word);
        if lenient {
            end |= zero_bytes(word ^ lf_word);
        }
        ends += end.count_ones() as usize;
    }
    for &byte in chunks.remainder() {
        separators += usize::from(byte == fs);
        ends += usize::from(byte == CR || (lenient && byte == LF));
    }
    (separators, ends)
}

/// Bytes of one index entry: a field separator, a segment.
pub(crate) const SEPARATOR_BYTES: usize = std::mem::size_of::<u32>();
pub(crate) const SEGMENT_BYTES: usize = std::mem::size_of::<SegmentEntry>();

/// The most the index of the message in `b` can take, in bytes, before it is parsed: exact
/// above [`EXACT_FROM`] bytes (at most 5 times the message: 20 bytes per segment of at least 4
/// bytes, 4 per field separator), and the worst case of the growing vectors below.
pub(crate) fn index_size_bound(b: &[u8], options: &ParseOptions) -> usize {
    let lenient = options.lenient_line_endings;
    let len = b.len();
    if len <= EXACT_FROM {
        let (separators, segments) = ((len / 4).clamp(16, 1024), 16);
        // A vector grows by doubling: at most twice what it holds, which is at most one
        // separator per byte and one segment per four.
        return SEPARATOR_BYTES * separators.max(2 * len)
            + SEGMENT_BYTES * segments.max(2 * (len / 4 + 1));
    }
    let is_end = |byte: u8| byte == CR || (lenient && byte == LF);
    let Some(msh) = b.iter().position(|&byte| !is_end(byte)) else {
        return 0;
    };
    let Some(&fs) = b.get(msh + 3) else {
        return 0;
    };
    let (separators, segments) = capacities(b, msh, fs, lenient);
    SEPARATOR_BYTES * separators + SEGMENT_BYTES * segments
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

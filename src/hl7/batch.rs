//! HL7 batches (v2.5 §2.10.3): `[FHS] {BHS {MSH ...} BTS} [FTS]` in one payload.

use std::ops::Range;

use bytes::Bytes;

use super::{DelimiterError, Delimiters, ParseOptions};

/// A batch: an optional file header (FHS) and trailer (FTS) around one or more batches, each
/// a header (BHS), messages, and a trailer (BTS). Zero-copy: each message is a slice of the
/// one buffer, parsed on its own with [`Message::parse_with`](super::Message::parse_with).
///
/// Parsing checks the envelope only: the segment order, the delimiters of the headers, and
/// the counts in BTS-1 and FTS-1 when they are given. The messages are not parsed here.
///
/// `Debug` shows counts only.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use mllp::hl7::{Batch, ParseOptions};
/// let batch = Batch::parse(
///     Bytes::from_static(
///         b"BHS|^~\\&|LAB|HOSP|EHR|WARD|20240101||||B001\r\
///           MSH|^~\\&|LAB|HOSP|EHR|WARD|20240101||ORU^R01|M1|P|2.5\rPID|1\r\
///           MSH|^~\\&|LAB|HOSP|EHR|WARD|20240101||ORU^R01|M2|P|2.5\rPID|2\r\
///           BTS|2\r",
///     ),
///     &ParseOptions::default(),
/// )?;
/// assert_eq!(batch.message_count(), 2);
/// assert_eq!(batch.groups()[0].control_id(), b"B001");
/// assert!(batch.file_header().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Batch {
    bytes: Bytes,
    delimiters: Delimiters,
    file: Option<Range<usize>>,
    groups: Vec<BatchGroup>,
}

/// One BHS … BTS group of a [`Batch`].
#[derive(Clone)]
pub struct BatchGroup {
    header: Bytes,
    delimiters: Delimiters,
    messages: Vec<Bytes>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("file_header", &self.file.is_some())
            .field("batches", &self.groups.len())
            .field("messages", &self.message_count())
            .finish()
    }
}

impl std::fmt::Debug for BatchGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchGroup")
            .field("messages", &self.messages.len())
            .finish()
    }
}

/// Why a payload is not a well-formed batch. Messages name segment positions and ids only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The payload does not start with FHS or BHS.
    #[error("not a batch: the payload does not start with FHS or BHS")]
    NotABatch,
    /// Strict mode only: segments end in LF or CRLF: a LF starts a segment or sits in a
    /// header segment (FHS, BHS), as MSH may not hold one (see
    /// [`ParseOptions::lenient_line_endings`]).
    #[error("the batch's segments are delimited by line feeds")]
    LineFeed,
    /// FHS-1/FHS-2 or BHS-1/BHS-2 do not define usable delimiters.
    #[error("invalid delimiters in the {segment} segment")]
    InvalidDelimiters {
        /// `FHS` or `BHS`.
        segment: &'static str,
        /// What is wrong with them.
        #[source]
        source: DelimiterError,
    },
    /// A segment stands where the envelope does not allow it (a message outside BHS…BTS, a
    /// second FHS, a segment after FTS, a segment id that is not one).
    #[error("segment {position} ({id}) is out of place in the batch envelope")]
    Unexpected {
        /// 1-based position of the segment in the payload.
        position: usize,
        /// Its segment id (a structural id, never content), or `?` when unreadable.
        id: String,
    },
    /// A header has no matching trailer (BHS without BTS, FHS without FTS) before the end.
    #[error("{header} without {trailer}")]
    MissingTrailer {
        /// `BHS` or `FHS`.
        header: &'static str,
        /// `BTS` or `FTS`.
        trailer: &'static str,
    },
    /// BTS-1 (batch message count) or FTS-1 (file batch count) differs from what the
    /// envelope holds, or is not a number.
    #[error("{field} {}, the envelope holds {found}", Declared(*.declared))]
    CountMismatch {
        /// `BTS-1` or `FTS-1`.
        field: &'static str,
        /// The count declared; `None` when the field is not a number (its text is the
        /// sender's, so it is not repeated in the message).
        declared: Option<u64>,
        /// What was counted.
        found: usize,
    },
}

impl BatchError {
    /// The HL7 table 0357 code for the AR: 102 (data type error) for bad delimiters, 100
    /// (segment sequence error) for every other envelope error.
    pub fn error_code(&self) -> super::diagnostic::ErrorCode {
        use super::diagnostic::ErrorCode;
        match self {
            BatchError::InvalidDelimiters { .. } => ErrorCode::DataTypeError,
            _ => ErrorCode::SegmentSequenceError,
        }
    }
}

/// How [`BatchError::CountMismatch`] shows the declared count.
struct Declared(Option<u64>);

impl std::fmt::Display for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "declares {n}"),
            None => f.write_str("is not a count"),
        }
    }
}

/// Whether `payload` starts (after blank lines) with an FHS or BHS segment: a batch, not a
/// message.
pub fn is_batch(payload: &[u8]) -> bool {
    let start = payload
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(payload.len());
    let head = &payload[start..];
    head.starts_with(b"FHS") || head.starts_with(b"BHS")
}

/// The segments of `bytes` as ranges (terminators excluded, empty segments skipped), split on
/// CR, or also on LF when lenient.
fn segments(bytes: &[u8], lenient: bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' || (lenient && b == b'\n') {
            if i > start {
                out.push(start..i);
            }
            start = i + 1;
        }
    }
    if bytes.len() > start {
        out.push(start..bytes.len());
    }
    out
}

/// The delimiters a header segment (FHS, BHS) declares, as MSH does.
fn header_delimiters(segment: &[u8], name: &'static str) -> Result<Delimiters, BatchError> {
    let invalid = |source| BatchError::InvalidDelimiters {
        segment: name,
        source,
    };
    let field = *segment
        .get(3)
        .ok_or(invalid(DelimiterError::EncodingCharacterCount { found: 0 }))?;
    let rest = &segment[4..];
    let len = rest.iter().position(|&b| b == field).unwrap_or(rest.len());
    if !super::delimiters::allowed(field) {
        return Err(invalid(DelimiterError::Forbidden { byte: field }));
    }
    Delimiters::new(field, &rest[..len]).map_err(invalid)
}

/// Field `n` (from 2 on) of a header segment (FHS, BHS), raw; empty when absent. As in MSH,
/// field 1 is the field separator itself, so field `n` follows the `(n-1)`-th separator.
pub(crate) fn header_field(segment: &[u8], field_separator: u8, n: usize) -> &[u8] {
    if n < 2 {
        return &[];
    }
    segment
        .split(|&b| b == field_separator)
        .nth(n - 1)
        .unwrap_or_default()
}

/// Field `n` (from 1 on) of an ordinary segment (BTS, FTS), raw; empty when absent.
pub(crate) fn trailer_field(segment: &[u8], field_separator: u8, n: usize) -> &[u8] {
    segment
        .split(|&b| b == field_separator)
        .nth(n)
        .unwrap_or_default()
}

impl Batch {
    /// Splits a batch payload into its envelope and messages. Segments end in CR; with
    /// [`ParseOptions::lenient_line_endings`] also in LF or CRLF.
    ///
    /// # Errors
    /// [`BatchError`] when the payload is not a batch or its envelope is malformed.
    pub fn parse(bytes: Bytes, options: &ParseOptions) -> Result<Batch, BatchError> {
        if !is_batch(&bytes) {
            return Err(BatchError::NotABatch);
        }
        let segments = segments(&bytes, options.lenient_line_endings);
        let id = |r: &Range<usize>| &bytes[r.start..r.end.min(r.start + 3)];
        // Strict: as `Message::parse` refuses a LF in MSH or at a segment's start, a LF in a
        // header (its fields go into the reply's header) or at a segment's start means the
        // sender ends segments in LF or CRLF.
        if !options.lenient_line_endings
            && segments.iter().any(|r| {
                bytes[r.start] == b'\n'
                    || (matches!(id(r), b"FHS" | b"BHS") && bytes[r.clone()].contains(&b'\n'))
            })
        {
            return Err(BatchError::LineFeed);
        }
        // Named only when it is a segment id: three of `A-Z0-9` that end there (at the field
        // separator or the segment's end). The first letters of other text ("PATIENT...")
        // would be content.
        let unexpected = |position: usize, r: &Range<usize>| BatchError::Unexpected {
            position: position + 1,
            id: Some(id(r))
                .filter(|id| super::path::is_segment_id(id))
                .filter(|_| {
                    bytes[r.clone()]
                        .get(3)
                        .is_none_or(|b| !b.is_ascii_alphanumeric())
                })
                .map_or_else(
                    || "?".to_owned(),
                    |id| String::from_utf8_lossy(id).into_owned(),
                ),
        };
        let mut iter = segments.iter().enumerate().peekable();
        let mut file = None;
        let mut delimiters = None;
        if let Some((_, r)) = iter.next_if(|(_, r)| id(r) == b"FHS") {
            delimiters = Some(header_delimiters(&bytes[r.clone()], "FHS")?);
            file = Some(r.clone());
        }
        let mut groups = Vec::new();
        let mut file_trailer = None;
        while let Some((position, r)) = iter.next() {
            match id(r) {
                b"BHS" => {
                    let d = header_delimiters(&bytes[r.clone()], "BHS")?;
                    delimiters.get_or_insert(d);
                    let header = bytes.slice(r.clone());
                    let mut messages: Vec<Bytes> = Vec::new();
                    let mut current: Option<Range<usize>> = None;
                    let mut closed = false;
                    for (position, r) in iter.by_ref() {
                        match id(r) {
                            b"BTS" => {
                                messages.extend(current.take().map(|m| bytes.slice(m)));
                                let count = trailer_field(&bytes[r.clone()], d.field(), 1);
                                check_count("BTS-1", count, messages.len())?;
                                closed = true;
                                break;
                            }
                            b"MSH" => {
                                messages.extend(current.take().map(|m| bytes.slice(m)));
                                current = Some(r.start..terminated(&bytes, r.end));
                            }
                            b"BHS" | b"FHS" | b"FTS" => return Err(unexpected(position, r)),
                            _ => match &mut current {
                                Some(m) => m.end = terminated(&bytes, r.end),
                                None => return Err(unexpected(position, r)),
                            },
                        }
                    }
                    if !closed {
                        return Err(BatchError::MissingTrailer {
                            header: "BHS",
                            trailer: "BTS",
                        });
                    }
                    groups.push(BatchGroup {
                        header,
                        delimiters: d,
                        messages,
                    });
                }
                b"FTS" if file.is_some() => {
                    file_trailer = Some(r.clone());
                    if let Some((position, r)) = iter.next() {
                        return Err(unexpected(position, r));
                    }
                }
                _ => return Err(unexpected(position, r)),
            }
        }
        let delimiters = delimiters.unwrap_or_default();
        match (&file, file_trailer) {
            (Some(_), None) => {
                return Err(BatchError::MissingTrailer {
                    header: "FHS",
                    trailer: "FTS",
                });
            }
            (Some(_), Some(trailer)) => {
                let count = trailer_field(&bytes[trailer], delimiters.field(), 1);
                check_count("FTS-1", count, groups.len())?;
            }
            _ => {}
        }
        Ok(Batch {
            bytes,
            delimiters,
            file,
            groups,
        })
    }

    /// The delimiters of the envelope (FHS, else the first BHS).
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The FHS segment, raw, when the payload has one.
    pub fn file_header(&self) -> Option<&[u8]> {
        self.file.clone().map(|r| &self.bytes[r])
    }

    /// FHS-11 (file control ID), raw; empty without an FHS.
    pub fn file_control_id(&self) -> &[u8] {
        self.file_header()
            .map(|h| header_field(h, self.delimiters.field(), 11))
            .unwrap_or_default()
    }

    /// The BHS … BTS groups, in order.
    pub fn groups(&self) -> &[BatchGroup] {
        &self.groups
    }

    /// Every message, in order, across the groups.
    pub fn messages(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.groups.iter().flat_map(|g| g.messages.iter())
    }

    /// How many messages the batch holds.
    pub fn message_count(&self) -> usize {
        self.groups.iter().map(|g| g.messages.len()).sum()
    }

    /// The payload, as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl BatchGroup {
    /// The BHS segment, raw.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// BHS-`n`, raw (for `n` from 2 on); empty when absent.
    pub fn header_field(&self, n: usize) -> &[u8] {
        header_field(&self.header, self.delimiters.field(), n)
    }

    /// BHS-11 (batch control ID), raw.
    pub fn control_id(&self) -> &[u8] {
        self.header_field(11)
    }

    /// The delimiters its BHS declares.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// Its messages, each a slice of the payload (segments and their terminators).
    pub fn messages(&self) -> &[Bytes] {
        &self.messages
    }
}

/// One past the terminator after `end` (CR, LF or CRLF), or `end` at the end of the bytes.
fn terminated(bytes: &[u8], end: usize) -> usize {
    match bytes.get(end) {
        Some(b'\r') if bytes.get(end + 1) == Some(&b'\n') => end + 2,
        Some(b'\r' | b'\n') => end + 1,
        _ => end,
    }
}

/// An empty count is no claim; a given one must match.
fn check_count(field: &'static str, declared: &[u8], found: usize) -> Result<(), BatchError> {
    if declared.is_empty() {
        return Ok(());
    }
    // Digits (an NM may carry a `+`), around blanks; anything else is not a count.
    let text = declared.trim_ascii();
    let digits = text.strip_prefix(b"+").unwrap_or(text);
    let count = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
        .flatten();
    if count.is_some_and(|n| usize::try_from(n) == Ok(found)) {
        Ok(())
    } else {
        Err(BatchError::CountMismatch {
            field,
            declared: count,
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Batch, BatchError> {
        Batch::parse(Bytes::from(text.to_owned()), &ParseOptions::default())
    }

    const M1: &str = "MSH|^~\\&|A|B|C|D|1||ADT^A01|M1|P|2.5\rPID|1\r";
    const M2: &str = "MSH|^~\\&|A|B|C|D|1||ADT^A01|M2|P|2.5\rPID|2\r";

    /// A file of two batches splits into its groups and messages, each message a whole slice.
    #[test]
    fn splits_files_and_batches() {
        let batch = parse(&format!(
            "FHS|^~\\&|A|B|C|D|1||||F1\rBHS|^~\\&|A|B|C|D|1||||B1\r{M1}BTS|1\rBHS|^~\\&|A|B|C|D|1||||B2\r{M2}{M1}BTS|2\rFTS|2\r"
        ))
        .unwrap();
        assert_eq!(batch.file_control_id(), b"F1");
        assert_eq!(batch.groups().len(), 2);
        assert_eq!(batch.groups()[1].control_id(), b"B2");
        let messages: Vec<&[u8]> = batch.messages().map(|m| &m[..]).collect();
        assert_eq!(messages, [M1.as_bytes(), M2.as_bytes(), M1.as_bytes()]);
        assert_eq!(trailer_field(b"BTS|1|x", b'|', 2), b"x");
        assert_eq!(header_field(b"BHS|^~\\&|APP", b'|', 3), b"APP");
    }

    /// Empty counts are no claim; an empty batch is a batch.
    #[test]
    fn empty_counts_and_empty_batches_are_fine() {
        assert_eq!(
            parse(&format!("BHS|^~\\&\r{M1}BTS\r"))
                .unwrap()
                .message_count(),
            1
        );
        assert_eq!(parse("BHS|^~\\&\rBTS|0\r").unwrap().message_count(), 0);
    }

    /// Every malformed envelope is named.
    #[test]
    fn malformed_envelopes_are_refused() {
        let cases: [(String, BatchError); 7] = [
            (M1.to_owned(), BatchError::NotABatch),
            (
                format!("BHS|^~\\&\r{M1}"),
                BatchError::MissingTrailer {
                    header: "BHS",
                    trailer: "BTS",
                },
            ),
            (
                format!("FHS|^~\\&\rBHS|^~\\&\r{M1}BTS\r"),
                BatchError::MissingTrailer {
                    header: "FHS",
                    trailer: "FTS",
                },
            ),
            (
                format!("BHS|^~\\&\r{M1}BTS|3\r"),
                BatchError::CountMismatch {
                    field: "BTS-1",
                    declared: Some(3),
                    found: 1,
                },
            ),
            (
                format!("FHS|^~\\&\r{M1}FTS\r"),
                BatchError::Unexpected {
                    position: 2,
                    id: "MSH".into(),
                },
            ),
            // Text after the trailer: its first letters are content, not an id.
            (
                format!("BHS|^~\\&\r{M1}BTS|1\rPATIENTSECRET|1\r"),
                BatchError::Unexpected {
                    position: 5,
                    id: "?".into(),
                },
            ),
            (
                format!("BHS|^~\\&\rPID|1\r{M1}BTS\r"),
                BatchError::Unexpected {
                    position: 2,
                    id: "PID".into(),
                },
            ),
        ];
        for (text, error) in cases {
            assert_eq!(parse(&text).unwrap_err(), error, "{text:?}");
        }
        assert!(matches!(
            parse("BHS|^~\\^\rBTS\r").unwrap_err(),
            BatchError::InvalidDelimiters { segment: "BHS", .. }
        ));
    }

    /// A count is digits (with an NM's optional `+`, around blanks). A count that is not a
    /// number is refused without repeating its text: it is the sender's, and an error may be
    /// logged.
    #[test]
    fn a_count_that_is_not_a_number_is_refused_without_its_text() {
        assert_eq!(
            parse(&format!("BHS|^~\\&\r{M1}BTS| +1 \r"))
                .unwrap()
                .message_count(),
            1
        );
        for count in [
            "SMITH^JOHN",
            "1 SMITH",
            "-1",
            "1e0",
            "99999999999999999999999",
        ] {
            let error = parse(&format!("BHS|^~\\&\r{M1}BTS|{count}\r")).unwrap_err();
            assert_eq!(
                error,
                BatchError::CountMismatch {
                    field: "BTS-1",
                    declared: None,
                    found: 1,
                },
                "{count:?}"
            );
            assert_eq!(
                error.to_string(),
                "BTS-1 is not a count, the envelope holds 1"
            );
        }
        assert_eq!(
            parse(&format!("BHS|^~\\&\r{M1}BTS|2\r"))
                .unwrap_err()
                .to_string(),
            "BTS-1 declares 2, the envelope holds 1"
        );
    }

    /// LF-separated batches split only with lenient line endings, keeping each message's own
    /// terminators.
    #[test]
    fn lenient_line_endings_split_on_lf() {
        let text = "BHS|^~\\&\nMSH|^~\\&|A|B|C|D|1||ADT^A01|M1|P|2.5\r\nPID|1\nBTS|1\n";
        let lenient = ParseOptions::default().lenient_line_endings(true);
        let batch = Batch::parse(Bytes::from(text), &lenient).unwrap();
        assert_eq!(
            &batch.messages().next().unwrap()[..],
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|M1|P|2.5\r\nPID|1\n"
        );
        assert_eq!(parse(text).unwrap_err(), BatchError::LineFeed);
    }

    /// Strict mode finds a LF in any header and at any segment's start, not only in the first
    /// segment: a second group's `BHS|^~\\&|A\nB` would put the LF into the reply's header.
    /// Found by the `batch` fuzz target (the reply did not parse back).
    #[test]
    fn strict_mode_refuses_a_line_feed_in_a_later_header_or_at_a_segment_start() {
        for text in [
            format!("BHS|^~\\&\r{M1}BTS|1\rBHS|^~\\&|A\nB\r{M1}BTS|1\r"),
            format!("FHS|^~\\&\rBHS|^~\\&|A\nB\r{M1}BTS|1\rFTS|1\r"),
            format!("BHS|^~\\&\r{M1}\nBTS|1\r"),
        ] {
            assert_eq!(parse(&text).unwrap_err(), BatchError::LineFeed, "{text:?}");
        }
        // A LF inside a message's later segment is the message's own business, as in MSH's.
        let inside = "BHS|^~\\&\rMSH|^~\\&|A|B|C|D|1||ADT^A01|M1|P|2.5\rNTE|1||a\nb\rBTS|1\r";
        assert_eq!(parse(inside).unwrap().message_count(), 1);
    }
}

//! Reading HL7 messages from files, and the bench's message template.
//!
//! Works on bytes, never on `str`: files may be Latin-1, UTF-8 or anything else, and what is sent
//! is exactly what the file holds apart from the line endings.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use mllp::frame::{END_BLOCK, START_BLOCK};

/// One message read from a file, ready to go on the wire (segments end in CR).
#[derive(Debug, Clone)]
pub(crate) struct FileMessage {
    /// The file it came from.
    pub(crate) file: PathBuf,
    /// Its position in the file, from 1.
    pub(crate) index: usize,
    /// The payload, segments separated (and ended) by CR.
    pub(crate) payload: Bytes,
}

/// Why the input could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file holds something other than HL7 segments before its first MSH.
    #[error("{}: line {line} comes before the first MSH segment", path.display())]
    BeforeMsh { path: PathBuf, line: usize },
    /// A file holds no message at all.
    #[error("{}: no MSH segment found", path.display())]
    Empty { path: PathBuf },
}

/// What [`read_inputs`] found: the messages, and the subdirectories it did not enter.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    pub(crate) messages: Vec<FileMessage>,
    /// Subdirectories of a directory given, not entered (the walk is one level deep): the
    /// caller says so, since their messages are not sent.
    pub(crate) subdirectories: Vec<PathBuf>,
}

/// The name a message read from standard input (`-`) is labelled with.
pub(crate) const STDIN_LABEL: &str = "stdin";

/// Every message in `paths`: files in the order given (`-` is standard input), directories
/// walked (not recursively) in file-name order, skipping hidden files (names starting with `.`,
/// such as the inbox's `.tmp-` files); subdirectories are listed in [`Inputs::subdirectories`].
pub(crate) fn read_inputs(paths: &[PathBuf]) -> Result<Inputs, InputError> {
    let mut inputs = Inputs::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut io::stdin().lock(), &mut bytes).map_err(|source| {
                InputError::Read {
                    path: PathBuf::from(STDIN_LABEL),
                    source,
                }
            })?;
            inputs
                .messages
                .extend(messages_of(Path::new(STDIN_LABEL), &bytes)?);
            continue;
        }
        let read_err = |source| InputError::Read {
            path: path.clone(),
            source,
        };
        let meta = fs::metadata(path).map_err(read_err)?;
        if meta.is_dir() {
            let mut files = Vec::new();
            for entry in fs::read_dir(path).map_err(read_err)? {
                let entry = entry.map_err(read_err)?;
                let hidden = entry.file_name().as_encoded_bytes().first() == Some(&b'.');
                if hidden {
                    continue;
                }
                let is_file = entry.file_type().map_err(read_err)?.is_file()
                    || fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
                if is_file {
                    files.push(entry.path());
                } else if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
                    inputs.subdirectories.push(entry.path());
                }
            }
            files.sort();
            for file in files {
                inputs.messages.extend(read_file(&file)?);
            }
        } else {
            inputs.messages.extend(read_file(path)?);
        }
    }
    inputs.subdirectories.sort();
    Ok(inputs)
}

/// One file (or standard input) to send as one batch frame.
#[derive(Debug, Clone)]
pub(crate) struct FileBatch {
    /// The file it came from.
    pub(crate) file: PathBuf,
    /// The batch, segments ending in CR.
    pub(crate) payload: Bytes,
}

/// Every input as one batch each: files in the order given (`-` is standard input),
/// directories walked as [`read_inputs`] walks them.
pub(crate) fn read_batches(
    paths: &[PathBuf],
) -> Result<(Vec<FileBatch>, Vec<PathBuf>), InputError> {
    // The same walk, then each file read again whole: batches keep their envelope.
    let mut batches = Vec::new();
    let mut subdirectories = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut io::stdin().lock(), &mut bytes).map_err(|source| {
                InputError::Read {
                    path: PathBuf::from(STDIN_LABEL),
                    source,
                }
            })?;
            batches.push(batch_of(Path::new(STDIN_LABEL), &bytes)?);
            continue;
        }
        let meta = fs::metadata(path).map_err(|source| InputError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            let listed = read_inputs(std::slice::from_ref(path))?;
            subdirectories.extend(listed.subdirectories);
            let mut files: Vec<PathBuf> = listed.messages.into_iter().map(|m| m.file).collect();
            files.dedup();
            for file in files {
                let bytes = fs::read(&file).map_err(|source| InputError::Read {
                    path: file.clone(),
                    source,
                })?;
                batches.push(batch_of(&file, &bytes)?);
            }
        } else {
            let bytes = fs::read(path).map_err(|source| InputError::Read {
                path: path.clone(),
                source,
            })?;
            batches.push(batch_of(path, &bytes)?);
        }
    }
    Ok((batches, subdirectories))
}

/// The batch in `bytes`: a batch file (starting with FHS or BHS) with its segments ending in
/// CR, or plain messages wrapped in `BHS` (the first message's delimiters) and `BTS|n`.
fn batch_of(path: &Path, bytes: &[u8]) -> Result<FileBatch, InputError> {
    let lf_is_data = has_bare_cr(bytes);
    let mut segments = lines(bytes, lf_is_data)
        .map(clean)
        .filter(|line| !is_blank(line))
        .peekable();
    let enveloped = segments
        .peek()
        .is_some_and(|first| first.starts_with(b"FHS") || first.starts_with(b"BHS"));
    let payload = if enveloped {
        let mut out = BytesMut::with_capacity(bytes.len() + 8);
        for segment in segments {
            out.extend_from_slice(&segment);
            out.extend_from_slice(b"\r");
        }
        out.freeze()
    } else {
        let messages = messages_of(path, bytes)?;
        let first = &messages[0].payload;
        // MSH-1 and MSH-2 of the first message: "MSH|^~\&" is 8 bytes, one more with a
        // truncation character.
        let delimiters_end = first[4..]
            .iter()
            .position(|&b| b == first[3] || b == b'\r')
            .map_or(first.len(), |p| p + 4);
        let mut out = BytesMut::with_capacity(bytes.len() + 32);
        out.extend_from_slice(b"BHS");
        out.extend_from_slice(&first[3..delimiters_end]);
        out.extend_from_slice(b"\r");
        for message in &messages {
            out.extend_from_slice(&message.payload);
            if !message.payload.ends_with(b"\r") {
                out.extend_from_slice(b"\r");
            }
        }
        out.extend_from_slice(b"BTS");
        out.extend_from_slice(&first[3..4]);
        out.extend_from_slice(messages.len().to_string().as_bytes());
        out.extend_from_slice(b"\r");
        out.freeze()
    };
    Ok(FileBatch {
        file: path.to_path_buf(),
        payload,
    })
}

/// The messages in one file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<FileMessage>, InputError> {
    let bytes = fs::read(path).map_err(|source| InputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    messages_of(path, &bytes)
}

/// The messages in `bytes`, read from `path`.
fn messages_of(path: &Path, bytes: &[u8]) -> Result<Vec<FileMessage>, InputError> {
    let payloads = split_messages(bytes).map_err(|line| InputError::BeforeMsh {
        path: path.to_path_buf(),
        line,
    })?;
    if payloads.is_empty() {
        return Err(InputError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| FileMessage {
            file: path.to_path_buf(),
            index: i + 1,
            payload,
        })
        .collect())
}

/// Splits file contents into messages.
///
/// Segments may end in CR, LF or CRLF; each is sent ending in CR. A message starts at every line
/// beginning with `MSH`. In a message whose segments end in a bare CR (the HL7 convention: an
/// inbox file, a capture), only CR and CRLF end a segment and a bare LF is data inside a field,
/// kept as it is; in a message with no bare CR (an editor's LF or CRLF file) every line is a
/// segment. MLLP framing bytes (`0x0B`, `0x1C`) are dropped, so a captured MLLP stream can be
/// replayed, and so is a UTF-8 byte order mark at the start of a line. Blank lines (empty, or
/// only spaces and tabs) and batch envelope segments (`FHS`, `BHS`, `BTS`, `FTS`) are skipped.
/// When the file ends inside the last message's last segment (no CR or LF after it: a message
/// stored as it arrived without a final CR), no CR is added to it, so it is sent byte for byte.
///
/// # Errors
/// The 1-based line number of the first other line found before the first `MSH`.
pub(crate) fn split_messages(bytes: &[u8]) -> Result<Vec<Bytes>, usize> {
    let starts = message_starts(bytes);
    let first = starts.first().copied().unwrap_or(bytes.len());
    for (n, line) in lines(&bytes[..first], false).enumerate() {
        let line = clean(line);
        if !is_blank(&line) && !is_batch_envelope(&line) {
            return Err(n + 1);
        }
    }
    let mut messages = Vec::with_capacity(starts.len());
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
        let chunk = &bytes[start..end];
        let mut message = BytesMut::with_capacity(chunk.len() + 1);
        for line in lines(chunk, has_bare_cr(chunk)) {
            let line = clean(line);
            if !is_blank(&line) {
                message.extend_from_slice(&line);
                message.extend_from_slice(b"\r");
            }
        }
        let full = message.len();
        // Batch trailers after a message belong to the envelope, not to the message.
        let mut message = strip_trailing_envelope(message.freeze());
        let last = i + 1 == starts.len();
        if last && message.len() == full && ends_unterminated(chunk) {
            message.truncate(message.len() - 1);
        }
        messages.push(message);
    }
    Ok(messages)
}

/// Where each message starts: the lines (after any terminator) beginning with `MSH`, framing
/// bytes and a byte order mark before it allowed.
fn message_starts(bytes: &[u8]) -> Vec<usize> {
    let line_starts = std::iter::once(0).chain(
        memchr::memchr2_iter(b'\r', b'\n', bytes)
            .map(|i| i + 1)
            .filter(|&i| i < bytes.len()),
    );
    line_starts
        .filter(|&start| {
            let mut rest = &bytes[start..];
            while let [first, tail @ ..] = rest
                && (*first == START_BLOCK || *first == END_BLOCK)
            {
                rest = tail;
            }
            rest.strip_prefix(BOM).unwrap_or(rest).starts_with(b"MSH")
        })
        .collect()
}

/// Whether `bytes` ends in a segment with no terminator after it (and not in a blank line).
fn ends_unterminated(bytes: &[u8]) -> bool {
    let tail = memchr::memrchr2(b'\r', b'\n', bytes).map_or(bytes, |i| &bytes[i + 1..]);
    !is_blank(&clean(tail))
}

/// Whether some CR in `bytes` is not followed by LF: segments end in CR, as on the wire.
fn has_bare_cr(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\r', bytes).any(|i| bytes.get(i + 1) != Some(&b'\n'))
}

/// The line without MLLP framing bytes and without a leading byte order mark.
fn clean(line: &[u8]) -> Vec<u8> {
    let mut line: Vec<u8> = line
        .iter()
        .copied()
        .filter(|&b| b != START_BLOCK && b != END_BLOCK)
        .collect();
    if line.starts_with(BOM) {
        line.drain(..BOM.len());
    }
    line
}

/// Blank to the eye is blank: no segment is made of spaces and tabs.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b' ' || b == b'\t')
}

/// The UTF-8 byte order mark (editors on Windows write one); never part of a segment.
const BOM: &[u8] = b"\xef\xbb\xbf";

fn is_batch_envelope(line: &[u8]) -> bool {
    [b"FHS", b"BHS", b"BTS", b"FTS"]
        .iter()
        .any(|id| line.starts_with(*id))
}

/// Drops `BTS`/`FTS` (and `BHS`/`FHS`) segments that end a message: they close the batch.
fn strip_trailing_envelope(message: Bytes) -> Bytes {
    let mut end = message.len();
    loop {
        let body = &message[..end];
        let Some(without_cr) = body.strip_suffix(b"\r") else {
            break;
        };
        let start = without_cr
            .iter()
            .rposition(|&b| b == b'\r')
            .map_or(0, |p| p + 1);
        if start == 0 || !is_batch_envelope(&without_cr[start..]) {
            break;
        }
        end = start;
    }
    message.slice(..end)
}

/// Lines separated by CR, LF or CRLF; with `lf_is_data`, by CR or CRLF only, a bare LF staying
/// in its line except at the line's start or end (blank lines around a segment).
fn lines(bytes: &[u8], lf_is_data: bool) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = if lf_is_data {
            memchr::memchr(b'\r', rest)
        } else {
            memchr::memchr2(b'\r', b'\n', rest)
        };
        let line = match end {
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
                line
            }
            None => std::mem::take(&mut rest),
        };
        Some(if lf_is_data {
            trim_line_feeds(line)
        } else {
            line
        })
    })
}

/// `line` without leading and trailing LFs.
fn trim_line_feeds(mut line: &[u8]) -> &[u8] {
    while let [b'\n', tail @ ..] = line {
        line = tail;
    }
    while let [head @ .., b'\n'] = line {
        line = head;
    }
    line
}

/// A message with MSH-10 cut out, so that copies with any control id can be made cheaply.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    prefix: Bytes,
    suffix: Bytes,
}

impl Template {
    /// Finds MSH-10 in `message` (segments ending in CR).
    ///
    /// # Errors
    /// When the message does not start with `MSH` or has fewer than 10 fields in MSH (a message
    /// without MSH-10 cannot be correlated with its ACK).
    pub(crate) fn new(message: &[u8]) -> Result<Self, &'static str> {
        if !message.starts_with(b"MSH") || message.len() < 4 {
            return Err("the message does not start with an MSH segment");
        }
        let separator = message[3];
        let msh_end = message
            .iter()
            .position(|&b| b == b'\r')
            .unwrap_or(message.len());
        let msh = &message[..msh_end];
        // The separator after "MSH" is MSH-1 itself; MSH-n (n >= 2) starts after the
        // (n-1)-th separator, so MSH-10 starts after the 9th.
        let mut seps = msh
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == separator)
            .map(|(i, _)| i);
        let start = seps.nth(8).ok_or("the message has no MSH-10 field")? + 1;
        let end = seps.next().unwrap_or(msh_end);
        Ok(Self {
            prefix: Bytes::copy_from_slice(&message[..start]),
            suffix: Bytes::copy_from_slice(&message[end..]),
        })
    }

    /// The message with `control_id` as MSH-10.
    pub(crate) fn with_control_id(&self, control_id: &str) -> Bytes {
        let mut out =
            BytesMut::with_capacity(self.prefix.len() + control_id.len() + self.suffix.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(control_id.as_bytes());
        out.extend_from_slice(&self.suffix);
        out.freeze()
    }

    /// The size of a message built from this template with a control id of `id_len` bytes.
    pub(crate) fn len_with_id(&self, id_len: usize) -> usize {
        self.prefix.len() + id_len + self.suffix.len()
    }
}

/// The bench's default message: a synthetic ADT^A01 (admit) of about 1 KB, v2.5.1, with the
/// segments a real admission carries. Every name, number and address is made up.
pub(crate) const BUILTIN_ADT_A01: &str = concat!(
    "MSH|^~\\&|MLLPBENCH|SYNTH_HOSP|RECEIVER|RECV_FAC|20260102030405.123+0000||ADT^A01^ADT_A01|BENCH000001|P|2.5.1\r",
    "EVN|A01|20260102030405|||OPER123^SYNTHETIC^OPERATOR^^^^^^SYNTH_HOSP^L^^^EI|20260102030000\r",
    "PID|1||MRN0000001^^^SYNTH_HOSP^MR~SYN000000001^^^SSA^SS||TESTPATIENT^ALEX^Q^^^^L||19800101|U|||100 EXAMPLE STREET^APT 1^SAMPLETOWN^ST^00000^XXA^H||^PRN^PH^^1^555^0100000|^WPN^PH^^1^555^0100001|EN^English^ISO639|S^Single^HL70002|||||||N||||||||N\r",
    "PD1|||SYNTHETIC CLINIC^^10001|DOC0001^PRIMARY^PAT^^^DR^^^SYNTH_HOSP\r",
    "NK1|1|TESTRELATIVE^SAM^^^^^L|SPO^Spouse^HL70063|100 EXAMPLE STREET^APT 1^SAMPLETOWN^ST^00000^XXA^H|^PRN^PH^^1^555^0100002||EC^Emergency Contact^HL70131\r",
    "PV1|1|I|WARD1^ROOM101^BED1^SYNTH_HOSP^^^^BUILDING1^FLOOR1|E^Emergency^HL70007|||DOC0002^ATTENDING^ANN^^^DR^^^SYNTH_HOSP|DOC0003^REFERRING^RAY^^^DR^^^SYNTH_HOSP||MED|||7|||DOC0002^ATTENDING^ANN^^^DR^^^SYNTH_HOSP|IP||SELF|||||||||||||||||||SYNTH_HOSP|||||20260102030000\r",
    "PV2|||CHEST PAIN^Chest pain^LOCAL||||||20260105|3\r",
    "OBX|1|NM|8867-4^Heart rate^LN||72|/min^per minute^UCUM|60-100|N|||F|||20260102030100\r",
    "AL1|1|DA|70618^Penicillin^RXNORM|MO|RASH|20200101\r",
    "DG1|1||R07.9^Chest pain, unspecified^I10|||A|||||||||1\r",
);

#[cfg(test)]
mod tests {
    use super::*;

    /// LF, CRLF and CR separated segments all become CR-terminated segments, split at each MSH.
    #[test]
    fn splits_messages_and_normalises_line_endings() {
        let file = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\nPID|1\r\nMSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5\rPID|2\n\n";
        let messages = split_messages(file).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(
            &messages[0][..],
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1\r"
        );
        assert_eq!(
            &messages[1][..],
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5\rPID|2\r"
        );
    }

    /// An MLLP-framed capture is read as the messages it frames.
    #[test]
    fn strips_mllp_framing_bytes() {
        let file = b"\x0bMSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1\r\x1c\r\x0bMSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5\r\x1c\r";
        let messages = split_messages(file).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(
            &messages[1][..],
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5\r"
        );
    }

    /// Batch envelopes are skipped, other content before the first MSH is an error.
    #[test]
    fn batch_envelope_is_skipped_and_stray_lines_rejected() {
        let batch =
            b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1\rBTS|1\rFTS|1\r";
        let messages = split_messages(batch).unwrap();
        assert_eq!(
            messages,
            vec![Bytes::from_static(
                b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1\r"
            )]
        );
        assert_eq!(split_messages(b"\nhello\nMSH|^~\\&|\n"), Err(2));
    }

    /// A UTF-8 byte order mark, as editors on Windows write it at the start of a file (or of
    /// each file concatenated into one), is not part of the message.
    #[test]
    fn byte_order_mark_is_dropped() {
        let file = b"\xef\xbb\xbfMSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\r\nPID|1\r\n\xef\xbb\xbfMSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5\r\n";
        let messages = split_messages(file).unwrap();
        assert_eq!(
            messages,
            vec![
                Bytes::from_static(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1\r"),
                Bytes::from_static(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5\r"),
            ]
        );
    }

    /// Lines holding only spaces or tabs (an editor's trailing "blank" lines) are blank lines,
    /// not segments, and are skipped like empty ones, before and after a message.
    #[test]
    fn whitespace_only_lines_are_blank() {
        let file = b" \nMSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\n\t\nPID|1\n  \n\t \n";
        let messages = split_messages(file).unwrap();
        assert_eq!(
            messages,
            vec![Bytes::from_static(
                b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1\r"
            )]
        );
    }

    /// In a message whose segments end in CR (an inbox file, a capture), a line feed is data
    /// inside a field, not a segment break: the message is sent as it was received. Editor
    /// files (LF or CRLF) in the same file still split at every line.
    #[test]
    fn line_feeds_inside_fields_of_cr_messages_are_kept() {
        let file = b"MSH|^~\\&|A|B|C|D|1||ORU^R01|ID1|P|2.5\rOBX|1|TX|X||Result:\nNEG||||||F\r\
MSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5\nPID|2\n\n";
        let messages = split_messages(file).unwrap();
        assert_eq!(
            messages,
            vec![
                Bytes::from_static(
                    b"MSH|^~\\&|A|B|C|D|1||ORU^R01|ID1|P|2.5\rOBX|1|TX|X||Result:\nNEG||||||F\r"
                ),
                Bytes::from_static(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5\rPID|2\r"),
            ]
        );
    }

    /// A file that ends right after the last segment (no CR: a message stored as it arrived)
    /// gives that message without a final CR; a trailing blank line or envelope does not count.
    #[test]
    fn unterminated_last_segment_stays_unterminated() {
        let one = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1";
        assert_eq!(split_messages(one).unwrap(), vec![Bytes::from_static(one)]);
        let two = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\nMSH|^~\\&|A|B|C|D|1||ADT^A01|ID2|P|2.5";
        let messages = split_messages(two).unwrap();
        assert!(messages[0].ends_with(b"\r"));
        assert!(messages[1].ends_with(b"2.5"));
        for ended in [
            &b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1\r  "[..],
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5\rPID|1\rBTS|1",
        ] {
            assert!(split_messages(ended).unwrap()[0].ends_with(b"PID|1\r"));
        }
    }

    /// Bytes that are not UTF-8 are carried through untouched.
    #[test]
    fn keeps_latin1_bytes() {
        let file = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ID1|P|2.5|||||||8859/1\nPID|1||||M\xfcller\n";
        let messages = split_messages(file).unwrap();
        assert!(messages[0].ends_with(b"M\xfcller\r"));
    }

    /// The template replaces exactly MSH-10, whatever the field separator.
    #[test]
    fn template_rewrites_msh10() {
        let t = Template::new(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|OLD|P|2.5\rPID|1\r").unwrap();
        assert_eq!(
            &t.with_control_id("NEW-1")[..],
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|NEW-1|P|2.5\rPID|1\r"
        );
        let t = Template::new(b"MSH#^~\\&#A#B#C#D#1##ADT^A01#OLD\r").unwrap();
        assert_eq!(
            &t.with_control_id("X")[..],
            b"MSH#^~\\&#A#B#C#D#1##ADT^A01#X\r"
        );
        assert!(Template::new(b"MSH|^~\\&|A|B\r").is_err());
        assert!(Template::new(b"PID|1\r").is_err());
    }

    /// The built-in message is about 1 KB, CR-separated, and has an MSH-10 to rewrite.
    #[test]
    fn builtin_message_is_about_one_kilobyte() {
        let len = BUILTIN_ADT_A01.len();
        assert!((900..=1200).contains(&len), "builtin is {len} bytes");
        assert!(!BUILTIN_ADT_A01.contains('\n'));
        let t = Template::new(BUILTIN_ADT_A01.as_bytes()).unwrap();
        assert!(t.with_control_id("B-1").starts_with(b"MSH|"));
    }
}

//! The MLLP framer: a [`tokio_util::codec`] [`Decoder`] and [`Encoder`] for MLLP blocks.
//!
//! This module opens no socket. It turns bytes into payloads and payloads into bytes, and it is
//! tested on byte slices; the connection runtime drives it through `tokio_util::codec::Framed`.
//!
//! # Wire format
//!
//! The Minimal Lower Layer Protocol (MLLP, HL7 v2.x "Transport Specification: MLLP, Release 2")
//! wraps each HL7 message in one block:
//!
//! ```text
//! <SB> payload <EB> <CR>
//! 0x0B  ...    0x1C 0x0D
//! ```
//!
//! The decoder yields the payload (the bytes between `0x0B` and `0x1C 0x0D`) as [`Bytes`] split
//! off the read buffer, without copying. The encoder writes the same three framing bytes around a
//! payload. Framing bytes may arrive in any split (a frame in many reads, several frames in one
//! read, the `0x1C` and the `0x0D` in separate reads); frames are yielded one by one, in order.
//!
//! An empty block (`0x0B 0x1C 0x0D`) is a frame with an empty payload: the framer delivers it as
//! an empty [`Bytes`], and whether an empty message deserves an answer (an HL7 AR, "not HL7") is
//! the parser's business, not the framer's.
//!
//! # What is not a frame
//!
//! MLLP Release 2 says the HL7 content of a block must not contain the start block (`0x0B`) or
//! end block (`0x1C`) byte values; this is why the specification rules out encodings such as
//! UTF-16 or UTF-32, whose code units can contain those bytes, and why HL7 v2 escapes
//! non-printable data (`\X0B\`) instead of sending it raw. The end of a block is the two-byte
//! sequence `0x1C 0x0D`, nothing else. A receiver that guessed its way around these rules could
//! split or merge messages, and then acknowledge a message it never received whole. So this
//! framer never treats `0x0B` or `0x1C` as payload:
//!
//! | what arrives | [`FramingPolicy::Strict`] | [`FramingPolicy::SkipToNextStart`] |
//! |---|---|---|
//! | a byte outside a frame (including CR/LF padding) | [`FrameError::UnexpectedByte`] | discarded and counted |
//! | `0x0B` inside a payload | [`FrameError::StartInFrame`] | the unfinished frame is discarded and counted; the new `0x0B` starts a frame |
//! | `0x1C` followed by anything but `0x0D` | [`FrameError::BadEndBlock`] | the unfinished frame and its `0x1C` are discarded and counted; the byte after the `0x1C` is read as outside a frame |
//! | end of stream inside a frame | [`FrameError::Truncated`] | [`FrameError::Truncated`] |
//! | end of stream outside a frame | clean end | clean end (any trailing bytes were already discarded and counted) |
//!
//! In both policies a `0x0B` inside a payload means the sender lost or skipped an end block: the
//! unfinished frame is never delivered, because the bytes received so far are not known to be the
//! whole message. Under `SkipToNextStart` the new `0x0B` is taken as the start of the sender's
//! next attempt; that is the resynchronisation the policy is named for.
//!
//! Under `Strict` even whitespace between frames is an error: some senders pad frames with CR or
//! LF, and such partners are served with `SkipToNextStart`, which discards and counts the padding
//! (see [`MllpCodec::skipped_bytes`]).
//!
//! Every error closes the connection in the runtime: after an error the codec must not be used
//! again (it does not panic if it is, but what it yields is unspecified).
//!
//! # Limits and memory
//!
//! `max_message_size` (default 10 MiB, see [`DEFAULT_MAX_MESSAGE_SIZE`]) bounds:
//!
//! - **the payload**: a payload of exactly `max_message_size` bytes is accepted; as soon as the
//!   payload reaches `max_message_size + 1` bytes the decoder fails with [`FrameError::TooLarge`],
//!   without waiting for the end block;
//! - **the bytes discarded** under `SkipToNextStart` between two delivered frames (or before the
//!   first): at most `max_message_size` may be discarded, one more fails with
//!   [`FrameError::TooLarge`]. A peer that sends that much without completing one frame is not
//!   speaking MLLP, and the connection should end rather than spin on its bytes.
//!
//! The decoder removes the start block from the buffer as soon as it sees it and discards bytes
//! outside a frame at once, so after a call to [`Decoder::decode`] that returns `Ok(None)` the
//! buffer holds at most the unfinished payload and a trailing `0x1C` waiting for its `0x0D`:
//! `max_message_size + 1` bytes. The memory held is therefore at most the limit plus one read.
//!
//! The decoder remembers how far it has scanned the unfinished payload, so a frame delivered one
//! byte per read is scanned once in total (O(n)), not once per read. Scanning uses the `memchr`
//! crate's vectorised search for the two reserved bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The start block byte, `<SB>` (ASCII VT).
pub const START_BLOCK: u8 = 0x0B;
/// The end block byte, `<EB>` (ASCII FS). On the wire it is always followed by [`CARRIAGE_RETURN`].
pub const END_BLOCK: u8 = 0x1C;
/// The carriage return that completes the end of a block.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// The default `max_message_size`: 10 MiB, enough for an ORU carrying base64-encoded PDFs.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// Why bytes from a peer could not be turned into an MLLP frame, or a payload could not be framed.
///
/// Any decoding error means the byte stream can no longer be trusted: the runtime closes the
/// connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Under [`FramingPolicy::Strict`], a byte other than the start block arrived outside a frame
    /// (before the first frame, or between two frames).
    #[error("unexpected byte 0x{byte:02x} outside an mllp frame{}", tls_hint(*byte, *offset))]
    UnexpectedByte {
        /// The offending byte.
        byte: u8,
        /// Its offset in the inbound byte stream (see [`FrameError::offset`]).
        offset: u64,
    },
    /// Under [`FramingPolicy::Strict`], a start block (`0x0B`) arrived inside a payload: the
    /// sender lost or skipped an end block.
    #[error("start block inside an mllp frame")]
    StartInFrame {
        /// The start block's offset in the inbound byte stream.
        offset: u64,
    },
    /// Under [`FramingPolicy::Strict`], an end block (`0x1C`) was followed by a byte other than a
    /// carriage return (`0x0D`).
    #[error("end block followed by 0x{byte:02x} instead of a carriage return")]
    BadEndBlock {
        /// The byte that followed the end block.
        byte: u8,
        /// That byte's offset in the inbound byte stream.
        offset: u64,
    },
    /// A payload passed `max_message_size` before its end block arrived, or (under
    /// [`FramingPolicy::SkipToNextStart`]) more than `max_message_size` bytes were discarded
    /// since the last frame.
    #[error("mllp frame larger than {limit} bytes")]
    TooLarge {
        /// The configured `max_message_size`.
        limit: usize,
        /// The offset in the inbound byte stream of the first byte past the limit.
        offset: u64,
    },
    /// The stream ended inside a frame: a start block was seen but its end block never came.
    #[error("stream ended inside an mllp frame ({buffered} bytes buffered)")]
    Truncated {
        /// How many bytes of the unfinished frame were buffered (payload, and a lone `0x1C`).
        buffered: usize,
        /// The offset of the end of the stream: how many bytes the peer sent in all.
        offset: u64,
    },
    /// The encoder was given a payload containing a start block (`0x0B`) or end block (`0x1C`)
    /// byte, which MLLP forbids in content and which a receiver would misread.
    #[error("payload contains reserved mllp byte 0x{byte:02x} at offset {offset}")]
    ReservedByte {
        /// The reserved byte found.
        byte: u8,
        /// Its offset in the payload.
        offset: usize,
    },
    /// Reading from or writing to the transport failed.
    #[error("mllp transport failed")]
    Io(#[from] std::io::Error),
}

/// What a first byte that opens a TLS record most likely means: the two ends disagree on TLS.
/// Only the connection's first byte is read this way; anywhere else it is just a wrong byte.
fn tls_hint(byte: u8, offset: u64) -> &'static str {
    match (byte, offset) {
        (0x16, 0) => " (0x16 opens a TLS handshake: is a TLS client talking to a plain listener?)",
        (0x15, 0) => " (0x15 opens a TLS alert: is this a TLS listener, reached without TLS?)",
        _ => "",
    }
}

impl FrameError {
    /// A short, stable name for the error, used as a connection close reason and a metric
    /// attribute: `framing` (bytes outside a frame, a start block inside one, a bad end block),
    /// `oversize`, `truncated`, `reserved_byte` (encoder) or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::UnexpectedByte { .. }
            | FrameError::StartInFrame { .. }
            | FrameError::BadEndBlock { .. } => "framing",
            FrameError::TooLarge { .. } => "oversize",
            FrameError::Truncated { .. } => "truncated",
            FrameError::ReservedByte { .. } => "reserved_byte",
            FrameError::Io(_) => "io",
        }
    }

    /// Where a decoding error is: the offset of the offending byte in the connection's inbound
    /// byte stream, counted from 0 at the first byte the codec was given (for
    /// [`FrameError::Truncated`], the end of the stream). `None` for encoding and I/O errors.
    /// For operators: "the partner's byte 4711 was not a start block" is what they can look up
    /// in a capture, and it carries no message content.
    pub fn offset(&self) -> Option<u64> {
        match self {
            FrameError::UnexpectedByte { offset, .. }
            | FrameError::StartInFrame { offset }
            | FrameError::BadEndBlock { offset, .. }
            | FrameError::TooLarge { offset, .. }
            | FrameError::Truncated { offset, .. } => Some(*offset),
            FrameError::ReservedByte { .. } | FrameError::Io(_) => None,
        }
    }
}

/// What the decoder does with bytes that are not part of a well-formed frame.
///
/// See the [module documentation](self) for the full table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FramingPolicy {
    /// Any byte outside a frame, a start block inside a payload, or an end block not followed by
    /// a carriage return is an error, which closes the connection. The default: a partner whose
    /// framing is broken is noticed at once rather than silently losing messages.
    #[default]
    Strict,
    /// Discard bytes up to the next start block, counting them (see
    /// [`MllpCodec::skipped_bytes`]); an unfinished frame interrupted by a start block or ended by
    /// a bad end block is discarded too. For senders that pad frames with CR/LF or resend after a
    /// broken frame.
    SkipToNextStart,
}

/// The framer's settings, for code that stores them apart from a codec (a server builder).
///
/// Build one with [`FrameConfig::default`] and assign the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameConfig {
    /// The largest payload accepted, in bytes, and the most bytes discarded between two frames
    /// under [`FramingPolicy::SkipToNextStart`]. Default is 10 MiB
    /// ([`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub max_message_size: usize,
    /// What to do with bytes outside a well-formed frame. Default is [`FramingPolicy::Strict`].
    pub framing: FramingPolicy,
}

impl Default for FrameConfig {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            framing: FramingPolicy::Strict,
        }
    }
}

/// Where the decoder is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: the next byte should be a start block.
    Outside,
    /// A start block was seen and removed from the buffer; the buffer starts with the payload.
    /// `scanned` payload bytes are known to be neither `0x0B` nor `0x1C`.
    InFrame { scanned: usize },
}

/// A [`Decoder`] and [`Encoder`] for MLLP blocks (`0x0B payload 0x1C 0x0D`).
///
/// One codec serves one connection: it keeps the state of the frame in progress.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use mllp::frame::{FramingPolicy, MllpCodec};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = MllpCodec::with_max_message_size(1024).framing(FramingPolicy::Strict);
/// let mut wire = BytesMut::new();
/// codec.encode(Bytes::from_static(b"MSH|^~\\&|A|B\r"), &mut wire)?;
/// assert_eq!(&wire[..], b"\x0bMSH|^~\\&|A|B\r\x1c\r");
///
/// let payload = codec.decode(&mut wire)?.expect("one whole frame");
/// assert_eq!(&payload[..], b"MSH|^~\\&|A|B\r");
/// assert!(wire.is_empty());
/// # Ok::<(), mllp::frame::FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MllpCodec {
    config: FrameConfig,
    state: State,
    /// Bytes discarded over the codec's life (reported).
    skipped: u64,
    /// Bytes discarded since the last delivered frame (bounded by the limit).
    discard_run: usize,
    /// The stream offset of the first byte of the buffer: every byte the decoder removed from
    /// its buffers so far. Errors report their offsets from it.
    position: u64,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl MllpCodec {
    /// A codec with the default settings: `max_message_size` 10 MiB, [`FramingPolicy::Strict`].
    pub fn new() -> Self {
        Self::from_config(FrameConfig::default())
    }

    /// A codec with the given `max_message_size` (bytes of payload) and the default policy.
    ///
    /// The limit also bounds the bytes discarded between frames under
    /// [`FramingPolicy::SkipToNextStart`]. A limit of 0 accepts only empty payloads.
    pub fn with_max_message_size(max_message_size: usize) -> Self {
        Self::from_config(FrameConfig {
            max_message_size,
            ..FrameConfig::default()
        })
    }

    /// A codec with the given settings.
    pub fn from_config(config: FrameConfig) -> Self {
        Self {
            config,
            state: State::Outside,
            skipped: 0,
            discard_run: 0,
            position: 0,
        }
    }

    /// Sets the framing policy. Default is [`FramingPolicy::Strict`].
    #[must_use]
    pub fn framing(mut self, policy: FramingPolicy) -> Self {
        self.config.framing = policy;
        self
    }

    /// The codec's settings.
    pub fn config(&self) -> FrameConfig {
        self.config
    }

    /// Whether a frame is in progress: a start block has been seen and its end block not yet.
    ///
    /// The runtime uses this for the frame timeout (start block to end block).
    pub fn in_frame(&self) -> bool {
        matches!(self.state, State::InFrame { .. })
    }

    /// How many bytes the decoder has discarded so far under
    /// [`FramingPolicy::SkipToNextStart`]: bytes outside frames and the bytes of abandoned
    /// frames, including their framing bytes. Cumulative over the codec's life; always 0 under
    /// [`FramingPolicy::Strict`].
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Records `n` discarded bytes, failing once more than the limit has been discarded since
    /// the last delivered frame.
    fn discard(&mut self, n: usize) -> Result<(), FrameError> {
        self.skipped = self.skipped.saturating_add(n as u64);
        self.discard_run = self.discard_run.saturating_add(n);
        if self.discard_run > self.config.max_message_size {
            return Err(FrameError::TooLarge {
                limit: self.config.max_message_size,
                offset: self.position,
            });
        }
        Ok(())
    }

    /// Outside a frame: find the next start block, or fail, or discard what cannot be one.
    /// Returns `Ok(true)` when a frame has started, `Ok(false)` when more bytes are needed.
    fn seek_start(&mut self, buf: &mut BytesMut) -> Result<bool, FrameError> {
        let Some(&first) = buf.first() else {
            return Ok(false);
        };
        match self.config.framing {
            FramingPolicy::Strict => {
                if first != START_BLOCK {
                    return Err(FrameError::UnexpectedByte {
                        byte: first,
                        offset: self.position,
                    });
                }
                self.consume(buf, 1);
            }
            FramingPolicy::SkipToNextStart => match memchr::memchr(START_BLOCK, buf) {
                Some(at) => {
                    self.consume(buf, at + 1);
                    self.discard(at)?;
                }
                None => {
                    let n = buf.len();
                    self.consume(buf, n);
                    self.discard(n)?;
                    return Ok(false);
                }
            },
        }
        self.state = State::InFrame { scanned: 0 };
        Ok(true)
    }

    /// Removes `n` bytes from the front of the buffer, keeping the stream position.
    fn consume(&mut self, buf: &mut BytesMut, n: usize) {
        buf.advance(n);
        self.position += n as u64;
    }
}

impl Decoder for MllpCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let limit = self.config.max_message_size;
        loop {
            let scanned = match self.state {
                State::Outside => {
                    if !self.seek_start(buf)? {
                        return Ok(None);
                    }
                    continue;
                }
                State::InFrame { scanned } => scanned,
            };

            // The buffer starts with the payload. Only the first `limit + 1` bytes can matter:
            // a reserved byte at index `limit` still ends a payload of exactly `limit` bytes;
            // any other byte there makes the payload one too long.
            let window = buf.len().min(limit.saturating_add(1));
            let found = buf
                .get(scanned..window)
                .and_then(|rest| memchr::memchr2(START_BLOCK, END_BLOCK, rest))
                .map(|i| scanned + i);
            let Some(at) = found else {
                if buf.len() > limit {
                    return Err(FrameError::TooLarge {
                        limit,
                        offset: self.position + limit as u64,
                    });
                }
                self.state = State::InFrame { scanned: buf.len() };
                return Ok(None);
            };

            if buf[at] == START_BLOCK {
                match self.config.framing {
                    FramingPolicy::Strict => {
                        return Err(FrameError::StartInFrame {
                            offset: self.position + at as u64,
                        });
                    }
                    FramingPolicy::SkipToNextStart => {
                        // The abandoned frame: its start block and payload. The new start block
                        // opens the next frame.
                        self.consume(buf, at + 1);
                        self.state = State::InFrame { scanned: 0 };
                        self.discard(1 + at)?;
                        continue;
                    }
                }
            }

            // An end block: a frame ends only if a carriage return follows.
            match buf.get(at + 1) {
                None => {
                    // Keep the `0x1C`; look at it again when the next byte arrives.
                    self.state = State::InFrame { scanned: at };
                    return Ok(None);
                }
                Some(&CARRIAGE_RETURN) => {
                    let payload = buf.split_to(at).freeze();
                    buf.advance(2);
                    self.position += at as u64 + 2;
                    self.state = State::Outside;
                    self.discard_run = 0;
                    return Ok(Some(payload));
                }
                Some(&byte) => match self.config.framing {
                    FramingPolicy::Strict => {
                        return Err(FrameError::BadEndBlock {
                            byte,
                            offset: self.position + at as u64 + 1,
                        });
                    }
                    FramingPolicy::SkipToNextStart => {
                        // Abandon the frame up to and including the `0x1C`; the byte after it is
                        // read as outside a frame (it may be the next start block).
                        self.consume(buf, at + 1);
                        self.state = State::Outside;
                        self.discard(1 + at + 1)?;
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if let Some(payload) = self.decode(buf)? {
            return Ok(Some(payload));
        }
        // `decode` leaves nothing outside a frame: Strict fails on it, SkipToNextStart discards
        // it. What remains is an unfinished frame.
        match self.state {
            State::Outside => Ok(None),
            State::InFrame { .. } => Err(FrameError::Truncated {
                buffered: buf.len(),
                offset: self.position + buf.len() as u64,
            }),
        }
    }
}

impl MllpCodec {
    /// Frames a borrowed `payload` into `dst` (`0x0B payload 0x1C 0x0D`), as the
    /// `Encoder<Bytes>` implementation does.
    ///
    /// There is deliberately one `Encoder` implementation: with a second one, `Framed::flush()`
    /// and `close()` could not infer which to use.
    ///
    /// # Errors
    ///
    /// [`FrameError::ReservedByte`] if the payload contains `0x0B` or `0x1C`; nothing is
    /// written then.
    pub fn encode_slice(payload: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        if let Some(offset) = memchr::memchr2(START_BLOCK, END_BLOCK, payload) {
            return Err(FrameError::ReservedByte {
                byte: payload[offset],
                offset,
            });
        }
        dst.reserve(payload.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.extend_from_slice(payload);
        dst.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        Ok(())
    }
}

/// Writes `0x0B payload 0x1C 0x0D`.
///
/// # Errors
///
/// [`FrameError::ReservedByte`] if the payload contains `0x0B` or `0x1C`, which no MLLP receiver
/// could frame correctly; nothing is written then. The encoder does not apply
/// `max_message_size`, which is a limit on what this side accepts.
impl Encoder<Bytes> for MllpCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        Self::encode_slice(&payload, dst)
    }
}

#[cfg(test)]
mod tests;

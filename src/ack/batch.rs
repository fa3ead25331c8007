//! Batch acknowledgments (HL7 v2.5 §2.10.3): the answer to a batch is a batch of ACKs, and a
//! malformed envelope is one AR.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::clock::{timestamp, write_control_id};
use super::{Ack, AckCode, AckOptions, Diagnostic};
use crate::hl7::{Batch, Delimiters, Message, escape};

/// How bad a code is: a batch is answered with its worst.
fn rank(code: AckCode) -> u8 {
    match code {
        AckCode::AA | AckCode::CA => 0,
        AckCode::AE | AckCode::CE => 1,
        _ => 2,
    }
}

/// The encoding characters of `d` (MSH-2 / BHS-2).
fn encoding_characters(d: &Delimiters) -> Vec<u8> {
    let mut out = vec![d.component(), d.repetition(), d.escape(), d.subcomponent()];
    out.extend(d.truncation());
    out
}

/// Writes an answering header segment (`FHS` or `BHS`): sender and receiver swapped (or the
/// sender overridden in `options`), now, a new control id in field 11 and the incoming one in
/// field 12 (reference control ID).
fn header(
    out: &mut BytesMut,
    id: &[u8],
    d: &Delimiters,
    incoming: impl Fn(usize) -> Vec<u8>,
    options: &AckOptions,
) {
    let fs = d.field();
    let over = |value: &Option<String>, fallback: usize| match value {
        Some(text) => text
            .split('^')
            .map(|part| escape(part.as_bytes(), d).into_owned())
            .collect::<Vec<_>>()
            .join(&[d.component()][..]),
        None => incoming(fallback),
    };
    out.extend_from_slice(id);
    out.extend_from_slice(&[fs]);
    out.extend_from_slice(&encoding_characters(d));
    for value in [
        over(&options.sending_application, 5),
        over(&options.sending_facility, 6),
        incoming(3),
        incoming(4),
    ] {
        out.extend_from_slice(&[fs]);
        out.extend_from_slice(&value);
    }
    out.extend_from_slice(&[fs]);
    let stamp = timestamp(SystemTime::now());
    out.extend_from_slice(stamp.for_delimiters(d).as_bytes());
    // fields 8 (security), 9 (name/ID/type), 10 (comment) empty
    out.extend_from_slice(&[fs; 4]);
    let prefix = escape(options.control_id_prefix.as_bytes(), d);
    write_control_id(&prefix, out);
    out.extend_from_slice(&[fs]);
    out.extend_from_slice(&incoming(11));
    out.extend_from_slice(b"\r");
}

impl Ack {
    /// The acknowledgment of a batch (HL7 v2.5 §2.10.3): for each BHS … BTS group of `batch`,
    /// a BHS answering it (sender and receiver swapped, a new BHS-11, BHS-12 = its BHS-11),
    /// the ACKs of its messages in order (`acks[i]` for group `i`; a message that got no ACK,
    /// by its MSH-15, has none), and a BTS whose BTS-1 counts them; with an FHS and FTS
    /// around them when the batch had an FHS (FHS-12 = its FHS-11, FTS-1 = the number of
    /// groups). The envelope uses the batch's delimiters.
    ///
    /// [`Ack::code`] is the worst code of the ACKs (AR/CR over AE/CE over AA/CA; AA for an
    /// empty batch), and [`Ack::message`] the first ACK (an AA to the first header for an
    /// empty batch): the whole reply is [`Ack::as_bytes`].
    ///
    /// # Panics
    /// When `acks` has fewer entries than the batch has groups (a caller's bug).
    pub fn batch(batch: &Batch, acks: &[Vec<Ack>], options: &AckOptions) -> Ack {
        let d = *batch.delimiters();
        let mut out = BytesMut::with_capacity(
            256 + acks
                .iter()
                .flatten()
                .map(|a| a.as_bytes().len())
                .sum::<usize>(),
        );
        let file = batch.file_header();
        if let Some(fhs) = file {
            let field = |n| crate::hl7::batch_header_field(fhs, d.field(), n).to_vec();
            header(&mut out, b"FHS", &d, field, options);
        }
        for (group, acks) in batch.groups().iter().zip(acks) {
            let gd = *group.delimiters();
            header(
                &mut out,
                b"BHS",
                &gd,
                |n| group.header_field(n).to_vec(),
                options,
            );
            for ack in acks {
                out.extend_from_slice(ack.as_bytes());
                if !ack.as_bytes().ends_with(b"\r") {
                    out.extend_from_slice(b"\r");
                }
            }
            out.extend_from_slice(b"BTS");
            out.extend_from_slice(&[gd.field()]);
            out.extend_from_slice(acks.len().to_string().as_bytes());
            out.extend_from_slice(b"\r");
        }
        assert!(
            acks.len() >= batch.groups().len(),
            "one list of ACKs per group"
        );
        if file.is_some() {
            out.extend_from_slice(b"FTS");
            out.extend_from_slice(&[d.field()]);
            out.extend_from_slice(batch.groups().len().to_string().as_bytes());
            out.extend_from_slice(b"\r");
        }
        let all = || acks.iter().flatten();
        let code = all()
            .map(Ack::code)
            .max_by_key(|&c| rank(c))
            .unwrap_or(AckCode::AA);
        let first = all()
            .next()
            .map(|a| a.message().clone())
            .unwrap_or_else(|| {
                Ack::reject_batch(batch.as_bytes(), AckCode::AA, &[], options).into_message()
            });
        Ack::from_batch(code, out.freeze(), first)
    }

    /// One acknowledgment for a whole batch: `code` (AR for a malformed envelope, AE when the
    /// batch could not be handled) with `diagnostics`, built as [`Ack::build`] would answer an
    /// MSH made from the first header segment: its delimiters, FHS/BHS-3..6 as MSH-3..6, and
    /// MSA-2 = its control ID (FHS-11 or BHS-11), the version and processing ID of the first
    /// message (2.5 and P without one). Bytes with no readable header get
    /// [`Ack::reject_unparseable`]'s answer.
    pub fn reject_batch(
        raw: &[u8],
        code: AckCode,
        diagnostics: &[Diagnostic],
        options: &AckOptions,
    ) -> Ack {
        match synthetic_msh(raw) {
            Some(msh) => Ack::build(&msh, code, diagnostics, options),
            None => {
                let fallback = Diagnostic::error(
                    super::ErrorCode::SegmentSequenceError,
                    "unreadable batch header",
                );
                let diagnostic = diagnostics.first().unwrap_or(&fallback);
                let ack = Ack::reject_unparseable(b"", diagnostic, options);
                if code == AckCode::AA {
                    ack
                } else {
                    ack.with_code(code)
                }
            }
        }
    }

    /// Whether this is a batch acknowledgment ([`Ack::batch`]): its bytes start with FHS or BHS.
    pub fn is_batch(&self) -> bool {
        crate::hl7::is_batch(self.as_bytes())
    }
}

/// An MSH standing for the first header segment of `raw`, for [`Ack::reject_batch`].
fn synthetic_msh(raw: &[u8]) -> Option<Message> {
    let start = raw.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let rest = &raw[start..];
    let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
    let head = &rest[..end];
    if !(head.starts_with(b"FHS") || head.starts_with(b"BHS")) || head.len() < 8 {
        return None;
    }
    let fs = head[3];
    let enc_len = head[4..]
        .iter()
        .position(|&b| b == fs)
        .unwrap_or(head.len() - 4);
    let d = Delimiters::new(fs, &head[4..4 + enc_len]).ok()?;
    let field = |n| crate::hl7::batch_header_field(head, fs, n);
    // The first message's version and processing id, when one parses far enough.
    let first_msh = memchr::memmem::find(raw, b"MSH").and_then(|at| {
        let line = &raw[at..];
        let line = &line[..memchr::memchr2(b'\r', b'\n', line).unwrap_or(line.len())];
        Message::parse(Bytes::copy_from_slice(line)).ok()
    });
    let version = first_msh
        .as_ref()
        .and_then(|m| m.version().map(str::to_owned))
        .unwrap_or_else(|| "2.5".to_owned());
    let processing = first_msh
        .as_ref()
        .and_then(|m| m.processing_id().map(str::to_owned))
        .unwrap_or_else(|| "P".to_owned());
    let mut msh = Vec::with_capacity(head.len() + 32);
    msh.extend_from_slice(b"MSH");
    msh.push(fs);
    msh.extend_from_slice(&encoding_characters(&d));
    for n in 3..=6 {
        msh.push(fs);
        msh.extend_from_slice(field(n));
    }
    msh.extend_from_slice(&[fs; 4]);
    msh.extend_from_slice(field(11));
    msh.push(fs);
    msh.extend_from_slice(processing.as_bytes());
    msh.push(fs);
    msh.extend_from_slice(version.as_bytes());
    msh.push(b'\r');
    Message::parse(Bytes::from(msh)).ok()
}

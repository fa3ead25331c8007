use super::*;
use proptest::prelude::*;

/// Synthetic HL7-looking payloads (no real patient data), segments ended by CR.
const ADT_A01: &[u8] =
    b"MSH|^~\\&|ADMIT|WARD|RECV|HOSP|20260101120000||ADT^A01^ADT_A01|MSG00001|P|2.5.1\r\
EVN|A01|20260101120000\r\
PID|1||123456^^^HOSP^MR||DOE^JANE^Q||19700101|F\r\
PV1|1|I|W^101^1\r";
const ORU_R01: &[u8] = b"MSH|^~\\&|LAB|LAB|EHR|HOSP|20260101120500||ORU^R01|LAB77|P|2.3\r\
PID|1||999^^^LAB||ROE^RICHARD\r\
OBR|1||5555|CBC\r\
OBX|1|NM|HGB||13.2|g/dL\r\
OBX|2|NM|WBC||6.1|10*9/L\r\
OBX|3|ST|NOTE||caf\xe9 \xc3\xa9t\xc3\xa9\r";
const ACK: &[u8] =
    b"MSH|^~\\&|RECV|HOSP|ADMIT|WARD|20260101120001||ACK^A01^ACK|ACK1|P|2.5.1\rMSA|AA|MSG00001\r";

fn fixtures() -> [&'static [u8]; 4] {
    [ADT_A01, ORU_R01, ACK, b""]
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = vec![START_BLOCK];
    wire.extend_from_slice(payload);
    wire.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    wire
}

fn skip_codec(limit: usize) -> MllpCodec {
    MllpCodec::with_max_message_size(limit).framing(FramingPolicy::SkipToNextStart)
}

/// Everything a decoder produced from a stream: the frames, then the error that stopped it.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Bytes>,
    error: Option<&'static str>,
}

fn kind(error: &FrameError) -> &'static str {
    match error {
        FrameError::UnexpectedByte { .. } => "unexpected",
        FrameError::StartInFrame { .. } => "start-in-frame",
        FrameError::BadEndBlock { .. } => "bad-end",
        FrameError::TooLarge { .. } => "too-large",
        FrameError::Truncated { .. } => "truncated",
        FrameError::ReservedByte { .. } => "reserved",
        FrameError::Io(_) => "io",
    }
}

/// Feeds `chunks` one read at a time (as `FramedRead` does: decode until `None` after each
/// read, then `decode_eof` at the end), checking the memory bound after every read.
fn run(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Outcome {
    let limit = codec.config().max_message_size;
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(kind(&e)),
                    };
                }
            }
        }
        assert!(
            buf.len() <= limit.saturating_add(1),
            "holds {} bytes, limit {limit}",
            buf.len()
        );
        assert!(buf.len() <= limit.saturating_add(chunk.len()));
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break,
            Err(e) => {
                return Outcome {
                    frames,
                    error: Some(kind(&e)),
                };
            }
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

fn ok(frames: &[&[u8]]) -> Outcome {
    Outcome {
        frames: frames.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
        error: None,
    }
}

fn failed(frames: &[&[u8]], error: &'static str) -> Outcome {
    Outcome {
        error: Some(error),
        ..ok(frames)
    }
}

fn both_policies() -> [MllpCodec; 2] {
    [
        MllpCodec::new(),
        MllpCodec::new().framing(FramingPolicy::SkipToNextStart),
    ]
}

// ===== splits and pipelining =====

/// Every fixture, cut once at every byte boundary, decodes to exactly its payload.
#[test]
fn decodes_each_fixture_split_at_every_byte() {
    for payload in fixtures() {
        let wire = frame(payload);
        for cut in 0..=wire.len() {
            for codec in &mut both_policies() {
                let out = run(codec, &[&wire[..cut], &wire[cut..]]);
                assert_eq!(out, ok(&[payload]), "cut at {cut}");
                assert!(!codec.in_frame());
                assert_eq!(codec.skipped_bytes(), 0);
            }
        }
    }
}

/// A fixture cut at every pair of boundaries (three reads) decodes to exactly its payload.
#[test]
fn decodes_fixture_split_at_every_pair_of_byte_boundaries() {
    let wire = frame(ACK);
    for a in 0..=wire.len() {
        for b in a..=wire.len() {
            let out = run(
                &mut MllpCodec::new(),
                &[&wire[..a], &wire[a..b], &wire[b..]],
            );
            assert_eq!(out, ok(&[ACK]), "cuts at {a} and {b}");
        }
    }
}

/// A frame delivered one byte per read is one frame, yielded only when its CR arrives.
#[test]
fn decodes_frame_delivered_one_byte_per_read() {
    let wire = frame(ORU_R01);
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let got = codec.decode(&mut buf).unwrap();
        if i + 1 < wire.len() {
            assert!(got.is_none(), "frame yielded early at byte {i}");
            assert!(codec.in_frame());
        } else {
            assert_eq!(got.as_deref(), Some(ORU_R01));
        }
    }
    assert!(buf.is_empty());
}

/// Scanning resumes where the previous read stopped, so byte-by-byte delivery is O(n).
#[test]
fn scan_offset_advances_with_each_read() {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&[START_BLOCK][..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    for n in 1..=100 {
        buf.extend_from_slice(b"A");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(codec.state, State::InFrame { scanned: n });
    }
    buf.extend_from_slice(&[END_BLOCK]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert_eq!(codec.state, State::InFrame { scanned: 100 });
    buf.extend_from_slice(&[CARRIAGE_RETURN]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 100);
}

/// The 0x1C and the 0x0D arriving in separate reads still end the frame.
#[test]
fn end_block_and_carriage_return_in_separate_reads_end_the_frame() {
    for codec in &mut both_policies() {
        let mut wire = vec![START_BLOCK];
        wire.extend_from_slice(ACK);
        wire.push(END_BLOCK);
        let out = run(codec, &[&wire, &[CARRIAGE_RETURN]]);
        assert_eq!(out, ok(&[ACK]));
    }
}

/// Several frames in one read are yielded one by one, in order.
#[test]
fn pipelined_frames_in_one_read_decode_in_order() {
    let wire: Vec<u8> = fixtures().iter().flat_map(|p| frame(p)).collect();
    for codec in &mut both_policies() {
        assert_eq!(run(codec, &[&wire]), ok(&fixtures()));
    }
}

/// Pipelined frames cut at every byte boundary decode to the same frames in order.
#[test]
fn pipelined_frames_split_at_every_byte_decode_in_order() {
    let wire: Vec<u8> = fixtures().iter().flat_map(|p| frame(p)).collect();
    for cut in 0..=wire.len() {
        for codec in &mut both_policies() {
            let out = run(codec, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(out, ok(&fixtures()), "cut at {cut}");
        }
    }
}

/// Two frames back to back are two messages, never merged (simple-hl7 #51).
#[test]
fn back_to_back_frames_are_two_messages() {
    let mut wire = frame(b"MSH|1\r");
    wire.extend(frame(b"MSH|2\r"));
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap().as_deref(),
        Some(&b"MSH|1\r"[..])
    );
    assert!(!codec.in_frame());
    assert_eq!(
        codec.decode(&mut buf).unwrap().as_deref(),
        Some(&b"MSH|2\r"[..])
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
}

/// An empty block is a frame with an empty payload.
#[test]
fn empty_block_is_a_frame_with_empty_payload() {
    let out = run(
        &mut MllpCodec::new(),
        &[&[START_BLOCK, END_BLOCK, CARRIAGE_RETURN]],
    );
    assert_eq!(out, ok(&[b""]));
}

/// The payload is split off the read buffer, not copied.
#[test]
fn decoded_payload_shares_the_read_buffer() {
    let mut buf = BytesMut::from(&frame(ADT_A01)[..]);
    let start = buf.as_ptr();
    let payload = MllpCodec::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(payload.as_ptr(), start.wrapping_add(1));
}

/// `in_frame` is true from the start block until the end block's CR.
#[test]
fn in_frame_tracks_start_and_end_of_block() {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::new();
    assert!(!codec.in_frame());
    buf.extend_from_slice(&[START_BLOCK]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(codec.in_frame());
    buf.extend_from_slice(b"MSH|\r");
    buf.extend_from_slice(&[END_BLOCK]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(codec.in_frame());
    buf.extend_from_slice(&[CARRIAGE_RETURN]);
    assert!(codec.decode(&mut buf).unwrap().is_some());
    assert!(!codec.in_frame());
}

// ===== bytes outside frames, reserved bytes inside =====

/// Under Strict, a byte before the first start block is an error.
#[test]
fn strict_rejects_byte_before_first_frame() {
    let mut wire = b"X".to_vec();
    wire.extend(frame(ACK));
    let mut codec = MllpCodec::new();
    assert!(matches!(
        codec.decode(&mut BytesMut::from(&wire[..])),
        Err(FrameError::UnexpectedByte {
            byte: b'X',
            offset: 0
        })
    ));
}

/// A connection whose first byte opens a TLS record gets an error that says so (a TLS client
/// on a plain listener, or a plain client reaching a TLS listener's alert); the same byte
/// elsewhere, or any other first byte, is described plainly.
#[test]
fn a_first_byte_that_opens_a_tls_record_is_named() {
    let first = |wire: &[u8]| {
        MllpCodec::new()
            .decode(&mut BytesMut::from(wire))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        first(b"\x16\x03\x01\x02\x00"),
        "unexpected byte 0x16 outside an mllp frame (0x16 opens a TLS handshake: is a TLS client \
         talking to a plain listener?)"
    );
    assert!(first(b"\x15\x03\x03\x00\x02").contains("TLS alert"));
    assert_eq!(
        first(b"GET / HTTP/1.1"),
        "unexpected byte 0x47 outside an mllp frame"
    );
    let mut later = frame(ACK);
    later.push(0x16);
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&later[..]);
    assert!(codec.decode(&mut buf).unwrap().is_some());
    let error = codec.decode(&mut buf).unwrap_err().to_string();
    assert!(!error.contains("TLS"), "{error}");
}

/// Under Strict, CR/LF padding between frames is an error once the first frame was yielded.
#[test]
fn strict_rejects_padding_between_frames() {
    let mut wire = frame(ACK);
    wire.extend_from_slice(b"\n");
    wire.extend(frame(ADT_A01));
    assert_eq!(
        run(&mut MllpCodec::new(), &[&wire]),
        failed(&[ACK], "unexpected")
    );
}

/// Under SkipToNextStart, bytes before and between frames are discarded and counted.
#[test]
fn skip_discards_and_counts_bytes_outside_frames() {
    let mut wire = b"garbage\r\n".to_vec();
    wire.extend(frame(ACK));
    wire.extend_from_slice(b"\r\n");
    wire.extend(frame(ADT_A01));
    wire.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN, b'z']);
    for cut in 0..=wire.len() {
        let mut codec = skip_codec(DEFAULT_MAX_MESSAGE_SIZE);
        let out = run(&mut codec, &[&wire[..cut], &wire[cut..]]);
        assert_eq!(out, ok(&[ACK, ADT_A01]), "cut at {cut}");
        assert_eq!(codec.skipped_bytes(), 9 + 2 + 3, "cut at {cut}");
    }
}

/// Under Strict, a start block inside a payload is an error.
#[test]
fn strict_rejects_start_block_inside_payload() {
    let mut wire = vec![START_BLOCK];
    wire.extend_from_slice(b"MSH|lost end");
    wire.extend(frame(ACK));
    assert_eq!(
        run(&mut MllpCodec::new(), &[&wire]),
        failed(&[], "start-in-frame")
    );
}

/// Under SkipToNextStart, a start block inside a payload abandons the unfinished frame and
/// starts a new one.
#[test]
fn skip_restarts_frame_at_start_block_inside_payload() {
    let mut wire = vec![START_BLOCK];
    wire.extend_from_slice(b"MSH|lost end");
    wire.extend(frame(ACK));
    for cut in 0..=wire.len() {
        let mut codec = skip_codec(DEFAULT_MAX_MESSAGE_SIZE);
        let out = run(&mut codec, &[&wire[..cut], &wire[cut..]]);
        assert_eq!(out, ok(&[ACK]), "cut at {cut}");
        assert_eq!(codec.skipped_bytes(), 1 + 12, "cut at {cut}");
    }
}

/// Under Strict, an end block followed by something other than CR is an error, never payload.
#[test]
fn strict_rejects_end_block_not_followed_by_cr() {
    let mut wire = vec![START_BLOCK];
    wire.extend_from_slice(b"MSH|a");
    wire.extend_from_slice(&[END_BLOCK, b'b', END_BLOCK, CARRIAGE_RETURN]);
    let mut codec = MllpCodec::new();
    assert!(matches!(
        codec.decode(&mut BytesMut::from(&wire[..])),
        Err(FrameError::BadEndBlock {
            byte: b'b',
            offset: 7
        })
    ));
}

/// An end block followed by LF (a CR/LF confusion) is not an end of block either.
#[test]
fn strict_rejects_end_block_followed_by_line_feed() {
    let mut wire = vec![START_BLOCK];
    wire.extend_from_slice(ACK);
    wire.extend_from_slice(&[END_BLOCK, b'\n']);
    assert_eq!(run(&mut MllpCodec::new(), &[&wire]), failed(&[], "bad-end"));
}

/// Under SkipToNextStart, a frame with a bad end block is discarded with its 0x1C; the byte
/// after it is read as outside a frame.
#[test]
fn skip_discards_frame_with_bad_end_block() {
    let mut wire = vec![START_BLOCK];
    wire.extend_from_slice(b"MSH|a");
    wire.extend_from_slice(&[END_BLOCK, b'b', END_BLOCK, CARRIAGE_RETURN]);
    wire.extend(frame(ACK));
    for cut in 0..=wire.len() {
        let mut codec = skip_codec(DEFAULT_MAX_MESSAGE_SIZE);
        let out = run(&mut codec, &[&wire[..cut], &wire[cut..]]);
        assert_eq!(out, ok(&[ACK]), "cut at {cut}");
        // 0x0B "MSH|a" 0x1C, then "b" 0x1C 0x0D outside a frame.
        assert_eq!(codec.skipped_bytes(), 7 + 3, "cut at {cut}");
    }
}

/// Under SkipToNextStart, an end block directly followed by a start block abandons the first
/// frame and the start block opens the next one.
#[test]
fn skip_bad_end_block_followed_by_start_block_opens_next_frame() {
    let mut wire = vec![START_BLOCK];
    wire.extend_from_slice(b"MSH|a");
    wire.push(END_BLOCK);
    wire.extend(frame(ACK));
    let mut codec = skip_codec(DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(run(&mut codec, &[&wire]), ok(&[ACK]));
    assert_eq!(codec.skipped_bytes(), 7);
}

/// A CR that is not preceded by an end block is ordinary payload (the segment terminator).
#[test]
fn carriage_returns_inside_payload_are_payload() {
    let payload = b"\rMSH|\r\r\rPID|\r";
    assert_eq!(
        run(&mut MllpCodec::new(), &[&frame(payload)]),
        ok(&[payload])
    );
}

// ===== limits =====

/// A payload of exactly `max_message_size` bytes is accepted, in one read or split anywhere.
#[test]
fn payload_exactly_at_limit_is_accepted() {
    let payload = vec![b'A'; 64];
    let wire = frame(&payload);
    for cut in 0..=wire.len() {
        for policy in [FramingPolicy::Strict, FramingPolicy::SkipToNextStart] {
            let mut codec = MllpCodec::with_max_message_size(64).framing(policy);
            let out = run(&mut codec, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(out, ok(&[&payload]), "cut at {cut}");
        }
    }
}

/// A payload one byte past `max_message_size` is rejected with `TooLarge`.
#[test]
fn payload_one_past_limit_is_rejected() {
    let wire = frame(&[b'A'; 65]);
    for cut in 0..=wire.len() {
        for policy in [FramingPolicy::Strict, FramingPolicy::SkipToNextStart] {
            let mut codec = MllpCodec::with_max_message_size(64).framing(policy);
            let out = run(&mut codec, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(out, failed(&[], "too-large"), "cut at {cut}");
        }
    }
    let err = MllpCodec::with_max_message_size(64)
        .decode(&mut BytesMut::from(&wire[..]))
        .unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { limit: 64, .. }));
}

/// An oversized payload fails as soon as it passes the limit, before any end block arrives.
#[test]
fn oversized_payload_is_rejected_before_end_block_arrives() {
    let mut codec = MllpCodec::with_max_message_size(64);
    let mut buf = BytesMut::from(&[START_BLOCK][..]);
    buf.extend_from_slice(&[b'A'; 64]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"A");
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLarge {
            limit: 64,
            offset: 65
        })
    ));
}

/// A payload at the limit whose 0x1C waits for its CR holds exactly limit + 1 bytes.
#[test]
fn payload_at_limit_with_pending_end_block_holds_limit_plus_one() {
    let mut codec = MllpCodec::with_max_message_size(64);
    let mut buf = BytesMut::from(&[START_BLOCK][..]);
    buf.extend_from_slice(&[b'A'; 64]);
    buf.extend_from_slice(&[END_BLOCK]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert_eq!(buf.len(), 65);
    buf.extend_from_slice(&[CARRIAGE_RETURN]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 64);
}

/// With a limit of 0 only empty payloads are accepted.
#[test]
fn zero_limit_accepts_only_empty_payloads() {
    let mut codec = MllpCodec::with_max_message_size(0);
    assert_eq!(run(&mut codec, &[&frame(b"")]), ok(&[b""]));
    let mut codec = MllpCodec::with_max_message_size(0);
    assert_eq!(run(&mut codec, &[&frame(b"A")]), failed(&[], "too-large"));
}

/// The largest possible limit does not overflow.
#[test]
fn unbounded_limit_does_not_overflow() {
    let mut codec = MllpCodec::with_max_message_size(usize::MAX);
    assert_eq!(run(&mut codec, &[&frame(ACK)]), ok(&[ACK]));
}

/// Under SkipToNextStart, exactly `max_message_size` discarded bytes before a frame are accepted.
#[test]
fn skip_garbage_exactly_at_limit_is_accepted() {
    let mut wire = vec![b'g'; 64];
    wire.extend(frame(b"MSH|\r"));
    for cut in 0..=wire.len() {
        let mut codec = skip_codec(64);
        let out = run(&mut codec, &[&wire[..cut], &wire[cut..]]);
        assert_eq!(out, ok(&[b"MSH|\r"]), "cut at {cut}");
        assert_eq!(codec.skipped_bytes(), 64);
    }
}

/// Under SkipToNextStart, one discarded byte past `max_message_size` is rejected, even before a
/// start block arrives.
#[test]
fn skip_garbage_one_past_limit_is_rejected() {
    let mut wire = vec![b'g'; 65];
    wire.extend(frame(b"MSH|\r"));
    for cut in 0..=wire.len() {
        let out = run(&mut skip_codec(64), &[&wire[..cut], &wire[cut..]]);
        assert_eq!(out, failed(&[], "too-large"), "cut at {cut}");
    }
    let mut codec = skip_codec(64);
    let mut buf = BytesMut::from(&[b'g'; 65][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLarge { limit: 64, .. })
    ));
}

/// Garbage is discarded from the buffer at once: none of it is held.
#[test]
fn skip_holds_no_garbage() {
    let mut codec = skip_codec(64);
    let mut buf = BytesMut::from(&[b'g'; 40][..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
    assert!(!codec.in_frame());
}

/// The discard budget is per gap between frames: it starts again after each delivered frame.
#[test]
fn skip_discard_budget_resets_after_each_frame() {
    let mut wire = Vec::new();
    for _ in 0..3 {
        wire.extend(vec![b'g'; 64]);
        wire.extend(frame(b"MSH|\r"));
    }
    let mut codec = skip_codec(64);
    assert_eq!(run(&mut codec, &[&wire]), ok(&[&b"MSH|\r"[..]; 3]));
    assert_eq!(codec.skipped_bytes(), 3 * 64);
}

/// Abandoned frames count toward the discard budget: a peer that never completes a frame is
/// stopped after `max_message_size` bytes.
#[test]
fn skip_abandoned_frames_count_toward_discard_budget() {
    // Each start block after the first abandons a one-byte frame (its start block).
    let wire = [START_BLOCK; 66];
    assert_eq!(run(&mut skip_codec(64), &[&wire]), failed(&[], "too-large"));
    assert_eq!(
        run(&mut skip_codec(64), &[&wire[..65]]),
        failed(&[], "truncated")
    );
}

// ===== end of stream =====

/// End of stream after whole frames, or on an empty stream, is a clean end.
#[test]
fn eof_outside_frame_is_clean() {
    for codec in &mut both_policies() {
        assert_eq!(run(codec, &[]), ok(&[]));
    }
    for codec in &mut both_policies() {
        assert_eq!(run(codec, &[&frame(ACK)]), ok(&[ACK]));
    }
}

/// End of stream inside a frame is `Truncated` under both policies, even with a lone 0x1C.
#[test]
fn eof_inside_frame_is_truncated() {
    let wire = frame(ACK);
    for end in 1..wire.len() {
        for codec in &mut both_policies() {
            assert_eq!(
                run(codec, &[&wire[..end]]),
                failed(&[], "truncated"),
                "ends at {end}"
            );
        }
    }
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(FrameError::Truncated { buffered, offset })
            if buffered == ACK.len() + 1 && offset == wire.len() as u64 - 1
    ));
}

/// Under SkipToNextStart, trailing bytes outside a frame at end of stream are discarded and
/// counted; the end is clean.
#[test]
fn eof_with_trailing_garbage_is_clean_under_skip() {
    let mut wire = frame(ACK);
    wire.extend_from_slice(b"\r\n");
    let mut codec = skip_codec(DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(run(&mut codec, &[&wire]), ok(&[ACK]));
    assert_eq!(codec.skipped_bytes(), 2);
}

/// `decode_eof` yields a whole frame still in the buffer.
#[test]
fn eof_yields_last_whole_frame() {
    let mut buf = BytesMut::from(&frame(ACK)[..]);
    let mut codec = MllpCodec::new();
    assert_eq!(codec.decode_eof(&mut buf).unwrap().as_deref(), Some(ACK));
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

// ===== encoder =====

/// The encoder writes 0x0B, the payload, 0x1C 0x0D, appending to what the buffer holds.
#[test]
fn encoder_writes_start_payload_end_and_cr() {
    let mut codec = MllpCodec::new();
    let mut dst = BytesMut::from(&b"prev"[..]);
    codec.encode(Bytes::from_static(ACK), &mut dst).unwrap();
    MllpCodec::encode_slice(&b""[..], &mut dst).unwrap();
    let mut expected = b"prev".to_vec();
    expected.extend(frame(ACK));
    expected.extend(frame(b""));
    assert_eq!(&dst[..], &expected[..]);
}

/// The encoder refuses payloads holding 0x0B or 0x1C and writes nothing.
#[test]
fn encoder_rejects_reserved_bytes() {
    let mut codec = MllpCodec::new();
    let mut dst = BytesMut::new();
    let err = MllpCodec::encode_slice(&b"MSH|\x1c\r"[..], &mut dst).unwrap_err();
    assert!(matches!(
        err,
        FrameError::ReservedByte {
            byte: 0x1c,
            offset: 4
        }
    ));
    let err = codec
        .encode(Bytes::from_static(b"\x0bMSH"), &mut dst)
        .unwrap_err();
    assert!(matches!(
        err,
        FrameError::ReservedByte {
            byte: 0x0b,
            offset: 0
        }
    ));
    assert!(dst.is_empty());
}

// ===== errors =====

/// The runtime's codec error must convert from `io::Error`, keeping it as the source.
#[test]
fn frame_error_wraps_io_error_as_source() {
    let err = FrameError::from(std::io::Error::other("reset"));
    assert_eq!(err.to_string(), "mllp transport failed");
    assert!(std::error::Error::source(&err).is_some());
}

/// Error messages are lowercase with no trailing period.
#[test]
fn error_messages_are_lowercase_without_period() {
    let errors = [
        FrameError::UnexpectedByte {
            byte: 0x41,
            offset: 0,
        },
        FrameError::StartInFrame { offset: 1 },
        FrameError::BadEndBlock {
            byte: 0x0a,
            offset: 2,
        },
        FrameError::TooLarge {
            limit: 10,
            offset: 11,
        },
        FrameError::Truncated {
            buffered: 3,
            offset: 4,
        },
        FrameError::ReservedByte {
            byte: 0x1c,
            offset: 2,
        },
    ];
    for err in errors {
        let text = err.to_string();
        assert!(!text.ends_with('.'), "{text}");
        assert_eq!(text, text.to_lowercase(), "{text}");
    }
}

// ===== properties =====

fn chunked<'a>(wire: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = wire;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        let (head, tail) = rest.split_at(n);
        chunks.push(head);
        rest = tail;
        i += 1;
    }
    chunks
}

fn payload_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("reserved", |b| *b != START_BLOCK && *b != END_BLOCK),
        0..300,
    )
}

/// Bytes with framing bytes over-represented, so that every state is reached often.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<u8>(),
            2 => Just(START_BLOCK),
            2 => Just(END_BLOCK),
            2 => Just(CARRIAGE_RETURN),
        ],
        0..2000,
    )
}

fn policy_strategy() -> impl Strategy<Value = FramingPolicy> {
    prop_oneof![
        Just(FramingPolicy::Strict),
        Just(FramingPolicy::SkipToNextStart)
    ]
}

proptest! {
    /// Payloads without reserved bytes, framed and concatenated, decode to exactly themselves
    /// whatever the chunking, under either policy.
    #[test]
    fn framed_payloads_decode_to_themselves_in_any_chunking(
        payloads in prop::collection::vec(payload_strategy(), 0..8),
        sizes in prop::collection::vec(1usize..64, 1..16),
        policy in policy_strategy(),
    ) {
        let mut wire = BytesMut::new();
        for p in &payloads {
            MllpCodec::encode_slice(&p[..], &mut wire).unwrap();
        }
        let mut codec = MllpCodec::with_max_message_size(300).framing(policy);
        let out = run(&mut codec, &chunked(&wire, &sizes));
        let expected: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(out, ok(&expected));
        prop_assert_eq!(codec.skipped_bytes(), 0);
    }

    /// Arbitrary bytes in arbitrary chunks never panic and never make the decoder hold more
    /// than the limit plus the last read (checked inside `run`), under either policy; and the
    /// outcome does not depend on how the bytes were split.
    #[test]
    fn arbitrary_bytes_are_bounded_and_split_independent(
        wire in hostile_bytes(),
        sizes in prop::collection::vec(1usize..300, 1..16),
        policy in policy_strategy(),
        limit in prop_oneof![Just(256usize), 0usize..64],
    ) {
        let whole = run(&mut MllpCodec::with_max_message_size(limit).framing(policy), &[&wire]);
        let split = run(&mut MllpCodec::with_max_message_size(limit).framing(policy), &chunked(&wire, &sizes));
        prop_assert_eq!(whole, split);
    }

    /// Under SkipToNextStart every input byte is accounted for: delivered payloads and their
    /// framing, discarded bytes, or the unfinished frame still buffered.
    #[test]
    fn skip_accounts_for_every_byte(
        wire in hostile_bytes(),
        sizes in prop::collection::vec(1usize..300, 1..16),
    ) {
        let mut codec = skip_codec(usize::MAX);
        let mut buf = BytesMut::new();
        let mut delivered = 0u64;
        for chunk in chunked(&wire, &sizes) {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                delivered += f.len() as u64 + 3;
            }
        }
        let held = buf.len() as u64 + u64::from(codec.in_frame());
        prop_assert_eq!(delivered + codec.skipped_bytes() + held, wire.len() as u64);
    }

    /// Under SkipToNextStart, frames separated by garbage that holds no start block are all
    /// recovered, in order.
    #[test]
    fn skip_recovers_every_frame_after_garbage(
        items in prop::collection::vec(
            (prop::collection::vec(any::<u8>().prop_filter("start", |b| *b != START_BLOCK), 0..40),
             payload_strategy()),
            0..8),
        sizes in prop::collection::vec(1usize..64, 1..16),
    ) {
        let mut wire = Vec::new();
        for (garbage, payload) in &items {
            wire.extend_from_slice(garbage);
            wire.extend(frame(payload));
        }
        let mut codec = skip_codec(DEFAULT_MAX_MESSAGE_SIZE);
        let out = run(&mut codec, &chunked(&wire, &sizes));
        let expected: Vec<&[u8]> = items.iter().map(|(_, p)| p.as_slice()).collect();
        prop_assert_eq!(out, ok(&expected));
        let garbage: usize = items.iter().map(|(g, _)| g.len()).sum();
        prop_assert_eq!(codec.skipped_bytes(), garbage as u64);
    }
}

/// Every decoding error names the offset of the offending byte in the whole inbound stream,
/// across frames already delivered and however the bytes were split into reads.
#[test]
fn errors_report_their_offset_in_the_stream() {
    let first = frame(ACK);
    let limit = ACK.len() + 8;
    let mut oversize = vec![START_BLOCK];
    oversize.resize(limit + 2, b'A');
    let cases: [(&[u8], u64, &str); 4] = [
        (b"X", 0, "unexpected"),
        (b"\x0bMSH\x0bA", 4, "start-in-frame"),
        (b"\x0bMSH\x1cZ", 5, "bad-end"),
        (&oversize, limit as u64 + 1, "too-large"),
    ];
    for (tail, at, name) in cases {
        let mut wire = first.clone();
        wire.extend_from_slice(tail);
        for cut in 0..=wire.len() {
            let mut codec = MllpCodec::with_max_message_size(limit);
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut error = None;
            let feed = |buf: &mut BytesMut, codec: &mut MllpCodec| loop {
                match codec.decode(buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => return None,
                    Err(e) => return Some(e),
                }
            };
            if let Some(e) = feed(&mut buf, &mut codec) {
                error = Some(e);
            } else {
                buf.extend_from_slice(&wire[cut..]);
                error = error.or_else(|| feed(&mut buf, &mut codec));
            }
            let error = error.unwrap_or_else(|| panic!("{name}: no error at cut {cut}"));
            assert_eq!(kind(&error), name, "cut {cut}");
            assert_eq!(
                error.offset(),
                Some(first.len() as u64 + at),
                "{name}, cut {cut}"
            );
        }
    }
}

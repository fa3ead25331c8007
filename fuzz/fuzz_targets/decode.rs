//! Feeds arbitrary bytes, in arbitrary chunks, to the MLLP decoder under both framing policies.
//!
//! Run with: `cargo +nightly fuzz run decode` (from the repository root).
//!
//! Input layout: byte 0 picks the policy (low bit) and the limit (the rest), byte 1 seeds the
//! chunk sizes, and the remaining bytes are the stream. Checked: no panic, the buffer never
//! holds more than the limit plus the last read, `decode_eof` ends every stream, and a payload
//! never contains a reserved byte.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mllp::frame::{FramingPolicy, MllpCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let [control, seed, stream @ ..] = data else {
        return;
    };
    let policy = if control & 1 == 0 {
        FramingPolicy::Strict
    } else {
        FramingPolicy::SkipToNextStart
    };
    let limit = usize::from(control >> 1) * 4;
    let mut codec = MllpCodec::with_max_message_size(limit).framing(policy);
    let mut buf = BytesMut::new();
    let mut rest = stream;
    let mut state = u32::from(*seed) | 1;
    while !rest.is_empty() {
        // A small xorshift: chunk sizes from 1 to 64, varied but reproducible from the input.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 64 + 1) as usize;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(payload)) => {
                    assert!(payload.len() <= limit);
                    assert!(!payload.contains(&0x0B) && !payload.contains(&0x1C));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= limit + chunk.len());
    }
    while let Ok(Some(_)) = codec.decode_eof(&mut buf) {}
});

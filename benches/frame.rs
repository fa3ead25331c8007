//! Framer throughput: decoding 1 KiB, 8 KiB and 1 MiB frames, against a plain `memchr` scan of
//! the same bytes (the floor no framer can beat: it must at least look at every byte).
//!
//! Run with: `cargo bench --bench frame -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mllp::frame::MllpCodec;
use tokio_util::codec::Decoder;

/// About 1 MiB of pipelined frames of `size` payload bytes each (one frame for 1 MiB).
fn wire(size: usize) -> (BytesMut, usize) {
    let segment = b"OBX|1|ED|PDF^Report||^application^pdf^Base64^JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29kZT4+\r";
    let payload: Vec<u8> = segment.iter().copied().cycle().take(size).collect();
    let frames = (1 << 20) / size;
    let mut wire = BytesMut::new();
    for _ in 0..frames.max(1) {
        MllpCodec::encode_slice(&payload[..], &mut wire).expect("payload has no reserved byte");
    }
    (wire, frames.max(1))
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_decode");
    for (name, size) in [("1KiB", 1 << 10), ("8KiB", 8 << 10), ("1MiB", 1 << 20)] {
        let (wire, frames) = wire(size);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("mllp_codec/{name}"), |b| {
            b.iter_batched_ref(
                || (MllpCodec::new(), wire.clone()),
                |(codec, buf)| {
                    let mut n = 0;
                    while let Some(payload) = codec.decode(buf).expect("valid frames") {
                        black_box(&payload);
                        n += 1;
                    }
                    assert_eq!(n, frames);
                },
                BatchSize::LargeInput,
            );
        });
        group.bench_function(format!("memchr_baseline/{name}"), |b| {
            b.iter(|| {
                let bytes = black_box(&wire[..]);
                let (mut at, mut ends) = (0, 0);
                while let Some(i) = memchr::memchr(0x1C, &bytes[at..]) {
                    at += i + 1;
                    ends += 1;
                }
                assert_eq!(ends, frames);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);

//! Parse and field access of the ADT^A01 and ORU^R01 fixtures, ours against `hl7-parser`.
//!
//! Run with: `cargo bench --bench parse -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mllp::hl7::{FieldPath, Message};

const ADT_A01: &[u8] = include_bytes!("../tests/fixtures/adt_a01.hl7");
const ORU_R01: &[u8] = include_bytes!("../tests/fixtures/oru_r01.hl7");

fn parse(c: &mut Criterion) {
    for (name, raw) in [("adt_a01", ADT_A01), ("oru_r01", ORU_R01)] {
        let mut group = c.benchmark_group(format!("parse/{name}"));
        group.throughput(Throughput::Bytes(raw.len() as u64));
        let bytes = Bytes::from_static(raw);
        group.bench_function("mllp", |b| {
            b.iter(|| Message::parse(black_box(bytes.clone())).unwrap())
        });
        // hl7-parser takes &str; the UTF-8 check is done once, outside the measurement.
        let text = std::str::from_utf8(raw).unwrap();
        group.bench_function("hl7-parser", |b| {
            b.iter(|| hl7_parser::Message::parse(black_box(text)).unwrap())
        });
        group.finish();
    }
}

/// Five lookups on an already parsed ADT: the typical routing and indexing reads.
fn access(c: &mut Criterion) {
    const PATHS: [(&str, &str); 5] = [
        ("MSH-9.2", "MSH.9.2"),
        ("MSH-10", "MSH.10"),
        ("PID-3(2).1", "PID.3[2].1"),
        ("PID-5.1", "PID.5.1"),
        ("OBX(2)-5", "OBX[2].5"),
    ];
    let mut group = c.benchmark_group("access/adt_a01");
    let ours = Message::parse(Bytes::from_static(ADT_A01)).unwrap();
    group.bench_function("mllp", |b| {
        b.iter(|| {
            for (path, _) in PATHS {
                black_box(ours.get(black_box(path)).unwrap().unwrap().as_bytes());
            }
        })
    });
    let compiled: Vec<FieldPath> = PATHS.iter().map(|(p, _)| p.parse().unwrap()).collect();
    group.bench_function("mllp-precompiled", |b| {
        b.iter(|| {
            for path in &compiled {
                black_box(ours.lookup(black_box(path)).unwrap().as_bytes());
            }
        })
    });
    let text = std::str::from_utf8(ADT_A01).unwrap();
    let theirs = hl7_parser::Message::parse(text).unwrap();
    group.bench_function("hl7-parser", |b| {
        b.iter(|| {
            for (_, query) in PATHS {
                black_box(theirs.query(black_box(query)).unwrap().raw_value());
            }
        })
    });
    group.finish();

    // The same answers from both, so the comparison is like for like.
    for (ours_path, their_query) in PATHS {
        assert_eq!(
            ours.get(ours_path).unwrap().unwrap().as_bytes(),
            theirs.query(their_query).unwrap().raw_value().as_bytes(),
            "{ours_path}"
        );
    }
}

/// Building the AA and an AE with one ERR for the ADT (v2.5.1 layout).
fn ack(c: &mut Criterion) {
    use mllp::ack::{Ack, AckCode, AckOptions, Diagnostic, ErrorCode};
    use mllp::hl7::Location;
    let incoming = Message::parse(Bytes::from_static(ADT_A01)).unwrap();
    let options = AckOptions::default();
    let mut group = c.benchmark_group("ack/adt_a01");
    group.bench_function("aa", |b| {
        b.iter(|| Ack::build(black_box(&incoming), AckCode::AA, &[], &options))
    });
    let error = [
        Diagnostic::error(ErrorCode::RequiredFieldMissing, "PID-3 is empty")
            .at(Location::new("PID", 1).field(3)),
    ];
    group.bench_function("ae_with_err", |b| {
        b.iter(|| Ack::build(black_box(&incoming), AckCode::AE, &error, &options))
    });
    group.finish();
}

criterion_group!(benches, parse, access, ack);
criterion_main!(benches);

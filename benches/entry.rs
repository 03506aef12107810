//! Run with: `cargo bench -p benches --bench entry`
//!
//! The stored form of a response: encoding and decoding an entry with a
//! typical set of headers and a body of 1, 16 and 256 KiB, per KiB of body.
#![allow(missing_docs, reason = "criterion_group! makes an undocumented public fn")]

use std::{
    hint::black_box,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tower_stampede::Entry;

fn entry(kib: usize) -> Entry {
    let response = http::Response::builder()
        .header("content-type", "application/json")
        .header("cache-control", "public, max-age=60")
        .header("etag", "\"5f2b-4c1d\"")
        .header("vary", "accept-encoding")
        .header("surrogate-key", "posts popular")
        .body(Bytes::from(vec![b'x'; kib * 1024]))
        .expect("valid response");
    Entry::from_response(
        response,
        SystemTime::now(),
        Duration::from_secs(60),
        Duration::ZERO,
    )
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("entry");
    for kib in [1, 16, 256] {
        let entry = entry(kib);
        let encoded = entry.encode();
        group.throughput(Throughput::Bytes((kib * 1024) as u64));
        group.bench_with_input(
            BenchmarkId::new("encode", format!("{kib}KiB")),
            &entry,
            |b, entry| b.iter(|| black_box(entry.encode())),
        );
        group.bench_with_input(
            BenchmarkId::new("decode", format!("{kib}KiB")),
            &encoded,
            |b, encoded| b.iter(|| black_box(Entry::decode(encoded.clone()).expect("round trip"))),
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

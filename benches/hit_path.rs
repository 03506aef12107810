//! Run with: `cargo bench -p benches --bench hit_path`
//!
//! The cost of a cache hit: the bare inner service against the same service
//! behind the layer with a warm memory store, both answering a 1 KiB body
//! that the caller reads whole.
#![allow(missing_docs, reason = "criterion_group! makes an undocumented public fn")]

mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use support::{origin, read};
use tower::Layer;
use tower_stampede::{MemoryStore, StampedeLayer};

fn hit_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("hit_path");

    let mut bare = origin();
    group.bench_function("bare_service", |b| {
        b.to_async(&runtime).iter(|| {
            let mut bare = bare.clone();
            async move { black_box(read(&mut bare).await) }
        })
    });
    let _ = runtime.block_on(read(&mut bare));

    let layer = StampedeLayer::new(MemoryStore::new());
    let mut cached = layer.layer(origin());
    runtime.block_on(read(&mut cached));
    group.bench_function("memory_store_hit", |b| {
        b.to_async(&runtime).iter(|| {
            let mut cached = cached.clone();
            async move { black_box(read(&mut cached).await) }
        })
    });
    assert_eq!(layer.stats().origin_calls, 1, "every measured request was a hit");
    group.finish();
}

criterion_group!(benches, hit_path);
criterion_main!(benches);

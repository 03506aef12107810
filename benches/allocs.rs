//! Run with: `cargo bench -p benches --bench allocs`
//!
//! Heap allocations per request: the bare 1 KiB service against the same
//! service behind the layer answering from a warm memory store, each
//! request built, served and its body read whole. Counted by a counting
//! global allocator, not timed: a busy machine changes it little.
//! Exits non-zero if a hit makes more than `HIT_BUDGET` allocations more
//! than the bare service does.

mod support;

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::{origin, read};
use tower::Layer;
use tower_stampede::{MemoryStore, StampedeLayer};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests measured per figure.
const REQUESTS: usize = 1000;

/// The allocations a hit may make beyond the bare service's: a regression
/// past it fails the run (`cargo test -p benches --benches` in CI).
const HIT_BUDGET: usize = 1;

/// Slack for what a request makes now and then rather than each time,
/// averaged over the requests: the memory store's table allocates nothing
/// on a read (moka, before it, did its housekeeping on some reads), but
/// the runtime may grow a queue or a timer slot during a run.
const UPKEEP: f64 = 0.1;

/// Allocations per request, over `REQUESTS` requests after a warm-up.
fn per_request<F: std::future::Future<Output = bytes::Bytes>>(
    runtime: &tokio::runtime::Runtime,
    mut request: impl FnMut() -> F,
) -> f64 {
    for _ in 0..100 {
        runtime.block_on(request());
    }
    let region = Region::new(GLOBAL);
    for _ in 0..REQUESTS {
        runtime.block_on(request());
    }
    region.change().allocations as f64 / REQUESTS as f64
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bare = origin();
    let bare_allocations = per_request(&runtime, || {
        let mut bare = bare.clone();
        async move { read(&mut bare).await }
    });
    let layer = StampedeLayer::new(MemoryStore::new());
    let cached = layer.layer(origin());
    let hit_allocations = per_request(&runtime, || {
        let mut cached = cached.clone();
        async move { read(&mut cached).await }
    });
    assert_eq!(layer.stats().origin_calls, 1, "every measured request was a hit");
    println!(
        "allocations per request: bare service {bare_allocations:.2}, memory-store hit {hit_allocations:.2}"
    );
    let extra = hit_allocations - bare_allocations;
    assert!(
        extra <= HIT_BUDGET as f64 + UPKEEP,
        "a hit makes {extra:.2} allocations more than the bare service (budget {HIT_BUDGET})"
    );
}

//! Run with: `cargo bench -p benches --bench hit_ratio`
//!
//! The hit path's cost against the bare service's, paired: the same two
//! services as `hit_path` (the 1 KiB origin bare, and behind the layer
//! with a warm memory store), timed in alternate batches, each batch's
//! hit time over the bare batch next to it. `hit_path` times one service
//! for seconds, then the other: on a shared machine the bare service's
//! own time moves by a fifth from one such stretch to the next, and the
//! ratio with it. Here a slow minute falls on both sides of each ratio.
//! Prints the median time per request of each and the median ratio with
//! its quartiles.
//!
//! With `--instructions` (bench/hit-instructions.sh runs it so, under
//! callgrind) it runs one untimed batch of each, in functions of their own
//! whose instructions callgrind counts: a figure that does not move with
//! the machine's minute, as times do.

mod support;

use std::{convert::Infallible, fmt::Debug, hint::black_box, time::Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Empty;
use tokio::runtime::Runtime;

use support::{origin, read};
use tower::{Layer, Service};
use tower_stampede::{MemoryStore, StampedeLayer};

/// Requests per batch: some 10 ms each, long enough that the clock's
/// reads do not count, short enough that the machine changes little
/// within a pair.
const BATCH: u32 = 10_000;

/// Pairs of batches; the first few warm both services up and are not
/// counted.
const PAIRS: usize = 200;
const WARM_UP: usize = 10;

/// Under `cargo test --benches` (no `--bench` argument), as criterion's
/// benches do there: a pair of small batches, to check that every
/// request is a hit, not to measure.
const TEST_RUN: (u32, usize, usize) = (100, 2, 0);

/// Under `--instructions`: one batch of each, long enough that what is
/// done once (the first kept `Age` and `Cache-Status` values) does not
/// count.
const COUNT_RUN: (u32, usize, usize) = (10_000, 1, 0);

/// The figure at quantile `q` of `sorted`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let flag = |name: &str| std::env::args().any(|arg| arg == name);
    let (measure, count) = (flag("--bench"), flag("--instructions"));
    let (batch_len, pairs, warm_up) = match (count, measure) {
        (true, _) => COUNT_RUN,
        (false, true) => (BATCH, PAIRS, WARM_UP),
        (false, false) => TEST_RUN,
    };
    let bare = origin();
    let layer = StampedeLayer::new(MemoryStore::new());
    let cached = layer.layer(origin());
    // The one miss, which stores the entry that every later request hits.
    runtime.block_on(read(&mut cached.clone()));
    let run = |hit: bool| {
        if hit {
            hit_batch(&runtime, &cached, batch_len)
        } else {
            bare_batch(&runtime, &bare, batch_len)
        }
    };
    let (mut bare_ns, mut hit_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..pairs + warm_up {
        // Each goes first in every other pair: neither always follows the
        // other's caches and allocator state.
        let (b, h) = if pair % 2 == 0 {
            let b = run(false);
            (b, run(true))
        } else {
            let h = run(true);
            (run(false), h)
        };
        if pair >= warm_up {
            bare_ns.push(b);
            hit_ns.push(h);
            ratios.push(h / b);
        }
    }
    assert_eq!(layer.stats().origin_calls, 1, "every measured request was a hit");
    if count {
        println!("hit_ratio: {batch_len} requests a batch");
    }
    if !measure || count {
        return;
    }
    for figures in [&mut bare_ns, &mut hit_ns, &mut ratios] {
        figures.sort_by(f64::total_cmp);
    }
    println!(
        "hit_ratio: {pairs} pairs of {batch_len}-request batches; bare service {:.0} ns, memory-store hit {:.0} ns a request (medians)",
        quantile(&bare_ns, 0.5),
        quantile(&hit_ns, 0.5)
    );
    println!(
        "hit_ratio: hit over bare, median {:.2}x (quartiles {:.2}x-{:.2}x)",
        quantile(&ratios, 0.5),
        quantile(&ratios, 0.25),
        quantile(&ratios, 0.75)
    );
}

/// A service the batches time: the bare origin, or the origin behind the
/// layer.
trait Timed<B>: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible> + Clone {}

impl<S, B> Timed<B> for S where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible> + Clone
{
}

/// The body of a timed service's response, which a batch reads whole.
trait Read: Body<Data = Bytes, Error: Debug> {}

impl<B: Body<Data = Bytes, Error: Debug>> Read for B {}

/// The time of `len` requests to the bare service, in ns a request.
/// Not inlined: bench/hit-instructions.sh counts its instructions.
#[inline(never)]
fn bare_batch<B: Read>(runtime: &Runtime, service: &impl Timed<B>, len: u32) -> f64 {
    batch(runtime, service, len)
}

/// As [`bare_batch`], to the service behind the layer. Two functions, not
/// one generic one: callgrind names a function without its type
/// parameters, and the script tells the two apart by name.
#[inline(never)]
fn hit_batch<B: Read>(runtime: &Runtime, service: &impl Timed<B>, len: u32) -> f64 {
    batch(runtime, service, len)
}

/// The time of `len` requests to `service`, a clone per request as in
/// `hit_path` (criterion's loop), in ns a request.
fn batch<B: Read>(runtime: &Runtime, service: &impl Timed<B>, len: u32) -> f64 {
    let start = Instant::now();
    runtime.block_on(async {
        for _ in 0..len {
            black_box(read(&mut service.clone()).await);
        }
    });
    start.elapsed().as_secs_f64() * 1e9 / f64::from(len)
}

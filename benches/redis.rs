//! Run with: `cargo bench -p benches --bench redis`
//!
//! Needs `redis-server` (and `redis-cli`) installed: the bench starts its own
//! server on a free loopback port and stops it at the end.
//!
//! - `redis_hit_path`: a hit served from Redis through the layer, 1 KiB body
//!   read whole, against a bare `GET` of the same 1 KiB on a multiplexed
//!   connection: what the layer adds to the round trip.
//! - `redis_wakeup`: the time from the moment the leader issues its fenced
//!   write (`Store::set`, which stores the entry, releases the lock and
//!   publishes the key, in one script) to the return of a replica waiting in
//!   `Store::wait_unlocked` on another store (`pubsub`), against
//!   `polling_200ms`: a waiter that re-checks `EXISTS` on the lock every
//!   200 ms, as the seed design and nginx-style lock waiters do. The
//!   polling waiter's phase is random with respect to the write, as it is
//!   in production, so its latency is spread over 0–200 ms.
//!
//! After criterion, under `cargo bench` only, a plain run of 200 wake-ups per
//! approach prints their median and p99 in ms, to quote.
#![allow(missing_docs, reason = "criterion_group! makes an undocumented public fn")]

#[path = "../tests/common/redis_server.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the tests, which use more of it"
)]
mod redis_server;

mod support;

use std::{
    future::Future,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use redis::aio::MultiplexedConnection;
use redis_server::RedisServer;
use support::{origin, read};
use tokio::runtime::Runtime;
use tower::Layer;
use tower_stampede::{Entry, RedisStore, StampedeLayer, Store};

/// The cache key [`support::request`] gets.
const KEY: &str = "GET bench.local/api/popular-posts";
const BARE_KEY: &str = "bench:bare";
const LOCK_TTL: Duration = Duration::from_secs(10);
const KEEP_FOR: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(5);
/// Lets the waiter check the lock and park before the leader writes:
/// `wait_unlocked` exposes no "parked" signal, and in a bench a sleep that
/// is not measured costs only wall time.
const HEAD_START: Duration = Duration::from_millis(20);
const POLL_EVERY: Duration = Duration::from_millis(200);
const PLAIN_SAMPLES: usize = 200;

/// Runs the hit-path group and returns the entry the layer stored, for the
/// wake-up group to write.
fn hit_path(c: &mut Criterion, runtime: &Runtime, url: &str) -> Arc<Entry> {
    let mut group = c.benchmark_group("redis_hit_path");

    let conn = runtime.block_on(async {
        let client = redis::Client::open(url).expect("valid url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis answers");
        redis::cmd("SET")
            .arg(BARE_KEY)
            .arg(vec![b'x'; 1024])
            .exec_async(&mut conn)
            .await
            .expect("SET succeeds");
        conn
    });
    group.bench_function("bare_get", |b| {
        b.to_async(runtime).iter(|| {
            let mut conn = conn.clone();
            async move {
                let value: Vec<u8> = redis::cmd("GET")
                    .arg(BARE_KEY)
                    .query_async(&mut conn)
                    .await
                    .expect("GET succeeds");
                black_box(value)
            }
        })
    });

    let store = RedisStore::from_url(url).expect("valid url").prefix("bench-hit:");
    let layer = StampedeLayer::new(store);
    let mut cached = layer.layer(origin());
    runtime.block_on(async {
        layer.store().connect().await.expect("redis answers");
        read(&mut cached).await
    });
    group.bench_function("layer_hit", |b| {
        b.to_async(runtime).iter(|| {
            let mut cached = cached.clone();
            async move { black_box(read(&mut cached).await) }
        })
    });
    let stats = layer.stats();
    assert_eq!(stats.origin_calls, 1, "every measured request was a hit");
    assert_eq!(stats.store_errors, 0, "every hit came from Redis");
    group.finish();

    runtime
        .block_on(layer.store().get(KEY))
        .expect("redis answers")
        .expect("the warm-up request stored its entry")
}

/// Two replicas on one Redis: the leader writes, the waiter waits.
#[derive(Clone)]
struct Replicas {
    leader: RedisStore,
    waiter: RedisStore,
    /// The polling waiter's connection.
    poller: MultiplexedConnection,
    entry: Arc<Entry>,
}

impl Replicas {
    async fn new(url: &str, entry: Arc<Entry>) -> Self {
        let store = || {
            RedisStore::from_url(url)
                .expect("valid url")
                .prefix("bench-wake:")
        };
        let (leader, waiter) = (store(), store());
        leader.connect().await.expect("redis answers");
        waiter
            .connect()
            .await
            .expect("redis answers and pub/sub subscribes");
        let poller = redis::Client::open(url)
            .expect("valid url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis answers");
        Self {
            leader,
            waiter,
            poller,
            entry,
        }
    }

    /// Takes the lock, starts `wait` (which returns when it sees the lock
    /// released), writes after `head_start`, and returns how long after
    /// the write started the waiter returned.
    async fn wake_up(
        &self,
        head_start: Duration,
        wait: impl Future<Output = Instant> + Send + 'static,
    ) -> Duration {
        let token = self
            .leader
            .try_lock(KEY, LOCK_TTL)
            .await
            .expect("redis answers")
            .expect("the previous write released the lock");
        let woken = tokio::spawn(wait);
        tokio::time::sleep(head_start).await;
        let written_at = Instant::now();
        let written = self
            .leader
            .set(KEY, Arc::clone(&self.entry), &token, KEEP_FOR)
            .await
            .expect("redis answers");
        assert!(written, "the leader still held the lock");
        let woken = woken.await.expect("the waiter does not panic");
        woken
            .checked_duration_since(written_at)
            .expect("the waiter returned only after the write")
    }

    /// One wake-up pushed over pub/sub to `wait_unlocked`.
    async fn pushed(&self) -> Duration {
        let waiter = self.waiter.clone();
        let wait = async move {
            waiter.wait_unlocked(KEY, WAIT).await.expect("redis answers");
            Instant::now()
        };
        self.wake_up(HEAD_START, wait).await
    }

    /// One wake-up found by re-checking the lock every 200 ms.
    async fn polled(&self) -> Duration {
        let mut conn = self.poller.clone();
        let lock = self.waiter.lock_key(KEY);
        let wait = async move {
            loop {
                let locked: bool = redis::cmd("EXISTS")
                    .arg(&lock)
                    .query_async(&mut conn)
                    .await
                    .expect("EXISTS succeeds");
                if !locked {
                    return Instant::now();
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        };
        // A poller's schedule is not in step with the leader's write.
        let head_start = HEAD_START + POLL_EVERY.mul_f64(fastrand::f64());
        self.wake_up(head_start, wait).await
    }
}

fn wakeup(c: &mut Criterion, runtime: &Runtime, replicas: &Replicas) {
    let mut group = c.benchmark_group("redis_wakeup");
    // Every iteration spends at least the 20 ms head start, unmeasured:
    // criterion's default of 100 growing samples would take minutes.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("pubsub", |b| {
        b.to_async(runtime).iter_custom(|iters| {
            let replicas = replicas.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += replicas.pushed().await;
                }
                total
            }
        })
    });
    group.bench_function("polling_200ms", |b| {
        b.to_async(runtime).iter_custom(|iters| {
            let replicas = replicas.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += replicas.polled().await;
                }
                total
            }
        })
    });
    group.finish();
}

/// The latency below which a share `q` of `sorted` falls (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_quantiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "redis_wakeup/{name}: {} samples, median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        ms(quantile(&samples, 0.5)),
        ms(quantile(&samples, 0.99)),
        ms(samples[samples.len() - 1]),
    );
}

/// Criterion reports means and medians of per-sample averages; a quotable
/// p99 needs every wake-up on its own.
fn plain_run(runtime: &Runtime, replicas: &Replicas) {
    let (pushed, polled) = runtime.block_on(async {
        let mut pushed = Vec::with_capacity(PLAIN_SAMPLES);
        for _ in 0..PLAIN_SAMPLES {
            pushed.push(replicas.pushed().await);
        }
        let mut polled = Vec::with_capacity(PLAIN_SAMPLES);
        for _ in 0..PLAIN_SAMPLES {
            polled.push(replicas.polled().await);
        }
        (pushed, polled)
    });
    print_quantiles("pubsub", pushed);
    print_quantiles("polling_200ms", polled);
}

fn redis(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // One server for the run, dropped (so stopped) at the end of it.
    let server = RedisServer::start();
    let url = server.url();

    let entry = hit_path(c, &runtime, &url);
    let replicas = runtime.block_on(Replicas::new(&url, entry));
    wakeup(c, &runtime, &replicas);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs each
    // benchmark once and should not spend a minute on this.
    if std::env::args().any(|arg| arg == "--bench") {
        plain_run(&runtime, &replicas);
    }
    drop(replicas);
    drop(server);
}

criterion_group!(benches, redis);
criterion_main!(benches);

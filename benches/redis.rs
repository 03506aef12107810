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
//! - `redis_near_visibility`: two replicas, each a store with its own near
//!   cache (its own pool and tracking connection). Replica B holds key k in
//!   its near cache (its second read of k was a near hit); replica A takes
//!   the lock and writes a new value (`Store::set`). From the moment A's
//!   `set` starts to the moment B sees the new value: `polled` has B call
//!   `get(k)` in a loop (a `yield_now` between calls, no sleep) until it
//!   returns the new value (Redis's invalidation push, then B's `GET` of
//!   the new value); `pushed` has B await `near_updates()` until the push
//!   has been applied.
//!
//! After criterion, under `cargo bench` only, a plain run of 200 wake-ups per
//! wake-up approach and 500 samples per visibility approach prints their
//! median, p99 and max in ms, to quote.
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
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
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
const NEAR_KEY: &str = "GET bench.local/api/near";
const NEAR_BYTES: u64 = 1024 * 1024;
/// Enough for a p99 that is not the largest sample or two.
const VISIBILITY_SAMPLES: usize = 500;

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
        let token = lock(&self.leader, KEY).await;
        let woken = tokio::spawn(wait);
        tokio::time::sleep(head_start).await;
        let written_at = Instant::now();
        write_locked(&self.leader, KEY, Arc::clone(&self.entry), &token).await;
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

/// Two replicas with near caches on one Redis: A writes, B reads.
#[derive(Clone)]
struct NearReplicas {
    writer: RedisStore,
    reader: RedisStore,
    /// The value last written, as a number: each write's body differs.
    version: Arc<AtomicU64>,
}

/// How B learns of A's write.
#[derive(Clone, Copy)]
enum Seen {
    /// Reads until a read returns the new value.
    Polled,
    /// Awaits the invalidation's arrival in its near cache.
    Pushed,
}

/// The rebuild lock of `key`, which the previous write released.
async fn lock(store: &RedisStore, key: &str) -> tower_stampede::LockToken {
    store
        .try_lock(key, LOCK_TTL)
        .await
        .expect("redis answers")
        .expect("the previous write released the lock")
}

/// Writes `entry` under the lock `token` still holds.
async fn write_locked(store: &RedisStore, key: &str, entry: Arc<Entry>, token: &tower_stampede::LockToken) {
    let written = store
        .set(key, entry, token, KEEP_FOR)
        .await
        .expect("redis answers");
    assert!(written, "the writer still held the lock");
}

fn versioned(version: u64) -> Arc<Entry> {
    let response = http::Response::new(Bytes::from(format!("version {version}")));
    Arc::new(Entry::from_response(
        response,
        SystemTime::now(),
        KEEP_FOR,
        Duration::ZERO,
    ))
}

impl NearReplicas {
    async fn new(url: &str) -> Self {
        let store = || {
            RedisStore::from_url(url)
                .expect("valid url")
                .prefix("bench-near:")
                .near_cache(NEAR_BYTES)
        };
        let (writer, reader) = (store(), store());
        // `connect` returns once Redis tracks writes for each near cache.
        writer.connect().await.expect("redis answers and tracks");
        reader.connect().await.expect("redis answers and tracks");
        let replicas = Self {
            writer,
            reader,
            version: Arc::new(AtomicU64::new(0)),
        };
        replicas.write(0).await;
        replicas
    }

    async fn write(&self, version: u64) {
        let token = lock(&self.writer, NEAR_KEY).await;
        write_locked(&self.writer, NEAR_KEY, versioned(version), &token).await;
    }

    async fn read(&self) -> Bytes {
        let entry = self.reader.get(NEAR_KEY).await.expect("redis answers");
        entry.expect("the key is stored").body().clone()
    }

    fn near_hits(&self) -> u64 {
        self.reader.near_stats().expect("a near cache").hits
    }

    /// One write by A and the time until B sees it.
    async fn sample(&self, seen: Seen) -> Duration {
        let old = self.version.load(Ordering::Relaxed);
        let new = old + 1;
        let (old_body, new_body) = (versioned(old).body().clone(), versioned(new).body().clone());
        // B holds the current value in its near cache: its second read is a
        // near hit, so what follows measures a near copy being replaced.
        assert_eq!(self.read().await, old_body, "B reads the current value");
        let hits = self.near_hits();
        assert_eq!(self.read().await, old_body, "B reads the current value");
        assert!(
            self.near_hits() > hits,
            "B's read before the write was a near hit"
        );

        let token = lock(&self.writer, NEAR_KEY).await;
        let mut updates = self.reader.near_updates().expect("a near cache");
        let before = updates.borrow().invalidations;
        // The clock starts as A's `set` starts, inside the future that B's
        // wait runs beside, so that neither waits for the other to start.
        let write = async {
            let sent = Instant::now();
            write_locked(&self.writer, NEAR_KEY, versioned(new), &token).await;
            sent
        };
        let wait = async {
            match seen {
                Seen::Polled => {
                    while self.read().await != new_body {
                        tokio::task::yield_now().await;
                    }
                }
                Seen::Pushed => {
                    updates
                        .wait_for(|stats| stats.invalidations > before)
                        .await
                        .expect("the store is alive");
                }
            }
            Instant::now()
        };
        let (sent, seen_at) = tokio::join!(write, wait);
        self.version.store(new, Ordering::Relaxed);
        // Pushed: the near copy is gone, so this read is Redis's new value.
        assert_eq!(self.read().await, new_body, "B sees the new value");
        seen_at.saturating_duration_since(sent)
    }
}

fn near_visibility(c: &mut Criterion, runtime: &Runtime, replicas: &NearReplicas) {
    let mut group = c.benchmark_group("redis_near_visibility");
    // Each iteration also reads twice and takes the lock, unmeasured.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (name, seen) in [("polled", Seen::Polled), ("pushed", Seen::Pushed)] {
        group.bench_function(name, |b| {
            b.to_async(runtime).iter_custom(|iters| {
                let replicas = replicas.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += replicas.sample(seen).await;
                    }
                    total
                }
            })
        });
    }
    group.finish();
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
        "{name}: {} samples, median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        ms(quantile(&samples, 0.5)),
        ms(quantile(&samples, 0.99)),
        ms(samples[samples.len() - 1]),
    );
}

/// Criterion reports means and medians of per-sample averages; a quotable
/// p99 needs every wake-up on its own.
fn plain_run(runtime: &Runtime, replicas: &Replicas, near: &NearReplicas) {
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
    print_quantiles("redis_wakeup/pubsub", pushed);
    print_quantiles("redis_wakeup/polling_200ms", polled);

    let (polled, pushed) = runtime.block_on(async {
        let mut polled = Vec::with_capacity(VISIBILITY_SAMPLES);
        for _ in 0..VISIBILITY_SAMPLES {
            polled.push(near.sample(Seen::Polled).await);
        }
        let mut pushed = Vec::with_capacity(VISIBILITY_SAMPLES);
        for _ in 0..VISIBILITY_SAMPLES {
            pushed.push(near.sample(Seen::Pushed).await);
        }
        (polled, pushed)
    });
    print_quantiles("redis_near_visibility/polled", polled);
    print_quantiles("redis_near_visibility/pushed", pushed);
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
    let near = runtime.block_on(NearReplicas::new(&url));
    near_visibility(c, &runtime, &near);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs each
    // benchmark once and should not spend a minute on this.
    if std::env::args().any(|arg| arg == "--bench") {
        plain_run(&runtime, &replicas, &near);
    }
    drop((replicas, near));
    drop(server);
}

criterion_group!(benches, redis);
criterion_main!(benches);

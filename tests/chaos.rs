//! Faults under load. Two replicas (layers on their own `RedisStore`s)
//! share one `redis-server` owned by the test, reached directly or through a
//! small TCP proxy; 300 requests a second over 30 keys (entries live 1 s,
//! the origin takes 20 ms) run for 14 s, and at 3 s one fault strikes:
//! Redis killed and restarted, frozen for 2 s, its pub/sub connections
//! killed, filled to `maxmemory` with `noeviction`, slowed past the store
//! timeout, or every connection dropped.
//!
//! Each run asserts: no request failed; no key's origin calls in any of
//! the run's fixed 1 s windows exceeded the number of replicas; from 6 s
//! after Redis came back (five times what recovery takes),
//! hits are served from Redis and no store call fails; afterwards no flight
//! is left and no rebuild lock outlives its ttl. The figures go to
//! `target/chaos.txt` (`.ci/run` prints them).
//!
//! Real Redis, real network: these tests run on the wall clock.
#![cfg(feature = "redis")]

mod common;

use std::{
    collections::HashMap,
    io::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::State, http::Uri, routing::get};
use common::redis_server::RedisServer;
use http::Request;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tower::ServiceExt;
use tower_stampede::{Policy, RedisStore, StampedeLayer};

const REPLICAS: usize = 2;
const KEYS: usize = 30;
const RATE: u64 = 300;
const FAULT_AT: Duration = Duration::from_secs(3);
const OUTAGE: Duration = Duration::from_secs(2);
/// How long after a fault is undone the layers must be back on Redis: five
/// times what it takes (the store rests 1 s after failing, then
/// reconnects within a few hundred milliseconds).
const RECOVERY: Duration = Duration::from_secs(6);
/// The load runs on 3 s past the recovery bound, to count hits there.
const RUN: Duration = Duration::from_secs(3 + 2 + 6 + 3);
const TTL: Duration = Duration::from_secs(1);
const LOCK_TTL: Duration = Duration::from_secs(2);
const ORIGIN_DELAY: Duration = Duration::from_millis(20);

/// The origin: answers each key after 20 ms and logs its calls.
#[derive(Clone, Default)]
struct Origin(Arc<Mutex<Vec<(String, Instant)>>>);

impl Origin {
    fn calls(&self) -> Vec<(String, Instant)> {
        self.0.lock().expect("not poisoned").clone()
    }
}

async fn answer(State(origin): State<Origin>, uri: Uri) -> String {
    origin
        .0
        .lock()
        .expect("not poisoned")
        .push((uri.path().to_owned(), Instant::now()));
    tokio::time::sleep(ORIGIN_DELAY).await;
    format!("{} from the origin", uri.path())
}

/// A TCP proxy in front of Redis that can slow every chunk down or drop
/// every connection.
#[derive(Clone)]
struct Proxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    drop_all: watch::Sender<u64>,
}

impl Proxy {
    async fn start(to: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
        let port = listener.local_addr().expect("bound").port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (drop_all, _) = watch::channel(0);
        let proxy = Self {
            port,
            delay_ms,
            drop_all,
        };
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let (mut dropped, proxy) = (accepting.drop_all.subscribe(), accepting.clone());
                tokio::spawn(async move {
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = proxy.pipe(client_read, server_write) => {}
                        () = proxy.pipe(server_read, client_write) => {}
                        _ = dropped.changed() => {}
                    }
                });
            }
        });
        proxy
    }

    async fn pipe(&self, mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin) {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = self.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// The faults, each struck at `FAULT_AT`; `recover` undoes it (or does
/// nothing for one that is over at once).
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillAndRestart,
    Pause,
    KillPubSub,
    Fill,
    Latency,
    DropConnections,
}

impl Fault {
    fn strike(self, redis: &mut RedisServer, proxy: &Proxy) {
        match self {
            Self::KillAndRestart => redis.kill(),
            Self::Pause => redis.pause(),
            Self::KillPubSub => {
                redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            }
            Self::Fill => fill(redis),
            Self::Latency => proxy.delay_ms.store(300, Ordering::Relaxed),
            Self::DropConnections => {
                proxy.drop_all.send_modify(|n| *n += 1);
            }
        }
    }

    fn recover(self, redis: &mut RedisServer, proxy: &Proxy) {
        match self {
            Self::KillAndRestart => redis.restart(),
            Self::Pause => redis.resume(),
            Self::Fill => {
                redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
            }
            Self::Latency => proxy.delay_ms.store(0, Ordering::Relaxed),
            Self::KillPubSub | Self::DropConnections => {}
        }
    }

    /// Whether the fault lasts `OUTAGE` before it is undone.
    fn lasts(self) -> bool {
        !matches!(self, Self::KillPubSub | Self::DropConnections)
    }
}

/// Fills Redis until it refuses writes: `noeviction`, a bound 1 MiB over
/// what it uses now, then junk until a write answers `OOM`; then the bound
/// back to what it used before the junk, so that entries expiring cannot
/// make room: every write is refused until `recover`. Fails the test if
/// Redis never refuses.
fn fill(redis: &RedisServer) {
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let info = redis.cli(&["INFO", "memory"]);
    let used: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|bytes| bytes.trim().parse().ok())
        .expect("INFO memory has used_memory");
    redis.cli(&["CONFIG", "SET", "maxmemory", &(used + (1 << 20)).to_string()]);
    let junk = "x".repeat(4096);
    for i in 0.. {
        match redis.try_cli(&["SET", &format!("junk:{i}"), &junk]) {
            Ok(_) => assert!(i < 10_000, "Redis took 40 MiB past a 1 MiB bound"),
            Err(error) => {
                assert!(error.starts_with("OOM"), "filling Redis: {error}");
                redis.cli(&["CONFIG", "SET", "maxmemory", &used.to_string()]);
                return;
            }
        }
    }
}

/// One request of the load.
struct Sent {
    at: Instant,
    status: u16,
    cache_status: String,
}

async fn chaos(fault: Fault) {
    let mut redis = RedisServer::start();
    let proxy = Proxy::start(redis.port()).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let origin = Origin::default();
    let mut layers = Vec::new();
    let mut apps = Vec::new();
    for _ in 0..REPLICAS {
        let store = RedisStore::from_url(&url).expect("valid url");
        store.connect().await.expect("redis is up");
        let layer = StampedeLayer::new(store)
            .policy(Policy::ttl(TTL))
            .lock_ttl(LOCK_TTL)
            .lock_wait(Duration::from_secs(1));
        apps.push(
            Router::new()
                .route("/{*key}", get(answer))
                .with_state(origin.clone())
                .layer(layer.clone()),
        );
        layers.push(layer);
    }

    let start = Instant::now();
    let load = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE as f64));
        let mut requests = Vec::new();
        for i in 0..(RATE * RUN.as_secs()) as usize {
            tick.tick().await;
            let app = apps[i % REPLICAS].clone();
            let request = Request::get(format!("/key/{}", i % KEYS))
                .header("host", "chaos.test")
                .body(Body::empty())
                .expect("valid");
            requests.push(tokio::spawn(async move {
                let at = Instant::now();
                let response = app.oneshot(request).await.expect("infallible");
                let cache_status = response
                    .headers()
                    .get("cache-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                Sent {
                    at,
                    status: response.status().as_u16(),
                    cache_status,
                }
            }));
        }
        let mut sent = Vec::with_capacity(requests.len());
        for request in requests {
            sent.push(request.await.expect("no request task panics"));
        }
        sent
    });

    // The schedule of the fault is the point of the test: it sleeps.
    let errors_at =
        |layers: &[StampedeLayer<RedisStore>]| layers.iter().map(|l| l.stats().store_errors).sum::<u64>();
    tokio::time::sleep(FAULT_AT).await;
    let errors_before = errors_at(&layers);
    tokio::task::block_in_place(|| fault.strike(&mut redis, &proxy));
    if fault.lasts() {
        tokio::time::sleep(OUTAGE).await;
    }
    let errors_in_fault = errors_at(&layers) - errors_before;
    tokio::task::block_in_place(|| fault.recover(&mut redis, &proxy));
    let recovered = Instant::now();
    // A fault that lasts is felt: with 1 s entries, the layers write (or
    // lock) during it and fail.
    assert!(
        !fault.lasts() || errors_in_fault > 0,
        "{fault:?}: no store call failed during the fault"
    );
    tokio::time::sleep((recovered + RECOVERY).saturating_duration_since(Instant::now())).await;
    let errors_after_recovery = errors_at(&layers);
    let sent = load.await.expect("the load runs to its end");

    // No request failed.
    let failed = sent.iter().filter(|s| s.status != 200).count();
    assert_eq!(failed, 0, "{fault:?}: failed requests");

    // Origin calls per key per 1 s window (fixed, from the start), at most
    // one per replica: an entry lives 1 s from its write, which comes after
    // its call began, so one replica's calls for a key are over 1 s apart.
    let mut windows: HashMap<(String, u64), usize> = HashMap::new();
    for (key, at) in origin.calls() {
        let window = at.saturating_duration_since(start).as_secs();
        *windows.entry((key, window)).or_default() += 1;
    }
    let worst = windows.values().copied().max().unwrap_or(0);
    assert!(
        worst <= REPLICAS,
        "{fault:?}: {worst} calls for one key in one window"
    );

    // From RECOVERY after recovery: hits from Redis, and no failing store call.
    let late: Vec<&Sent> = sent.iter().filter(|s| s.at >= recovered + RECOVERY).collect();
    let hits = late.iter().filter(|s| s.cache_status.contains("hit")).count();
    assert!(
        late.len() > 100 && hits * 10 >= late.len() * 8,
        "{fault:?}: {hits} hits of {} late requests",
        late.len()
    );
    assert_eq!(
        errors_at(&layers),
        errors_after_recovery,
        "{fault:?}: store calls failed more than {RECOVERY:?} after recovery"
    );
    let first_stored = sent
        .iter()
        .filter(|s| s.at >= recovered && s.cache_status.contains("stored"))
        .map(|s| s.at - recovered)
        .min();
    assert!(
        first_stored.is_some(),
        "{fault:?}: nothing was written to Redis after recovery"
    );
    assert!(
        tokio::task::block_in_place(|| redis.cli(&["DBSIZE"])) != "0",
        "{fault:?}: Redis holds entries again"
    );

    // Afterwards: no flight left, and no lock outlives its ttl.
    assert!(
        layers.iter().all(|l| l.in_flight() == 0),
        "{fault:?}: a flight is left"
    );
    // Five times the ttl: a lock left behind lives no longer than one.
    let deadline = Instant::now() + 5 * LOCK_TTL;
    loop {
        let locks = tokio::task::block_in_place(|| redis.cli(&["KEYS", "*lock:*"]));
        if locks.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{fault:?}: locks outlive their ttl: {locks}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let report = format!(
        "{fault:?}: {} requests, {failed} failed, {} origin calls, at most {worst} per key per 1 s window; \
         store errors {}; first write to Redis {:?} after recovery; {hits} of {} requests hits from {RECOVERY:?} after\n",
        sent.len(),
        origin.calls().len(),
        errors_at(&layers),
        first_stored.map(|d| Duration::from_millis(d.as_millis() as u64)),
        late.len(),
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../chaos.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(report.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted() {
    chaos(Fault::KillAndRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_for_two_seconds() {
    chaos(Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pub_sub_connections_killed() {
    chaos(Fault::KillPubSub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_full_with_noeviction() {
    chaos(Fault::Fill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_slower_than_the_store_timeout() {
    chaos(Fault::Latency).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_dropped() {
    chaos(Fault::DropConnections).await;
}

//! The near cache over a real `redis-server`: replicas, each with its own
//! store and near cache, never serve what another has replaced or
//! invalidated once Redis's report has arrived, and serve from Redis while
//! the report cannot arrive (the tracking connection killed, Redis flushed,
//! restarted or frozen). Real network, so real time.
#![cfg(feature = "redis")]

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use axum::{Router, routing::get};
use bytes::Bytes;
use common::{Calls, get_request, redis_server::RedisServer, relay::Relay, send, within};
use http::Response;
use tokio::sync::watch;
use tower_stampede::{Entry, NearStats, RedisStore, StampedeLayer, Store};

const NEAR_BYTES: u64 = 1024 * 1024;
const TTL: Duration = Duration::from_secs(60);

fn entry(body: &'static str) -> Arc<Entry> {
    Arc::new(Entry::from_response(
        Response::new(Bytes::from(body)),
        SystemTime::now(),
        TTL,
        Duration::ZERO,
    ))
}

async fn replica(url: &str) -> RedisStore {
    let store = RedisStore::from_url(url)
        .expect("valid url")
        .timeout(Duration::from_secs(2))
        .near_cache(NEAR_BYTES);
    store.connect().await.expect("redis is up and tracks");
    store
}

/// Writes `body` at `key` as a rebuild would (lock, then fenced write),
/// and waits until Redis's report of it has reached `seen`'s near cache:
/// else it could arrive after a later read had filled the near cache, and
/// drop it.
async fn write(store: &RedisStore, key: &str, body: &'static str, seen: &RedisStore) {
    let mut updates = updates(seen);
    let (before, tracked) = (updates.borrow().invalidations, updates.borrow().tracking);
    let token = store.try_lock(key, TTL).await.expect("redis").expect("free");
    assert!(store.set(key, entry(body), &token, TTL).await.expect("redis"));
    if tracked {
        until(&mut updates, "the write's report", |s| s.invalidations > before).await;
    }
}

async fn body(store: &RedisStore, key: &str) -> Option<Bytes> {
    let entry = store.get(key).await.expect("redis")?;
    Some(entry.body().clone())
}

fn updates(store: &RedisStore) -> watch::Receiver<NearStats> {
    store.near_updates().expect("a near cache")
}

fn stats(store: &RedisStore) -> NearStats {
    Store::near_stats(store).expect("a near cache")
}

/// Waits, bounded, until the near cache's counters satisfy `done`.
async fn until(updates: &mut watch::Receiver<NearStats>, what: &str, done: impl Fn(&NearStats) -> bool) {
    within(what, updates.wait_for(done))
        .await
        .expect("the store is alive");
}

/// Reads `key` until it is a near hit: the first read fills the near cache.
async fn warm(store: &RedisStore, key: &str, expected: &str) {
    assert_eq!(body(store, key).await.as_deref(), Some(expected.as_bytes()));
    let hits = stats(store).hits;
    assert_eq!(body(store, key).await.as_deref(), Some(expected.as_bytes()));
    assert_eq!(stats(store).hits, hits + 1, "the second read was a near hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_or_invalidation_on_one_replica_reaches_the_others_near_cache() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server.url()).await, replica(&server.url()).await);
    write(&a, "k", "v1", &b).await;
    warm(&b, "k", "v1").await;
    // What the layer answers in `call` without a round trip.
    let at_hand = |store: &RedisStore| store.get_now("k").map(|entry| entry.body().clone());
    assert_eq!(at_hand(&b).as_deref(), Some(&b"v1"[..]));

    let mut seen = updates(&b);
    let before = seen.borrow().invalidations;
    let written = Instant::now();
    let token = a.try_lock("k", TTL).await.expect("redis").expect("free");
    assert!(a.set("k", entry("v2"), &token, TTL).await.expect("redis"));
    until(&mut seen, "the write's report", |s| s.invalidations > before).await;
    let arrived = written.elapsed();
    assert_eq!(at_hand(&b), None, "the replaced value is no longer at hand");
    assert_eq!(body(&b, "k").await.as_deref(), Some(&b"v2"[..]));
    eprintln!("report of a write reached the other replica {arrived:?} after the write began");

    warm(&b, "k", "v2").await;
    let before = seen.borrow().invalidations;
    a.invalidate("k").await.expect("redis");
    until(&mut seen, "the invalidation's report", |s| {
        s.invalidations > before
    })
    .await;
    assert_eq!(at_hand(&b), None);
    assert_eq!(body(&b, "k").await, None);
}

/// Through the layer: a replica's hits come from its near cache, and a tag
/// purged on another replica is purged there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_purged_on_one_replica_leaves_no_near_hit_on_another() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let tagged = {
        let calls = calls.clone();
        move || {
            let n = calls.record();
            async move { ([("surrogate-key", "posts")], format!("post {n}")) }
        }
    };
    let (a, b) = (replica(&server.url()).await, replica(&server.url()).await);
    let (a, b) = (StampedeLayer::new(a), StampedeLayer::new(b));
    let app_b = Router::new().route("/post", get(tagged)).layer(b.clone());

    let mut seen = updates(b.store());
    let before = seen.borrow().invalidations;
    assert_eq!(send(app_b.clone(), get_request("/post")).await.text(), "post 1");
    // The write does not fill the near cache: Redis reports it to this
    // replica too (its miss read the key). A read before that report would
    // fill the near cache only for the report to empty it again.
    until(&mut seen, "the write's report", |s| s.invalidations > before).await;
    // The first read from Redis fills it.
    for near_hits in [0, 1] {
        let hit = send(app_b.clone(), get_request("/post")).await;
        assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
        assert_eq!(stats(b.store()).hits, near_hits);
    }

    assert_eq!(b.stats().near_hits, 1, "the layer reports its store's near hits");

    let before = seen.borrow().invalidations;
    assert_eq!(a.invalidate_tag("posts").await.expect("redis"), 1);
    until(&mut seen, "the purge's report", |s| s.invalidations > before).await;
    assert!(b.stats().near_invalidations > before);
    assert_eq!(send(app_b, get_request("/post")).await.text(), "post 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_empties_every_near_cache() {
    let server = RedisServer::start();
    let b = replica(&server.url()).await;
    server.cli(&["SET", "unrelated", "x"]);
    let a = replica(&server.url()).await;
    write(&a, "k", "v1", &b).await;
    warm(&b, "k", "v1").await;

    let mut seen = updates(&b);
    let before = seen.borrow().flushes;
    server.cli(&["FLUSHALL"]);
    until(&mut seen, "the flush's report", |s| s.flushes > before).await;
    assert_eq!(body(&b, "k").await, None);
}

/// The ids of the near caches' tracking connections.
fn tracking_clients(server: &RedisServer) -> Vec<String> {
    let clients = server.cli(&["CLIENT", "LIST"]);
    clients
        .lines()
        .filter(|line| line.contains("name=tower-stampede-near-cache"))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_turns_the_near_cache_off_until_it_is_back() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server.url()).await, replica(&server.url()).await);
    write(&a, "k", "v1", &b).await;
    warm(&b, "k", "v1").await;

    let mut seen = updates(&b);
    for id in tracking_clients(&server) {
        server.cli(&["CLIENT", "KILL", "ID", &id]);
    }
    until(&mut seen, "the loss", |s| !s.tracking).await;
    write(&a, "k", "v2", &b).await;
    assert_eq!(
        body(&b, "k").await.as_deref(),
        Some(&b"v2"[..]),
        "read from Redis"
    );

    until(&mut seen, "tracking again", |s| s.tracking).await;
    warm(&b, "k", "v2").await;
    let before = seen.borrow().invalidations;
    write(&a, "k", "v3", &b).await;
    until(&mut seen, "the write's report", |s| s.invalidations > before).await;
    assert_eq!(body(&b, "k").await.as_deref(), Some(&b"v3"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_serves_no_replica_what_it_no_longer_holds() {
    let mut server = RedisServer::start();
    let (a, b) = (replica(&server.url()).await, replica(&server.url()).await);
    write(&a, "k", "v1", &b).await;
    warm(&b, "k", "v1").await;

    let mut seen = updates(&b);
    server.restart();
    until(&mut seen, "the loss", |s| !s.tracking).await;
    assert_eq!(body(&b, "k").await, None, "the new Redis is empty");
    until(&mut seen, "tracking again", |s| s.tracking).await;
    write(&a, "k", "v2", &b).await;
    warm(&b, "k", "v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_turns_the_near_cache_off_within_its_deadline() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server.url()).await, replica(&server.url()).await);
    write(&a, "k", "v1", &b).await;
    warm(&b, "k", "v1").await;

    let mut seen = updates(&b);
    let frozen = Instant::now();
    server.pause();
    // Nothing can be written meanwhile: what the near cache serves is
    // still what Redis holds, until the unanswered ping turns it off.
    until(&mut seen, "the unanswered ping", |s| !s.tracking).await;
    let off_after = frozen.elapsed();
    server.resume();
    // Expected within the ping's period and deadline (1.5 s); bounded at
    // five times that.
    assert!(
        off_after < 5 * Duration::from_millis(1_500),
        "off {off_after:?} after the freeze"
    );
    until(&mut seen, "tracking again", |s| s.tracking).await;
    write(&a, "k", "v2", &b).await;
    warm(&b, "k", "v2").await;
}

/// The race the reservation exists for: a read's reply, delayed in the
/// network, arrives after the report of a later write. The reply answers
/// its read, but is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_arrives_after_a_later_writes_report_is_not_kept() {
    let server = RedisServer::start();
    let relay = Relay::start(server.port()).await;
    let a = replica(&server.url()).await;
    let pool = deadpool_redis::Config::from_url(relay.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .expect("valid url");
    // Reads through the relay; the reports come straight from Redis.
    let b = RedisStore::new(pool)
        .pubsub(redis::Client::open(server.url()).expect("valid url"))
        .timeout(Duration::from_secs(5))
        .near_cache(NEAR_BYTES);
    b.connect().await.expect("redis is up and tracks");
    write(&a, "k", "v1", &b).await;

    let mut seen = updates(&b);
    let before = seen.borrow().invalidations;
    let held = relay.hold_next_reply();
    let read = tokio::spawn({
        let b = b.clone();
        async move { body(&b, "k").await }
    });
    // The read's reply waits in the relay while a write lands.
    within("the read's reply", held.arrived()).await;
    write(&a, "k", "v2", &b).await;
    until(&mut seen, "the write's report", |s| s.invalidations > before).await;
    held.release();
    let late = within("the held read", read).await.expect("no panic");
    assert_eq!(
        late.as_deref(),
        Some(&b"v1"[..]),
        "the read got the value of its time"
    );

    assert_eq!(
        body(&b, "k").await.as_deref(),
        Some(&b"v2"[..]),
        "and did not keep it"
    );
}

/// A stampede over replicas with near caches is still one origin call: the
/// near cache changes where hits come from, not who rebuilds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_with_near_caches_make_one_origin_call() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let mut apps = Vec::new();
    for _ in 0..4 {
        let layer = StampedeLayer::new(replica(&server.url()).await)
            .store_timeout(Duration::from_secs(5))
            .policy(tower_stampede::Policy::ttl(TTL));
        apps.push(common::slow_app(&calls).layer(layer));
    }
    let waves = apps
        .iter()
        .map(|app| common::wave(app, 250, |_| get_request("/hot")));
    let replies: Vec<_> = futures_util::future::join_all(waves).await.concat();

    assert_eq!(calls.get(), 1, "one origin call across the replicas");
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.text() == replies[0].text())
    );
    let near_hit = send(apps[1].clone(), get_request("/hot")).await;
    assert!(near_hit.cache_status().contains("hit"));
}

/// A Redis that refuses to report writes (before 6, without RESP3; or an
/// ACL that denies `CLIENT TRACKING`, as here): the store starts and serves
/// from Redis, with no near cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resp3_the_store_runs_without_a_near_cache() {
    let server = RedisServer::start();
    server.cli(&["ACL", "SETUSER", "default", "-client|tracking"]);
    let a = RedisStore::from_url(server.url()).expect("valid url");
    let b = replica_without_waiting(&server.url());
    within("connect", b.connect())
        .await
        .expect("starts without a near cache");
    write(&a, "k", "v1", &b).await;
    for _ in 0..2 {
        assert_eq!(body(&b, "k").await.as_deref(), Some(&b"v1"[..]));
    }
    let near = stats(&b);
    assert!(!near.tracking && near.hits == 0, "{near:?}");
}

fn replica_without_waiting(url: &str) -> RedisStore {
    RedisStore::from_url(url)
        .expect("valid url")
        .timeout(Duration::from_secs(2))
        .near_cache(NEAR_BYTES)
}

//! Replicas sharing a real three-node Redis Cluster: one origin call between
//! them, and entries found by any replica that joins later.
#![cfg(feature = "redis-cluster")]

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{Calls, get_request, redis_server::RedisServer, send, slow_app, wave};
use tower::Layer;
use tower_stampede::{Policy, RedisStore, StampedeLayer, Store};

const PATH: &str = "/api/popular-posts";
/// The cache key [`DefaultKey`](tower_stampede::DefaultKey) gives a GET of
/// [`PATH`] without a `Host`.
const KEY: &str = "GET /api/popular-posts";

/// Three masters, slots split between them, every node agreeing the
/// cluster is up.
fn start_cluster() -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..3).map(|_| cluster_node()).collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port()))
        .collect();
    let mut create: Vec<&str> = vec!["create"];
    create.extend(addresses.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    redis_cli_cluster(&create);

    // The one poll in the suite: nodes agree on the slot map over the
    // cluster bus and Redis has nothing to block on until they do, so each
    // node's view is re-checked until every one reports the cluster up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states: Vec<String> = nodes.iter().map(|node| node.cli(&["CLUSTER", "INFO"])).collect();
        if states.iter().all(|info| info.contains("cluster_state:ok")) {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not come up within 10 s; CLUSTER INFO per node:\n{}",
            states.join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cluster node started empty, not yet part of any cluster.
fn cluster_node() -> RedisServer {
    RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
    ])
}

/// Runs `redis-cli --cluster` with `args`, failing the test on failure.
fn redis_cli_cluster(args: &[&str]) {
    let output = Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .output()
        .expect("redis-cli runs (it comes with redis-server)");
    assert!(
        output.status.success(),
        "redis-cli --cluster {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn store(nodes: &[RedisServer]) -> RedisStore {
    RedisStore::cluster(nodes.iter().map(RedisServer::url))
        .expect("valid node URLs")
        .prefix("two-replicas-one-origin-call:")
}

fn layer(store: RedisStore) -> StampedeLayer<RedisStore> {
    // Zero store errors are asserted: a slow call on a busy machine must
    // not count as one.
    StampedeLayer::new(store)
        .policy(Policy::ttl(Duration::from_secs(60)))
        .store_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_redis_cluster_make_one_origin_call_and_a_third_hits() {
    let nodes = start_cluster();
    let calls = Calls::default();
    let (store_a, store_b) = (store(&nodes), store(&nodes));
    store_a.connect().await.expect("replica A reaches the cluster");
    store_b.connect().await.expect("replica B reaches the cluster");
    let (layer_a, layer_b) = (layer(store_a.clone()), layer(store_b));
    let replica_a = layer_a.layer(slow_app(&calls));
    let replica_b = layer_b.layer(slow_app(&calls));

    let (replies_a, replies_b) = tokio::join!(
        wave(&replica_a, 100, |_| get_request(PATH)),
        wave(&replica_b, 100, |_| get_request(PATH)),
    );

    assert_eq!(calls.get(), 1, "one origin call across both replicas");
    let replies: Vec<_> = replies_a.iter().chain(&replies_b).collect();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.cache_status());
        assert_eq!(reply.body, replies[0].body, "{}", reply.cache_status());
    }
    assert_eq!(replies[0].text(), "/api/popular-posts answered by call 1");
    let (stats_a, stats_b) = (layer_a.stats(), layer_b.stats());
    assert_eq!(stats_a.origin_calls + stats_b.origin_calls, 1);
    assert_eq!(
        (stats_a.store_errors, stats_b.store_errors),
        (0, 0),
        "the cluster answered every store call"
    );

    // A replica started after the stampede finds the entry in the cluster.
    let store_c = store(&nodes);
    store_c.connect().await.expect("replica C reaches the cluster");
    let layer_c = layer(store_c);
    let late = send(layer_c.layer(slow_app(&calls)), get_request(PATH)).await;
    assert_eq!(late.status, 200);
    assert!(late.cache_status().contains("hit"), "{}", late.cache_status());
    assert_eq!(late.body, replies[0].body);
    assert_eq!(calls.get(), 1);

    // The leader's fenced write is one script over the entry and its lock,
    // which a cluster runs only when both keys live in one slot.
    let slot_of = |key: String| nodes[0].cli(&["CLUSTER", "KEYSLOT", &key]);
    assert_eq!(slot_of(store_a.entry_key(KEY)), slot_of(store_a.lock_key(KEY)));
}

/// Writes `body` at `key` as a rebuild would: lock, then fenced write.
async fn write(store: &RedisStore, key: &str, body: &'static str) {
    let ttl = Duration::from_secs(60);
    let entry = tower_stampede::Entry::from_response(
        http::Response::new(bytes::Bytes::from(body)),
        std::time::SystemTime::now(),
        ttl,
        Duration::ZERO,
    );
    let token = store.try_lock(key, ttl).await.expect("cluster").expect("free");
    assert!(
        store
            .set(key, std::sync::Arc::new(entry), &token, ttl)
            .await
            .expect("cluster")
    );
}

/// With near caches, every master reports the writes to its own slots:
/// keys spread over all three masters, each read near by one replica and
/// rewritten by another, are read anew once the reports have arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_caches_on_a_cluster_hear_every_master() {
    let nodes = start_cluster();
    let near = |store: RedisStore| store.near_cache(1024 * 1024);
    let (a, b) = (near(store(&nodes)), near(store(&nodes)));
    a.connect().await.expect("replica A tracks every master");
    b.connect().await.expect("replica B tracks every master");
    for node in &nodes {
        let clients = node.cli(&["CLIENT", "LIST"]);
        let tracking = clients.matches("name=tower-stampede-near-cache").count();
        assert_eq!(tracking, 2, "one tracking connection per replica on each master");
    }
    // Keys in slots of each of the three masters.
    let keys: Vec<String> = (0..30).map(|i| format!("key {i}")).collect();
    let slots: std::collections::BTreeSet<u64> = keys
        .iter()
        .map(|key| {
            nodes[0]
                .cli(&["CLUSTER", "KEYSLOT", &a.entry_key(key)])
                .parse()
                .expect("a slot")
        })
        .collect();
    assert!(slots.iter().any(|s| *s < 5461) && slots.iter().any(|s| *s > 10922));

    for key in &keys {
        write(&a, key, "old").await;
    }
    let mut seen = b.near_updates().expect("a near cache");
    for key in &keys {
        b.get(key).await.expect("cluster");
        assert_eq!(b.get(key).await.expect("cluster").expect("stored").body(), "old");
    }
    assert_eq!(b.near_stats().expect("a near cache").hits, 30);
    let before = seen.borrow().invalidations;
    for key in &keys {
        write(&a, key, "new").await;
    }
    common::within(
        "every master's reports",
        seen.wait_for(|s| s.invalidations >= before + 30),
    )
    .await
    .expect("the store is alive");
    for key in &keys {
        assert_eq!(b.get(key).await.expect("cluster").expect("stored").body(), "new");
    }
}

/// A master that joins and takes slots changes who reports which writes:
/// the near caches empty themselves, and track the new master too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_master_empties_the_near_caches_until_they_track_it() {
    let nodes = start_cluster();
    let b = store(&nodes).near_cache(1024 * 1024);
    b.connect().await.expect("replica B tracks every master");
    let a = store(&nodes);
    let mut seen = b.near_updates().expect("a near cache");
    write(&a, "k", "old").await;
    // Its report reaches B before B's read fills the near cache.
    common::within("the write's report", seen.wait_for(|s| s.invalidations > 0))
        .await
        .expect("the store is alive");
    b.get("k").await.expect("cluster");
    assert_eq!(b.get("k").await.expect("cluster").expect("stored").body(), "old");
    assert_eq!(b.near_stats().expect("a near cache").hits, 1);

    let flushes = seen.borrow().flushes;
    let joining = cluster_node();
    let (first, new) = (
        format!("127.0.0.1:{}", nodes[0].port()),
        format!("127.0.0.1:{}", joining.port()),
    );
    redis_cli_cluster(&["add-node", &new, &first]);
    let id = |node: &RedisServer| node.cli(&["CLUSTER", "MYID"]);
    let (from, to) = (id(&nodes[0]), id(&joining));
    // As in start_cluster: the nodes and the new one learn of each other
    // over the cluster bus, with nothing to block on until they agree.
    let agree = || {
        let known = nodes.iter().chain([&joining]).all(|node| {
            let view = node.cli(&["CLUSTER", "NODES"]);
            view.lines().count() == 4 && !view.contains("handshake") && view.contains(&to)
        });
        let check = Command::new("redis-cli")
            .args(["--cluster", "check", &first])
            .output();
        known && check.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("All nodes agree"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agree() {
        assert!(Instant::now() < deadline, "the nodes did not agree within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    redis_cli_cluster(&[
        "reshard",
        &first,
        "--cluster-from",
        &from,
        "--cluster-to",
        &to,
        "--cluster-slots",
        "100",
        "--cluster-yes",
    ]);

    common::within("the flush", seen.wait_for(|s| s.flushes > flushes && s.tracking))
        .await
        .expect("the store is alive");
    assert_eq!(
        joining
            .cli(&["CLIENT", "LIST"])
            .matches("name=tower-stampede-near-cache")
            .count(),
        1,
        "the new master is tracked"
    );
    let hits = b.near_stats().expect("a near cache").hits;
    assert_eq!(b.get("k").await.expect("cluster").expect("stored").body(), "old");
    assert_eq!(
        b.near_stats().expect("a near cache").hits,
        hits,
        "read anew from Redis"
    );
}

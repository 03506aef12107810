//! Single flight: what concurrent requests for one key cost the origin, and
//! what they see. Holds, in `src/docs/guarantees.md`,
//! `#one-origin-call-per-key` and `#the-origin-call-outlives-its-client`,
//! and `#one-rebuild-across-layers-sharing-a-store` on a memory store.

mod common;

use std::time::Duration;

use common::{Calls, count_status, get_request, slow_app, t0, wave};
use tower_stampede::{MemoryStore, Policy, StampedeLayer, clock::ManualClock};

fn layer(clock: &ManualClock) -> StampedeLayer<MemoryStore> {
    StampedeLayer::new(MemoryStore::new())
        .policy(Policy::ttl(Duration::from_secs(60)))
        .clock(clock.clone())
}

#[tokio::test(start_paused = true)]
async fn a_thousand_identical_requests_make_one_origin_call_and_get_the_same_bytes() {
    let calls = Calls::default();
    let clock = ManualClock::new(t0());
    let layer = layer(&clock);
    let app = slow_app(&calls).layer(layer.clone());

    let replies = wave(&app, 1000, |_| get_request("/api/popular-posts")).await;

    assert_eq!(calls.get(), 1);
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(replies.iter().all(|r| r.body == replies[0].body));
    assert_eq!(replies[0].text(), "/api/popular-posts answered by call 1");
    assert_eq!(count_status(&replies, "stored"), 1);
    assert_eq!(count_status(&replies, "collapsed"), 999);
    let stats = layer.stats();
    assert_eq!((stats.requests, stats.misses, stats.coalesced), (1000, 1000, 999));
    assert_eq!((stats.origin_calls, stats.hits), (1, 0));
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_two_threads_a_thousand_requests_still_make_one_call() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new());
    let app = slow_app(&calls).layer(layer.clone());

    let replies = wave(&app, 1000, |_| get_request("/api/popular-posts")).await;

    assert_eq!(calls.get(), 1);
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body)
    );
    // Each request either waited on the flight or came after it and hit.
    let stats = layer.stats();
    assert_eq!(stats.coalesced + stats.hits, 999);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_requests_over_a_hundred_keys_make_a_hundred_calls() {
    let calls = Calls::default();
    let clock = ManualClock::new(t0());
    let app = slow_app(&calls).layer(layer(&clock));

    let replies = wave(&app, 1000, |i| get_request(&format!("/items/{}", i % 100))).await;

    assert_eq!(calls.get(), 100);
    for (i, reply) in replies.iter().enumerate() {
        assert!(
            reply.text().starts_with(&format!("/items/{} answered", i % 100)),
            "request {i} got {:?}",
            reply.text()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_wave_is_served_from_the_store_with_age() {
    let calls = Calls::default();
    let clock = ManualClock::new(t0());
    let layer = layer(&clock);
    let app = slow_app(&calls).layer(layer.clone());
    let first = wave(&app, 100, |_| get_request("/api/popular-posts")).await;

    clock.advance(Duration::from_secs(5));
    let second = wave(&app, 100, |_| get_request("/api/popular-posts")).await;

    assert_eq!(calls.get(), 1);
    for reply in &second {
        assert_eq!(reply.cache_status(), "tower-stampede; hit; ttl=55");
        assert_eq!(reply.header("age"), Some("5"));
        assert_eq!(reply.body, first[0].body);
    }
    assert_eq!(layer.stats().hits, 100);
}

#[tokio::test(start_paused = true)]
async fn expiry_on_the_injected_clock_makes_exactly_one_new_call() {
    let calls = Calls::default();
    let clock = ManualClock::new(t0());
    let app = slow_app(&calls).layer(layer(&clock));
    wave(&app, 10, |_| get_request("/api/popular-posts")).await;

    clock.advance(Duration::from_secs(59));
    wave(&app, 100, |_| get_request("/api/popular-posts")).await;
    assert_eq!(calls.get(), 1, "still fresh at 59 s");

    clock.advance(Duration::from_secs(1));
    let replies = wave(&app, 100, |_| get_request("/api/popular-posts")).await;
    assert_eq!(calls.get(), 2, "expired at 60 s: one rebuild");
    assert!(replies.iter().all(|r| r.text().ends_with("call 2")));
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_client_goes_away_still_serves_its_waiters() {
    let calls = Calls::default();
    let clock = ManualClock::new(t0());
    let layer = layer(&clock);
    let app = slow_app(&calls).layer(layer.clone());

    let leader = tokio::spawn(common::send(app.clone(), get_request("/api/popular-posts")));
    let waiters: Vec<_> = (0..10)
        .map(|_| tokio::spawn(common::send(app.clone(), get_request("/api/popular-posts"))))
        .collect();
    // Half-way through the origin call: every task is parked by now.
    tokio::time::sleep(common::ORIGIN_DELAY / 2).await;
    assert_eq!(layer.stats().coalesced, 10);
    leader.abort();
    assert!(leader.await.expect_err("aborted").is_cancelled());

    for waiter in waiters {
        let reply = waiter.await.expect("waiter does not panic");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "/api/popular-posts answered by call 1");
        assert!(reply.cache_status().contains("collapsed"));
    }
    assert_eq!(calls.get(), 1);
    let later = common::send(app, get_request("/api/popular-posts")).await;
    assert_eq!(later.cache_status(), "tower-stampede; hit; ttl=60", "stored, too");
}

#[tokio::test(start_paused = true)]
async fn layers_sharing_a_memory_store_make_one_call_between_them() {
    let calls = Calls::default();
    let store = MemoryStore::new();
    let a = StampedeLayer::new(store.clone());
    let b = StampedeLayer::new(store);
    let app_a = slow_app(&calls).layer(a.clone());
    let app_b = slow_app(&calls).layer(b.clone());

    let (from_a, from_b) = tokio::join!(
        wave(&app_a, 500, |_| get_request("/api/popular-posts")),
        wave(&app_b, 500, |_| get_request("/api/popular-posts")),
    );

    assert_eq!(calls.get(), 1);
    assert!(from_a.iter().chain(&from_b).all(|r| r.body == from_a[0].body));
    // One layer led; the other's leader lost the store lock and was woken by
    // the winner's write.
    assert_eq!(a.stats().origin_calls + b.stats().origin_calls, 1);
    assert_eq!(a.stats().coalesced + b.stats().coalesced, 999);
}

#[tokio::test(start_paused = true)]
async fn head_requests_are_collapsed_among_themselves() {
    let calls = Calls::default();
    let clock = ManualClock::new(t0());
    let app = slow_app(&calls).layer(layer(&clock));
    let head = || {
        http::Request::head("/api/popular-posts")
            .body(axum::body::Body::empty())
            .expect("valid")
    };
    let replies = wave(&app, 50, |_| head()).await;
    assert_eq!(calls.get(), 1);
    assert!(replies.iter().all(|r| r.status == 200 && r.body.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn the_memory_store_stays_within_its_byte_bound_behind_the_layer() {
    let bound = 64 * 1024;
    let store = MemoryStore::with_max_bytes(bound);
    let page = axum::routing::get(|| async { "x".repeat(4096) });
    let app = axum::Router::new()
        .route("/{*path}", page)
        .layer(StampedeLayer::new(store.clone()));

    let replies = wave(&app, 200, |i| get_request(&format!("/pages/{i}"))).await;

    assert!(replies.iter().all(|r| r.body.len() == 4096));
    let used = store.used_bytes();
    assert!(used <= bound, "{used} bytes held, bound {bound}");
    assert!(
        store.entry_count() >= 8,
        "the store was used: {} entries",
        store.entry_count()
    );
}

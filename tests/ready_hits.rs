//! A hit on an entry the store has at hand (the memory store) is answered
//! in `Service::call` itself: its response future is ready, and holds no
//! boxed cache flow. Every other turn still goes through that flow.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, routing::get};
use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use common::{Calls, get_request, send, slow_app, tokio_clock};
use tower::{Layer, Service, ServiceExt};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The kind of response future `call` returns for `request`, and the
/// response it ends with.
async fn call<S>(service: &mut S, request: Request<Body>) -> (String, S::Response)
where
    S: Service<Request<Body>>,
    S::Future: std::fmt::Debug,
    S::Error: std::fmt::Debug,
{
    let future = service.ready().await.expect("ready").call(request);
    let kind = format!("{future:?}");
    (kind, future.await.expect("infallible"))
}

/// An origin whose answers carry a validator and their own freshness.
fn tagged_app(calls: &Calls) -> Router {
    async fn tagged(State(calls): State<Calls>) -> ([(&'static str, &'static str); 2], String) {
        let n = calls.record();
        (
            [("etag", "\"v1\""), ("cache-control", "max-age=60")],
            format!("call {n}"),
        )
    }
    Router::new().route("/a", get(tagged)).with_state(calls.clone())
}

/// A `GET /a` with one more header.
fn get_with(name: &str, value: &str) -> Request<Body> {
    Request::get("/a")
        .header(name, value)
        .body(Body::empty())
        .expect("valid request")
}

const READY: &str = r#"ResponseFuture { kind: "ready" }"#;
const CACHED: &str = r#"ResponseFuture { kind: "cached" }"#;

#[tokio::test(start_paused = true)]
async fn a_fresh_hit_in_memory_is_ready_in_call() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new())
        .policy(Policy::ttl(secs(60)))
        .clock(tokio_clock());
    let mut service = layer.layer(slow_app(&calls));

    let (kind, _) = call(&mut service, get_request("/a")).await;
    assert_eq!(kind, CACHED, "a miss runs the cache flow");
    tokio::time::advance(secs(5)).await;
    let (kind, response) = call(&mut service, get_request("/a")).await;
    assert_eq!(kind, READY);
    assert_eq!(response.headers()["cache-status"], "tower-stampede; hit; ttl=55");
    assert_eq!(response.headers()["age"], "5");
    assert_eq!((calls.get(), layer.stats().hits), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_conditional_request_gets_its_304_from_a_ready_hit() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new()).policy(Policy::origin(secs(3600)));
    let mut service = layer.layer(tagged_app(&calls));
    send(service.clone(), get_request("/a")).await;

    let (kind, response) = call(&mut service, get_with("if-none-match", "\"v1\"")).await;
    assert_eq!(kind, READY);
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_goes_through_the_cache_flow_and_refreshes() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new())
        .policy(Policy::stale_while_revalidate(secs(10), secs(60)))
        .clock(tokio_clock());
    let mut service = layer.layer(slow_app(&calls));
    send(service.clone(), get_request("/a")).await;

    tokio::time::advance(secs(15)).await;
    let (kind, response) = call(&mut service, get_request("/a")).await;
    assert_eq!(kind, CACHED, "a stale hit starts a refresh: not answered in call");
    assert_eq!(
        response.headers()["cache-status"],
        "tower-stampede; fwd=stale; ttl=-5"
    );
    assert_eq!(layer.stats().refreshes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_refuses_stored_responses_is_not_answered_in_call() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new()).policy(Policy::origin(secs(3600)));
    let mut service = layer.layer(tagged_app(&calls));
    send(service.clone(), get_request("/a")).await;
    let (kind, _) = call(&mut service, get_request("/a")).await;
    assert_eq!(kind, READY, "stored, and fresh");

    let (kind, response) = call(&mut service, get_with("cache-control", "no-cache")).await;
    assert_eq!(kind, CACHED);
    assert_eq!(
        response.headers()["cache-status"],
        "tower-stampede; fwd=miss; fwd-status=200; stored; ttl=60"
    );
    assert_eq!(calls.get(), 2, "no-cache asked the origin");
}

/// One request, one draw: an early refresh decided in `call` is the one the
/// flow carries out, not drawn again (two draws would make it rarer than
/// the policy says).
#[tokio::test(start_paused = true)]
async fn an_early_refresh_is_drawn_once_per_request() {
    let calls = Calls::default();
    let draws = Arc::new(AtomicUsize::new(0));
    // Draws alternate: one that refreshes at any age, one that never
    // refreshes early.
    let random = {
        let draws = Arc::clone(&draws);
        move || match draws.fetch_add(1, Ordering::SeqCst) % 2 {
            0 => 1.0,
            _ => 0.0,
        }
    };
    let layer = StampedeLayer::new(MemoryStore::new())
        .policy(Policy::xfetch(secs(60)))
        .clock(tokio_clock())
        .random(random);
    let mut service = layer.layer(slow_app(&calls));
    send(service.clone(), get_request("/a")).await;
    draws.store(0, Ordering::SeqCst);

    tokio::time::advance(secs(1)).await;
    let (kind, response) = call(&mut service, get_request("/a")).await;
    assert_eq!(kind, CACHED, "a refresh runs in the cache flow");
    assert_eq!(
        response.headers()["cache-status"],
        "tower-stampede; hit; ttl=59; detail=early-refresh"
    );
    assert_eq!(draws.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().refreshes, 1);
}

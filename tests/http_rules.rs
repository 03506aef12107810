//! HTTP rules of a shared cache beyond never-leak: HEAD from the stored GET,
//! conditional requests answered from the cache, the client's `no-cache`,
//! and hit-for-pass.

mod common;

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Method, Request, header},
    response::IntoResponse,
    routing::get,
};
use common::{Calls, ORIGIN_DELAY, count_status, get_request, send, tokio_clock, wave};
use tokio::time::Instant;
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

const ETAG: &str = "\"v1\"";
const LAST_MODIFIED: &str = "Tue, 01 Jan 2030 00:00:00 GMT";

/// An origin with validators, that would answer 304 itself to a matching
/// `If-None-Match`, and says which method reached it.
async fn validated(State(calls): State<Calls>, method: Method, request: HeaderMap) -> impl IntoResponse {
    let n = calls.record();
    tokio::time::sleep(ORIGIN_DELAY).await;
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, ETAG.parse().expect("valid"));
    headers.insert(header::LAST_MODIFIED, LAST_MODIFIED.parse().expect("valid"));
    if request.get(header::IF_NONE_MATCH).is_some_and(|v| v == ETAG) {
        return (http::StatusCode::NOT_MODIFIED, headers, String::new());
    }
    (
        http::StatusCode::OK,
        headers,
        format!("{method} answered by call {n}"),
    )
}

fn app(calls: &Calls, layer: StampedeLayer<MemoryStore>) -> Router {
    Router::new()
        .route("/{*path}", get(validated))
        .with_state(calls.clone())
        .layer(layer)
}

fn layer() -> StampedeLayer<MemoryStore> {
    StampedeLayer::new(MemoryStore::new())
        .policy(Policy::ttl(Duration::from_secs(60)))
        .clock(tokio_clock())
}

/// `layer`, its entries kept a minute past their freshness (an error
/// window): an expired entry is still stored, to revalidate. Under
/// `layer` alone a store drops it when it expires.
fn keeping_layer() -> StampedeLayer<MemoryStore> {
    layer().policy(Policy::ttl(Duration::from_secs(60)).stale_if_error(Duration::from_secs(60)))
}

fn with(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).expect("valid")
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_the_stored_get_and_a_cold_head_fetches_the_get() {
    let calls = Calls::default();
    let app = app(&calls, layer());

    let head = send(app.clone(), with(Method::HEAD, "/page", &[])).await;
    let get = send(app.clone(), get_request("/page")).await;
    let head_again = send(app, with(Method::HEAD, "/page", &[])).await;

    assert_eq!(calls.get(), 1, "one GET at the origin serves both");
    assert_eq!(
        get.text(),
        "GET answered by call 1",
        "the origin was asked for a GET"
    );
    assert!(head.body.is_empty() && head_again.body.is_empty());
    assert!(head.cache_status().contains("stored"));
    assert!(head_again.cache_status().contains("hit"));
    assert_eq!(head_again.header("etag"), Some(ETAG));
    assert_eq!(
        head_again.header("content-length"),
        Some(get.body.len().to_string().as_str()),
        "HEAD says how long the GET body is"
    );
}

#[tokio::test(start_paused = true)]
async fn conditional_requests_are_answered_304_from_the_cache() {
    let calls = Calls::default();
    let app = app(&calls, layer());
    send(app.clone(), get_request("/page")).await;

    let matching = send(
        app.clone(),
        with(Method::GET, "/page", &[("if-none-match", ETAG)]),
    )
    .await;
    let other = send(
        app.clone(),
        with(Method::GET, "/page", &[("if-none-match", "\"v0\"")]),
    )
    .await;
    let since = send(
        app.clone(),
        with(Method::GET, "/page", &[("if-modified-since", LAST_MODIFIED)]),
    )
    .await;
    let before = [("if-modified-since", "Mon, 31 Dec 2029 00:00:00 GMT")];
    let older = send(app, with(Method::GET, "/page", &before)).await;

    assert_eq!(calls.get(), 1);
    assert_eq!((matching.status.as_u16(), matching.body.len()), (304, 0));
    assert_eq!(matching.header("etag"), Some(ETAG));
    assert!(matching.cache_status().contains("hit"));
    assert_eq!(other.status, 200);
    assert_eq!(since.status, 304);
    assert_eq!(older.status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_conditional_leader_never_hands_its_waiters_a_304() {
    let calls = Calls::default();
    let app = app(&calls, layer());

    let leader = tokio::spawn(send(
        app.clone(),
        with(Method::GET, "/page", &[("if-none-match", ETAG)]),
    ));
    let waiters = wave(&app, 10, |_| get_request("/page")).await;
    let leader = leader.await.expect("no panic");

    assert_eq!(calls.get(), 1);
    assert_eq!(
        leader.status, 304,
        "the leader's condition is answered from the full response"
    );
    for waiter in &waiters {
        assert_eq!(
            (waiter.status.as_u16(), waiter.text()),
            (200, "GET answered by call 1")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_clients_no_cache_is_ignored_by_default() {
    let calls = Calls::default();
    let app = app(&calls, layer());
    send(app.clone(), get_request("/page")).await;

    let replies = wave(&app, 10, |_| {
        with(Method::GET, "/page", &[("cache-control", "no-cache")])
    })
    .await;
    let pragma = send(app, with(Method::GET, "/page", &[("pragma", "no-cache")])).await;

    assert_eq!(calls.get(), 1, "nobody can force origin calls");
    assert_eq!(count_status(&replies, "hit"), 10);
    assert!(pragma.cache_status().contains("hit"));
}

#[tokio::test(start_paused = true)]
async fn a_clients_no_cache_when_honoured_skips_the_entry_but_still_collapses() {
    let calls = Calls::default();
    let app = app(&calls, layer().honor_no_cache(true));
    send(app.clone(), get_request("/page")).await;

    let replies = wave(&app, 10, |_| {
        with(Method::GET, "/page", &[("cache-control", "no-cache")])
    })
    .await;

    assert_eq!(calls.get(), 2, "one revalidating call for ten no-cache requests");
    // The origin said the stored response is current: it is renewed, not
    // fetched again.
    assert!(replies.iter().all(|r| r.text() == "GET answered by call 1"));
    assert_eq!(
        count_status(&replies, "fwd-status=304; stored; ttl=60; detail=revalidated"),
        1
    );
    assert_eq!(count_status(&replies, "collapsed"), 9);
}

#[tokio::test(start_paused = true)]
async fn an_expired_entry_is_revalidated_and_a_304_renews_it() {
    let calls = Calls::default();
    let app = app(&calls, keeping_layer());
    send(app.clone(), get_request("/page")).await;

    tokio::time::advance(Duration::from_secs(61)).await;
    let renewed = send(app.clone(), get_request("/page")).await;
    let hit = send(app, get_request("/page")).await;

    assert_eq!(calls.get(), 2);
    assert_eq!(
        renewed.text(),
        "GET answered by call 1",
        "the stored body, renewed"
    );
    assert!(
        renewed
            .cache_status()
            .ends_with("fwd-status=304; stored; ttl=60; detail=revalidated")
    );
    assert_eq!(hit.cache_status(), "tower-stampede; hit; ttl=60");
}

#[tokio::test(start_paused = true)]
async fn a_background_refresh_revalidates_too() {
    let calls = Calls::default();
    let swr = Policy::stale_while_revalidate(Duration::from_secs(10), Duration::from_secs(60));
    let app = app(&calls, layer().policy(swr));
    send(app.clone(), get_request("/page")).await;

    tokio::time::advance(Duration::from_secs(15)).await;
    let stale = send(app.clone(), get_request("/page")).await;
    tokio::time::sleep(ORIGIN_DELAY + Duration::from_millis(1)).await;
    let hit = send(app, get_request("/page")).await;

    assert_eq!(calls.get(), 2);
    assert!(stale.cache_status().starts_with("tower-stampede; fwd=stale"));
    assert_eq!(hit.text(), "GET answered by call 1");
    assert_eq!(hit.cache_status(), "tower-stampede; hit; ttl=9");
}

/// Each call mints its own session: a response for one client only.
async fn session(State(calls): State<Calls>) -> impl IntoResponse {
    let n = calls.record();
    tokio::time::sleep(ORIGIN_DELAY).await;
    (
        [(header::SET_COOKIE, format!("session={n}"))],
        format!("session {n}"),
    )
}

#[tokio::test(start_paused = true)]
async fn after_a_personal_response_the_key_passes_for_a_while_instead_of_queueing() {
    let calls = Calls::default();
    let layer = layer().pass_for(Duration::from_secs(30));
    let app = Router::new()
        .route("/{*path}", get(session))
        .with_state(calls.clone())
        .layer(layer.clone());

    // The first flight learns the response is personal: its waiters then go
    // to the origin after the leader, one origin time later.
    let start = Instant::now();
    let first = wave(&app, 5, |_| get_request("/me")).await;
    assert_eq!(start.elapsed(), 2 * ORIGIN_DELAY);
    assert_eq!(calls.get(), 5);

    // Now the key passes: everyone goes at once, nobody queues.
    let start = Instant::now();
    let passing = wave(&app, 10, |_| get_request("/me")).await;
    assert_eq!(start.elapsed(), ORIGIN_DELAY);
    assert_eq!(calls.get(), 15);
    assert_eq!(count_status(&passing, "detail=hit-for-pass"), 10);
    let mut bodies: Vec<_> = first
        .iter()
        .chain(&passing)
        .map(|r| r.text().to_owned())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 15, "every client got its own session");

    // Once the pass is over, the key is tried as a flight again.
    tokio::time::advance(Duration::from_secs(30)).await;
    let again = wave(&app, 3, |_| get_request("/me")).await;
    assert_eq!(count_status(&again, "hit-for-pass"), 0);
    assert_eq!(count_status(&again, "detail=set-cookie"), 3);
}

#[tokio::test(start_paused = true)]
async fn key_parts_can_be_set_per_route() {
    let calls = Calls::default();
    let layer = layer()
        .route_key(
            "/tenant/*",
            tower_stampede::DefaultKey::new().with_header("x-tenant"),
        )
        .route_key("/assets/*", tower_stampede::DefaultKey::new().without_query());
    let app = app(&calls, layer);
    let as_tenant =
        |path: &'static str, tenant: &'static str| with(Method::GET, path, &[("x-tenant", tenant)]);

    let acme = send(app.clone(), as_tenant("/tenant/home", "acme")).await;
    let globex = send(app.clone(), as_tenant("/tenant/home", "globex")).await;
    let acme_again = send(app.clone(), as_tenant("/tenant/home", "acme")).await;
    assert_ne!(acme.body, globex.body, "each tenant has its own entry");
    assert_eq!(acme_again.body, acme.body);

    send(app.clone(), get_request("/assets/app.js?v=1")).await;
    let other_query = send(app.clone(), get_request("/assets/app.js?v=2")).await;
    assert!(
        other_query.cache_status().contains("hit"),
        "the query is not part of the key"
    );

    send(app.clone(), as_tenant("/page", "acme")).await;
    let other_tenant = send(app, as_tenant("/page", "globex")).await;
    assert!(
        other_tenant.cache_status().contains("hit"),
        "elsewhere the tenant is not in the key"
    );
    assert_eq!(calls.get(), 4);
}

fn localised_app(calls: &Calls, layer: StampedeLayer<MemoryStore>) -> Router {
    Router::new()
        .route("/{*path}", get(common::localised))
        .with_state(calls.clone())
        .layer(layer)
}

fn in_language(language: &str) -> Request<Body> {
    with(
        Method::GET,
        "/home",
        &[("accept-language", language), ("host", "api.example")],
    )
}

#[tokio::test(start_paused = true)]
async fn vary_variants_are_stored_side_by_side() {
    let calls = Calls::default();
    let layer = layer();
    let app = localised_app(&calls, layer.clone());
    for language in ["en", "fr", "de"] {
        send(app.clone(), in_language(language)).await;
    }

    for _ in 0..3 {
        for language in ["en", "fr", "de", "FR"] {
            let reply = send(app.clone(), in_language(language)).await;
            assert!(
                reply.text().starts_with(&language.to_lowercase()[..2]) || reply.text().starts_with(language)
            );
            assert!(
                reply.cache_status().contains("hit"),
                "{language}: {}",
                reply.cache_status()
            );
        }
    }
    assert_eq!(calls.get(), 3, "one call per variant, no ping-pong between them");

    // Invalidating the key reaches every variant.
    layer.invalidate("GET api.example/home").await.expect("memory");
    for language in ["en", "fr", "de"] {
        let reply = send(app.clone(), in_language(language)).await;
        assert!(
            reply.cache_status().contains("stored"),
            "{language}: {}",
            reply.cache_status()
        );
    }
    assert_eq!(calls.get(), 6);
}

#[tokio::test(start_paused = true)]
async fn concurrent_variants_collapse_each_on_their_own_flight() {
    let calls = Calls::default();
    let app = localised_app(&calls, layer());
    send(app.clone(), in_language("en")).await;

    let (english, french) = tokio::join!(
        wave(&app, 10, |_| in_language("en")),
        wave(&app, 10, |_| in_language("fr")),
    );

    assert!(english.iter().all(|r| r.text() == "en by call 1"));
    assert!(french.iter().all(|r| r.text() == "fr by call 2"));
    assert_eq!(count_status(&french, "collapsed"), 9);
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_304_for_the_layers_own_question_never_reaches_a_client_as_such() {
    /// Answers a matching condition with a 304 that also mints a cookie.
    async fn cookie_on_304(State(calls): State<Calls>, request: HeaderMap) -> impl IntoResponse {
        let n = calls.record();
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, ETAG.parse().expect("valid"));
        if request.get(header::IF_NONE_MATCH).is_some_and(|v| v == ETAG) {
            headers.insert(header::SET_COOKIE, format!("session={n}").parse().expect("valid"));
            return (http::StatusCode::NOT_MODIFIED, headers, String::new());
        }
        (http::StatusCode::OK, headers, format!("page by call {n}"))
    }
    let calls = Calls::default();
    let app = Router::new()
        .route("/{*path}", get(cookie_on_304))
        .with_state(calls.clone())
        .layer(keeping_layer());
    send(app.clone(), get_request("/page")).await;

    tokio::time::advance(Duration::from_secs(61)).await;
    let plain = send(app, get_request("/page")).await;

    assert_eq!(calls.get(), 2);
    assert_eq!((plain.status.as_u16(), plain.text()), (200, "page by call 1"));
    assert_eq!(
        plain.header("set-cookie"),
        None,
        "the leader's cookie is not handed on"
    );
    assert!(
        plain
            .cache_status()
            .ends_with("fwd-status=304; detail=revalidated"),
        "{}",
        plain.cache_status()
    );
}

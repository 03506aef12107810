//! `Policy::origin` through the layer: freshness from the origin's headers,
//! revalidation that stays collapsed, `Age`, and the request's directives.
//! Time is tokio's paused clock (the layer's clock follows it), so ages and
//! expiries are exact.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Request, StatusCode, Uri, header},
    response::IntoResponse,
    routing::get,
};
use common::{ORIGIN_DELAY, get_request, send, tokio_clock, wave};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

const ETAG: &str = "\"v1\"";

/// A request that reached the origin: its path and `If-None-Match`.
type Call = (String, Option<String>);

/// What reached the origin.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Call>>>);

impl Seen {
    fn calls(&self) -> Vec<Call> {
        self.0.lock().expect("not poisoned").clone()
    }

    fn count(&self) -> usize {
        self.0.lock().expect("not poisoned").len()
    }
}

/// Each path answers as its name says; every answer with an `ETag` is
/// `304` to a matching `If-None-Match`, with `X-Version: 2` (a stored
/// field the `304` updates).
async fn origin(State(seen): State<Seen>, uri: Uri, request: HeaderMap) -> impl IntoResponse {
    let asked = request
        .get(header::IF_NONE_MATCH)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let n = {
        let mut calls = seen.0.lock().expect("not poisoned");
        calls.push((uri.path().to_owned(), asked.clone()));
        calls.len()
    };
    tokio::time::sleep(ORIGIN_DELAY).await;
    let mut headers = HeaderMap::new();
    let pairs: &[(&str, &str)] = match uri.path() {
        "/silent" => &[],
        "/validated" => &[("etag", ETAG)],
        "/no-cache" => &[("etag", ETAG), ("cache-control", "no-cache")],
        "/aged" => &[("cache-control", "max-age=60"), ("age", "30")],
        "/fresh" => &[("etag", ETAG), ("cache-control", "max-age=60")],
        other => panic!("no such path {other}"),
    };
    for (name, value) in pairs {
        headers.insert(*name, value.parse().expect("valid"));
    }
    if headers.contains_key(header::ETAG) && asked.as_deref() == Some(ETAG) {
        headers.insert("x-version", "2".parse().expect("valid"));
        return (StatusCode::NOT_MODIFIED, headers, String::new());
    }
    headers.insert("x-version", "1".parse().expect("valid"));
    (StatusCode::OK, headers, format!("{} by call {n}", uri.path()))
}

fn routes(seen: &Seen) -> Router {
    Router::new()
        .route("/{*path}", get(origin))
        .with_state(seen.clone())
}

fn app(seen: &Seen, layer: StampedeLayer<MemoryStore>) -> Router {
    routes(seen).layer(layer)
}

fn origin_layer() -> StampedeLayer<MemoryStore> {
    StampedeLayer::new(MemoryStore::new())
        .policy(Policy::origin(Duration::from_secs(3600)))
        .clock(tokio_clock())
}

fn asking(path: &str, cache_control: &str) -> Request<Body> {
    Request::get(path)
        .header(header::CACHE_CONTROL, cache_control)
        .body(Body::empty())
        .expect("valid")
}

#[tokio::test(start_paused = true)]
async fn a_response_with_neither_lifetime_nor_validator_is_not_reused() {
    let seen = Seen::default();
    let app = app(&seen, origin_layer());
    let first = send(app.clone(), get_request("/silent")).await;
    let second = send(app, get_request("/silent")).await;
    assert_eq!(
        (first.text(), second.text()),
        ("/silent by call 1", "/silent by call 2")
    );
}

#[tokio::test(start_paused = true)]
async fn a_stampede_on_an_entry_to_revalidate_makes_one_conditional_request() {
    let seen = Seen::default();
    let app = app(&seen, origin_layer());
    let stored = send(app.clone(), get_request("/validated")).await;
    assert!(
        stored.cache_status().contains("stored"),
        "{}",
        stored.cache_status()
    );

    let replies = wave(&app, 100, |_| get_request("/validated")).await;
    assert_eq!(
        seen.calls(),
        [
            ("/validated".to_owned(), None),
            ("/validated".to_owned(), Some(ETAG.to_owned()))
        ],
        "one conditional request for the hundred"
    );
    for reply in &replies {
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "/validated by call 1")
        );
        assert_eq!(reply.header("x-version"), Some("2"), "the 304's fields");
    }
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_response_is_validated_before_each_use() {
    let seen = Seen::default();
    let app = app(&seen, origin_layer());
    send(app.clone(), get_request("/no-cache")).await;
    let again = send(app, get_request("/no-cache")).await;
    assert_eq!(again.text(), "/no-cache by call 1");
    assert_eq!(seen.calls()[1], ("/no-cache".to_owned(), Some(ETAG.to_owned())));
}

#[tokio::test(start_paused = true)]
async fn age_counts_from_when_the_origin_made_the_response() {
    let seen = Seen::default();
    let app = app(&seen, origin_layer());
    let first = send(app.clone(), get_request("/aged")).await;
    assert_eq!(first.header("age"), Some("30"), "it came 30 s old");
    tokio::time::advance(Duration::from_secs(10)).await;
    let hit = send(app.clone(), get_request("/aged")).await;
    assert_eq!((hit.header("age"), hit.text()), (Some("40"), "/aged by call 1"));
    // 61 s old: past its max-age of 60.
    tokio::time::advance(Duration::from_secs(21)).await;
    let expired = send(app, get_request("/aged")).await;
    assert_eq!(expired.text(), "/aged by call 2");
}

#[tokio::test(start_paused = true)]
async fn each_request_directive_is_honoured() {
    let seen = Seen::default();
    let app = app(&seen, origin_layer());
    send(app.clone(), get_request("/fresh")).await;
    tokio::time::advance(Duration::from_secs(10)).await;

    // only-if-cached: the stored response, or 504 without asking the origin.
    let cached = send(app.clone(), asking("/fresh", "only-if-cached")).await;
    assert_eq!(cached.text(), "/fresh by call 1");
    let nothing = send(app.clone(), asking("/silent", "only-if-cached")).await;
    assert_eq!(nothing.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(seen.count(), 1, "only-if-cached never reaches the origin");

    // Fresh enough for these: served from the store.
    for fine in ["max-age=10", "min-fresh=50", "max-stale=5"] {
        let reply = send(app.clone(), asking("/fresh", fine)).await;
        assert!(
            reply.cache_status().contains("hit"),
            "{fine}: {}",
            reply.cache_status()
        );
    }
    assert_eq!(seen.count(), 1);

    // Too old or too close to expiry for these, or refused: revalidated
    // (each 304 renews it: 60 s left after it).
    for (n, strict) in ["max-age=9", "min-fresh=61", "no-cache"].into_iter().enumerate() {
        let reply = send(app.clone(), asking("/fresh", strict)).await;
        assert_eq!(reply.text(), "/fresh by call 1", "{strict}: the stored body");
        assert_eq!(
            seen.calls()[n + 1],
            ("/fresh".to_owned(), Some(ETAG.to_owned())),
            "{strict}: a conditional request"
        );
    }

    // The last 304 renewed it: 60 s from now. 65 s on, it is 5 s stale.
    tokio::time::advance(Duration::from_secs(65)).await;
    let calls = seen.count();
    let too_stale = send(app.clone(), asking("/fresh", "max-stale=4, only-if-cached")).await;
    assert_eq!(
        too_stale.status,
        StatusCode::GATEWAY_TIMEOUT,
        "5 s stale is more than 4"
    );
    let stale = send(app, asking("/fresh", "max-stale=5")).await;
    assert_eq!(stale.text(), "/fresh by call 1");
    assert!(
        stale.cache_status().contains("fwd=stale"),
        "{}",
        stale.cache_status()
    );
    common::within("the refresh behind it", async {
        while seen.count() == calls {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Replicas on one Redis: a stampede on each, on an entry that must be
/// revalidated before every use, makes one conditional request in all.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidations_collapse_across_replicas() {
    use common::redis_server::RedisServer;
    use tower_stampede::{RedisStore, clock::ManualClock};

    let server = RedisServer::start();
    let seen = Seen::default();
    let clock = ManualClock::new(common::t0());
    let mut apps = Vec::new();
    for _ in 0..3 {
        let store = RedisStore::from_url(server.url()).expect("valid url");
        store.connect().await.expect("redis is up");
        let layer = StampedeLayer::new(store)
            .policy(Policy::origin(Duration::from_secs(3600)))
            .clock(clock.clone());
        apps.push(routes(&seen).layer(layer));
    }
    send(apps[0].clone(), get_request("/no-cache")).await;
    clock.advance(Duration::from_secs(1));

    let tasks: Vec<_> = apps
        .iter()
        .flat_map(|app| (0..30).map(move |_| tokio::spawn(send(app.clone(), get_request("/no-cache")))))
        .collect();
    for task in tasks {
        let reply = task.await.expect("no request task panics");
        assert_eq!(reply.text(), "/no-cache by call 1");
    }
    assert_eq!(
        seen.calls(),
        [
            ("/no-cache".to_owned(), None),
            ("/no-cache".to_owned(), Some(ETAG.to_owned()))
        ],
        "one conditional request for three replicas"
    );
}

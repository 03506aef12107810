//! A request's `Cookie` is a credential (the layer's rule, stricter than RFC
//! 9111): the response to a request that carries one is shared only if it
//! says `public` or `s-maxage`, and a stored response reaches such a request
//! only on the same terms; a route that keys by the cookies that matter, or
//! ignores cookies, shares again. Each test runs on both stores. (The leak
//! suite holds the collapsed waiters of a cookie request's flight.)

mod common;

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, Request, header},
    response::IntoResponse,
    routing::get,
};
use common::{Calls, Reply, send};
use tower_stampede::{DefaultKey, MemoryStore, StampedeLayer, Store};

/// Echoes the call and the request's cookies; `public` pages say so.
async fn page(
    State(calls): State<Calls>,
    Path((kind, _)): Path<(String, String)>,
    request: HeaderMap,
) -> impl IntoResponse {
    let n = calls.record();
    let cookie = request
        .get(header::COOKIE)
        .map_or("none", |v| v.to_str().expect("ascii"))
        .to_owned();
    let cache_control = if kind == "public" {
        "public, max-age=60"
    } else {
        "max-age=60"
    };
    (
        [(header::CACHE_CONTROL, cache_control)],
        format!("call {n}; cookie={cookie}"),
    )
}

struct App {
    router: Router,
    calls: Calls,
}

impl App {
    fn new<St: Store>(layer: StampedeLayer<St>) -> Self {
        let calls = Calls::default();
        let layer = layer
            .route_key("/lang/*", DefaultKey::new().with_cookie("lang"))
            .ignore_cookies("/blog/*");
        let router = Router::new()
            .route("/{kind}/{page}", get(page))
            .with_state(calls.clone())
            .layer(layer);
        Self { router, calls }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let mut request = Request::get(path).header(header::HOST, "shop.example");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let reply = send(self.router.clone(), request.body(Body::empty()).expect("valid")).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        reply
    }
}

fn assert_status(reply: &Reply, expected: &str) {
    assert!(
        reply.cache_status().contains(expected),
        "expected {expected:?} in {:?} ({})",
        reply.cache_status(),
        reply.text()
    );
}

/// Alice's page, not marked public, reaches neither an anonymous client nor
/// Bob; and a page stored for anonymous clients does not reach Alice.
async fn a_plain_response_is_its_cookies_alone(app: &App) {
    let alice = app.get("/plain/me", Some("session=alice")).await;
    assert_eq!(alice.text(), "call 1; cookie=session=alice");
    assert_status(&alice, "detail=cookie");
    let anonymous = app.get("/plain/me", None).await;
    assert_eq!(anonymous.text(), "call 2; cookie=none");
    let bob = app.get("/plain/me", Some("session=bob")).await;
    assert_eq!(bob.text(), "call 3; cookie=session=bob");

    let stored = app.get("/plain/home", None).await;
    assert_status(&stored, "stored");
    let carol = app.get("/plain/home", Some("session=carol")).await;
    assert_eq!(carol.text(), "call 5; cookie=session=carol");
    assert_status(&carol, "fwd=request; fwd-status=200; detail=cookie");
    let again = app.get("/plain/home", None).await;
    assert_eq!(again.body, stored.body, "anonymous clients still share it");
    assert_status(&again, "hit");
    assert_eq!(app.calls.get(), 5);
}

/// A page that says `public` is shared whatever the cookies.
async fn a_public_response_is_shared_across_cookies(app: &App) {
    let alice = app.get("/public/home", Some("session=alice")).await;
    assert_status(&alice, "stored");
    for cookie in [Some("session=bob"), None] {
        let other = app.get("/public/home", cookie).await;
        assert_eq!(other.body, alice.body, "{cookie:?}");
        assert_status(&other, "hit");
    }
    assert_eq!(app.calls.get(), 1);
}

/// `with_cookie("lang")`: one entry per language, whatever the session.
async fn a_key_with_a_cookie_keys_by_that_cookie_only(app: &App) {
    let english = app.get("/lang/docs", Some("lang=en; session=alice")).await;
    assert_status(&english, "stored");
    let bob = app.get("/lang/docs", Some("session=bob; lang=en")).await;
    assert_eq!(bob.body, english.body, "the session does not count");
    assert_status(&bob, "hit");
    let german = app.get("/lang/docs", Some("lang=de; session=alice")).await;
    assert_eq!(german.text(), "call 2; cookie=lang=de; session=alice");
    let none = app.get("/lang/docs", None).await;
    assert_eq!(none.text(), "call 3; cookie=none");
    let german_again = app.get("/lang/docs", Some("lang=de")).await;
    assert_eq!(german_again.body, german.body);
    assert_eq!(app.calls.get(), 3);
}

/// `ignore_cookies("/blog/*")`: cookies there are no credential.
async fn a_route_that_ignores_cookies_shares_again(app: &App) {
    let alice = app.get("/blog/post-1", Some("session=alice; _ga=1")).await;
    assert_status(&alice, "stored");
    for cookie in [Some("session=bob"), None] {
        let other = app.get("/blog/post-1", cookie).await;
        assert_eq!(other.body, alice.body, "{cookie:?}");
        assert_status(&other, "hit");
    }
    assert_eq!(app.calls.get(), 1);
}

async fn every_case<St: Store>(layer: impl Fn() -> StampedeLayer<St>) {
    a_plain_response_is_its_cookies_alone(&App::new(layer())).await;
    a_public_response_is_shared_across_cookies(&App::new(layer())).await;
    a_key_with_a_cookie_keys_by_that_cookie_only(&App::new(layer())).await;
    a_route_that_ignores_cookies_shares_again(&App::new(layer())).await;
}

#[tokio::test]
async fn cookies_are_credentials_on_the_memory_store() {
    every_case(|| StampedeLayer::new(MemoryStore::new())).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn cookies_are_credentials_on_the_redis_store() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use common::redis_server::RedisServer;
    use tower_stampede::RedisStore;

    let server = RedisServer::start();
    let next = AtomicUsize::new(0);
    every_case(|| {
        // A prefix per case: each starts from an empty store.
        let prefix = format!("cookies-{}:", next.fetch_add(1, Ordering::Relaxed));
        let store = RedisStore::from_url(server.url())
            .expect("valid url")
            .prefix(prefix);
        StampedeLayer::new(store)
    })
    .await;
}

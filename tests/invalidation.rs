//! Invalidation: successful writes, purges by key and by tag (across
//! replicas on Redis), and an invalidation that lands while the key is being
//! rebuilt.

mod common;

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
#[cfg(feature = "redis")]
use common::redis_server::RedisServer;
use common::{Calls, ORIGIN_DELAY, send};
use tokio::sync::Notify;
#[cfg(feature = "redis")]
use tower_stampede::RedisStore;
use tower_stampede::{MemoryStore, StampedeLayer, Store};

/// Pages tagged by their first path segment; writes answer as their path
/// says: `/fail/...` fails, `/created/...` points `Location` at a page;
/// and `/vary/...` varies on `Accept-Language`.
async fn page(
    State((calls, entered)): State<(Calls, Arc<Notify>)>,
    Path(path): Path<String>,
    request: http::HeaderMap,
) -> axum::response::Response {
    let n = calls.record();
    entered.notify_one();
    tokio::time::sleep(ORIGIN_DELAY).await;
    let tag = path.split('/').next().unwrap_or("").to_owned();
    let tags = [("surrogate-key", format!("{tag} all"))];
    if tag != "vary" {
        return (tags, format!("/{path} answered by call {n}")).into_response();
    }
    let language = request.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    let body = format!("/{path} in {} answered by call {n}", language.unwrap_or("any"));
    (tags, [(header::VARY, "accept-language")], body).into_response()
}

async fn write(Path(path): Path<String>) -> impl IntoResponse {
    match path.split_once('/') {
        Some(("fail", _)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::LOCATION, "/x".to_owned())],
        ),
        Some(("created", target)) if target.starts_with("http") => {
            (StatusCode::CREATED, [(header::LOCATION, target.to_owned())])
        }
        Some(("created", target)) => (StatusCode::CREATED, [(header::LOCATION, format!("/{target}"))]),
        _ => (
            StatusCode::NO_CONTENT,
            [(header::CONTENT_LOCATION, "/none".to_owned())],
        ),
    }
}

fn app<St: Store>(calls: &Calls, entered: &Arc<Notify>, layer: StampedeLayer<St>) -> Router {
    Router::new()
        .route("/{*path}", get(page).post(write).put(write).delete(write))
        .with_state((calls.clone(), Arc::clone(entered)))
        .layer(layer)
}

fn request(method: &str, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "api.example")
        .body(Body::empty())
        .expect("valid")
}

async fn status_of(app: &Router, path: &str) -> String {
    send(app.clone(), request("GET", path)).await.cache_status()
}

#[tokio::test(start_paused = true)]
async fn a_successful_write_invalidates_its_target_and_same_authority_locations() {
    let (calls, entered) = (Calls::default(), Arc::new(Notify::new()));
    let app = app(&calls, &entered, StampedeLayer::new(MemoryStore::new()));
    for path in ["/posts", "/posts/42", "/x"] {
        assert!(status_of(&app, path).await.contains("stored"));
    }

    let failed = send(app.clone(), request("POST", "/fail/posts")).await;
    assert_eq!(failed.status, 500);
    assert!(
        status_of(&app, "/x").await.contains("hit"),
        "a failed write invalidates nothing"
    );

    send(app.clone(), request("PUT", "/posts")).await;
    assert!(
        status_of(&app, "/posts").await.contains("stored"),
        "its own target"
    );

    send(app.clone(), request("POST", "/created/posts/42")).await;
    assert!(
        status_of(&app, "/posts/42").await.contains("stored"),
        "its Location"
    );

    let elsewhere = "/created/http:%2F%2Fother.example%2Fx";
    send(app.clone(), request("POST", elsewhere)).await;
    assert!(
        status_of(&app, "/x").await.contains("hit"),
        "another authority's page stays"
    );
}

#[tokio::test(start_paused = true)]
async fn invalidate_by_key_and_by_tag() {
    let (calls, entered) = (Calls::default(), Arc::new(Notify::new()));
    let layer = StampedeLayer::new(MemoryStore::new());
    let app = app(&calls, &entered, layer.clone());
    for path in ["/posts/1", "/posts/2", "/home/1"] {
        send(app.clone(), request("GET", path)).await;
    }

    layer.invalidate("GET api.example/home/1").await.expect("memory");
    assert_eq!(layer.invalidate_tag("posts").await.expect("memory"), 2);

    for path in ["/posts/1", "/posts/2", "/home/1"] {
        assert!(
            status_of(&app, path).await.contains("stored"),
            "{path} was purged"
        );
    }
    assert_eq!(calls.get(), 6);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_purged_on_one_replica_is_gone_for_the_other() {
    let server = RedisServer::start();
    let (calls, entered) = (Calls::default(), Arc::new(Notify::new()));
    let (a, b) = (
        StampedeLayer::new(RedisStore::from_url(server.url()).expect("valid url")),
        StampedeLayer::new(RedisStore::from_url(server.url()).expect("valid url")),
    );
    let app_a = app(&calls, &entered, a);
    for path in ["/posts/1", "/posts/2", "/home/1"] {
        send(app_a.clone(), request("GET", path)).await;
    }

    assert_eq!(b.invalidate_tag("posts").await.expect("redis"), 2);

    assert!(status_of(&app_a, "/posts/1").await.contains("stored"));
    assert!(status_of(&app_a, "/posts/2").await.contains("stored"));
    assert!(status_of(&app_a, "/home/1").await.contains("hit"));
    assert_eq!(calls.get(), 5);
    assert_eq!(
        server.cli(&["EXISTS", &b.store().tag_key("posts")]),
        "1",
        "re-tagged by the rebuilds"
    );
}

/// What lands while a page is at the origin.
#[derive(Clone, Copy)]
enum Outdating {
    /// `invalidate` of its key.
    Key,
    /// `invalidate_tag` of its tag, before its entry (and so its place in
    /// the tag's index) exists.
    Tag,
    /// A write to its page, while the page's `Vary` variant being rebuilt
    /// is not yet stored.
    WriteToItsPage,
}

impl Outdating {
    /// The request for the page being rebuilt.
    fn request(self) -> Request<Body> {
        match self {
            Self::Key | Self::Tag => request("GET", "/posts/1"),
            Self::WriteToItsPage => in_language("/vary/1", "en"),
        }
    }

    /// What the origin answers that request with at its `n`th call.
    fn answer(self, n: usize) -> String {
        match self {
            Self::Key | Self::Tag => format!("/posts/1 answered by call {n}"),
            Self::WriteToItsPage => format!("/vary/1 in en answered by call {n}"),
        }
    }
}

fn in_language(path: &str, language: &str) -> Request<Body> {
    let mut request = request("GET", path);
    let value = header::HeaderValue::from_str(language).expect("a valid value");
    request.headers_mut().insert(header::ACCEPT_LANGUAGE, value);
    request
}

/// An invalidation that lands while a page is being rebuilt: the outdated
/// response answers only the requests already waiting for it and is not
/// stored; a request after the invalidation does not join that rebuild, and
/// the next one is answered by the fresh call.
async fn outdated_during_a_rebuild<St: Store>(layer: StampedeLayer<St>, what: Outdating) {
    let (calls, entered) = (Calls::default(), Arc::new(Notify::new()));
    let app = app(&calls, &entered, layer.clone());
    let (get, answer) = (|| what.request(), |n| what.answer(n));
    if let Outdating::WriteToItsPage = what {
        // The page's first response says what it varies on; that call left
        // its signal unread.
        send(app.clone(), in_language("/vary/1", "fr")).await;
        entered.notified().await;
    }
    let old = calls.get() + 1;

    let rebuild = tokio::spawn(send(app.clone(), get()));
    common::within("the origin is called", entered.notified()).await;
    match what {
        Outdating::Key => layer.invalidate("GET api.example/posts/1").await.expect("store"),
        Outdating::Tag => drop(layer.invalidate_tag("posts").await.expect("store")),
        Outdating::WriteToItsPage => {
            assert_eq!(send(app.clone(), request("PUT", "/vary/1")).await.status, 204);
        }
    }
    let after = send(app.clone(), get()).await;
    assert_eq!(
        after.text(),
        answer(old + 1),
        "a request after the invalidation joined the rebuild from before it: {}",
        after.cache_status()
    );
    let outdated = rebuild.await.expect("no panic");

    assert_eq!(outdated.text(), answer(old));
    assert!(
        !outdated.cache_status().contains("stored"),
        "{}",
        outdated.cache_status()
    );
    let fresh = send(app, get()).await;
    assert_eq!(fresh.text(), answer(old + 1), "{}", fresh.cache_status());
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_rebuild_voids_its_write_in_memory() {
    outdated_during_a_rebuild(StampedeLayer::new(MemoryStore::new()), Outdating::Key).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_rebuild_voids_its_write_on_redis() {
    let server = RedisServer::start();
    let store = RedisStore::from_url(server.url()).expect("valid url");
    outdated_during_a_rebuild(StampedeLayer::new(store), Outdating::Key).await;
}

#[tokio::test(start_paused = true)]
async fn a_tag_purge_during_a_rebuild_voids_its_write_in_memory() {
    outdated_during_a_rebuild(StampedeLayer::new(MemoryStore::new()), Outdating::Tag).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_purge_during_a_rebuild_voids_its_write_on_redis() {
    let server = RedisServer::start();
    let store = RedisStore::from_url(server.url()).expect("valid url");
    outdated_during_a_rebuild(StampedeLayer::new(store), Outdating::Tag).await;
}

#[tokio::test(start_paused = true)]
async fn a_write_during_a_variant_rebuild_voids_its_write_in_memory() {
    outdated_during_a_rebuild(StampedeLayer::new(MemoryStore::new()), Outdating::WriteToItsPage).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_variant_rebuild_voids_its_write_on_redis() {
    let server = RedisServer::start();
    let store = RedisStore::from_url(server.url()).expect("valid url");
    outdated_during_a_rebuild(StampedeLayer::new(store), Outdating::WriteToItsPage).await;
}

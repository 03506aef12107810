//! A response that belongs to one user reaches only that user, whether it
//! would be stored or handed to waiters. Holds, in `src/docs/guarantees.md`,
//! `#personal-responses-reach-only-their-own-client` and
//! `#stored-responses-answer-only-matching-requests`, and the `Authorization`
//! part of `#hit-for-pass-instead-of-queueing`.

mod common;

use std::{collections::HashSet, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, Request, header},
    response::IntoResponse,
    routing::get,
};
use common::{Calls, Reply, get_request, send, wave};
use tower_stampede::{MemoryStore, StampedeLayer};

/// Answers with a body unique to the call and, depending on the path, the
/// headers that make a response personal.
async fn personal(
    State(calls): State<Calls>,
    Path(kind): Path<String>,
    request: HeaderMap,
) -> impl IntoResponse {
    let n = calls.record();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let user = request
        .get(header::AUTHORIZATION)
        .map_or("anonymous", |v| v.to_str().expect("ascii"));
    let language = request
        .get(header::ACCEPT_LANGUAGE)
        .map_or("none", |v| v.to_str().expect("ascii"));
    let mut headers = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: String| {
        headers.insert(name, value.parse().expect("valid value"));
    };
    match kind.as_str() {
        "cookie" => set(header::SET_COOKIE, format!("session={n}")),
        "private" => set(header::CACHE_CONTROL, "private, max-age=60".into()),
        "no-store" => set(header::CACHE_CONTROL, "no-store".into()),
        "no-cache" => set(header::CACHE_CONTROL, "no-cache".into()),
        "public" => set(header::CACHE_CONTROL, "public, max-age=60".into()),
        "language" => set(header::VARY, "accept-language".into()),
        "vary-star" => set(header::VARY, "*".into()),
        _ => {}
    }
    (headers, format!("call {n} for {user} in {language}"))
}

fn app(calls: &Calls) -> Router {
    Router::new()
        .route("/{kind}", get(personal))
        .with_state(calls.clone())
        .layer(StampedeLayer::new(MemoryStore::new()))
}

fn as_user(path: &str, user: usize) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer user-{user}"))
        .body(Body::empty())
        .expect("valid")
}

/// Every reply came from its own origin call.
fn all_distinct(replies: &[Reply]) -> bool {
    replies
        .iter()
        .map(|r| r.body.clone())
        .collect::<HashSet<_>>()
        .len()
        == replies.len()
}

async fn reaches_only_its_own_client(path: &str) {
    let calls = Calls::default();
    let app = app(&calls);

    let replies = wave(&app, 10, |_| get_request(path)).await;

    assert_eq!(calls.get(), 10, "{path}: every client went to the origin");
    assert!(
        all_distinct(&replies),
        "{path}: a response was handed to another client"
    );
    for reply in &replies {
        assert!(!reply.cache_status().contains("collapsed"), "{path}");
    }
    send(app, get_request(path)).await;
    assert_eq!(calls.get(), 11, "{path}: nothing was stored");
}

#[tokio::test(start_paused = true)]
async fn a_set_cookie_response_reaches_only_its_own_client() {
    reaches_only_its_own_client("/cookie").await;
}

#[tokio::test(start_paused = true)]
async fn each_client_gets_the_cookie_minted_for_it() {
    let calls = Calls::default();
    let replies = wave(&app(&calls), 10, |_| get_request("/cookie")).await;
    for reply in &replies {
        let cookie = reply.header("set-cookie").expect("cookie kept");
        let n = cookie.strip_prefix("session=").expect("session cookie");
        assert!(
            reply.text().starts_with(&format!("call {n} ")),
            "{cookie} with {}",
            reply.text()
        );
        assert!(reply.cache_status().ends_with("detail=set-cookie"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_private_response_reaches_only_its_own_client() {
    reaches_only_its_own_client("/private").await;
}

#[tokio::test(start_paused = true)]
async fn a_no_store_response_reaches_only_its_own_client() {
    reaches_only_its_own_client("/no-store").await;
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_response_reaches_only_its_own_client() {
    reaches_only_its_own_client("/no-cache").await;
}

#[tokio::test(start_paused = true)]
async fn a_vary_star_response_reaches_only_its_own_client() {
    reaches_only_its_own_client("/vary-star").await;
}

#[tokio::test(start_paused = true)]
async fn a_response_to_an_authorized_request_reaches_only_its_own_client() {
    let calls = Calls::default();
    let app = app(&calls);

    let replies = wave(&app, 10, |i| as_user("/plain", i)).await;

    assert_eq!(calls.get(), 10);
    for (i, reply) in replies.iter().enumerate() {
        assert!(
            reply.text().contains(&format!("for Bearer user-{i} ")),
            "{}",
            reply.text()
        );
    }
    let anonymous = send(app, get_request("/plain")).await;
    assert!(anonymous.text().contains("for anonymous"), "{}", anonymous.text());
    assert_eq!(calls.get(), 11);
}

#[tokio::test(start_paused = true)]
async fn an_authorized_response_that_says_public_is_shared() {
    let calls = Calls::default();
    let replies = wave(&app(&calls), 10, |i| as_user("/public", i)).await;
    assert_eq!(calls.get(), 1);
    assert!(replies.iter().all(|r| r.body == replies[0].body));
}

#[tokio::test(start_paused = true)]
async fn a_stored_response_is_not_served_to_an_authorized_request_unless_public() {
    let calls = Calls::default();
    let app = app(&calls);
    let stored = send(app.clone(), get_request("/plain")).await;
    assert!(stored.cache_status().contains("stored"));

    let authorized = send(app.clone(), as_user("/plain", 7)).await;
    assert_eq!(
        authorized.cache_status(),
        "tower-stampede; fwd=request; fwd-status=200; detail=authorization"
    );
    assert!(authorized.text().contains("user-7"));
    assert_eq!(calls.get(), 2);

    send(app.clone(), get_request("/public")).await;
    let shared = send(app, as_user("/public", 7)).await;
    assert!(shared.cache_status().contains("hit"));
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_varying_response_is_served_only_to_matching_requests() {
    let calls = Calls::default();
    let app = app(&calls);
    let in_language = |language: &'static str| {
        move |_| {
            Request::get("/language")
                .header(header::ACCEPT_LANGUAGE, language)
                .body(Body::empty())
                .expect("valid")
        }
    };

    // Concurrent: French waiters of an English leader go forward themselves.
    let (english, french) = tokio::join!(wave(&app, 5, in_language("en")), wave(&app, 5, in_language("fr")),);
    assert!(english.iter().all(|r| r.text().ends_with(" in en")));
    assert!(french.iter().all(|r| r.text().ends_with(" in fr")));

    // Stored: a hit only for the same language.
    let calls_before = calls.get();
    let again = send(app.clone(), in_language("en")(0)).await;
    let other = send(app, in_language("de")(0)).await;
    assert!(again.text().ends_with(" in en"));
    assert!(other.text().ends_with(" in de"));
    assert!(
        calls.get() > calls_before,
        "German was not served a stored English page"
    );
}

#[tokio::test(start_paused = true)]
async fn one_authorized_request_does_not_turn_caching_off_for_everyone() {
    let calls = Calls::default();
    let app = app(&calls);
    send(app.clone(), as_user("/plain", 1)).await;

    let anonymous = wave(&app, 10, |_| get_request("/plain")).await;

    assert_eq!(calls.get(), 2, "the anonymous requests collapsed onto one call");
    assert!(anonymous.iter().all(|r| r.text().contains("for anonymous")));
    assert_eq!(
        anonymous
            .iter()
            .filter(|r| r.cache_status().contains("hit-for-pass"))
            .count(),
        0
    );
}

//! `POST` requests cached as reads on an axum app (a GraphQL-style
//! endpoint), and what `POST` still invalidates once a layer reads bodies.

mod common;

use std::time::Duration;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::Request,
    routing::{get, post},
};
use common::{Calls, count_status, get_request, send, wave};
use tower::Layer;
use tower_stampede::{MemoryStore, Policy, Replay, StampedeBody, StampedeLayer};

/// Answers with the query it was sent, after the origin's delay.
async fn query(State(calls): State<Calls>, body: Bytes) -> String {
    let n = calls.record();
    tokio::time::sleep(common::ORIGIN_DELAY).await;
    format!("{} by call {n}", String::from_utf8_lossy(&body))
}

async fn page(State(calls): State<Calls>) -> String {
    format!("page by call {}", calls.record())
}

async fn accepted() -> &'static str {
    "done"
}

fn app(calls: &Calls) -> Router {
    Router::new()
        .route("/graphql", post(query).get(page))
        .route("/thing", get(page).post(accepted))
        .with_state(calls.clone())
}

fn post_request(path: &str, content_type: &str, body: &'static str) -> Request<Body> {
    Request::post(path)
        .header("content-type", content_type)
        .body(Body::from(body))
        .expect("valid request")
}

/// A layer's type can be named with a function pointer for the replay.
type Replayer = fn(StampedeBody<Body>) -> Body;

fn layer() -> StampedeLayer<MemoryStore, Replay<Replayer, Body>> {
    StampedeLayer::new(MemoryStore::new())
        .replay_requests(Body::new as Replayer)
        .route("/graphql", Policy::ttl(Duration::from_secs(60)))
        .cache_posts("/graphql")
}

#[tokio::test]
async fn identical_posts_collapse_and_are_stored() {
    let calls = Calls::default();
    let service = layer().layer(app(&calls));
    let replies = wave(&service, 50, |_| {
        post_request("/graphql", "application/json", r#"{"query":"{ popular }"}"#)
    })
    .await;
    assert_eq!(calls.get(), 1);
    for reply in &replies {
        assert_eq!(
            reply.text(),
            r#"{"query":"{ popular }"} by call 1"#,
            "the body reached the origin unchanged"
        );
    }
    assert_eq!(count_status(&replies, "collapsed"), 49);

    let hit = send(
        service,
        post_request("/graphql", "application/json", r#"{"query":"{ popular }"}"#),
    )
    .await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn a_post_read_and_a_get_of_one_path_are_different_keys() {
    let calls = Calls::default();
    let service = layer().layer(app(&calls));
    let posted = send(
        service.clone(),
        post_request("/graphql", "application/json", "q1"),
    )
    .await;
    let other = send(
        service.clone(),
        post_request("/graphql", "application/json", "q2"),
    )
    .await;
    let got = send(service.clone(), get_request("/graphql")).await;
    assert_eq!(posted.text(), "q1 by call 1");
    assert_eq!(other.text(), "q2 by call 2", "another body, another key");
    assert_eq!(got.text(), "page by call 3", "a GET is not answered by a POST");
    let as_text = send(service, post_request("/graphql", "text/plain", "q1")).await;
    assert_eq!(
        as_text.text(),
        "q1 by call 4",
        "another content type, another key"
    );
}

#[tokio::test]
async fn a_grpc_call_invalidates_nothing_and_other_posts_still_do() {
    let calls = Calls::default();
    let service = layer().layer(app(&calls));
    send(service.clone(), get_request("/thing")).await;
    assert_eq!(calls.get(), 1);

    let grpc = send(service.clone(), post_request("/thing", "application/grpc", "")).await;
    assert_eq!(grpc.cache_status(), "tower-stampede; fwd=method");
    let still = send(service.clone(), get_request("/thing")).await;
    assert!(still.cache_status().contains("hit"), "{}", still.cache_status());

    send(service.clone(), post_request("/thing", "application/json", "{}")).await;
    let after = send(service, get_request("/thing")).await;
    assert_eq!(
        after.text(),
        "page by call 2",
        "a plain POST invalidated its target"
    );
}

#[tokio::test]
async fn posts_to_routes_not_opted_in_are_not_cached() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new()).replay_requests(Body::new);
    let service = layer.layer(app(&calls));
    send(service.clone(), post_request("/graphql", "application/json", "q")).await;
    let again = send(service, post_request("/graphql", "application/json", "q")).await;
    assert_eq!(again.text(), "q by call 2");
}

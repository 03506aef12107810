//! Readiness: `poll_ready` is the inner service's, and the instance that was
//! readied is the one called (tower-test's mock panics otherwise), on the
//! pass-through path and on the leader's path alike.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};
use tower_test::mock;

type Mock = mock::Mock<Request<Empty<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Empty<Bytes>>, Response<Full<Bytes>>>;

fn layered() -> (tower_stampede::Stampede<Mock, MemoryStore>, Handle) {
    let (mock, handle) = mock::pair();
    let layer = StampedeLayer::new(MemoryStore::new()).route("/admin/*", Policy::bypass());
    (layer.layer(mock), handle)
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).body(Empty::new()).expect("valid")
}

#[test]
fn poll_ready_is_the_inner_services() {
    let (mut service, mut handle) = layered();
    handle.allow(0);
    let mut ready = task::spawn(());
    assert_pending!(ready.enter(|cx, _| service.poll_ready(cx)));
    handle.allow(1);
    assert!(ready.is_woken());
    assert_ready_ok!(ready.enter(|cx, _| service.poll_ready(cx)));
}

#[tokio::test]
async fn the_readied_instance_serves_a_pass_through_request() {
    let (mut service, mut handle) = layered();
    handle.allow(1);
    let response = service.ready().await.expect("ready").call(get("/admin/users"));
    let (request, reply) = handle.next_request().await.expect("the origin is called");
    assert_eq!(request.uri(), "/admin/users");
    reply.send_response(Response::new(Full::new(Bytes::from("admin"))));
    let response = response.await.expect("ok");
    assert_eq!(response.headers()["cache-status"], "tower-stampede; fwd=bypass");
}

#[tokio::test]
async fn the_readied_instance_serves_a_leaders_request() {
    let (mut service, mut handle) = layered();
    handle.allow(1);
    let response = tokio::spawn(service.ready().await.expect("ready").call(get("/api/posts")));
    let (request, reply) = handle.next_request().await.expect("the origin is called");
    assert_eq!(request.uri(), "/api/posts");
    reply.send_response(Response::new(Full::new(Bytes::from("posts"))));
    let response = response.await.expect("no panic").expect("ok");
    let body = response.into_body().collect().await.expect("whole").to_bytes();
    assert_eq!(body, "posts");

    // Stored: readied again, but the inner service is not called.
    handle.allow(1);
    let hit = tokio::time::timeout(
        Duration::from_secs(5),
        service.ready().await.expect("ready").call(get("/api/posts")),
    )
    .await
    .expect("a hit does not wait on the origin")
    .expect("ok");
    assert!(
        hit.headers()["cache-status"]
            .to_str()
            .expect("ascii")
            .contains("hit")
    );
}

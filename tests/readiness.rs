//! Readiness: `poll_ready` is the inner service's, and the instance that was
//! readied is the one called (tower-test's mock panics otherwise), on the
//! pass-through path and on the leader's path alike; a hit answered in
//! `call` (the memory store's), which calls nothing, spends no reservation.

use std::{
    mem,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

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

/// An inner service that reserves capacity in `poll_ready`, as a
/// concurrency limit or a pool would; a clone has no reservation of its
/// own.
struct Reserving {
    reservations: Arc<AtomicUsize>,
    reserved: bool,
}

impl Clone for Reserving {
    fn clone(&self) -> Self {
        Self {
            reservations: Arc::clone(&self.reservations),
            reserved: false,
        }
    }
}

impl Service<Request<Empty<Bytes>>> for Reserving {
    type Response = Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        if !self.reserved {
            self.reservations.fetch_add(1, Ordering::Relaxed);
            self.reserved = true;
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Empty<Bytes>>) -> Self::Future {
        assert!(mem::take(&mut self.reserved), "called without a reservation");
        std::future::ready(Ok(Response::new(Full::new(Bytes::from(
            request.uri().path().to_owned(),
        )))))
    }
}

/// A hit does not call the inner service, so it does not spend the
/// reservation that `poll_ready` made: the next request that reaches the
/// inner service uses it, and the inner service reserves once per call.
#[tokio::test]
async fn a_hit_spends_no_reservation_of_the_inner_service() {
    let reservations = Arc::new(AtomicUsize::new(0));
    let inner = Reserving {
        reservations: Arc::clone(&reservations),
        reserved: false,
    };
    let mut service = StampedeLayer::new(MemoryStore::new()).layer(inner);
    let mut send = async |path: &str| {
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(get(path))
            .await
            .expect("ok");
        let status = response.headers()["cache-status"]
            .to_str()
            .expect("ascii")
            .to_owned();
        (
            status,
            response.into_body().collect().await.expect("whole").to_bytes(),
        )
    };
    let (stored, _) = send("/api/posts").await;
    assert!(stored.contains("stored"), "{stored}");
    let (hit, body) = send("/api/posts").await;
    assert!(hit.contains("hit"), "{hit}");
    assert_eq!(body, "/api/posts");
    let (_, body) = send("/api/users").await;
    assert_eq!(body, "/api/users");
    assert_eq!(
        reservations.load(Ordering::Relaxed),
        2,
        "one reservation for each of the two calls, none for the hit"
    );
}

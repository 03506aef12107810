//! What clients see when the origin fails, panics, streams too much or
//! breaks midway, and when the store does not answer. Holds, in
//! `src/docs/guarantees.md`, `#a-failing-origin-sees-one-call-per-flight`,
//! `#a-flights-body-streams-to-every-request-of-it` and
//! `#a-failing-store-fails-no-request`, and the `max_waiters` and `lock_wait`
//! parts of `#one-origin-call-per-key` and
//! `#one-rebuild-across-layers-sharing-a-store`.

mod common;

use std::{convert::Infallible, future, sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use axum::body::Body;
use bytes::Bytes;
use common::{Calls, get_request, try_send};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use tower::{Layer, Service, service_fn};
use tower_stampede::{Entry, LockToken, MemoryStore, Policy, StampedeLayer, Store, StoreError};

const DELAY: Duration = Duration::from_millis(100);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An origin that counts its calls, takes `DELAY`, then answers whatever
/// `answer` makes of the call's number (a panic in it is the origin's).
fn origin<B, E>(
    calls: &Calls,
    answer: impl Fn(usize) -> Result<Response<B>, E> + Clone + Send + 'static,
) -> impl Service<Request<Body>, Response = Response<B>, Error = E, Future: Send + 'static> + Clone + Send + 'static
where
    B: Send + 'static,
    E: Send + 'static,
{
    let calls = calls.clone();
    service_fn(move |_: Request<Body>| {
        let (n, answer) = (calls.record(), answer.clone());
        async move {
            tokio::time::sleep(DELAY).await;
            answer(n)
        }
    })
}

/// What a spawned `try_send` through `S` ends with.
type Sent<S, B> =
    Result<(common::Reply, Option<<B as http_body::Body>::Error>), <S as Service<Request<Body>>>::Error>;

/// One request for `/hot`, then `n` more while it is at the origin.
#[allow(clippy::type_complexity, reason = "two task handles of one alias")]
fn leader_and_waiters<S, B>(service: &S, n: usize) -> (JoinHandle<Sent<S, B>>, Vec<JoinHandle<Sent<S, B>>>)
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Send + 'static,
{
    let send = || tokio::spawn(try_send(service.clone(), get_request("/hot")));
    (send(), (0..n).map(|_| send()).collect())
}

fn text(body: &'static str) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from(body)))
}

#[tokio::test(start_paused = true)]
async fn a_panicking_origin_strands_no_one_and_the_next_request_succeeds() {
    let calls = Calls::default();
    let origin = origin(&calls, |n| {
        assert!(n != 1, "origin blew up");
        Ok::<_, Infallible>(text("ok"))
    });
    let layer = StampedeLayer::new(MemoryStore::new());
    let service = layer.layer(origin);

    let (leader, waiters) = leader_and_waiters(&service, 9);

    assert!(leader.await.expect_err("the panic reaches the leader").is_panic());
    for waiter in waiters {
        let (reply, _) = waiter.await.expect("waiters do not panic").expect("infallible");
        assert_eq!(reply.status, 502);
        assert_eq!(
            reply.cache_status(),
            "tower-stampede; fwd=miss; collapsed; detail=origin-error"
        );
    }
    assert_eq!(calls.get(), 1, "waiters did not retry one by one");
    assert_eq!(layer.in_flight(), 0);

    let (next, _) = try_send(service, get_request("/hot")).await.expect("infallible");
    assert_eq!((next.status.as_u16(), next.text()), (200, "ok"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_origin_fails_its_leader_answers_waiters_502_and_frees_the_key() {
    let calls = Calls::default();
    let origin = origin(&calls, |n| {
        if n == 1 {
            Err("connection refused")
        } else {
            Ok(text("ok"))
        }
    });
    let layer = StampedeLayer::new(MemoryStore::new());
    let service = layer.layer(origin);

    let (leader, waiters) = leader_and_waiters(&service, 9);

    assert_eq!(leader.await.expect("no panic").err(), Some("connection refused"));
    for waiter in waiters {
        let (reply, _) = waiter.await.expect("no panic").expect("waiters get a response");
        assert_eq!(reply.status, 502);
    }
    assert_eq!(calls.get(), 1);
    let (next, _) = try_send(service, get_request("/hot")).await.expect("recovered");
    assert_eq!((next.status.as_u16(), calls.get()), (200, 2));
}

#[tokio::test(start_paused = true)]
async fn an_error_status_is_shared_with_waiters_but_not_stored() {
    let calls = Calls::default();
    let origin = origin(&calls, |n| {
        let mut response = Response::new(Full::new(Bytes::from(format!("down {n}"))));
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, Infallible>(response)
    });
    let service = StampedeLayer::new(MemoryStore::new()).layer(origin);
    let replies = common::wave(&service, 50, |_| get_request("/hot")).await;
    assert_eq!(calls.get(), 1, "a failing origin sees one call per flight");
    assert!(replies.iter().all(|r| r.status == 503 && r.text() == "down 1"));
    assert_eq!(common::count_status(&replies, "stored"), 0);
    common::send(service, get_request("/hot")).await;
    assert_eq!(calls.get(), 2, "nothing was stored");
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_reaches_every_client_whole_from_one_call_and_is_not_stored() {
    let calls = Calls::default();
    let big = Bytes::from(vec![b'x'; 4096]);
    let origin = {
        let big = big.clone();
        origin(&calls, move |_| {
            Ok::<_, Infallible>(Response::new(Full::new(big.clone())))
        })
    };
    let service = StampedeLayer::new(MemoryStore::new())
        .max_body_bytes(1024)
        .layer(origin);

    let replies = common::wave(&service, 5, |_| get_request("/big")).await;

    assert!(replies.iter().all(|r| r.status == 200 && r.body == big));
    assert_eq!(
        replies[0].cache_status(),
        "tower-stampede; fwd=miss; fwd-status=200; detail=body-not-stored"
    );
    for waiter in &replies[1..] {
        assert_eq!(
            waiter.cache_status(),
            "tower-stampede; fwd=miss; fwd-status=200; collapsed; detail=body-not-stored"
        );
    }
    assert_eq!(calls.get(), 1, "the waiters read the leader's body as it came");
    common::send(service, get_request("/big")).await;
    assert_eq!(calls.get(), 2, "nothing was stored, and the key does not pass");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_breaks_midway_gives_its_client_the_error_and_stores_nothing() {
    let calls = Calls::default();
    let origin = origin(&calls, |_| {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from("first half"))),
            Err("connection reset".into()),
        ];
        Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(frames))))
    });
    let layer = StampedeLayer::new(MemoryStore::new());
    let service = layer.layer(origin);

    let (reply, error) = try_send(service.clone(), get_request("/stream"))
        .await
        .expect("infallible");
    assert_eq!(reply.text(), "first half");
    let origin_error = error.and_then(|e| std::error::Error::source(&e).map(ToString::to_string));
    assert_eq!(origin_error.as_deref(), Some("connection reset"));

    let (_, error) = try_send(service, get_request("/stream"))
        .await
        .expect("infallible");
    assert!(error.is_some());
    assert_eq!(calls.get(), 2, "the broken body was not stored");
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_on_a_body_that_breaks_midway_all_get_its_error() {
    let calls = Calls::default();
    let origin = origin(&calls, |n| {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from(format!("first half of call {n}")))),
            Err("connection reset".into()),
        ];
        Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(frames))))
    });
    let layer = StampedeLayer::new(MemoryStore::new());
    let service = layer.layer(origin);

    let (leader, waiters) = leader_and_waiters(&service, 9);

    let (reply, error) = leader.await.expect("no panic").expect("infallible");
    assert_eq!(reply.text(), "first half of call 1");
    assert!(error.is_some(), "the leader's client sees the break");
    for waiter in waiters {
        let (reply, error) = waiter.await.expect("no panic").expect("infallible");
        assert!(
            reply.cache_status().contains("collapsed"),
            "{}",
            reply.cache_status()
        );
        assert_eq!(reply.text(), "first half of call 1", "what came before the break");
        let origin_error = error.and_then(|e| std::error::Error::source(&e).map(ToString::to_string));
        assert_eq!(
            origin_error.as_deref(),
            Some("connection reset"),
            "never a body that looks whole"
        );
    }
    assert_eq!(calls.get(), 1);
    assert_eq!(layer.stats().coalesced, 9, "the nine waited on the flight");
    assert_eq!(layer.in_flight(), 0);
    try_send(service, get_request("/hot")).await.expect("infallible");
    assert_eq!(calls.get(), 2, "nothing was stored");
}

#[tokio::test(start_paused = true)]
async fn post_is_never_collapsed() {
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move || async move {
            calls.record();
            tokio::time::sleep(DELAY).await;
            "created"
        }
    };
    let app = axum::Router::new()
        .route("/orders", axum::routing::post(handler))
        .layer(StampedeLayer::new(MemoryStore::new()));

    let replies = common::wave(&app, 10, |_| {
        Request::post("/orders").body(Body::from("{}")).expect("valid")
    })
    .await;

    assert_eq!(calls.get(), 10);
    assert!(replies.iter().all(|r| r.text() == "created"));
    assert_eq!(common::count_status(&replies, "tower-stampede; fwd=method"), 10);
}

#[tokio::test(start_paused = true)]
async fn bypass_routes_and_no_store_requests_go_straight_to_the_origin() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new()).route("/admin/*", Policy::bypass());
    let app = common::slow_app(&calls).layer(layer.clone());

    for _ in 0..3 {
        let reply = common::send(app.clone(), get_request("/admin/users")).await;
        assert_eq!(reply.cache_status(), "tower-stampede; fwd=bypass");
    }
    assert_eq!(calls.get(), 3);

    let no_store = || {
        Request::get("/api")
            .header("cache-control", "no-store")
            .body(Body::empty())
            .expect("valid")
    };
    common::send(app.clone(), get_request("/api")).await;
    let reply = common::send(app, no_store()).await;
    assert_eq!(reply.cache_status(), "tower-stampede; fwd=request");
    assert_eq!(calls.get(), 5);
    assert_eq!(layer.stats().bypassed, 4);
}

/// A memory store that fails every call while told to: with an error, or
/// (`hangs`) by never answering.
#[derive(Clone, Default, Debug)]
struct Flaky {
    store: MemoryStore,
    failing: Arc<std::sync::atomic::AtomicBool>,
    hangs: bool,
}

impl Flaky {
    /// A store that fails from the start and for good.
    fn broken(hangs: bool) -> Self {
        let store = Self {
            hangs,
            ..Self::default()
        };
        store.fail(true);
        store
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    async fn check(&self) -> Result<(), StoreError> {
        if !self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else if self.hangs {
            future::pending().await
        } else {
            Err(StoreError::new("connection refused"))
        }
    }
}

impl Store for Flaky {
    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        self.check().await?;
        self.store.get(key).await
    }
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.check().await?;
        self.store.try_lock(key, ttl).await
    }
    async fn extend_lock(&self, key: &str, token: &LockToken, ttl: Duration) -> Result<bool, StoreError> {
        self.check().await?;
        self.store.extend_lock(key, token, ttl).await
    }
    async fn set(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        self.check().await?;
        self.store.set(key, entry, token, keep).await
    }
    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.check().await?;
        self.store.unlock(key, token).await
    }
    async fn wait_unlocked(&self, key: &str, timeout: Duration) -> Result<(), StoreError> {
        self.check().await?;
        self.store.wait_unlocked(key, timeout).await
    }
    async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        self.check().await?;
        self.store.invalidate(key).await
    }
    async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        self.check().await?;
        self.store.invalidate_tag(tag).await
    }
}

async fn a_broken_store_fails_no_request(hangs: bool, errors_in_the_stampede: u64) {
    let calls = Calls::default();
    let layer = StampedeLayer::new(Flaky::broken(hangs))
        .store_timeout(Duration::from_millis(50))
        .store_retry_after(Duration::from_secs(1));
    let app = common::slow_app(&calls).layer(layer.clone());

    let start = tokio::time::Instant::now();
    let replies = common::wave(&app, 100, |_| get_request("/api/popular-posts")).await;

    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body)
    );
    assert_eq!(calls.get(), 1, "in-process coalescing still holds");
    assert_eq!(layer.stats().store_errors, errors_in_the_stampede);
    // At most one store timeout, then the origin.
    assert!(start.elapsed() <= Duration::from_millis(50) + common::ORIGIN_DELAY);

    // While the store rests, it is not called.
    common::send(app.clone(), get_request("/other")).await;
    assert_eq!(layer.stats().store_errors, errors_in_the_stampede);
    // After the pause it is tried again.
    tokio::time::advance(Duration::from_secs(1)).await;
    common::send(app, get_request("/third")).await;
    assert_eq!(layer.stats().store_errors, errors_in_the_stampede + 1);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_never_answers_fails_no_request() {
    // All hundred reads were under way before the first timed out.
    a_broken_store_fails_no_request(true, 100).await;
}

#[tokio::test(start_paused = true)]
async fn a_store_that_errors_fails_no_request() {
    // The first error rests the store: the other 99 never call it.
    a_broken_store_fails_no_request(false, 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_rebuild_lock_held_too_long_is_waited_on_for_lock_wait_then_gone_around() {
    let calls = Calls::default();
    let store = MemoryStore::new();
    // Another layer holds the lock and never writes.
    let _held = store
        .try_lock("GET /hot", Duration::from_secs(3600))
        .await
        .expect("memory")
        .expect("free");
    let layer = StampedeLayer::new(store).lock_wait(Duration::from_millis(300));
    let app = common::slow_app(&calls).layer(layer.clone());

    let start = tokio::time::Instant::now();
    let replies = common::wave(&app, 10, |_| get_request("/hot")).await;

    assert_eq!(start.elapsed(), Duration::from_millis(300) + common::ORIGIN_DELAY);
    assert_eq!(calls.get(), 1, "in-process coalescing still holds");
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(common::count_status(&replies, "stored"), 0, "no lock, no write");
}

/// A memory store whose reads of keys containing "trip" fail.
#[derive(Clone)]
struct TrippingStore(MemoryStore);

impl Store for TrippingStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        if key.contains("trip") {
            return Err(StoreError::new("connection reset"));
        }
        self.0.get(key).await
    }
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.0.try_lock(key, ttl).await
    }
    async fn extend_lock(&self, key: &str, token: &LockToken, ttl: Duration) -> Result<bool, StoreError> {
        self.0.extend_lock(key, token, ttl).await
    }
    async fn set(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        self.0.set(key, entry, token, keep).await
    }
    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.0.unlock(key, token).await
    }
    async fn wait_unlocked(&self, key: &str, timeout: Duration) -> Result<(), StoreError> {
        self.0.wait_unlocked(key, timeout).await
    }
    async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        self.0.invalidate(key).await
    }
    async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        self.0.invalidate_tag(tag).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_failure_elsewhere_does_not_keep_a_rebuild_from_writing_and_unlocking() {
    let calls = Calls::default();
    let memory = MemoryStore::new();
    let layer = StampedeLayer::new(TrippingStore(memory.clone())).store_retry_after(Duration::from_secs(60));
    let app = common::slow_app(&calls).layer(layer.clone());

    let rebuild = tokio::spawn(common::send(app.clone(), get_request("/hot")));
    tokio::time::sleep(common::ORIGIN_DELAY / 2).await;
    // Another key's read fails: the store rests while /hot is at the origin.
    common::send(app.clone(), get_request("/trip")).await;
    assert_eq!(layer.stats().store_errors, 1);
    let rebuilt = rebuild.await.expect("no panic");

    assert!(
        rebuilt.cache_status().contains("stored"),
        "{}",
        rebuilt.cache_status()
    );
    assert!(memory.get("GET /hot").await.expect("memory").is_some());
    let lock = memory
        .try_lock("GET /hot", Duration::from_secs(1))
        .await
        .expect("memory");
    assert!(
        lock.is_some(),
        "the rebuild lock was released, not left to expire"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_stream_reaches_its_client_as_it_comes_and_past_max_body_wait_is_not_stored() {
    use futures_util::StreamExt;
    let calls = Calls::default();
    let origin = origin(&calls, |_| {
        let ticks =
            futures_util::stream::iter([(0, "tick "), (60, "tock")]).then(|(wait, text)| async move {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(text.as_bytes())))
            });
        Ok::<_, Infallible>(Response::new(StreamBody::new(Box::pin(ticks))))
    });
    let service = StampedeLayer::new(MemoryStore::new())
        .max_body_wait(Duration::from_secs(1))
        .layer(origin);

    let start = tokio::time::Instant::now();
    let response = tower::ServiceExt::oneshot(service.clone(), get_request("/feed"))
        .await
        .expect("infallible");
    assert_eq!(start.elapsed(), DELAY, "headers as the origin's came");
    let status = response.headers()["cache-status"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        status, "tower-stampede; fwd=miss; fwd-status=200",
        "whether it will be stored is not known yet"
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("whole")
        .to_bytes();
    assert_eq!(&body[..], b"tick tock");
    assert_eq!(
        start.elapsed(),
        DELAY + Duration::from_secs(60),
        "the rest streamed as it came"
    );
    try_send(service, get_request("/feed")).await.expect("infallible");
    assert_eq!(calls.get(), 2, "nothing was stored");
}

#[tokio::test(start_paused = true)]
async fn while_the_store_fails_the_process_keeps_what_it_built() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(Flaky::broken(false))
        .policy(Policy::ttl(Duration::from_secs(60)))
        .clock(common::tokio_clock())
        .store_timeout(Duration::from_millis(50))
        .store_retry_after(Duration::from_secs(1));
    let app = common::slow_app(&calls).layer(layer.clone());
    let first = common::send(app.clone(), get_request("/api/popular-posts")).await;
    assert_eq!(first.status, 200);

    // Not one origin call per flight: one per entry's life, as with a store.
    for wait in [Duration::ZERO, Duration::from_secs(2), Duration::from_secs(30)] {
        tokio::time::advance(wait).await;
        let hit = common::send(app.clone(), get_request("/api/popular-posts")).await;
        assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
        assert_eq!(hit.body, first.body);
    }
    assert_eq!(calls.get(), 1);
    assert!(
        layer.stats().store_errors >= 2,
        "the store was tried again, and failed"
    );

    // It lives as long as the policy says.
    tokio::time::advance(Duration::from_secs(30)).await;
    common::send(app.clone(), get_request("/api/popular-posts")).await;
    assert_eq!(calls.get(), 2, "rebuilt once expired");

    // And an invalidation reaches it, though the store cannot be reached.
    let key = "GET /api/popular-posts";
    assert!(
        layer.invalidate(key).await.is_err(),
        "the store's failure is reported"
    );
    common::send(app, get_request("/api/popular-posts")).await;
    assert_eq!(calls.get(), 3, "rebuilt after the invalidation");
}

#[tokio::test(start_paused = true)]
async fn the_fallback_keeps_nothing_heavier_than_its_own_bound() {
    let calls = Calls::default();
    // No entry weighs less than the store's own records for it (320 bytes).
    let layer = StampedeLayer::new(Flaky::broken(false))
        .fallback_max_bytes(64)
        .store_timeout(Duration::from_millis(50));
    assert!(format!("{layer:?}").contains("max_bytes: 64"), "{layer:?}");
    let app = common::slow_app(&calls).layer(layer);
    for _ in 0..2 {
        let reply = common::send(app.clone(), get_request("/api/popular-posts")).await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.cache_status().contains("fwd=miss"),
            "{}",
            reply.cache_status()
        );
    }
    assert_eq!(calls.get(), 2, "nothing was kept in process");
}

#[tokio::test(start_paused = true)]
async fn max_waiters_turns_the_rest_away_with_the_stale_entry_or_503() {
    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new())
        .policy(Policy::ttl(Duration::from_secs(60)).stale_if_error(Duration::from_secs(600)))
        .clock(common::tokio_clock())
        .max_waiters(10);
    let app = common::slow_app(&calls).layer(layer.clone());
    let turned_away = |replies: &[common::Reply]| {
        replies
            .iter()
            .filter(|r| r.cache_status().contains("detail=too-many-waiters"))
            .cloned()
            .collect::<Vec<_>>()
    };

    // Cold: a leader, ten waiters, and 503s with Retry-After for the rest.
    let cold = common::wave(&app, 50, |_| get_request("/api/popular-posts")).await;
    assert_eq!(calls.get(), 1, "the origin still sees one call");
    assert_eq!(cold.iter().filter(|r| r.status == 200).count(), 11);
    let away = turned_away(&cold);
    assert_eq!(away.len(), 39);
    assert!(
        away.iter()
            .all(|r| r.status == 503 && r.header("retry-after") == Some("1"))
    );
    assert_eq!(layer.stats().shed, 39);

    // Expired but still held (stale_if_error): the rest get it instead.
    tokio::time::advance(Duration::from_secs(61)).await;
    let warm = common::wave(&app, 50, |_| get_request("/api/popular-posts")).await;
    assert_eq!(calls.get(), 2);
    assert!(warm.iter().all(|r| r.status == 200));
    let away = turned_away(&warm);
    assert_eq!(away.len(), 39);
    assert!(
        away.iter()
            .all(|r| r.body == cold[0].body && r.cache_status().contains("fwd=stale"))
    );
    assert_eq!(layer.stats().shed, 78);
}

/// What a layer kept through one outage bridges that outage only: once the
/// store answers again, it is dropped, so that a later failure (a single
/// timed-out call) does not serve it after other replicas replaced or
/// invalidated the key in the store meanwhile.
#[tokio::test(start_paused = true)]
async fn what_was_kept_through_an_outage_is_dropped_once_the_store_answers() {
    let calls = Calls::default();
    let store = Flaky::default();
    let layer = StampedeLayer::new(store.clone())
        .policy(Policy::ttl(Duration::from_secs(60)))
        .clock(common::tokio_clock())
        .store_retry_after(Duration::from_secs(1));
    let app = common::slow_app(&calls).layer(layer);

    store.fail(true);
    common::send(app.clone(), get_request("/hot")).await;
    assert_eq!(calls.get(), 1, "built during the outage, kept in process");

    // The store is back, and answers a call; another replica then, say,
    // invalidates /hot there: it holds nothing for it.
    store.fail(false);
    tokio::time::advance(Duration::from_secs(1)).await;
    common::send(app.clone(), get_request("/other")).await;

    // One failed call later, the kept copy would stand in again.
    store.fail(true);
    let reply = common::send(app, get_request("/hot")).await;
    assert!(
        !reply.cache_status().contains("hit"),
        "served what was kept through the last outage: {}",
        reply.cache_status()
    );
    assert_eq!(calls.get(), 3, "rebuilt from the origin");
}

/// A rebuild whose origin never answers keeps its lock only up to
/// `lock_wait`: then it stops extending it, the lock expires, and a leader
/// of another layer takes over, with the lock, instead of going around it
/// flight after flight.
#[tokio::test(start_paused = true)]
async fn a_hung_origin_holds_its_lock_no_longer_than_lock_wait() {
    let store = MemoryStore::new();
    let (lock_ttl, lock_wait) = (Duration::from_secs(10), Duration::from_secs(30));
    let layer = StampedeLayer::new(store.clone())
        .lock_ttl(lock_ttl)
        .lock_wait(lock_wait);
    let hung = layer.layer(service_fn(|_: Request<Body>| {
        future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    }));
    let _leader = tokio::spawn(try_send(hung, get_request("/hot")));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let key = "GET /hot";
    assert!(
        store.try_lock(key, lock_ttl).await.expect("memory").is_none(),
        "the hung rebuild holds the lock"
    );

    tokio::time::sleep(lock_wait + lock_ttl).await;
    assert!(
        store.try_lock(key, lock_ttl).await.expect("memory").is_some(),
        "the lock was extended past lock_wait"
    );
}

/// Every duration the builder takes may be `Duration::MAX`, a natural
/// "no limit": a miss with waiters, a hit and a private answer (which
/// `pass_for` remembers) each go through, where a deadline made by adding
/// it to the clock would panic.
#[tokio::test(start_paused = true)]
async fn durations_past_the_clocks_range_fail_no_request() {
    let calls = Calls::default();
    let counted = calls.clone();
    let origin = service_fn(move |request: Request<Body>| {
        counted.record();
        let private = request.uri().path() == "/private";
        async move {
            tokio::time::sleep(DELAY).await;
            let mut response = text("ok");
            let cache_control = if private { "private" } else { "public, max-age=60" };
            response.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static(cache_control),
            );
            Ok::<_, Infallible>(response)
        }
    });
    let max = Duration::MAX;
    let layer = StampedeLayer::new(MemoryStore::new())
        .store_timeout(max)
        .store_retry_after(max)
        .pass_for(max)
        .lock_ttl(max)
        .lock_wait(max)
        .max_body_wait(max);
    let service = layer.layer(origin);

    let (leader, waiters) = leader_and_waiters(&service, 3);
    for sent in std::iter::once(leader).chain(waiters) {
        let (reply, _) = sent.await.expect("no panic").expect("infallible");
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "ok"));
    }
    assert_eq!(calls.get(), 1, "one flight");
    let (hit, _) = try_send(service.clone(), get_request("/hot"))
        .await
        .expect("infallible");
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    for _ in 0..2 {
        let (reply, _) = try_send(service.clone(), get_request("/private"))
            .await
            .expect("infallible");
        assert_eq!(reply.status, 200);
    }
    assert_eq!(calls.get(), 3, "a private answer is not stored");
}

//! Helpers shared by the integration tests: a counting origin, concurrent
//! waves of requests, and readable replies.
#![allow(dead_code, unreachable_pub)]

pub mod redis_server;
pub mod relay;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Request, StatusCode, Uri},
    routing::get,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};

/// Counts the calls that reach an origin.
#[derive(Clone, Default, Debug)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    /// Records a call and returns its number, from 1.
    pub fn record(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

pub const ORIGIN_DELAY: Duration = Duration::from_millis(200);

/// A point in time far from the epoch, for injected clocks.
pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The slow query: takes 200 ms and says which call answered.
async fn slow(State(calls): State<Calls>, uri: Uri) -> String {
    let n = calls.record();
    tokio::time::sleep(ORIGIN_DELAY).await;
    format!("{} answered by call {n}", uri.path())
}

/// The slow query in the language asked for, saying so with `Vary`.
pub async fn localised(
    State(calls): State<Calls>,
    request: HeaderMap,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let n = calls.record();
    tokio::time::sleep(ORIGIN_DELAY).await;
    let language = request
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    (
        [(axum::http::header::VARY, "accept-language")],
        format!("{language} by call {n}"),
    )
}

/// An axum app whose every path is the slow query.
pub fn slow_app(calls: &Calls) -> Router {
    Router::new()
        .route("/{*path}", get(slow))
        .with_state(calls.clone())
}

pub fn get_request(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("valid request")
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn cache_status(&self) -> String {
        let members: Vec<_> = self
            .headers
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        members.join(", ")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii"))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// How long a test waits on anything before it fails instead of hanging
/// CI: far above any wait a test expects (tokio's clock, so a paused
/// test reaches it at once once nothing else can happen).
pub const HANG: Duration = Duration::from_secs(120);

/// Awaits `future`, failing the test with `what` if it has not ended
/// within [`HANG`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(HANG, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing within {HANG:?}; it hangs"),
    }
}

/// Sends one request through `service` and reads the whole response.
pub async fn send<S, B>(service: S, request: Request<Body>) -> Reply
where
    S: Service<Request<Body>, Response = http::Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let what = format!("{} {}", request.method(), request.uri());
    within(&what, async move {
        let response = service.oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body reads whole").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
    .await
}

/// Sends `n` requests at once, each in its own task, and returns the replies
/// in request order.
pub async fn wave<S, B>(service: &S, n: usize, request: impl Fn(usize) -> Request<Body>) -> Vec<Reply>
where
    S: Service<Request<Body>, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(send(service.clone(), request(i))))
        .collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.expect("request task does not panic"));
    }
    replies
}

/// How many replies have a `Cache-Status` containing `needle`.
pub fn count_status(replies: &[Reply], needle: &str) -> usize {
    replies
        .iter()
        .filter(|r| r.cache_status().contains(needle))
        .count()
}

/// Like [`send`], for services that can fail: the error, or the response
/// read up to the end or to the first body error.
pub async fn try_send<S, B>(service: S, request: Request<Body>) -> Result<(Reply, Option<B::Error>), S::Error>
where
    S: Service<Request<Body>, Response = http::Response<B>>,
    B: http_body::Body<Data = Bytes>,
{
    let what = format!("{} {}", request.method(), request.uri());
    within(&what, async move {
        let (parts, body) = service.oneshot(request).await?.into_parts();
        let mut body = std::pin::pin!(body);
        let mut bytes = Vec::new();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(bytes),
        };
        Ok((reply, error))
    })
    .await
}

/// A wall clock that follows tokio's (paused) clock from [`t0`], so that
/// entry freshness and the origin's sleeps move together.
pub fn tokio_clock() -> impl Fn() -> SystemTime + Send + Sync + 'static {
    let start = tokio::time::Instant::now();
    move || t0() + start.elapsed()
}

/// A seeded source of uniform numbers in [0, 1), for XFetch and jitter.
pub fn seeded(seed: u64) -> impl Fn() -> f64 + Send + Sync + 'static {
    let rng = std::sync::Mutex::new(fastrand::Rng::with_seed(seed));
    move || rng.lock().expect("not poisoned").f64()
}

//! The middleware service: the request flow of DESIGN.md.

use std::{
    fmt,
    future::Future,
    mem, panic,
    pin::pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header, request, response};
use http_body::Body;
use tower::ServiceExt;
use tower_service::Service;
use tracing::debug;

use crate::{
    body::{Collected, StampedeBody, collect},
    breaker::Breaker,
    cacheable::{self, CacheControl, Private},
    entry::{Entry, strip_unstorable_headers},
    flight::{Flights, Join, Leader},
    future::ResponseFuture,
    layer::Config,
    policy::{Decision, Lifetime, Policy},
    stats::{Counters, Stats},
    status::{CacheStatus, Fwd, set_age},
    store::{LockToken, Store, StoreError},
};

/// The middleware made by [`StampedeLayer`](crate::StampedeLayer): caches
/// and collapses the requests of an inner `http` service.
///
/// It keeps the inner service's error type: the inner service's errors reach
/// the client that caused them, and the cache itself never adds one.
pub struct Stampede<S, St> {
    inner: S,
    shared: Arc<Shared<St>>,
}

/// What every service of one layer shares.
pub(crate) struct Shared<St> {
    pub(crate) store: St,
    pub(crate) config: Arc<Config>,
    pub(crate) state: Arc<State>,
}

/// The parts of a layer that live as long as any of its services.
pub(crate) struct State {
    pub(crate) flights: Arc<Flights<Outcome>>,
    pub(crate) counters: Counters,
    breaker: Breaker,
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            flights: Arc::new(Flights::new()),
            counters: Counters::default(),
            breaker: Breaker::new(),
        }
    }
}

/// What a flight's leader hands its waiters.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// A whole response others may have, and whether it was stored.
    Shared { entry: Arc<Entry>, stored: bool },
    /// A response only the leader's client may have, and why: waiters go
    /// forward.
    Private(&'static str),
    /// The inner service failed or panicked.
    Failed,
}

/// Why a response whose body was not read whole is not shared.
const BODY_NOT_STORED: &str = "body-not-stored";

enum Plan {
    Forward(Fwd),
    Cache { key: String, policy: Policy },
}

/// Why a stored response may not answer a request.
#[derive(Debug, PartialEq, Eq)]
enum Fit {
    Yes,
    /// The request has `Authorization` and the response did not allow that.
    Authorization,
    /// The request's values of the headers the response varies on differ.
    Vary,
}

fn fit(entry: &Entry, request: &HeaderMap) -> Fit {
    if request.contains_key(header::AUTHORIZATION) && !entry.allows_authorized {
        Fit::Authorization
    } else if !cacheable::vary_matches(&entry.vary, &entry.vary_values, request) {
        Fit::Vary
    } else {
        Fit::Yes
    }
}

impl<S, St> Stampede<S, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self { inner, shared }
    }

    /// The counters of the layer this service came from.
    pub fn stats(&self) -> Stats {
        self.shared.state.counters.snapshot()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, St> Clone for Stampede<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug> fmt::Debug for Stampede<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stampede")
            .field("inner", &self.inner)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for Stampede<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Send,
{
    type Response = Response<StampedeBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // `self.inner` is the service that was readied; its clone may not be.
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let counters = &self.shared.state.counters;
        counters.requests.incr();
        let (parts, body) = request.into_parts();
        let plan = self.shared.plan(&parts);
        let request = Request::from_parts(parts, body);
        match plan {
            Plan::Forward(fwd) => {
                counters.bypassed.incr();
                counters.origin_calls.incr();
                ResponseFuture::forward(inner.call(request), fwd.static_value())
            }
            Plan::Cache { key, policy } => ResponseFuture::cached(Box::pin(respond(
                Arc::clone(&self.shared),
                inner,
                request,
                key,
                policy,
            ))),
        }
    }
}

impl<St: Store> Shared<St> {
    fn plan(&self, parts: &request::Parts) -> Plan {
        let config = &self.config;
        let policy = config.routes.get(parts.uri.path()).unwrap_or(&config.policy);
        if policy.is_bypass() {
            return Plan::Forward(Fwd::Bypass);
        }
        if !cacheable::method_is_cacheable(&parts.method) {
            return Plan::Forward(Fwd::Method);
        }
        if cacheable::request_skips_cache(&parts.headers) {
            return Plan::Forward(Fwd::Request);
        }
        match config.key.make_key(parts) {
            Some(key) => Plan::Cache {
                key,
                policy: policy.clone(),
            },
            None => Plan::Forward(Fwd::Bypass),
        }
    }

    fn now(&self) -> SystemTime {
        self.config.clock.now()
    }

    /// Runs a store call within the store timeout; a failure is counted,
    /// logged and turned into `None`, never into a failed request. While the
    /// store is resting after a failure, the call is not made at all.
    async fn store_call<T>(
        &self,
        what: &'static str,
        key: &str,
        timeout: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        if self.state.breaker.is_open() {
            return None;
        }
        let error = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(error)) => error,
            Err(_) => StoreError::timeout(),
        };
        self.state.counters.store_errors.incr();
        if !error.is_corrupt() {
            // An unreadable value is the key's problem, not the store's.
            self.state.breaker.trip(self.config.store_retry_after);
        }
        debug!(key, %error, "{what} failed; going on without the store");
        None
    }

    async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let timeout = self.config.store_timeout;
        self.store_call("get", key, timeout, self.store.get(key))
            .await
            .flatten()
    }

    async fn try_lock(&self, key: &str) -> Lock {
        let (timeout, ttl) = (self.config.store_timeout, self.config.lock_ttl);
        match self
            .store_call("lock", key, timeout, self.store.try_lock(key, ttl))
            .await
        {
            Some(Some(token)) => Lock::Held(token),
            Some(None) => Lock::Taken,
            None => Lock::Unavailable,
        }
    }

    async fn wait_unlocked(&self, key: &str, wait: Duration) {
        let timeout = wait + self.config.store_timeout;
        self.store_call("wait", key, timeout, self.store.wait_unlocked(key, wait))
            .await;
    }

    /// Runs `work` while keeping the rebuild lock alive: a rebuild that takes
    /// longer than the lock's ttl must not let a second one start.
    async fn keep_lock<F: Future>(&self, key: &str, token: Option<&LockToken>, work: F) -> F::Output {
        let Some(token) = token else {
            return work.await;
        };
        let (ttl, timeout) = (self.config.lock_ttl, self.config.store_timeout);
        let mut work = pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                () = tokio::time::sleep(ttl / 3) => {
                    let extend = self.store.extend_lock(key, token, ttl);
                    if self.store_call("extend lock", key, timeout, extend).await != Some(true) {
                        debug!(key, "rebuild lock lost while the origin was still working");
                    }
                }
            }
        }
    }
}

enum Lock {
    Held(LockToken),
    Taken,
    Unavailable,
}

/// A held rebuild lock that is released even if the leader's task unwinds.
struct LockGuard<St: Store> {
    shared: Arc<Shared<St>>,
    key: String,
    token: Option<LockToken>,
}

impl<St: Store> LockGuard<St> {
    /// Writes `entry` fenced by the lock, which also releases it.
    async fn store(mut self, entry: Arc<Entry>, keep_for: Duration) -> bool {
        let Some(token) = self.token.take() else {
            return false;
        };
        let shared = &self.shared;
        let set = shared.store.set(&self.key, entry, &token, keep_for);
        let stored = shared
            .store_call("set", &self.key, shared.config.store_timeout, set)
            .await;
        if stored == Some(false) {
            debug!(
                key = self.key,
                "write refused: the rebuild lock had passed to another"
            );
        }
        stored == Some(true)
    }

    async fn release(mut self) {
        if let Some(token) = self.token.take() {
            let shared = &self.shared;
            let unlock = shared.store.unlock(&self.key, &token);
            shared
                .store_call("unlock", &self.key, shared.config.store_timeout, unlock)
                .await;
        }
    }
}

impl<St: Store> Drop for LockGuard<St> {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        // The leader unwound: free the key for the next rebuild now rather
        // than when the lock expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key) = (self.shared.store.clone(), mem::take(&mut self.key));
            runtime.spawn(async move {
                let _ = store.unlock(&key, &token).await;
            });
        }
    }
}

/// The cache flow for one cacheable request.
async fn respond<S, St, ReqBody, B>(
    shared: Arc<Shared<St>>,
    inner: S,
    request: Request<ReqBody>,
    key: String,
    policy: Policy,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store,
    ReqBody: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let counters = &shared.state.counters;
    if let Some(entry) = shared.get(&key).await {
        let now = shared.now();
        if let Decision::Fresh { ttl } = policy.decide(entry.lifetime, now) {
            match fit(&entry, request.headers()) {
                Fit::Yes => {
                    counters.hits.incr();
                    debug!(key, "hit");
                    return Ok(from_entry(&entry, CacheStatus::hit(ttl), Some(now)));
                }
                Fit::Authorization => {
                    counters.bypassed.incr();
                    let status = CacheStatus::forward(Fwd::Request).detail("authorization");
                    return forward(&shared, inner, request, status).await;
                }
                Fit::Vary => {}
            }
        }
    }
    counters.misses.incr();
    match shared.state.flights.join(&key) {
        Join::Leader(leader) => {
            debug!(key, "leading a flight");
            let task = tokio::spawn(lead(Arc::clone(&shared), inner, request, key, policy, leader));
            match task.await {
                Ok(response) => response,
                Err(error) => match error.try_into_panic() {
                    // As if the layer were not there: the panic is the
                    // leader's client's to see.
                    Ok(payload) => panic::resume_unwind(payload),
                    Err(_) => Ok(bad_gateway("leader-cancelled")),
                },
            }
        }
        Join::Waiter(waiter) => {
            counters.coalesced.incr();
            // Give back what the readied service reserved; a clone is readied
            // again should this request have to go forward after all.
            let fallback = inner.clone();
            drop(inner);
            match waiter.wait().await {
                Some(Outcome::Shared { entry, stored }) if fit(&entry, request.headers()) == Fit::Yes => {
                    let ttl = stored.then(|| ttl_left(entry.lifetime, shared.now()));
                    let status = CacheStatus::forward(Fwd::Miss)
                        .fwd_status(entry.status)
                        .collapsed()
                        .ttl(ttl);
                    Ok(from_entry(&entry, status, None))
                }
                Some(Outcome::Failed) | None => Ok(bad_gateway("origin-error")),
                Some(Outcome::Shared { .. }) => {
                    debug!(key, "leader's response does not fit this request; going forward");
                    forward(&shared, fallback, request, CacheStatus::forward(Fwd::Miss)).await
                }
                Some(Outcome::Private(why)) => {
                    debug!(key, why, "leader's response is its own; going forward");
                    let status = CacheStatus::forward(Fwd::Miss).detail(why);
                    forward(&shared, fallback, request, status).await
                }
            }
        }
    }
}

/// The leader's work, run in its own task so that its client going away
/// does not cancel what its waiters wait for.
async fn lead<S, St, ReqBody, B>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    request: Request<ReqBody>,
    key: String,
    policy: Policy,
    leader: Leader<Outcome>,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    St: Store,
    B: Body,
{
    // Another layer on this store may be rebuilding: wait for its write, and
    // take the lock over if it is released (or expires) without one. A live
    // holder keeps its lock, so the wait is bounded by `lock_wait`, after
    // which this leader goes to the origin without storing.
    let waiting_since = tokio::time::Instant::now();
    let token = loop {
        match shared.try_lock(&key).await {
            Lock::Held(token) => break Some(token),
            Lock::Unavailable => break None,
            Lock::Taken => {}
        }
        let left = shared.config.lock_wait.saturating_sub(waiting_since.elapsed());
        if left.is_zero() {
            debug!(
                key,
                "waited lock_wait for another layer's rebuild; going to the origin"
            );
            break None;
        }
        shared.wait_unlocked(&key, left.min(shared.config.lock_ttl)).await;
        if let Some(entry) = shared.get(&key).await {
            let now = shared.now();
            if let Decision::Fresh { ttl } = policy.decide(entry.lifetime, now)
                && fit(&entry, request.headers()) == Fit::Yes
            {
                shared.state.counters.coalesced.incr();
                leader.finish(Outcome::Shared {
                    entry: Arc::clone(&entry),
                    stored: true,
                });
                let status = CacheStatus::forward(Fwd::Miss).collapsed().ttl(Some(ttl));
                return Ok(from_entry(&entry, status, Some(now)));
            }
        }
    };
    let guard = LockGuard {
        shared: Arc::clone(&shared),
        key,
        token,
    };

    let authorized = request.headers().contains_key(header::AUTHORIZATION);
    let request_headers = request.headers().clone();
    let started = tokio::time::Instant::now();
    shared.state.counters.origin_calls.incr();
    let limit = shared.config.max_body_bytes;
    let fetch = async {
        let (parts, body) = inner.call(request).await?.into_parts();
        let cc = CacheControl::parse(&parts.headers);
        if let Err(reason) = cacheable::shareable(&parts.headers, &cc, authorized) {
            return Ok(Fetched::Private { parts, body, reason });
        }
        Ok(match collect(body, limit).await {
            Collected::Complete { data, trailers } => Fetched::Whole {
                parts,
                data,
                trailers,
            },
            Collected::Partial(body) => Fetched::Partial { parts, body },
        })
    };
    let fetched = shared.keep_lock(&guard.key, guard.token.as_ref(), fetch).await;

    let (mut parts, data, trailers) = match fetched {
        Err(error) => {
            guard.release().await;
            leader.finish(Outcome::Failed);
            return Err(error);
        }
        Ok(Fetched::Private { parts, body, reason }) => {
            guard.release().await;
            leader.finish(Outcome::Private(reason.as_str()));
            let status = CacheStatus::forward(Fwd::Miss)
                .fwd_status(parts.status)
                .detail(reason.as_str());
            return Ok(with_status(
                Response::from_parts(parts, StampedeBody::inner(body)),
                &status,
            ));
        }
        Ok(Fetched::Partial { parts, body }) => {
            guard.release().await;
            leader.finish(Outcome::Private(BODY_NOT_STORED));
            let status = CacheStatus::forward(Fwd::Miss)
                .fwd_status(parts.status)
                .detail(BODY_NOT_STORED);
            return Ok(with_status(Response::from_parts(parts, body), &status));
        }
        Ok(Fetched::Whole {
            parts,
            data,
            trailers,
        }) => (parts, data, trailers),
    };

    let now = shared.now();
    strip_unstorable_headers(&mut parts.headers);
    let vary = cacheable::vary_names(&parts.headers).unwrap_or_default();
    let vary_values = cacheable::vary_values(&vary, &request_headers);
    let lifetime = policy
        .lifetime(now)
        .filter(|_| cacheable::status_is_storable(parts.status));
    let entry = Arc::new(Entry::new(
        parts.status,
        parts.headers,
        data,
        trailers,
        (vary, vary_values),
        now,
        lifetime.unwrap_or(Lifetime {
            fresh_until: now,
            stale_until: now,
        }),
        started.elapsed(),
    ));
    let stored = match lifetime {
        Some(lifetime) => guard.store(Arc::clone(&entry), lifetime.keep_for(now)).await,
        None => {
            guard.release().await;
            false
        }
    };
    debug!(key = leader.key(), stored, "flight done");
    leader.finish(Outcome::Shared {
        entry: Arc::clone(&entry),
        stored,
    });
    let status = CacheStatus::forward(Fwd::Miss)
        .fwd_status(entry.status)
        .stored(stored)
        .ttl(stored.then(|| ttl_left(entry.lifetime, now)));
    Ok(from_entry(&entry, status, None))
}

enum Fetched<B: Body> {
    Whole {
        parts: response::Parts,
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    Private {
        parts: response::Parts,
        body: B,
        reason: Private,
    },
    Partial {
        parts: response::Parts,
        body: StampedeBody<B>,
    },
}

/// Sends a request that cannot use the cache to the inner service.
async fn forward<S, St, ReqBody, B>(
    shared: &Shared<St>,
    inner: S,
    request: Request<ReqBody>,
    status: CacheStatus,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    B: Body,
{
    shared.state.counters.origin_calls.incr();
    let response = inner.oneshot(request).await?;
    let status = status.fwd_status(response.status());
    Ok(with_status(response.map(StampedeBody::inner), &status))
}

fn with_status<B: Body>(
    mut response: Response<StampedeBody<B>>,
    status: &CacheStatus,
) -> Response<StampedeBody<B>> {
    status.apply(response.headers_mut());
    response
}

fn ttl_left(lifetime: Lifetime, now: SystemTime) -> Duration {
    lifetime.fresh_until.duration_since(now).unwrap_or_default()
}

/// A response built from a shared or stored entry; `Age` is set when it
/// comes from the store, `served_at` being the time of the read.
fn from_entry<B: Body>(
    entry: &Entry,
    status: CacheStatus,
    served_at: Option<SystemTime>,
) -> Response<StampedeBody<B>> {
    let mut response = Response::new(StampedeBody::buffered(entry.body.clone(), entry.trailers.clone()));
    *response.status_mut() = entry.status;
    *response.headers_mut() = entry.headers.clone();
    if let Some(now) = served_at {
        set_age(
            response.headers_mut(),
            now.duration_since(entry.stored_at).unwrap_or_default(),
        );
    }
    with_status(response, &status)
}

/// What waiters get when their leader's origin call failed.
fn bad_gateway<B: Body>(detail: &'static str) -> Response<StampedeBody<B>> {
    let mut response = Response::new(StampedeBody::buffered(Bytes::new(), None));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    let status = CacheStatus::forward(Fwd::Miss).collapsed().detail(detail);
    with_status(response, &status)
}

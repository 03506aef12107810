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
use http::{HeaderMap, Method, Request, Response, StatusCode, header, request};
use http_body::Body;
use tower::ServiceExt;
use tower_service::Service;
use tracing::debug;

use crate::{
    ask::{Ask, origin_request},
    body::StampedeBody,
    breaker::Breaker,
    cacheable,
    entry::Entry,
    flight::{Flights, Join},
    future::ResponseFuture,
    grpc,
    invalidate::{Target, is_unsafe, write_through},
    layer::Config,
    pass::Passes,
    policy::{Decision, Lifetime, Policy},
    read::{NoReplay, Reader, read_key},
    rebuild::{Job, STALE_IF_ERROR, lead, refresh},
    stats::{Counters, Stats},
    status::{CacheStatus, Fwd, set_age},
    store::{MemoryStore, Store, StoreError},
    vary::Varies,
};

/// The middleware made by [`StampedeLayer`](crate::StampedeLayer): caches
/// and collapses the requests of an inner `http` service.
///
/// It keeps the inner service's error type: the inner service's errors reach
/// the client that caused them, and the cache itself never adds one.
///
/// With [`NoReplay`] (the default) it takes requests with any body; with a
/// [`Replay`](crate::Replay) (from
/// [`StampedeLayer::replay_requests`](crate::StampedeLayer::replay_requests)),
/// whose `POST` requests it may read, the body must be an
/// [`http_body::Body`].
pub struct Stampede<S, St, R = NoReplay> {
    inner: S,
    shared: Arc<Shared<St>>,
    replay: R,
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
    pub(crate) passes: Passes,
    pub(crate) varies: Varies,
    breaker: Breaker,
    /// What this process built while the store failed, served until it
    /// expires: without it, an outage would leave each process calling the
    /// origin once per flight instead of once per entry's life.
    pub(crate) fallback: MemoryStore,
}

impl State {
    /// Forgets what this process holds of `key`: its hit-for-pass mark, its
    /// flight (requests from now on must not join a rebuild that started
    /// before), and what it kept of the key and its variants during an
    /// outage.
    pub(crate) async fn forget_in_process(&self, key: &str) {
        self.passes.remove(key);
        self.flights.detach(key);
        let _ = self.fallback.invalidate(key).await;
        let _ = self.fallback.invalidate_tag(&crate::vary::variant_tag(key)).await;
    }

    pub(crate) fn new() -> Self {
        Self {
            flights: Arc::new(Flights::new()),
            counters: Counters::default(),
            passes: Passes::default(),
            varies: Varies::new(),
            breaker: Breaker::new(),
            fallback: MemoryStore::with_max_bytes(FALLBACK_BYTES),
        }
    }
}

/// The inner services the cache flow calls, from tasks of their own.
pub(crate) trait Origin<ReqBody, B>:
    Service<Request<ReqBody>, Response = Response<B>, Future: Send + 'static, Error: Send + 'static>
    + Send
    + 'static
{
}

impl<S, ReqBody, B> Origin<ReqBody, B> for S
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
}

/// The response bodies the cache flow moves between tasks.
pub(crate) trait SendBody: Body<Data: Send, Error: Send> + Send + 'static {}

impl<B> SendBody for B
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
}

/// The bound of the in-process fallback: a stand-in for an outage, not a
/// second cache.
const FALLBACK_BYTES: u64 = 32 * 1024 * 1024;

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
    /// The inner service failed, and the last good response stands in for
    /// it (`stale_if_error`).
    LastGood(Arc<Entry>),
}

/// Why a response whose body was not read whole is not shared.
pub(crate) const BODY_NOT_STORED: &str = "body-not-stored";

enum Plan {
    Forward(Fwd),
    Write(Target),
    Cache {
        key: String,
        /// The key before `Vary` variants, when `key` is a variant's.
        variant_of: Option<String>,
        policy: Policy,
    },
    /// A `POST` cached as a read: its key is `target`'s and its body's.
    Read {
        target: String,
        policy: Policy,
    },
}

/// Why a stored response may not answer a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fit {
    Yes,
    /// The request has `Authorization` and the response did not allow that.
    Authorization,
    /// The request's values of the headers the response varies on differ.
    Vary,
}

pub(crate) fn fit(entry: &Entry, request: &HeaderMap) -> Fit {
    if request.contains_key(header::AUTHORIZATION) && !entry.allows_authorized {
        Fit::Authorization
    } else if !cacheable::vary_matches(&entry.vary, &entry.vary_values, request) {
        Fit::Vary
    } else {
        Fit::Yes
    }
}

impl<S, St, R> Stampede<S, St, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>, replay: R) -> Self {
        Self {
            inner,
            shared,
            replay,
        }
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

impl<S: Clone, St, R: Clone> Clone for Stampede<S, St, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            replay: self.replay.clone(),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, R> fmt::Debug for Stampede<S, St, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stampede")
            .field("inner", &self.inner)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

impl<S, St, R, ReqBody, ResBody> Service<Request<ReqBody>> for Stampede<S, St, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store,
    R: Reader<ReqBody>,
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
        let (mut parts, body) = request.into_parts();
        let plan = self.shared.plan(&mut parts, R::READS);
        let request = Request::from_parts(parts, body);
        match plan {
            Plan::Forward(fwd) => {
                counters.bypassed.incr();
                counters.origin_calls.incr();
                ResponseFuture::forward(inner.call(request), fwd.static_value())
            }
            Plan::Write(target) => {
                counters.bypassed.incr();
                counters.origin_calls.incr();
                let shared = Arc::clone(&self.shared);
                ResponseFuture::cached(Box::pin(write_through(shared, inner, request, target)))
            }
            Plan::Cache {
                key,
                variant_of,
                policy,
            } => ResponseFuture::cached(Box::pin(respond(
                Arc::clone(&self.shared),
                inner,
                request,
                key,
                variant_of,
                policy,
            ))),
            Plan::Read { target, policy } => {
                let (shared, replay) = (Arc::clone(&self.shared), self.replay.clone());
                ResponseFuture::cached(Box::pin(respond_to_read(
                    shared, replay, inner, request, target, policy,
                )))
            }
        }
    }
}

impl<St: Store> Shared<St> {
    fn plan(&self, parts: &mut request::Parts, reads: bool) -> Plan {
        let config = &self.config;
        let policy = config.routes.get(parts.uri.path()).unwrap_or(&config.policy);
        if policy.is_bypass() {
            return Plan::Forward(Fwd::Bypass);
        }
        if parts.method == Method::POST {
            if reads && config.reads.get(parts.uri.path()).is_some() {
                if cacheable::request_skips_cache(&parts.headers) {
                    return Plan::Forward(Fwd::Request);
                }
                return match self.make_key(parts) {
                    Some(target) => Plan::Read {
                        target,
                        policy: policy.clone(),
                    },
                    None => Plan::Forward(Fwd::Bypass),
                };
            }
            if grpc::is_grpc(&parts.headers) {
                // No gRPC response is stored under the key of a `GET`:
                // there is nothing for a call to invalidate.
                return Plan::Forward(Fwd::Method);
            }
        }
        if is_unsafe(&parts.method) {
            return Plan::Write(Target {
                key: self.get_key(parts),
                host: parts.headers.get(header::HOST).cloned(),
            });
        }
        if !cacheable::method_is_cacheable(&parts.method) {
            return Plan::Forward(Fwd::Method);
        }
        if cacheable::request_skips_cache(&parts.headers) {
            return Plan::Forward(Fwd::Request);
        }
        // HEAD is answered from the GET response: one key for both.
        match self.get_key(parts) {
            Some(primary) => self.cache_plan(primary, &parts.headers, policy.clone()),
            None => Plan::Forward(Fwd::Bypass),
        }
    }

    /// The plan for a key: its `Vary` variant for these request headers,
    /// when its responses are known to vary.
    fn cache_plan(&self, primary: String, headers: &HeaderMap, policy: Policy) -> Plan {
        match self.state.varies.key(&primary, headers) {
            Some(variant) => Plan::Cache {
                key: variant,
                variant_of: Some(primary),
                policy,
            },
            None => Plan::Cache {
                key: primary,
                variant_of: None,
                policy,
            },
        }
    }

    /// The cache key of a `GET` for `parts`' target, by the route's key
    /// function or the layer's.
    pub(crate) fn get_key(&self, parts: &mut request::Parts) -> Option<String> {
        let method = mem::replace(&mut parts.method, Method::GET);
        let key = self.make_key(parts);
        parts.method = method;
        key
    }

    /// The key of `parts` as they are, by the route's key function or the
    /// layer's.
    fn make_key(&self, parts: &request::Parts) -> Option<String> {
        match self.config.route_keys.get(parts.uri.path()) {
            Some(key) => key.make_key(parts),
            None => self.config.key.make_key(parts),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.config.clock.now()
    }

    /// Runs a store call within the store timeout; a failure is counted,
    /// logged and turned into `None`, never into a failed request. While the
    /// store is resting after a failure, the call is not made at all.
    pub(crate) async fn store_call<T>(
        &self,
        what: &'static str,
        key: &str,
        timeout: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        if self.state.breaker.is_open() {
            return None;
        }
        self.store_call_always(what, key, timeout, call).await
    }

    /// As [`Shared::store_call`], but made even while the store rests: for
    /// calls whose loss costs more than their wait (releasing a rebuild
    /// lock, which others would otherwise wait out; writing; invalidating).
    pub(crate) async fn store_call_always<T>(
        &self,
        what: &'static str,
        key: &str,
        timeout: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        let mut call = pin!(call);
        // A store that answers at once (the memory store) needs no timer:
        // the hit path is spared a clock read and a timer entry.
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        let answer = match first {
            Poll::Ready(answer) => Ok(answer),
            Poll::Pending => tokio::time::timeout(timeout, call).await,
        };
        let error = match answer {
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

    /// The stored entry of `key`; while the store fails (or rests after a
    /// failure), the one this process kept meanwhile, if any. Once the
    /// store answers again, it alone is read: what replicas kept on their
    /// own is not served past the outage.
    pub(crate) async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let timeout = self.config.store_timeout;
        match self.store_call("get", key, timeout, self.store.get(key)).await {
            Some(found) => found,
            None => self.state.fallback.get(key).await.ok().flatten(),
        }
    }

    /// Keeps `entry` in this process, for as long as it would have been
    /// stored, when the store could not take it.
    pub(crate) async fn keep_in_process(&self, key: &str, entry: Arc<Entry>, keep_for: Duration) {
        let fallback = &self.state.fallback;
        if let Ok(Some(token)) = fallback.try_lock(key, self.config.lock_ttl).await {
            let _ = fallback.set(key, entry, &token, keep_for).await;
            debug!(key, "store unavailable: kept in process");
        }
    }

    /// A uniform draw in [0, 1) for the policies.
    pub(crate) fn random(&self) -> f64 {
        (self.config.random)()
    }
}

/// The cache flow for one cacheable request.
async fn respond<S, St, ReqBody, B>(
    shared: Arc<Shared<St>>,
    inner: S,
    request: Request<ReqBody>,
    key: String,
    variant_of: Option<String>,
    policy: Policy,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Origin<ReqBody, B> + Clone,
    St: Store,
    ReqBody: Send + 'static,
    B: SendBody,
{
    let counters = &shared.state.counters;
    let ask = Ask::of(&request);
    let mut last_good = None;
    let refused = shared.config.honor_no_cache && cacheable::request_says_no_cache(request.headers());
    let found = match (shared.get(&key).await, &variant_of) {
        // An entry stored before the key's variants were known serves the
        // variant it was made for, until it expires.
        (None, Some(primary)) => shared
            .get(primary)
            .await
            .filter(|entry| fit(entry, request.headers()) == Fit::Yes),
        (found, _) => found,
    };
    // What this key's responses vary on, for the keys of later requests.
    let learn = |names: &[http::HeaderName]| {
        shared
            .state
            .varies
            .learn(variant_of.as_deref().unwrap_or(&key), names);
    };
    if let Some(entry) = &found {
        learn(&entry.vary);
    }
    if refused {
        // The client refuses the stored entry: rebuild, and let the rebuild
        // know the entry it replaces (and may fall back on if it fails).
        last_good = found.filter(|entry| fit(entry, request.headers()) == Fit::Yes);
    } else if let Some(entry) = found {
        let now = shared.now();
        let decision = policy.decide(entry.lifetime, entry.recompute, now, || shared.random());
        match (decision, fit(&entry, request.headers())) {
            (Decision::Expired, Fit::Yes) => last_good = Some(entry),
            (Decision::Expired, _) | (_, Fit::Vary) => {}
            (_, Fit::Authorization) => {
                counters.bypassed.incr();
                let status = CacheStatus::forward(Fwd::Request).detail("authorization");
                return forward(&shared, inner, request, status).await;
            }
            (Decision::Fresh { ttl }, Fit::Yes) => {
                counters.hits.incr();
                debug!(key, "hit");
                return Ok(ask.shape(from_entry(&entry, CacheStatus::hit(ttl), Some(now))));
            }
            (Decision::RefreshEarly { ttl: left } | Decision::Stale { late: left }, Fit::Yes) => {
                // Served as it is; the request goes on to refresh it.
                let status = if let Decision::Stale { .. } = decision {
                    counters.stale_hits.incr();
                    CacheStatus::stale(left)
                } else {
                    counters.hits.incr();
                    CacheStatus::hit(left).detail("early-refresh")
                };
                let response = from_entry(&entry, status, Some(now));
                let job = Job {
                    key,
                    variant_of,
                    policy,
                };
                refresh(&shared, inner, request, job, entry);
                return Ok(ask.shape(response));
            }
        }
    }
    counters.misses.incr();
    if shared.state.passes.contains(&key) {
        // Its last response was for one client only: queueing behind a
        // leader would only delay this request.
        counters.bypassed.incr();
        let status = CacheStatus::forward(Fwd::Miss).detail("hit-for-pass");
        return forward(&shared, inner, request, status).await;
    }
    match shared.state.flights.join(&key, shared.config.max_waiters) {
        Join::Full => {
            counters.shed.incr();
            debug!(key, "max_waiters reached; turned away");
            let now = shared.now();
            Ok(match last_good {
                Some(entry) => {
                    let late = now.duration_since(entry.lifetime.fresh_until).unwrap_or_default();
                    let status = CacheStatus::stale(late).detail(TOO_MANY_WAITERS);
                    ask.shape(from_entry(&entry, status, Some(now)))
                }
                None => too_many_waiters(),
            })
        }
        Join::Leader(leader) => {
            debug!(key, "leading a flight");
            let task = tokio::spawn(lead(
                Arc::clone(&shared),
                inner,
                origin_request(request),
                Job {
                    key: key.clone(),
                    variant_of: variant_of.clone(),
                    policy,
                },
                leader,
                last_good,
            ));
            match task.await {
                Ok(response) => response.map(|response| {
                    learn(&cacheable::vary_names(response.headers()).unwrap_or_default());
                    ask.shape(response)
                }),
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
                    learn(&entry.vary);
                    let ttl = stored.then(|| ttl_left(entry.lifetime, shared.now()));
                    let status = CacheStatus::forward(Fwd::Miss)
                        .fwd_status(entry.status)
                        .collapsed()
                        .ttl(ttl);
                    Ok(ask.shape(from_entry(&entry, status, None)))
                }
                Some(Outcome::LastGood(entry)) if fit(&entry, request.headers()) == Fit::Yes => {
                    let status = CacheStatus::forward(Fwd::Miss).collapsed().detail(STALE_IF_ERROR);
                    Ok(ask.shape(from_entry(&entry, status, Some(shared.now()))))
                }
                Some(Outcome::Failed) | None => Ok(bad_gateway("origin-error")),
                Some(Outcome::Shared { .. } | Outcome::LastGood(_)) => {
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

/// The flow of a `POST` cached as a read: its body is read, for its digest
/// to complete the key, and handed back unchanged; a body that cannot be
/// read whole within the limits goes to the inner service as it comes.
async fn respond_to_read<S, St, R, ReqBody, B>(
    shared: Arc<Shared<St>>,
    replay: R,
    inner: S,
    request: Request<ReqBody>,
    target: String,
    policy: Policy,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Origin<ReqBody, B> + Clone,
    St: Store,
    R: Reader<ReqBody>,
    ReqBody: Send + 'static,
    B: SendBody,
{
    let (parts, body) = request.into_parts();
    let (limit, patience) = (shared.config.max_request_bytes, shared.config.max_body_wait);
    let (body, whole) = replay.read(body, limit, patience).await;
    let key = whole.and_then(|whole| read_key(target, &parts.headers, &whole));
    match key.map(|key| shared.cache_plan(key, &parts.headers, policy)) {
        Some(Plan::Cache {
            key,
            variant_of,
            policy,
        }) => {
            let request = Request::from_parts(parts, body);
            respond(shared, inner, request, key, variant_of, policy).await
        }
        _ => {
            shared.state.counters.bypassed.incr();
            let status = CacheStatus::forward(Fwd::Request).detail("body-not-read");
            forward(&shared, inner, Request::from_parts(parts, body), status).await
        }
    }
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
    Ok(forwarded(inner.oneshot(request).await?, status))
}

/// The inner service's own response, with this layer's `Cache-Status`
/// naming the status it forwarded.
pub(crate) fn forwarded<B: Body>(response: Response<B>, status: CacheStatus) -> Response<StampedeBody<B>> {
    let status = status.fwd_status(response.status());
    with_status(response.map(StampedeBody::inner), &status)
}

pub(crate) fn with_status<B: Body>(
    mut response: Response<StampedeBody<B>>,
    status: &CacheStatus,
) -> Response<StampedeBody<B>> {
    status.apply(response.headers_mut());
    response
}

pub(crate) fn ttl_left(lifetime: Lifetime, now: SystemTime) -> Duration {
    lifetime.fresh_until.duration_since(now).unwrap_or_default()
}

/// A response built from a shared or stored entry; `Age` is set when it
/// comes from the store, `served_at` being the time of the read.
pub(crate) fn from_entry<B: Body>(
    entry: &Entry,
    status: CacheStatus,
    served_at: Option<SystemTime>,
) -> Response<StampedeBody<B>> {
    let mut response = Response::new(StampedeBody::buffered(entry.body.clone(), entry.trailers.clone()));
    *response.status_mut() = entry.status;
    // Room for `Age` and `Cache-Status` up front: a clone has none, and
    // growing it on every hit cost more than this copy.
    let headers = response.headers_mut();
    headers.reserve(entry.headers.len() + 2);
    headers.extend(
        entry
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    if let Some(now) = served_at {
        set_age(
            response.headers_mut(),
            now.duration_since(entry.stored_at).unwrap_or_default(),
        );
    }
    with_status(response, &status)
}

/// The detail of a request turned away by `max_waiters`.
const TOO_MANY_WAITERS: &str = "too-many-waiters";

/// What a request gets when its key's flight is full and nothing stored
/// can stand in: come back in a second.
fn too_many_waiters<B: Body>() -> Response<StampedeBody<B>> {
    let mut response = Response::new(StampedeBody::buffered(Bytes::new(), None));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    let status = CacheStatus::forward(Fwd::Miss).detail(TOO_MANY_WAITERS);
    with_status(response, &status)
}

/// What waiters get when their leader's origin call failed.
fn bad_gateway<B: Body>(detail: &'static str) -> Response<StampedeBody<B>> {
    let mut response = Response::new(StampedeBody::buffered(Bytes::new(), None));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    let status = CacheStatus::forward(Fwd::Miss).collapsed().detail(detail);
    with_status(response, &status)
}

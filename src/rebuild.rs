//! Rebuilding an entry: the leader's origin call under the store's rebuild
//! lock, the background refresh, and the last good response standing in for
//! a failing origin.

use std::{
    mem,
    pin::pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header, response};
use http_body::Body;
use tower_service::Service;
use tracing::debug;

use crate::{
    ask::origin_request,
    body::{Collected, StampedeBody, collect},
    cacheable::{self, CacheControl, OriginFreshness, Private},
    entry::{Entry, strip_unstorable_headers},
    flight::{Join, Leader},
    grpc,
    invalidate::tags,
    policy::{Decision, Lifetime, Policy},
    service::{
        BODY_NOT_STORED, Fit, Origin, Outcome, SendBody, Shared, fit, from_entry, ttl_left, with_status,
    },
    stats,
    status::{CacheStatus, Fwd},
    store::{LockToken, Store},
    vary::variant_tag,
};

/// What to rebuild: the key, the plain key it is a `Vary` variant of (if
/// it is one), and the policy it is stored under.
pub(crate) struct Job {
    pub(crate) key: String,
    pub(crate) variant_of: Option<String>,
    pub(crate) policy: Policy,
}

/// A lock is extended at most this often, however short its ttl.
const MIN_EXTEND_EVERY: Duration = Duration::from_millis(10);

/// The detail of a response served because the origin failed.
pub(crate) const STALE_IF_ERROR: &str = "stale-if-error";

impl<St: Store> Shared<St> {
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
    async fn keep_lock<F: std::future::Future>(
        &self,
        key: &str,
        token: Option<&LockToken>,
        work: F,
    ) -> F::Output {
        let Some(token) = token else {
            return work.await;
        };
        let (ttl, timeout) = (self.config.lock_ttl, self.config.store_timeout);
        let mut work = pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                () = tokio::time::sleep((ttl / 3).max(MIN_EXTEND_EVERY)) => {
                    let extend = self.store.extend_lock(key, token, ttl);
                    if self.store_call("extend lock", key, timeout, extend).await != Some(true) {
                        debug!(key, "rebuild lock lost while the origin was still working");
                    }
                }
            }
        }
    }
}

pub(crate) enum Lock {
    Held(LockToken),
    Taken,
    Unavailable,
}

/// What a fenced write changes.
enum Write {
    /// A new response.
    Whole,
    /// The times of the stored response, which the origin said is current.
    Times,
}

/// A held rebuild lock that is released even if the leader's task unwinds.
struct LockGuard<St: Store> {
    shared: Arc<Shared<St>>,
    key: String,
    token: Option<LockToken>,
    /// The store could not be asked for the lock: what is built goes to
    /// the in-process fallback instead.
    unavailable: bool,
}

impl<St: Store> LockGuard<St> {
    /// Writes `entry` fenced by the lock, which also releases it.
    async fn store(mut self, entry: Arc<Entry>, keep_for: Duration, write: Write) -> bool {
        let Some(token) = self.token.take() else {
            if self.unavailable {
                self.shared.keep_in_process(&self.key, entry, keep_for).await;
            }
            return false;
        };
        let shared = &self.shared;
        let timeout = shared.config.store_timeout;
        let stored = match write {
            Write::Whole => {
                let set = shared.store.set(&self.key, Arc::clone(&entry), &token, keep_for);
                shared.store_call_always("set", &self.key, timeout, set).await
            }
            Write::Times => {
                let renew = shared
                    .store
                    .renew(&self.key, Arc::clone(&entry), &token, keep_for);
                shared.store_call_always("renew", &self.key, timeout, renew).await
            }
        };
        match stored {
            Some(false) => debug!(
                key = self.key,
                "write refused: the rebuild lock had passed to another, or was voided"
            ),
            None => shared.keep_in_process(&self.key, entry, keep_for).await,
            Some(true) => {}
        }
        stored == Some(true)
    }

    async fn release(mut self) {
        if let Some(token) = self.token.take() {
            let shared = &self.shared;
            let unlock = shared.store.unlock(&self.key, &token);
            shared
                .store_call_always("unlock", &self.key, shared.config.store_timeout, unlock)
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

/// Starts a background refresh of `key` with the request that found its
/// entry due, unless one is already running in this process or too many
/// refreshes are. The request's readied service makes the call; across
/// replicas, the store's rebuild lock keeps it to one refresh.
pub(crate) fn refresh<S, St, ReqBody, B>(
    shared: &Arc<Shared<St>>,
    inner: S,
    request: Request<ReqBody>,
    job: Job,
    last_good: Arc<Entry>,
) where
    S: Origin<ReqBody, B>,
    St: Store,
    ReqBody: Send + 'static,
    B: SendBody,
{
    let counters = &shared.state.counters;
    let key = &job.key;
    // The permit first: a flight started and then abandoned would send its
    // waiters away with nothing.
    let Ok(permit) = Arc::clone(&shared.config.refreshes).try_acquire_owned() else {
        counters.refreshes_dropped.incr();
        debug!(key, "too many refreshes running; this one is skipped");
        return;
    };
    // Nothing waits on a refresh: one under way is enough.
    let Join::Leader(leader) = shared.state.flights.join(key, 0) else {
        return;
    };
    counters.refreshes.incr();
    debug!(key, "refreshing in the background");
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let _permit = permit;
        // Nobody waits for this response: waiters of the flight, if any,
        // were answered by the leader.
        let _ = lead(
            shared,
            inner,
            origin_request(request),
            job,
            leader,
            Some(last_good),
        )
        .await;
    });
}

/// An entry another layer wrote while this one waited, fresh and fit for
/// the request.
struct Written {
    entry: Arc<Entry>,
    ttl: Duration,
    now: SystemTime,
}

/// Reads `key` for an entry another layer has written: fresh, fit for
/// `request`, and not `replaced` (the entry this rebuild is replacing).
async fn written_meanwhile<St: Store>(
    shared: &Shared<St>,
    key: &str,
    policy: &Policy,
    request: &HeaderMap,
    replaced: Option<&Arc<Entry>>,
) -> Option<Written> {
    let entry = shared.get(key).await?;
    if replaced.is_some_and(|old| old.stored_at == entry.stored_at) {
        return None;
    }
    let now = shared.now();
    match policy.decide(entry.lifetime, entry.recompute, now, || shared.random()) {
        Decision::Fresh { ttl } | Decision::RefreshEarly { ttl } if fit(&entry, request) == Fit::Yes => {
            Some(Written { entry, ttl, now })
        }
        _ => None,
    }
}

impl Written {
    /// Ends the flight with the other layer's entry.
    fn serve<B: Body>(
        self,
        shared: &Shared<impl Store>,
        leader: Leader<Outcome>,
    ) -> Response<StampedeBody<B>> {
        shared.state.counters.coalesced.incr();
        leader.finish(Outcome::Shared {
            entry: Arc::clone(&self.entry),
            stored: true,
        });
        let status = CacheStatus::forward(Fwd::Miss).collapsed().ttl(Some(self.ttl));
        from_entry(&self.entry, status, Some(self.now))
    }
}

/// The tags an entry is stored with: those of the layer's tag header, and,
/// for a `Vary` variant, one naming its plain key, through which
/// invalidating that key reaches the variant.
fn entry_tags<St>(shared: &Shared<St>, headers: &HeaderMap, variant_of: Option<&str>) -> Vec<String> {
    let mut tags = tags(headers, shared.config.tag_header.as_ref());
    tags.extend(variant_of.map(variant_tag));
    tags
}

/// Whether a rebuild failed in the sense of RFC 5861's `stale-if-error`,
/// and with which status, if any: an error, a 5xx, or a gRPC call that
/// failed on the server's side.
fn failure<B: Body, E>(fetched: &Result<Fetched<B>, E>) -> Option<Option<StatusCode>> {
    match fetched {
        Err(_) => Some(None),
        Ok(Fetched::Whole { parts, trailers, .. }) if grpc::failed(&parts.headers, trailers.as_ref()) => {
            Some(Some(parts.status))
        }
        Ok(fetched) => {
            let status = fetched.status();
            matches!(status.as_u16(), 500 | 502 | 503 | 504).then_some(Some(status))
        }
    }
}

/// The leader's work, run in its own task so that its client going away
/// does not cancel what its waiters wait for.
pub(crate) async fn lead<S, St, ReqBody, B>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    mut request: Request<ReqBody>,
    job: Job,
    leader: Leader<Outcome>,
    last_good: Option<Arc<Entry>>,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    St: Store,
    B: Body,
{
    let Job {
        key,
        variant_of,
        policy,
    } = job;
    // Another layer on this store may be rebuilding: wait for its write, and
    // take the lock over if it is released (or expires) without one. A live
    // holder keeps its lock, so the wait is bounded by `lock_wait`, after
    // which this leader goes to the origin without storing.
    let waiting_since = tokio::time::Instant::now();
    let mut unavailable = false;
    let token = loop {
        match shared.try_lock(&key).await {
            Lock::Held(token) => break Some(token),
            Lock::Unavailable => {
                unavailable = true;
                break None;
            }
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
        if let Some(written) = written_meanwhile(&shared, &key, &policy, request.headers(), None).await {
            return Ok(written.serve(&shared, leader));
        }
    };
    let guard = LockGuard {
        shared: Arc::clone(&shared),
        key,
        token,
        unavailable,
    };
    // The lock may have come free because another layer just wrote: then
    // there is nothing to rebuild.
    if guard.token.is_some()
        && let Some(written) = written_meanwhile(
            &shared,
            &guard.key,
            &policy,
            request.headers(),
            last_good.as_ref(),
        )
        .await
    {
        guard.release().await;
        return Ok(written.serve(&shared, leader));
    }

    // Ask the origin whether the response it replaces is still current: a
    // 304 then renews it without the body travelling again.
    if let Some(old) = last_good.as_ref().filter(|old| old.status == StatusCode::OK) {
        for (validator, condition) in [
            (header::ETAG, header::IF_NONE_MATCH),
            (header::LAST_MODIFIED, header::IF_MODIFIED_SINCE),
        ] {
            if let Some(value) = old.headers.get(validator) {
                request.headers_mut().insert(condition, value.clone());
            }
        }
    }
    let authorized = request.headers().contains_key(header::AUTHORIZATION);
    let request_headers = request.headers().clone();
    let started = tokio::time::Instant::now();
    shared.state.counters.origin_calls.incr();
    let (limit, patience) = (shared.config.max_body_bytes, shared.config.max_body_wait);
    let validated = request.headers().contains_key(header::IF_NONE_MATCH)
        || request.headers().contains_key(header::IF_MODIFIED_SINCE);
    let fetch = async {
        let (parts, body) = inner.call(request).await?.into_parts();
        if validated && parts.status == StatusCode::NOT_MODIFIED {
            // The answer to this layer's own question: never a client's.
            return Ok(Fetched::NotModified { parts });
        }
        let cc = CacheControl::parse(&parts.headers);
        if let Err(reason) = cacheable::shareable(&parts.headers, &cc, authorized) {
            return Ok(Fetched::Private { parts, body, reason });
        }
        Ok(match collect(body, limit, patience).await {
            Collected::Complete { data, trailers } => Fetched::Whole {
                parts,
                data,
                trailers,
            },
            Collected::Partial(body) => Fetched::Partial { parts, body },
        })
    };
    let fetched = shared.keep_lock(&guard.key, guard.token.as_ref(), fetch).await;
    stats::record_origin(started.elapsed());

    let now = shared.now();
    if let Some(last_good) = last_good
        .as_ref()
        .filter(|entry| entry.lifetime.serves_errors_at(now))
        && let Some(failure) = failure(&fetched)
    {
        // stale-if-error: the last good response stands in for the failure.
        guard.release().await;
        debug!(
            key = leader.key(),
            "origin failed; serving the last good response"
        );
        leader.finish(Outcome::LastGood(Arc::clone(last_good)));
        let mut status = CacheStatus::forward(Fwd::Miss).detail(STALE_IF_ERROR);
        if let Some(failed) = failure {
            status = status.fwd_status(failed);
        }
        return Ok(from_entry(last_good, status, Some(now)));
    }

    if let Ok(Fetched::NotModified { parts }) = &fetched
        && let Some(old) = last_good.as_ref()
    {
        // The stored response is current. Renew it, unless this 304 is not
        // for sharing (a cookie for the leader's client): then it answers
        // this flight as it is, unstored.
        let cc = CacheControl::parse(&parts.headers);
        let renewable = cacheable::shareable(&parts.headers, &cc, authorized).is_ok();
        let lifetime = renewable
            .then(|| policy.lifetime(now, shared.random(), &OriginFreshness::of(&old.headers)))
            .flatten();
        let (entry, stored, ttl) = match lifetime {
            Some(lifetime) => {
                let mut renewed = old.renewed(now, lifetime, started.elapsed());
                renewed.tags = entry_tags(&shared, &old.headers, variant_of.as_deref());
                let renewed = Arc::new(renewed);
                let stored = guard
                    .store(Arc::clone(&renewed), lifetime.keep_for(now), Write::Times)
                    .await;
                (renewed, stored, stored.then(|| ttl_left(lifetime, now)))
            }
            None => {
                guard.release().await;
                (Arc::clone(old), false, None)
            }
        };
        debug!(
            key = leader.key(),
            stored, "the origin says the stored response is current"
        );
        leader.finish(Outcome::Shared {
            entry: Arc::clone(&entry),
            stored,
        });
        let status = CacheStatus::forward(Fwd::Miss)
            .fwd_status(StatusCode::NOT_MODIFIED)
            .stored(stored)
            .ttl(ttl)
            .detail("revalidated");
        return Ok(from_entry(&entry, status, None));
    }

    let (mut parts, data, trailers) = match fetched {
        Err(error) => {
            // Waiters first: the release may take up to a store timeout.
            leader.finish(Outcome::Failed);
            guard.release().await;
            return Err(error);
        }
        Ok(Fetched::Private { parts, body, reason }) => {
            leader.finish(Outcome::Private(reason.as_str()));
            // A request's Authorization says nothing about the next request:
            // only what the response itself says makes the key pass.
            if reason != Private::Authorization {
                shared.state.passes.insert(&guard.key, shared.config.pass_for);
            }
            guard.release().await;
            let status = CacheStatus::forward(Fwd::Miss)
                .fwd_status(parts.status)
                .detail(reason.as_str());
            return Ok(with_status(
                Response::from_parts(parts, StampedeBody::inner(body)),
                &status,
            ));
        }
        Ok(Fetched::Partial { parts, body }) => {
            leader.finish(Outcome::Private(BODY_NOT_STORED));
            shared.state.passes.insert(&guard.key, shared.config.pass_for);
            guard.release().await;
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
        // Validators are only sent from a last good entry, handled above.
        Ok(Fetched::NotModified { parts }) => (parts, Bytes::new(), None),
    };

    // Read before Age goes: it counts against the origin's freshness.
    let origin = OriginFreshness::of(&parts.headers);
    strip_unstorable_headers(&mut parts.headers);
    let vary = cacheable::vary_names(&parts.headers).unwrap_or_default();
    let vary_values = cacheable::vary_values(&vary, &request_headers);
    let lifetime = policy
        .lifetime(now, shared.random(), &origin)
        .filter(|_| cacheable::status_is_storable(parts.status))
        .filter(|_| grpc::storable(&parts.headers, trailers.as_ref()));
    let tags = entry_tags(&shared, &parts.headers, variant_of.as_deref());
    let mut entry = Entry::new(
        parts.status,
        parts.headers,
        data,
        trailers,
        (vary, vary_values),
        now,
        lifetime.unwrap_or(Lifetime::expired(now)),
        started.elapsed(),
    );
    entry.tags = tags;
    let entry = Arc::new(entry);
    let stored = match lifetime {
        Some(lifetime) => {
            guard
                .store(Arc::clone(&entry), lifetime.keep_for(now), Write::Whole)
                .await
        }
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
    /// The origin's 304 to the validators this layer sent.
    NotModified { parts: response::Parts },
}

impl<B: Body> Fetched<B> {
    fn status(&self) -> StatusCode {
        match self {
            Self::Whole { parts, .. }
            | Self::Private { parts, .. }
            | Self::Partial { parts, .. }
            | Self::NotModified { parts } => parts.status,
        }
    }
}

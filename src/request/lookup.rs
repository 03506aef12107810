//! A cacheable request: served from the store (perhaps with a background
//! refresh), or a miss that leads a flight or waits on one.

use std::{
    panic,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, Request, Response, request::Parts};
use http_body::Body;
use tokio::{sync::oneshot, task::JoinError};
use tracing::debug;

use super::{forward::forward, wait::wait};
use crate::{
    body::StampedeBody,
    entry::Entry,
    flight::Join,
    plan::Job,
    rebuild::{Origin, SendBody, lead, refresh},
    response::{TOO_MANY_WAITERS, bad_gateway, from_entry, only_if_cached, too_many_waiters},
    reuse::{Fit, Refresh, Reuse, as_asked, fit, reuse},
    rules::{
        cache_control::CacheControl,
        conditional::{Ask, origin_request},
        status::{CacheStatus, Fwd},
        storable, vary,
    },
    shared::Shared,
    store::Store,
};

/// The cache flow of one cacheable request for `job`'s key.
///
/// `judged` is what [`at_once`] found and decided, if it did: the entry is
/// not read and judged again (a second draw of a probabilistic early
/// refresh would make it rarer than its policy says).
pub(crate) async fn lookup<S, St, ReqBody, B>(
    shared: Arc<Shared<St>>,
    inner: S,
    request: Request<ReqBody>,
    job: Job,
    judged: Option<Judged>,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Origin<ReqBody, B> + Clone,
    St: Store,
    ReqBody: Send + 'static,
    B: SendBody,
{
    let counters = &shared.state.counters;
    let ask = Ask::of(request.method(), request.headers(), job.head.fields);
    let judged = match judged {
        Some(judged) => Some(judged),
        None => find(&shared, &job, request.headers()).await.map(|entry| {
            let now = shared.now();
            let reuse = judge(&shared, &job, request.headers(), &entry, now);
            Judged { entry, reuse, now }
        }),
    };
    let mut last_good = None;
    if let Some(Judged { entry, reuse, now }) = judged {
        match reuse {
            Reuse::Serve { ttl } => return Ok(ask.shape(hit(&shared, &job, &entry, ttl, now))),
            Reuse::ServeAndRefresh(why) => {
                let status = match why {
                    Refresh::Stale { late } => {
                        counters.stale_hits.incr();
                        CacheStatus::stale(late)
                    }
                    Refresh::Early { ttl } => {
                        counters.hits.incr();
                        CacheStatus::hit(ttl).detail("early-refresh")
                    }
                };
                // Served as it is; the request goes on to refresh it.
                let response = from_entry(&entry, status, Some(now));
                refresh(&shared, inner, request, job, entry);
                return Ok(ask.shape(response));
            }
            Reuse::Pass(why) => {
                counters.bypassed.incr();
                let status = CacheStatus::forward(Fwd::Request).detail(why);
                return forward(&shared, inner, request, status).await;
            }
            Reuse::Revalidate => last_good = Some(entry),
            Reuse::Miss => {}
        }
    }
    counters.misses.incr();
    if asked(&job).is_some_and(|asked| asked.only_if_cached) {
        // Nothing stored will do, and the client said not to ask the origin.
        return Ok(only_if_cached());
    }
    if shared.state.passes.contains(&job.key) {
        // Its last response was for one client only: queueing behind a
        // leader would only delay this request.
        counters.bypassed.incr();
        let status = CacheStatus::forward(Fwd::Miss).detail("hit-for-pass");
        return forward(&shared, inner, request, status).await;
    }
    match shared.state.flights.join(&job.key, shared.config.max_waiters) {
        Join::Leader(leader) => {
            debug!(key = job.key, "leading a flight");
            let primary = job.primary().to_owned();
            let (reply, answer) = oneshot::channel();
            let task = tokio::spawn(lead(
                Arc::clone(&shared),
                inner,
                origin_request(request),
                job,
                leader,
                last_good,
                Some(reply),
            ));
            match answer.await {
                Ok(response) => response.map(|response| {
                    let names = vary::vary_names(response.headers()).unwrap_or_default();
                    shared.state.varies.learn(&primary, &names);
                    ask.shape(response)
                }),
                // The task ended without a response: it panicked or was
                // cancelled (the runtime shutting down).
                Err(_) => match task.await.map_err(JoinError::try_into_panic) {
                    // As if the layer were not there: the panic is the
                    // leader's client's to see.
                    Err(Ok(payload)) => panic::resume_unwind(payload),
                    _ => Ok(bad_gateway("leader-cancelled")),
                },
            }
        }
        Join::Waiter(waiter) => wait(&shared, inner, request, waiter, &job, &ask).await,
        Join::Full => {
            counters.shed.incr();
            debug!(key = job.key, "max_waiters reached; turned away");
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
    }
}

/// A stored entry and what it may do for a request, decided at `now`.
pub(crate) struct Judged {
    entry: Arc<Entry>,
    reuse: Reuse,
    now: SystemTime,
}

/// A hit answered without waiting: the entry the store has at hand
/// ([`Store::get_now`]), fresh for this request. Otherwise the request
/// goes to [`lookup`], with the entry and the decision if one was at hand
/// (a stale entry, a refused one), else to read the store itself.
pub(crate) fn at_once<St, B>(
    shared: &Shared<St>,
    request: &Parts,
    job: &Job,
) -> Result<Response<StampedeBody<B>>, Option<Judged>>
where
    St: Store,
    B: SendBody,
{
    let entry = shared.get_now(&job.key).ok_or(None)?;
    let now = shared.now();
    match judge(shared, job, &request.headers, &entry, now) {
        Reuse::Serve { ttl } => {
            let ask = Ask::of(&request.method, &request.headers, job.head.fields);
            Ok(ask.shape(hit(shared, job, &entry, ttl, now)))
        }
        reuse => Err(Some(Judged { entry, reuse, now })),
    }
}

/// The request's own directives, where the policy follows HTTP's rules.
fn asked(job: &Job) -> Option<&CacheControl> {
    job.policy.follows_origin().then_some(&job.head.asked)
}

/// What `entry`, stored at `job`'s key, may do for a request with
/// `headers` at `now`.
fn judge<St: Store>(
    shared: &Shared<St>,
    job: &Job,
    headers: &HeaderMap,
    entry: &Entry,
    now: SystemTime,
) -> Reuse {
    // What this key's responses vary on, for the keys of later requests.
    shared.state.varies.learn(job.primary(), &entry.vary);
    // A client may refuse stored responses, where the layer lets it.
    let asked = asked(job);
    let refused = (asked.is_some() || shared.config.honor_no_cache)
        && storable::says_no_cache(headers, job.head.fields, &job.head.asked);
    let decision = (!refused).then(|| {
        let decision = job
            .policy
            .decide(entry.lifetime, entry.recompute, now, || shared.random());
        match asked {
            Some(asked) => as_asked(decision, asked, entry, now),
            None => decision,
        }
    });
    reuse(decision, fit(entry, headers, job.credentials))
}

/// A fresh entry's response, counted as a hit.
fn hit<St: Store, B: Body>(
    shared: &Shared<St>,
    job: &Job,
    entry: &Entry,
    ttl: Duration,
    now: SystemTime,
) -> Response<StampedeBody<B>> {
    shared.state.counters.hits.incr();
    debug!(key = job.key, "hit");
    from_entry(entry, CacheStatus::hit(ttl), Some(now))
}

/// The stored entry of `job`'s key. An entry stored at the plain key before
/// the key's variants were known serves the variant it was made for, until
/// it expires.
async fn find<St: Store>(shared: &Shared<St>, job: &Job, request: &HeaderMap) -> Option<Arc<Entry>> {
    match (shared.get(&job.key).await, &job.variant_of) {
        (None, Some(primary)) => shared
            .get(primary)
            .await
            .filter(|entry| fit(entry, request, job.credentials) == Fit::Yes),
        (found, _) => found,
    }
}

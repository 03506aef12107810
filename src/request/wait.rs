//! A request collapsed onto another's flight: it gets what the leader got,
//! if that is its to have, else goes forward itself.

use http::{Request, Response};
use tracing::debug;

use super::forward::forward;
use crate::{
    body::StampedeBody,
    flight::{Outcome, Waiter},
    plan::Job,
    rebuild::{Origin, SendBody},
    response::{bad_gateway, from_answer, from_entry, from_head, ttl_left},
    reuse::{Fit, fit},
    rules::{
        conditional::Ask,
        status::{BODY_NOT_STORED, CacheStatus, Fwd, STALE_IF_ERROR},
    },
    shared::Shared,
    store::Store,
};

/// Waits for the flight `waiter` joined and answers from its outcome.
/// `job` is the request's own, whose plain key learns the response's
/// `Vary` names.
pub(super) async fn wait<S, St, ReqBody, B>(
    shared: &Shared<St>,
    inner: S,
    request: Request<ReqBody>,
    waiter: Waiter<Outcome>,
    job: &Job,
    ask: &Ask,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Origin<ReqBody, B> + Clone,
    St: Store,
    ReqBody: Send + 'static,
    B: SendBody,
{
    shared.state.counters.coalesced.incr();
    // Give back what the readied service reserved; a clone is readied
    // again should this request have to go forward after all.
    let fallback = inner.clone();
    drop(inner);
    match waiter.wait().await {
        Some(Outcome::Shared { entry, stored })
            if fit(&entry, request.headers(), job.credentials) == Fit::Yes =>
        {
            shared.state.varies.learn(job.primary(), &entry.vary);
            let now = shared.now();
            let ttl = stored.then(|| ttl_left(entry.lifetime, now));
            let status = CacheStatus::forward(Fwd::Miss)
                .fwd_status(entry.status)
                .collapsed()
                .ttl(ttl);
            Ok(ask.shape(from_answer(&entry, status, now)))
        }
        Some(Outcome::Streaming { head, body, kept })
            if fit(&head, request.headers(), job.credentials) == Fit::Yes =>
        {
            let Some(reader) = body.try_reader() else {
                // Its start is gone: it cannot be read whole.
                debug!(key = job.key, "the shared body has moved on; going forward");
                return forward(shared, fallback, request, CacheStatus::forward(Fwd::Miss)).await;
            };
            shared.state.varies.learn(job.primary(), &head.vary);
            let mut status = CacheStatus::forward(Fwd::Miss)
                .fwd_status(head.status)
                .collapsed();
            if !kept {
                status = status.detail(BODY_NOT_STORED);
            }
            Ok(ask.shape(from_head(&head, StampedeBody::shared(reader), status)))
        }
        Some(Outcome::LastGood(entry)) if fit(&entry, request.headers(), job.credentials) == Fit::Yes => {
            let status = CacheStatus::forward(Fwd::Miss).collapsed().detail(STALE_IF_ERROR);
            Ok(ask.shape(from_entry(&entry, status, Some(shared.now()))))
        }
        Some(Outcome::Failed) | None => Ok(bad_gateway("origin-error")),
        Some(Outcome::Shared { .. } | Outcome::Streaming { .. } | Outcome::LastGood(_)) => {
            debug!(
                key = job.key,
                "leader's response does not fit this request; going forward"
            );
            forward(shared, fallback, request, CacheStatus::forward(Fwd::Miss)).await
        }
        Some(Outcome::Private(why)) => {
            debug!(key = job.key, why, "leader's response is its own; going forward");
            let status = CacheStatus::forward(Fwd::Miss).detail(why);
            forward(shared, fallback, request, status).await
        }
    }
}

//! Rebuilding an entry: who calls the origin, and what is stored.
//!
//! A flight's leader runs [`lead`], in a task of its own:
//!
//! 1. acquire (`lock`): the store's rebuild lock, or another layer's write;
//! 2. fetch (`fetch`): the origin call, with validators, while the lock is
//!    kept alive;
//! 3. settle (`settle`, pure): what the answer becomes for the leader's
//!    client, for the waiters and for the store;
//! 4. commit ([`commit`]): the one place that writes or releases the lock
//!    and ends the flight.
//!
//! [`refresh`] runs the same steps in the background for an entry that is
//! still being served.

use std::{sync::Arc, time::SystemTime};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::{
    body::{Held, StampedeBody},
    entry::Entry,
    flight::{Leader, Outcome},
    plan::Job,
    response::{from_answer, from_entry, ttl_left},
    shared::Shared,
    stats,
    store::Store,
};

mod fetch;
mod lock;
mod refresh;
mod settle;

pub(crate) use refresh::refresh;

use lock::{Acquired, LockGuard};
use settle::{Context, Settled};

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

/// The leader's work, run in its own task so that its client going away
/// does not cancel what its waiters wait for. `inner` is ready; `request`
/// is what the origin is asked (a whole `GET`); `last_good` is the entry
/// the rebuild replaces, if it fits the request.
pub(crate) async fn lead<S, St, ReqBody, B>(
    shared: Arc<Shared<St>>,
    inner: S,
    request: Request<ReqBody>,
    job: Job,
    leader: Leader<Outcome>,
    last_good: Option<Arc<Entry>>,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    St: Store,
    B: Body,
{
    let guard = match lock::acquire(&shared, &job, request.headers(), last_good.as_ref()).await {
        Acquired::Written(written) => return Ok(written.serve(&shared, leader)),
        Acquired::Rebuild(guard) => guard,
    };
    let config = &shared.config;
    let headers = request.headers().clone();
    let started = tokio::time::Instant::now();
    shared.state.counters.origin_calls.incr();
    let limits = fetch::Limits {
        bytes: config.max_body_bytes,
        patience: config.max_body_wait,
        budget: &config.buffers,
    };
    let revalidates = job.policy.follows_origin();
    let fetch = fetch::fetch(
        inner,
        request,
        last_good.as_deref(),
        job.credentials,
        revalidates,
        limits,
    );
    // `held` keeps the body's bytes in the budget until the flight ends.
    let (fetched, held) = match guard.hold(fetch).await {
        Ok((fetched, held)) => (Ok(fetched), held),
        Err(error) => (Err(error), Held::default()),
    };
    if held.over_budget {
        shared.state.counters.over_budget.incr();
        tracing::debug!(
            key = job.key,
            "buffer budget spent; streaming this response unshared"
        );
    }
    let took = started.elapsed();
    stats::record_origin(took);
    let now = shared.now();
    let settled = settle::settle(
        fetched,
        Context {
            now,
            took,
            policy: &job.policy,
            last_good: last_good.as_ref(),
            request: &headers,
            asked: job.credentials,
            tag_header: config.tag_header.as_ref(),
            variant_of: job.variant_of.as_deref(),
            random: || shared.random(),
        },
    );
    // A spent budget says nothing about the key: it does not pass.
    let reply = commit(&shared, guard, leader, settled, now, !held.over_budget).await;
    // Given back only now that the entry is written and the flight over.
    drop(held);
    reply
}

/// Carries out what `settle` decided: writes or releases the lock, ends
/// the flight, and makes the leader's response. Waiters are answered before
/// a release (which may take up to a store timeout), and after a write
/// (whose success they are told). The key passes where `settle` says so
/// and `may_pass` allows it.
async fn commit<St: Store, B: Body, E>(
    shared: &Shared<St>,
    guard: LockGuard<St>,
    leader: Leader<Outcome>,
    settled: Settled<B, E>,
    now: SystemTime,
    may_pass: bool,
) -> Result<Response<StampedeBody<B>>, E> {
    match settled {
        Settled::Own { reply, outcome, pass } => {
            leader.finish(outcome);
            if pass && may_pass {
                shared.state.passes.insert(guard.key(), shared.config.pass_for);
            }
            guard.release().await;
            reply
        }
        Settled::StandIn { entry, status } => {
            tracing::debug!(key = guard.key(), "origin failed; serving the last good response");
            leader.finish(Outcome::LastGood(Arc::clone(&entry)));
            guard.release().await;
            Ok(from_entry(&entry, status, Some(now)))
        }
        Settled::Share { entry, write, status } => {
            let stored = match write {
                Some((write, keep_for)) => guard.store(Arc::clone(&entry), keep_for, write).await,
                None => {
                    guard.release().await;
                    false
                }
            };
            tracing::debug!(key = leader.key(), stored, "flight done");
            leader.finish(Outcome::Shared {
                entry: Arc::clone(&entry),
                stored,
            });
            let ttl = stored.then(|| ttl_left(entry.lifetime, now));
            Ok(from_answer(&entry, status.stored(stored).ttl(ttl), now))
        }
    }
}

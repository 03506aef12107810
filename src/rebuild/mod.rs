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

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use http::{HeaderMap, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::{
    body::{self, BoxError, Held, StampedeBody},
    entry::Entry,
    flight::{Leader, Outcome},
    plan::Job,
    response::{from_answer, from_entry, from_head, ttl_left},
    rules::status::{BODY_NOT_STORED, CacheStatus, Fwd},
    shared::Shared,
    stats,
    store::Store,
};

mod fetch;
mod lock;
mod refresh;
mod settle;
mod stream;

pub(crate) use refresh::refresh;

use lock::{Acquired, LockGuard};
use settle::{Context, Settled};
use stream::Streamer;
use tokio::sync::oneshot;

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
pub(crate) trait SendBody: Body<Data: Send, Error: Into<BoxError> + Send> + Send + 'static {}

impl<B> SendBody for B
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
}

/// Where the leader's own response goes: to its client's request, waiting
/// on the other end, or nowhere (a background refresh).
pub(crate) type Reply<B, E> = Option<oneshot::Sender<Result<Response<StampedeBody<B>>, E>>>;

/// The leader's work, run in its own task so that its client going away
/// does not cancel what its waiters wait for. `inner` is ready; `request`
/// is what the origin is asked (a whole `GET`); `last_good` is the entry
/// the rebuild replaces, if it fits the request. The leader's response
/// goes to `reply` as soon as it is known: with its head, when its body
/// streams; else once the flight is settled.
pub(crate) async fn lead<S, St, ReqBody, B>(
    shared: Arc<Shared<St>>,
    inner: S,
    request: Request<ReqBody>,
    job: Job,
    leader: Leader<Outcome>,
    last_good: Option<Arc<Entry>>,
    reply: Reply<B, S::Error>,
) where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Send,
    St: Store,
    B: SendBody,
{
    let reply = Mutex::new(reply);
    let answer = |response| {
        if let Some(tx) = reply.lock().unwrap_or_else(PoisonError::into_inner).take() {
            // The client may be gone: its waiters are answered all the same.
            let _ = tx.send(response);
        }
    };
    let guard = match lock::acquire(&shared, &job, request.headers(), last_good.as_ref()).await {
        Acquired::Written(written) => return answer(Ok(written.serve(&shared, leader))),
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
    let mut streamer = Publish {
        leader: &leader,
        guard: &guard,
        request: &headers,
        now: shared.now(),
        answer: &answer,
    };
    let fetch = fetch::fetch(
        inner,
        request,
        last_good.as_deref(),
        job.credentials,
        revalidates,
        limits,
        &mut streamer,
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
            "buffer budget spent; streaming this response, not storing it"
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
    if let Some(response) = commit(&shared, guard, leader, settled, now, !held.over_budget).await {
        answer(response);
    }
    // Given back only now that the entry is written and the flight over.
    drop(held);
}

/// What a body that streams tells the flight: its waiters, and the
/// leader's own client, get the response with the head at once.
struct Publish<'a, St: Store, B: Body, E> {
    leader: &'a Leader<Outcome>,
    guard: &'a LockGuard<St>,
    request: &'a HeaderMap,
    now: SystemTime,
    answer: &'a (dyn Fn(Result<Response<StampedeBody<B>>, E>) + Sync),
}

impl<St, B, E> Streamer for Publish<'_, St, B, E>
where
    St: Store,
    B: Body,
    B::Error: Into<BoxError>,
{
    fn publish(&mut self, parts: &http::response::Parts, body: &Arc<body::Shared>, kept: bool) {
        let head = Arc::new(settle::head(parts, self.request, self.now));
        self.leader.publish(Outcome::Streaming {
            head: Arc::clone(&head),
            body: Arc::clone(body),
            kept,
        });
        let mut status = CacheStatus::forward(Fwd::Miss).fwd_status(parts.status);
        if !kept {
            status = status.detail(BODY_NOT_STORED);
        }
        (self.answer)(Ok(from_head(&head, StampedeBody::shared(body.reader()), status)));
    }

    fn not_stored(&mut self) {
        self.guard.let_go();
    }

    fn close(&mut self) {
        self.leader.close();
    }
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
) -> Option<Result<Response<StampedeBody<B>>, E>> {
    Some(match settled {
        Settled::Streamed => {
            // Everyone has the response already, as it streams.
            leader.end();
            guard.release().await;
            return None;
        }
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
    })
}

//! The background refresh: a rebuild that nobody waits for, started by a
//! request that was served the entry it refreshes (XFetch's early one, or a
//! stale entry's).

use std::sync::Arc;

use http::Request;
use tracing::debug;

use super::{Origin, SendBody, lead};
use crate::{
    entry::Entry, flight::Join, plan::Job, rules::conditional::origin_request, shared::Shared, store::Store,
};

/// Starts a background refresh of `job`'s key with the request that found
/// its entry due, unless one is already running in this process or too many
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
        lead(
            shared,
            inner,
            origin_request(request),
            job,
            leader,
            Some(last_good),
            None,
        )
        .await;
    });
}

//! The store's rebuild lock, as a leader holds it: taken (or waited for
//! while another layer rebuilds), extended while the origin works, and
//! given back by exactly one of a fenced write, a release, or a drop.

use std::{
    future::Future,
    mem,
    pin::pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, Response};
use http_body::Body;
use tracing::debug;

use super::settle::Write;
use crate::{
    body::StampedeBody,
    entry::Entry,
    flight::{Leader, Outcome},
    plan::Job,
    response::from_entry,
    reuse::{Fit, fit, reuse},
    rules::status::{CacheStatus, Fwd},
    shared::Shared,
    store::{LockToken, Store},
};

/// A lock is extended at most this often, however short its ttl.
const MIN_EXTEND_EVERY: Duration = Duration::from_millis(10);

/// What a leader found when it asked for the lock.
pub(super) enum Acquired<St: Store> {
    /// Rebuild: with the lock, or without it (the store could not be
    /// asked, or the holder outlived `lock_wait`).
    Rebuild(LockGuard<St>),
    /// Another layer wrote the key meanwhile: nothing to rebuild.
    Written(Written),
}

/// Takes the rebuild lock of `job`'s key. While another layer holds it,
/// waits for its write (woken by the store), and takes the lock over if it
/// is released or expires without one. A live holder keeps its lock, so
/// the wait is bounded by `lock_wait`, after which this leader rebuilds
/// without the lock (and so without storing).
pub(super) async fn acquire<St: Store>(
    shared: &Arc<Shared<St>>,
    job: &Job,
    request: &HeaderMap,
    last_good: Option<&Arc<Entry>>,
) -> Acquired<St> {
    let key = &job.key;
    let config = &shared.config;
    let waiting_since = tokio::time::Instant::now();
    let asked = shared.now();
    let (timeout, ttl) = (config.store_timeout, config.lock_ttl);
    let mut guard = LockGuard {
        shared: Arc::clone(shared),
        key: key.clone(),
        token: std::sync::Mutex::new(None),
        unavailable: false,
    };
    loop {
        match shared
            .store_call("lock", key, timeout, shared.store.try_lock(key, ttl))
            .await
        {
            Some(Some(token)) => {
                *guard.token() = Some(token);
                break;
            }
            None => {
                guard.unavailable = true;
                return Acquired::Rebuild(guard);
            }
            Some(None) => {}
        }
        let left = config.lock_wait.saturating_sub(waiting_since.elapsed());
        if left.is_zero() {
            debug!(
                key,
                "waited lock_wait for another layer's rebuild; going to the origin"
            );
            return Acquired::Rebuild(guard);
        }
        let wait = left.min(ttl);
        let unlocked = shared.store.wait_unlocked(key, wait);
        shared.store_call("wait", key, wait + timeout, unlocked).await;
        if let Some(written) = written_meanwhile(shared, job, request, last_good, asked).await {
            return Acquired::Written(written);
        }
    }
    // The lock may have come free because another layer just wrote: then
    // there is nothing to rebuild.
    match written_meanwhile(shared, job, request, last_good, asked).await {
        Some(written) => {
            guard.release().await;
            Acquired::Written(written)
        }
        None => Acquired::Rebuild(guard),
    }
}

/// An entry another layer wrote while this one waited, fresh and fit for
/// the request.
pub(super) struct Written {
    entry: Arc<Entry>,
    ttl: Duration,
    now: SystemTime,
}

/// Reads `job`'s key for an entry another layer has written: fit for
/// `request`, not `replaced` (the entry this rebuild is replacing), and
/// fresh, or fresh at some time since `asked` (when this leader began): an
/// answer the origin gave or validated after the request came is good for
/// it, however short its freshness (a `no-cache` response revalidated by
/// another replica has none).
async fn written_meanwhile<St: Store>(
    shared: &Shared<St>,
    job: &Job,
    request: &HeaderMap,
    replaced: Option<&Arc<Entry>>,
    asked: SystemTime,
) -> Option<Written> {
    let entry = shared.get(&job.key).await?;
    if replaced.is_some_and(|old| old.stored_at == entry.stored_at && old.lifetime == entry.lifetime) {
        return None;
    }
    let now = shared.now();
    let decision = job
        .policy
        .decide(entry.lifetime, entry.recompute, now, || shared.random());
    let fits = fit(&entry, request, job.credentials);
    let ttl = match reuse(Some(decision), fits).fresh_for() {
        Some(ttl) => ttl,
        None if fits == Fit::Yes && entry.lifetime.fresh_until >= asked => Duration::ZERO,
        None => return None,
    };
    Some(Written { entry, ttl, now })
}

impl Written {
    /// Ends the flight with the other layer's entry.
    pub(super) fn serve<B: Body>(
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

/// The rebuild lock of one key, if held. Given back by [`LockGuard::store`]
/// or [`LockGuard::release`]; a guard dropped without either (the leader's
/// task unwound) releases it in the background.
pub(super) struct LockGuard<St: Store> {
    shared: Arc<Shared<St>>,
    key: String,
    /// Behind a lock of its own so that a rebuild can give it back while it
    /// still reads the body ([`LockGuard::let_go`]).
    token: std::sync::Mutex<Option<LockToken>>,
    /// The store could not be asked for the lock: what is built goes to
    /// the in-process fallback instead.
    unavailable: bool,
}

impl<St: Store> LockGuard<St> {
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    fn token(&self) -> std::sync::MutexGuard<'_, Option<LockToken>> {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives the lock back now, while the rebuild goes on: what it builds
    /// will not be written (a body too large to store), so the next
    /// rebuild, here or on another layer, need not wait for it.
    pub(super) fn let_go(&self) {
        let Some(token) = self.token().take() else {
            return;
        };
        let (store, key) = (self.shared.store.clone(), self.key.clone());
        tokio::spawn(async move {
            let _ = store.unlock(&key, &token).await;
        });
    }

    /// Runs `work` while keeping the lock alive: a rebuild that takes
    /// longer than the lock's ttl must not let a second one start. Up to
    /// `lock_wait` only, as long as other layers wait for it: past that the
    /// origin is taken to hang, the lock expires within its ttl, and another
    /// layer's leader takes it over and stores what it builds (this
    /// rebuild's own write is then refused).
    pub(super) async fn hold<F: Future>(&self, work: F) -> F::Output {
        if self.token().is_none() {
            return work.await;
        }
        let (shared, key) = (&self.shared, self.key.as_str());
        let (ttl, timeout) = (shared.config.lock_ttl, shared.config.store_timeout);
        let give_up = crate::time::after(tokio::time::Instant::now(), shared.config.lock_wait);
        let mut work = pin!(work);
        loop {
            let next = crate::time::after(tokio::time::Instant::now(), (ttl / 3).max(MIN_EXTEND_EVERY));
            if next > give_up {
                debug!(
                    key,
                    "the origin outlived lock_wait: the rebuild lock is left to expire"
                );
                return work.await;
            }
            tokio::select! {
                output = &mut work => return output,
                () = tokio::time::sleep_until(next) => {
                    let Some(token) = self.token().clone() else {
                        // Given back meanwhile.
                        return work.await;
                    };
                    let extend = shared.store.extend_lock(key, &token, ttl);
                    if shared.store_call("extend lock", key, timeout, extend).await != Some(true) {
                        debug!(key, "rebuild lock lost while the origin was still working");
                    }
                }
            }
        }
    }

    /// Writes `entry` fenced by the lock, which also releases it; keeps it
    /// in process instead when the store cannot be reached. Whether the
    /// store took it.
    pub(super) async fn store(self, entry: Arc<Entry>, keep_for: Duration, write: Write) -> bool {
        let Some(token) = self.token().take() else {
            if self.unavailable {
                self.shared.keep_in_process(&self.key, entry, keep_for).await;
            }
            return false;
        };
        let (shared, key) = (&self.shared, self.key.as_str());
        let timeout = shared.config.store_timeout;
        let stored = match write {
            Write::Whole => {
                let set = shared.store.set(key, Arc::clone(&entry), &token, keep_for);
                shared.store_call_always("set", key, timeout, set).await
            }
            Write::Times => {
                let renew = shared.store.renew(key, Arc::clone(&entry), &token, keep_for);
                shared.store_call_always("renew", key, timeout, renew).await
            }
        };
        match stored {
            Some(false) => debug!(
                key,
                "write refused: the rebuild lock had passed to another, or was voided"
            ),
            None => {
                // The write may not have run (or not all of it): give the
                // lock back by its token, a no-op if the write did land,
                // rather than leave every other layer to wait out its ttl.
                let unlock = shared.store.unlock(key, &token);
                shared.store_call_always("unlock", key, timeout, unlock).await;
                shared.keep_in_process(key, entry, keep_for).await;
            }
            Some(true) => {}
        }
        stored == Some(true)
    }

    /// Gives the lock back without writing.
    pub(super) async fn release(self) {
        let token = self.token().take();
        if let Some(token) = token {
            let (shared, key) = (&self.shared, self.key.as_str());
            let unlock = shared.store.unlock(key, &token);
            shared
                .store_call_always("unlock", key, shared.config.store_timeout, unlock)
                .await;
        }
    }
}

impl<St: Store> Drop for LockGuard<St> {
    fn drop(&mut self) {
        let Some(token) = self.token().take() else {
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

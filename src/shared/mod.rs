//! What every request of one layer shares: the configuration, the store
//! behind its timeout and breaker, the in-process tables, the fallback kept
//! through a store outage, and invalidation.

use std::{
    future::Future,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::{Duration, SystemTime},
};

use http::HeaderName;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::{
    body::Budget,
    clock::{Clock, SystemClock},
    entry::Entry,
    flight::{Flights, Outcome, Passes},
    key::{Keys, Routes, Varies, is_variant_of, variant_tag},
    policy::Policy,
    stats::{Counters, Stats},
    store::{MemoryStore, Store, StoreError},
};

mod breaker;

use breaker::Breaker;

/// What every service of one layer shares. Cloned only by the builder,
/// when a setting changes on a layer whose services already share it.
#[derive(Clone)]
pub(crate) struct Shared<St> {
    pub(crate) store: St,
    pub(crate) config: Config,
    pub(crate) state: Arc<State>,
}

/// The layer's settings; `StampedeLayer`'s builder documents each.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) policy: Policy,
    pub(crate) routes: Routes,
    pub(crate) keys: Keys,
    /// Paths whose `POST` requests are reads.
    pub(crate) reads: Routes<()>,
    /// Paths whose responses never depend on the request's cookies.
    pub(crate) ignore_cookies: Routes<()>,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_body_wait: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    pub(crate) store_retry_after: Duration,
    pub(crate) pass_for: Duration,
    pub(crate) tag_header: Option<HeaderName>,
    /// What this process built while the store failed, served until it
    /// expires: without it, an outage would leave each process calling the
    /// origin once per flight instead of once per entry's life. Shared by
    /// every copy of these settings.
    pub(crate) fallback: MemoryStore,
    pub(crate) honor_no_cache: bool,
    pub(crate) max_waiters: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) random: Arc<dyn Fn() -> f64 + Send + Sync>,
    /// Permits for background refreshes, shared by the layer's services.
    pub(crate) refreshes: Arc<Semaphore>,
    /// The bytes the layer's flights may hold buffered at once, shared
    /// by its services.
    pub(crate) buffers: Arc<Budget>,
}

/// How many background refreshes run at once unless the builder says.
pub(crate) const DEFAULT_MAX_REFRESHES: usize = 64;

/// The bytes a layer's flights may buffer at once unless the builder says:
/// eight bodies of the default `max_body_bytes` (8 MiB), or thousands of
/// ordinary ones, while a burst of large distinct responses cannot take
/// more than this.
pub(crate) const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            routes: Routes::default(),
            keys: Keys::new(),
            reads: Routes::default(),
            ignore_cookies: Routes::default(),
            max_body_bytes: 8 * 1024 * 1024,
            max_request_bytes: 64 * 1024,
            max_body_wait: Duration::from_secs(30),
            store_timeout: Duration::from_millis(250),
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(30),
            store_retry_after: Duration::from_secs(1),
            pass_for: Duration::from_secs(30),
            tag_header: Some(HeaderName::from_static("surrogate-key")),
            fallback: MemoryStore::with_max_bytes(DEFAULT_FALLBACK_BYTES),
            honor_no_cache: false,
            max_waiters: usize::MAX,
            clock: Arc::new(SystemClock),
            random: Arc::new(fastrand::f64),
            refreshes: Arc::new(Semaphore::new(DEFAULT_MAX_REFRESHES)),
            buffers: Budget::new(DEFAULT_MAX_BUFFERED_BYTES),
        }
    }
}

/// The parts of a layer that live as long as any of its services, and
/// that a change of settings does not reset.
pub(crate) struct State {
    pub(crate) flights: Arc<Flights<Outcome>>,
    pub(crate) counters: Counters,
    pub(crate) passes: Passes,
    pub(crate) varies: Varies,
    breaker: Breaker,
    /// Whether the fallback may hold something: it bridges one outage and
    /// is emptied by the first store call that succeeds after it.
    kept: AtomicBool,
}

/// The bound of the in-process fallback unless the builder says: a
/// stand-in for an outage, not a second cache.
pub(crate) const DEFAULT_FALLBACK_BYTES: u64 = 32 * 1024 * 1024;

impl State {
    pub(crate) fn new() -> Self {
        Self {
            flights: Arc::new(Flights::new()),
            counters: Counters::default(),
            passes: Passes::default(),
            varies: Varies::new(),
            breaker: Breaker::new(),
            kept: AtomicBool::new(false),
        }
    }
}

impl<St: Store> Shared<St> {
    pub(crate) fn now(&self) -> SystemTime {
        self.config.clock.now()
    }

    /// The layer's counters, with its store's near cache's.
    pub(crate) fn stats(&self) -> Stats {
        let near = self.store.near_stats();
        self.state.counters.snapshot().with_near(near)
    }

    /// A uniform draw in [0, 1) for the policies.
    pub(crate) fn random(&self) -> f64 {
        (self.config.random)()
    }

    /// Runs a store call within `timeout`; a failure is counted, logged and
    /// turned into `None`, never into a failed request. While the store is
    /// resting after a failure, the call is not made at all.
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
        self.checked(what, key, bounded(Some(timeout), call).await).ok()
    }

    /// Counts and logs a failed store call, and rests the store unless the
    /// failure was one key's unreadable value.
    fn checked<T>(
        &self,
        what: &'static str,
        key: &str,
        answer: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &answer {
            Err(error) => {
                self.state.counters.store_errors.incr();
                if !error.is_corrupt() {
                    self.state.breaker.trip(self.config.store_retry_after);
                }
                debug!(key, %error, "{what} failed; going on without the store");
            }
            // What was kept through the outage must not stand in at the
            // next failure: by then replicas may have replaced or
            // invalidated it in the store.
            Ok(_)
                if self.state.kept.load(Ordering::Relaxed)
                    && self.state.kept.swap(false, Ordering::AcqRel) =>
            {
                self.config.fallback.clear();
                debug!("store answers again: what was kept in process is dropped");
            }
            Ok(_) => {}
        }
        answer
    }

    /// The stored entry of `key`; while the store fails (or rests after a
    /// failure), the one this process kept meanwhile, if any. Once the
    /// store answers again, it alone is read: what replicas kept on their
    /// own is not served past the outage.
    pub(crate) async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let timeout = self.config.store_timeout;
        match self.store_call("get", key, timeout, self.store.get(key)).await {
            Some(found) => found,
            None => self.config.fallback.get(key).await.ok().flatten(),
        }
    }

    /// The stored entry of `key` if the store has it at hand
    /// ([`Store::get_now`]). Not while the store rests after a failure, nor
    /// while this process keeps entries through an outage: those reads go
    /// through [`Shared::get`], which serves what was kept or drops it.
    pub(crate) fn get_now(&self, key: &str) -> Option<Arc<Entry>> {
        if self.state.breaker.is_open() || self.state.kept.load(Ordering::Relaxed) {
            return None;
        }
        self.store.get_now(key)
    }

    /// Keeps `entry` in this process, for as long as it would have been
    /// stored, when the store could not take it.
    pub(crate) async fn keep_in_process(&self, key: &str, entry: Arc<Entry>, keep_for: Duration) {
        let fallback = &self.config.fallback;
        if let Ok(Some(token)) = fallback.try_lock(key, self.config.lock_ttl).await {
            self.state.kept.store(true, Ordering::Release);
            let _ = fallback.set(key, entry, &token, keep_for).await;
            debug!(key, "store unavailable: kept in process");
        }
    }

    /// Removes `key` and its `Vary` variants: from this process (its
    /// hit-for-pass mark, its flights and its variants', so that later
    /// requests do not join a rebuild that started before, and what it kept
    /// through an outage),
    /// then from the store, which voids a rebuild's lock so that its
    /// outdated response is not written. Each store call is bounded by
    /// `timeout`, if any.
    pub(crate) async fn invalidate(&self, key: &str, timeout: Option<Duration>) -> Result<(), StoreError> {
        let state = &self.state;
        state.passes.remove(key);
        state.flights.detach_where(|k| k == key || is_variant_of(k, key));
        let variants = variant_tag(key);
        let _ = self.config.fallback.invalidate(key).await;
        let _ = self.config.fallback.invalidate_tag(&variants).await;
        // Both, even if the first fails: each removes what the other cannot.
        let answer = bounded(timeout, self.store.invalidate(key)).await;
        let plain = self.checked("invalidate", key, answer);
        let answer = bounded(timeout, self.store.invalidate_tag(&variants)).await;
        let variants = self.checked("invalidate variants", key, answer);
        plain.and(variants.map(drop))
    }

    /// Removes every entry stored with `tag`, here and in the store, and
    /// returns how many keys the store named. Every flight under way is
    /// detached: a response's tags are known only when it arrives, so any
    /// of them may be outdated by the purge (each costs one origin call
    /// more, for the requests that come after it).
    pub(crate) async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        self.state.flights.detach_where(|_| true);
        let _ = self.config.fallback.invalidate_tag(tag).await;
        let answer = self.store.invalidate_tag(tag).await;
        self.checked("invalidate tag", tag, answer)
    }
}

/// A store call bounded by `timeout`, if any.
async fn bounded<T>(
    timeout: Option<Duration>,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let mut call = pin!(call);
    // A store that answers at once (the memory store) needs no timer: the
    // hit path is spared a clock read and a timer entry.
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    match (first, timeout) {
        (Poll::Ready(answer), _) => answer,
        (Poll::Pending, None) => call.await,
        (Poll::Pending, Some(timeout)) => tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(StoreError::timeout())),
    }
}

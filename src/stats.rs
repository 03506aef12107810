//! Counters shared by every service a layer makes.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a layer's counters, from [`StampedeLayer::stats`].
///
/// [`StampedeLayer::stats`]: crate::StampedeLayer::stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests that reached the layer.
    pub requests: u64,
    /// Requests sent straight to the inner service: a bypass route, a method
    /// that is not cached, a request that asked for no cache.
    pub bypassed: u64,
    /// Requests answered from the store.
    pub hits: u64,
    /// Requests answered from the store with a stale entry.
    pub stale_hits: u64,
    /// Cacheable requests that found nothing fresh in the store.
    pub misses: u64,
    /// Misses that waited on another request's flight instead of calling the
    /// origin.
    pub coalesced: u64,
    /// Calls made to the inner service, for any reason.
    pub origin_calls: u64,
    /// Refreshes started in the background (early, or of a stale entry).
    pub refreshes: u64,
    /// Background refreshes not started because
    /// [`StampedeLayer::max_refreshes`](crate::StampedeLayer::max_refreshes)
    /// were already running.
    pub refreshes_dropped: u64,
    /// Store calls that failed or timed out.
    pub store_errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: Counter,
    pub(crate) bypassed: Counter,
    pub(crate) hits: Counter,
    pub(crate) stale_hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) origin_calls: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) refreshes_dropped: Counter,
    pub(crate) store_errors: Counter,
}

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.get(),
            bypassed: self.bypassed.get(),
            hits: self.hits.get(),
            stale_hits: self.stale_hits.get(),
            misses: self.misses.get(),
            coalesced: self.coalesced.get(),
            origin_calls: self.origin_calls.get(),
            refreshes: self.refreshes.get(),
            refreshes_dropped: self.refreshes_dropped.get(),
            store_errors: self.store_errors.get(),
        }
    }
}

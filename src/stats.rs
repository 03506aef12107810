//! Counters shared by every service a layer makes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
    /// Requests turned away because their key's flight already had
    /// [`StampedeLayer::max_waiters`](crate::StampedeLayer::max_waiters)
    /// waiters (answered stale, or `503`).
    pub shed: u64,
    /// Origin responses not buffered for sharing because the layer's
    /// flights already held
    /// [`StampedeLayer::max_buffered_bytes`](crate::StampedeLayer::max_buffered_bytes):
    /// each streamed to its own client, unstored, its waiters sent to the
    /// origin.
    pub over_budget: u64,
    /// Of the store's reads, those its near cache answered from this
    /// process's memory ([`Store::near_stats`](crate::Store::near_stats);
    /// 0 without one). Counted per store: layers sharing one store report
    /// the same figures.
    pub near_hits: u64,
    /// Keys the store's near cache dropped because Redis reported a write.
    pub near_invalidations: u64,
    /// Times the store's near cache was emptied (a flush of Redis, its
    /// tracking lost or in doubt).
    pub near_flushes: u64,
}

impl Stats {
    /// These counters with the store's near cache's.
    pub(crate) fn with_near(mut self, near: Option<NearStats>) -> Self {
        if let Some(near) = near {
            self.near_hits = near.hits;
            self.near_invalidations = near.invalidations;
            self.near_flushes = near.flushes;
        }
        self
    }
}

/// A near cache's counters ([`RedisStore::near_cache`]), as
/// [`Store::near_stats`](crate::Store::near_stats) reports them.
///
/// [`RedisStore::near_cache`]: https://docs.rs/tower-stampede/latest/tower_stampede/struct.RedisStore.html#method.near_cache
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearStats {
    /// Reads answered from this process's memory.
    pub hits: u64,
    /// Keys Redis said changed, each dropped from the near cache.
    pub invalidations: u64,
    /// Times the whole near cache was emptied: Redis was flushed, or the
    /// tracking connection was lost or stopped answering.
    pub flushes: u64,
    /// Whether Redis tracks writes for this process now, so that the near
    /// cache is on.
    pub tracking: bool,
}

/// The layer's counters, by field name and the name each is reported
/// under through the `metrics` facade.
macro_rules! counters {
    ($($field:ident => $metric:literal: $help:literal,)*) => {
        #[derive(Debug)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Counter,)*
        }

        impl Default for Counters {
            fn default() -> Self {
                Self { $($field: Counter::named($metric),)* }
            }
        }

        /// Describes the layer's metrics to the installed `metrics` recorder
        /// (their help text and units, which a Prometheus exporter prints as
        /// `# HELP`). Call it once, after installing the recorder; the
        /// metrics are reported whether or not it is called.
        ///
        /// Counters (all layers of the process add to them):
        $(#[doc = concat!("- `", $metric, "`: ", $help)])*
        /// - `tower_stampede_origin_seconds` (histogram): how long the origin
        ///   took to answer the calls the layer made to fill or refresh an
        ///   entry, body included.
        #[cfg(feature = "metrics")]
        pub fn describe_metrics() {
            $(metrics::describe_counter!($metric, metrics::Unit::Count, $help);)*
            metrics::describe_histogram!(
                ORIGIN_SECONDS,
                metrics::Unit::Seconds,
                "how long the origin took to answer the calls that fill or refresh an entry"
            );
        }
    };
}

counters! {
    requests => "tower_stampede_requests_total": "requests that reached the layer",
    bypassed => "tower_stampede_bypassed_total": "requests sent straight to the inner service",
    hits => "tower_stampede_hits_total": "requests answered from the store",
    stale_hits => "tower_stampede_stale_hits_total": "requests answered from the store with a stale entry",
    misses => "tower_stampede_misses_total": "cacheable requests that found nothing fresh in the store",
    coalesced => "tower_stampede_coalesced_total": "misses that waited on another request's origin call",
    origin_calls => "tower_stampede_origin_calls_total": "calls made to the inner service",
    refreshes => "tower_stampede_refreshes_total": "background refreshes started",
    refreshes_dropped => "tower_stampede_refreshes_dropped_total": "background refreshes not started: too many running",
    store_errors => "tower_stampede_store_errors_total": "store calls that failed or timed out",
    shed => "tower_stampede_shed_total": "requests turned away by max_waiters",
    over_budget => "tower_stampede_over_budget_total": "origin responses streamed unshared: max_buffered_bytes were in use",
}

#[cfg(feature = "metrics")]
const ORIGIN_SECONDS: &str = "tower_stampede_origin_seconds";

/// Reports how long an origin call made to fill or refresh an entry took.
pub(crate) fn record_origin(took: std::time::Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(ORIGIN_SECONDS).record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = took;
}

/// A count that threads add to at once: each thread adds to a stripe of
/// its own (on a cache line of its own), and a read sums them. One shared
/// count would move its cache line between cores on every hit.
#[derive(Debug)]
pub(crate) struct Counter {
    stripes: [Stripe; STRIPES],
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metric: &'static str,
}

/// Stripes a counter has: enough that the threads of a runtime on a
/// machine of a few cores seldom share one.
const STRIPES: usize = 8;

#[derive(Debug)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// This thread's stripe, assigned in turn as threads first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

impl Counter {
    const fn named(metric: &'static str) -> Self {
        Self {
            stripes: [const { Stripe(AtomicU64::new(0)) }; STRIPES],
            metric,
        }
    }

    pub(crate) fn incr(&self) {
        self.stripes[stripe()].0.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!(self.metric).increment(1);
    }

    fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
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
            shed: self.shed.get(),
            over_budget: self.over_budget.get(),
            ..Stats::default()
        }
    }
}

//! The bounds of what a layer holds at once: bytes buffered, time waited
//! for a body, waiters, background refreshes, and what it keeps through a
//! store outage.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use super::StampedeLayer;
use crate::{
    body::Budget,
    store::{MemoryStore, Store},
};

impl<St: Store, R> StampedeLayer<St, R> {
    /// The largest body that is kept whole to be stored. A larger response
    /// still streams, as it arrives, to its own client and to every request
    /// collapsed onto its flight, from one origin call; it is not stored,
    /// and its key does not pass. A body is also bounded by
    /// [`max_buffered_bytes`](Self::max_buffered_bytes), which all flights
    /// share. Default: 8 MiB.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.config().max_body_bytes = limit;
        self
    }

    /// How long a response body may take to end and still be stored. Every
    /// request of the flight reads the body as it comes either way; past
    /// this, it is not kept for the store (a log tail, server-sent events
    /// on a cached route), and later requests start a flight of their own
    /// once its start is no longer kept. Default: 30 s.
    pub fn max_body_wait(mut self, wait: Duration) -> Self {
        self.config().max_body_wait = wait;
        self
    }

    /// How many requests may wait on one key's origin call in this layer.
    /// The next one is turned away at once rather than queued: it gets the
    /// expired entry the call is replacing, if the store still holds it (a
    /// [`Policy::stale_if_error`](crate::Policy::stale_if_error) window keeps it), marked
    /// `Cache-Status: ...; fwd=stale; detail=too-many-waiters`,
    /// else `503 Service Unavailable` with `Retry-After: 1`
    /// (`fwd=miss; detail=too-many-waiters`). Counted in
    /// [`Stats::shed`](crate::Stats::shed). A bound on the memory and the
    /// latency a single slow key can gather under overload; the origin
    /// still sees one call. Default: no limit.
    pub fn max_waiters(mut self, max: usize) -> Self {
        self.config().max_waiters = max;
        self
    }

    /// How many background refreshes (XFetch's early ones, and those of
    /// stale entries) may run at once. A refresh that would exceed it is not
    /// started, rather than queued: the entry is served as it is, and a
    /// later request tries again. Counted in
    /// [`Stats::refreshes_dropped`](crate::Stats::refreshes_dropped).
    /// Default: 64.
    pub fn max_refreshes(mut self, max: usize) -> Self {
        self.config().refreshes = Arc::new(Semaphore::new(max));
        self
    }

    /// The bound, in bytes, of what this process keeps on its own while the
    /// store fails: responses it built during an outage are served from
    /// here until they expire, so that each process calls the origin once
    /// per entry's life rather than once per flight. Counted the way
    /// [`MemoryStore::with_max_bytes`](crate::MemoryStore::with_max_bytes)
    /// counts. Default: 32 MiB.
    pub fn fallback_max_bytes(mut self, bytes: u64) -> Self {
        self.config().fallback = MemoryStore::with_max_bytes(bytes);
        self
    }

    /// The bytes of response bodies this layer's flights may hold buffered
    /// at once, every key together: a bound on what a burst of distinct
    /// large responses can take, their clients gone or not. A body is read
    /// into a buffer of its own, which takes from the budget what it
    /// allocates: a body of announced length (`Content-Length`) its length
    /// at once, any other as it grows (to at most twice what has arrived),
    /// so that a 1 KiB body takes 1 KiB. It is given back once the flight
    /// has ended, its entry written.
    ///
    /// A body the budget cannot take is not kept, as one over
    /// [`max_body_bytes`](Self::max_body_bytes) is: it streams to the
    /// requests of its flight as they read it and is not stored
    /// (`Cache-Status: ...; detail=body-not-stored` when that is known from
    /// its head). It is counted in
    /// [`Stats::over_budget`](crate::Stats::over_budget), and the key does
    /// not pass for [`pass_for`](Self::pass_for): the next request may find
    /// room. A body that will not be stored is still kept from its first
    /// byte while the budget has room (for requests that join late), then
    /// only what its readers have yet to read, at most 4 MiB; the origin is
    /// read no faster than the fastest of them takes it. A body of
    /// announced length that does not fit is not kept for the store.
    ///
    /// A body larger than the whole budget is treated as one over
    /// `max_body_bytes`. The budget is per layer: with one layer per route
    /// (axum's `route_layer`), each has its own. Default: 64 MiB, eight
    /// bodies of the default `max_body_bytes`.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.config().buffers = Budget::new(bytes);
        self
    }

    /// The bytes of response bodies this layer's flights hold buffered
    /// now, out of [`max_buffered_bytes`](Self::max_buffered_bytes).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.config.buffers.used()
    }
}

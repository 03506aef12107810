//! After a store call fails, the layer leaves the store alone for a while:
//! with Redis down, a request should not pay a timeout per store call.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

pub(crate) struct Breaker {
    /// tokio's clock, so that paused-time tests move it.
    epoch: Instant,
    /// Milliseconds after `epoch` until which the store is skipped.
    open_until: AtomicU64,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            open_until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the store should be skipped now.
    pub(crate) fn is_open(&self) -> bool {
        self.now() < self.open_until.load(Ordering::Relaxed)
    }

    /// Skips the store for `pause` from now.
    pub(crate) fn trip(&self, pause: Duration) {
        let until = self
            .now()
            .saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
        self.open_until.fetch_max(until, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn open_for_the_pause_then_closed() {
        let breaker = Breaker::new();
        assert!(!breaker.is_open());
        breaker.trip(Duration::from_secs(1));
        assert!(breaker.is_open());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(breaker.is_open());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_trip_does_not_shorten_a_longer_one() {
        let breaker = Breaker::new();
        breaker.trip(Duration::from_secs(5));
        breaker.trip(Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(breaker.is_open());
    }
}

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
        // Every hit asks: a breaker never tripped, or closed again, answers
        // without reading the clock.
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if self.now() < until {
            return true;
        }
        // A trip in between raised `until`: it stays.
        let _ = self
            .open_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
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
        // Closed again, it trips as a new one does.
        breaker.trip(Duration::from_secs(1));
        assert!(breaker.is_open());
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

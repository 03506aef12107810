//! Instants a duration ahead that never overflow the clock.
//!
//! The builder, the stores and their callers take any `Duration`, and
//! `Duration::MAX` is a natural way to write "no limit"; but adding it to
//! an instant panics past the clock's range. Every deadline made from a
//! duration someone else chose is made here instead.

use std::{ops::Add, time::Duration};

/// As far ahead as the crate looks: a century.
pub(crate) const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The instant `by` after `now`, or [`FAR`] after it when `by` is longer.
pub(crate) fn after<I: Add<Duration, Output = I>>(now: I, by: Duration) -> I {
    now + by.min(FAR)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_duration_past_the_clocks_range_ends_a_century_on() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::from_secs(60)), now + Duration::from_secs(60));
        assert_eq!(after(now, Duration::MAX), now + FAR);
        let tokio_now = tokio::time::Instant::now();
        assert_eq!(after(tokio_now, Duration::MAX), tokio_now + FAR);
    }
}

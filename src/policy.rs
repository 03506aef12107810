//! Pure freshness decisions: no I/O, time passed in.

use std::time::{Duration, SystemTime};

/// How long responses stay fresh, and what happens when they are not.
///
/// A policy is set for the whole layer with [`StampedeLayer::policy`] and
/// per route with [`StampedeLayer::route`].
///
/// [`StampedeLayer::policy`]: crate::StampedeLayer::policy
/// [`StampedeLayer::route`]: crate::StampedeLayer::route
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bypass,
    Ttl { ttl: Duration },
}

/// When a stored entry stops being fresh and when it may no longer be served
/// at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    pub(crate) fresh_until: SystemTime,
    pub(crate) stale_until: SystemTime,
}

impl Lifetime {
    /// How long a store should keep an entry written at `now`.
    pub(crate) fn keep_for(&self, now: SystemTime) -> Duration {
        self.stale_until.duration_since(now).unwrap_or_default()
    }
}

/// What to do with a stored entry at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Serve it; it stays fresh for the given time.
    Fresh { ttl: Duration },
    /// Treat it as a miss.
    Expired,
}

impl Policy {
    /// Responses are fresh for `ttl` after they are stored, then expire; the
    /// next request rebuilds them with the usual single flight.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_stampede::Policy;
    ///
    /// let policy = Policy::ttl(Duration::from_secs(60));
    /// assert!(!policy.is_bypass());
    /// ```
    pub fn ttl(ttl: Duration) -> Self {
        Self {
            kind: Kind::Ttl { ttl },
        }
    }

    /// Requests go straight to the inner service: nothing is looked up,
    /// collapsed or stored.
    pub fn bypass() -> Self {
        Self { kind: Kind::Bypass }
    }

    /// Whether this policy sends every request straight to the inner service.
    pub fn is_bypass(&self) -> bool {
        matches!(self.kind, Kind::Bypass)
    }

    /// The lifetime of an entry stored at `now`, or `None` when nothing may be
    /// stored under this policy.
    pub(crate) fn lifetime(&self, now: SystemTime) -> Option<Lifetime> {
        match self.kind {
            Kind::Bypass => None,
            Kind::Ttl { ttl } => {
                let fresh_until = now.checked_add(ttl)?;
                Some(Lifetime {
                    fresh_until,
                    stale_until: fresh_until,
                })
            }
        }
    }

    /// Whether an entry with lifetime `lifetime` may be served at `now`.
    pub(crate) fn decide(&self, lifetime: Lifetime, now: SystemTime) -> Decision {
        match self.kind {
            Kind::Bypass => Decision::Expired,
            Kind::Ttl { .. } => match lifetime.fresh_until.duration_since(now) {
                Ok(ttl) if !ttl.is_zero() => Decision::Fresh { ttl },
                _ => Decision::Expired,
            },
        }
    }
}

impl Default for Policy {
    /// `Policy::ttl(Duration::from_secs(60))`.
    fn default() -> Self {
        Self::ttl(Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn ttl_is_fresh_until_the_ttl_has_passed() {
        let policy = Policy::ttl(secs(60));
        let lifetime = policy.lifetime(T0).expect("ttl stores");
        assert_eq!(lifetime.fresh_until, T0 + secs(60));
        assert_eq!(lifetime.stale_until, T0 + secs(60));
        assert_eq!(policy.decide(lifetime, T0), Decision::Fresh { ttl: secs(60) });
        assert_eq!(
            policy.decide(lifetime, T0 + secs(59)),
            Decision::Fresh { ttl: secs(1) }
        );
        assert_eq!(policy.decide(lifetime, T0 + secs(60)), Decision::Expired);
        assert_eq!(policy.decide(lifetime, T0 + secs(3600)), Decision::Expired);
    }

    #[test]
    fn an_entry_from_a_clock_ahead_of_ours_is_fresh_for_its_whole_ttl() {
        let policy = Policy::ttl(secs(10));
        let lifetime = policy.lifetime(T0 + secs(5)).expect("ttl stores");
        assert_eq!(policy.decide(lifetime, T0), Decision::Fresh { ttl: secs(15) });
    }

    #[test]
    fn bypass_stores_nothing_and_serves_nothing() {
        let policy = Policy::bypass();
        assert!(policy.is_bypass());
        assert_eq!(policy.lifetime(T0), None);
        let lifetime = Policy::ttl(secs(60)).lifetime(T0).expect("ttl stores");
        assert_eq!(policy.decide(lifetime, T0), Decision::Expired);
    }

    #[test]
    fn keep_for_is_the_time_left_until_the_entry_is_gone() {
        let lifetime = Policy::ttl(secs(30)).lifetime(T0).expect("ttl stores");
        assert_eq!(lifetime.keep_for(T0), secs(30));
        assert_eq!(lifetime.keep_for(T0 + secs(40)), Duration::ZERO);
    }

    #[test]
    fn a_ttl_beyond_the_end_of_time_stores_nothing() {
        assert_eq!(Policy::ttl(Duration::MAX).lifetime(T0), None);
    }
}

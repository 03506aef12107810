//! Pure freshness decisions: no I/O; time and randomness passed in.

use std::time::{Duration, SystemTime};

use crate::rules::freshness::OriginFreshness;
use origin::Targeted;

/// How long responses stay fresh, and what happens around their expiry.
///
/// A policy is set for the whole layer with [`StampedeLayer::policy`] and
/// per route with [`StampedeLayer::route`].
///
/// | policy | before expiry | around expiry | after |
/// | --- | --- | --- | --- |
/// | [`ttl`](Policy::ttl) | hit | the first request rebuilds, the others wait on it | |
/// | [`xfetch`](Policy::xfetch) | hit; a request may start an early background refresh, likelier as expiry nears | as `ttl` if no early refresh landed | |
/// | [`stale_while_revalidate`](Policy::stale_while_revalidate) | hit | served stale at once while one background refresh runs | a miss once the stale window is over |
/// | [`origin`](Policy::origin) | hit, for as long as the response's own headers say (at most `max`) | revalidated with its validators, one conditional request per key; served stale while one refresh runs if the response says `stale-while-revalidate` | |
///
/// Any policy can add [`stale_if_error`](Policy::stale_if_error) and
/// [`jitter`](Policy::jitter).
///
/// [`StampedeLayer::policy`]: crate::StampedeLayer::policy
/// [`StampedeLayer::route`]: crate::StampedeLayer::route
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    kind: Kind,
    stale_if_error: Duration,
    jitter: f64,
    respect_origin: bool,
    /// The fields read before `Cache-Control` by [`Policy::origin`], most
    /// specific first.
    targeted: Targeted,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bypass,
    Ttl {
        ttl: Duration,
    },
    XFetch {
        ttl: Duration,
        beta: f64,
    },
    Swr {
        fresh: Duration,
        gone: Duration,
    },
    /// Freshness from the response itself, capped; `beta` 0 draws no
    /// early refresh.
    Origin {
        max: Duration,
        beta: f64,
    },
}

/// When a stored entry stops being fresh, stops being servable while a
/// refresh runs, and stops being servable even when the origin fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    pub(crate) fresh_until: SystemTime,
    pub(crate) stale_until: SystemTime,
    pub(crate) error_until: SystemTime,
}

impl Lifetime {
    /// An entry that is never fresh (a response shared but not stored).
    pub(crate) fn expired(now: SystemTime) -> Self {
        Self {
            fresh_until: now,
            stale_until: now,
            error_until: now,
        }
    }

    /// This lifetime cut to at most `fresh` from `now`, with no stale or
    /// error window after it; `None` if that leaves no time at all.
    pub(crate) fn within(self, now: SystemTime, fresh: Duration) -> Option<Self> {
        let until = self.fresh_until.min(now.checked_add(fresh)?);
        (until > now).then_some(Self {
            fresh_until: until,
            stale_until: until,
            error_until: until,
        })
    }

    /// How long a store should keep an entry written at `now`.
    pub(crate) fn keep_for(&self, now: SystemTime) -> Duration {
        self.stale_until
            .max(self.error_until)
            .duration_since(now)
            .unwrap_or_default()
    }

    /// Whether the entry may stand in for a failed origin at `now`.
    pub(crate) fn serves_errors_at(&self, now: SystemTime) -> bool {
        now < self.error_until
    }
}

/// What to do with a stored entry at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Serve it; it stays fresh for `ttl`.
    Fresh { ttl: Duration },
    /// Serve it, and refresh it in the background now (XFetch).
    RefreshEarly { ttl: Duration },
    /// Serve it stale, `late` past its freshness, and refresh it in the
    /// background (stale-while-revalidate).
    Stale { late: Duration },
    /// Treat it as a miss.
    Expired,
}

impl Policy {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            stale_if_error: Duration::ZERO,
            jitter: 0.0,
            respect_origin: false,
            targeted: Targeted::None,
        }
    }

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
        Self::new(Kind::Ttl { ttl })
    }

    /// Fresh for `ttl`, with probabilistic early refresh (XFetch, Vattani et
    /// al., VLDB 2015): each request for a fresh entry refreshes it in the
    /// background when `now - delta * beta * ln(u) >= expiry`, where `delta`
    /// is how long the entry's last rebuild took and `u` is uniform in
    /// (0, 1]. The nearer the expiry and the slower the rebuild, the likelier
    /// an early refresh; requests are served the still-fresh entry and never
    /// wait for it. At expiry it behaves like [`Policy::ttl`]. `beta` is 1
    /// unless set with [`Policy::beta`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_stampede::Policy;
    ///
    /// let policy = Policy::xfetch(Duration::from_secs(60)).beta(2.0);
    /// # let _ = policy;
    /// ```
    pub fn xfetch(ttl: Duration) -> Self {
        Self::new(Kind::XFetch { ttl, beta: 1.0 })
    }

    /// XFetch's eagerness: above 1 refreshes earlier, below 1 later. On
    /// [`Policy::origin`], whose default is 0 (no early refresh), any
    /// positive value turns XFetch on over the origin's lifetimes. Has no
    /// effect on other policies. Negative or non-finite values count as 0
    /// (no early refresh).
    pub fn beta(mut self, beta: f64) -> Self {
        if let Kind::XFetch { beta: b, .. } | Kind::Origin { beta: b, .. } = &mut self.kind {
            *b = if beta.is_finite() { beta.max(0.0) } else { 0.0 };
        }
        self
    }

    /// Requests go straight to the inner service: nothing is looked up,
    /// collapsed or stored.
    pub fn bypass() -> Self {
        Self::new(Kind::Bypass)
    }

    /// When a rebuild (a miss or a background refresh) fails, because the
    /// inner service errs or answers `500`, `502`, `503` or `504`, the last
    /// good response is served instead for up to `window` after it stopped
    /// being fresh (RFC 5861's `stale-if-error`). A failed background
    /// refresh leaves the last good response in place.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// Spreads expiries: each stored response is fresh for the policy's time
    /// less a random part of up to `fraction` of it (clamped to 0..=1), so
    /// that responses stored together do not expire together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Lets each response's own headers shorten what this policy allows
    /// (never lengthen it): freshness from `s-maxage`, else `max-age`, else
    /// `Expires`, less any `Age`; the stale windows from the response's
    /// `stale-while-revalidate` and `stale-if-error` (RFC 5861); none at all
    /// when it says `must-revalidate`, `proxy-revalidate` or `s-maxage`. A
    /// response with nothing to say keeps the policy's times; one with no
    /// freshness and no stale window left is not stored. Off by default: the
    /// policy alone decides.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_stampede::Policy;
    ///
    /// // At most a minute, less if the origin says so.
    /// let policy = Policy::ttl(Duration::from_secs(60)).respect_origin();
    /// # let _ = policy;
    /// ```
    pub fn respect_origin(mut self) -> Self {
        self.respect_origin = true;
        self
    }

    /// Whether this policy sends every request straight to the inner service.
    pub fn is_bypass(&self) -> bool {
        matches!(self.kind, Kind::Bypass)
    }

    /// The lifetime of an entry stored at `now` whose response says
    /// `origin`, or `None` when nothing may be stored under this policy.
    /// `random` is uniform in [0, 1).
    pub(crate) fn lifetime(
        &self,
        now: SystemTime,
        random: f64,
        origin: &OriginFreshness,
    ) -> Option<Lifetime> {
        let (fresh, stale) = match self.kind {
            Kind::Bypass => return None,
            Kind::Origin { max, .. } => return self.origin_lifetime(now, random, origin, max),
            Kind::Ttl { ttl } | Kind::XFetch { ttl, .. } => (ttl, Duration::ZERO),
            Kind::Swr { fresh, gone } => (fresh, gone - fresh),
        };
        // The factor is at most 1; converting back can only fail by rounding
        // a huge duration up, and then the unjittered one is right anyway.
        let factor = 1.0 - self.jitter * random.clamp(0.0, 1.0);
        let mut fresh = Duration::try_from_secs_f64(fresh.as_secs_f64() * factor).unwrap_or(fresh);
        let (mut stale, mut on_error) = (stale, self.stale_if_error);
        if self.respect_origin {
            let shorten =
                |ours: Duration, theirs: Option<Duration>| theirs.map_or(ours, |theirs| ours.min(theirs));
            fresh = shorten(fresh, origin.fresh);
            if origin.no_stale {
                (stale, on_error) = (Duration::ZERO, Duration::ZERO);
            } else {
                stale = shorten(stale, origin.stale_while_revalidate);
                on_error = shorten(on_error, origin.stale_if_error);
            }
            if fresh.is_zero() && stale.is_zero() {
                return None;
            }
        }
        let fresh_until = now.checked_add(fresh)?;
        let stale_until = fresh_until.checked_add(stale)?;
        let error_until = fresh_until.checked_add(on_error)?.max(stale_until);
        Some(Lifetime {
            fresh_until,
            stale_until,
            error_until,
        })
    }

    /// What to do at `now` with an entry of lifetime `lifetime` whose last
    /// rebuild took `recompute`. `random` draws uniformly in [0, 1), and is
    /// called only by a decision that needs it (XFetch's, before expiry):
    /// most hits draw nothing.
    pub(crate) fn decide(
        &self,
        lifetime: Lifetime,
        recompute: Duration,
        now: SystemTime,
        random: impl FnOnce() -> f64,
    ) -> Decision {
        let left = lifetime.fresh_until.duration_since(now).unwrap_or_default();
        if left.is_zero() {
            return match self.kind {
                Kind::Swr { .. } | Kind::Origin { .. } if now < lifetime.stale_until => Decision::Stale {
                    late: now.duration_since(lifetime.fresh_until).unwrap_or_default(),
                },
                _ => Decision::Expired,
            };
        }
        match self.kind {
            Kind::Bypass => Decision::Expired,
            Kind::Origin { beta, .. } if beta <= 0.0 => Decision::Fresh { ttl: left },
            Kind::XFetch { beta, .. } | Kind::Origin { beta, .. } => {
                // u in (0, 1], so ln(u) <= 0 and the gap is never negative.
                let u = 1.0 - random().clamp(0.0, 1.0);
                let gap = recompute.as_secs_f64() * beta * -u.ln();
                if gap >= left.as_secs_f64() {
                    Decision::RefreshEarly { ttl: left }
                } else {
                    Decision::Fresh { ttl: left }
                }
            }
            Kind::Ttl { .. } | Kind::Swr { .. } => Decision::Fresh { ttl: left },
        }
    }
}

impl Default for Policy {
    /// `Policy::ttl(Duration::from_secs(60))`.
    fn default() -> Self {
        Self::ttl(Duration::from_secs(60))
    }
}

#[cfg(feature = "config")]
mod config;
mod origin;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;

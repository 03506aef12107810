//! Pure freshness decisions: no I/O; time and randomness passed in.

use std::time::{Duration, SystemTime};

use crate::cacheable::OriginFreshness;

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
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bypass,
    Ttl { ttl: Duration },
    XFetch { ttl: Duration, beta: f64 },
    Swr { fresh: Duration, gone: Duration },
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

    /// XFetch's eagerness: above 1 refreshes earlier, below 1 later. Has no
    /// effect on other policies. Negative or non-finite values count as 0
    /// (no early refresh).
    pub fn beta(mut self, beta: f64) -> Self {
        if let Kind::XFetch { beta: b, .. } = &mut self.kind {
            *b = if beta.is_finite() { beta.max(0.0) } else { 0.0 };
        }
        self
    }

    /// Fresh for `fresh`; then, until `gone` after it was stored, the stale
    /// response is served at once while one background refresh runs (one per
    /// key across every replica that shares the store); from `gone` on, a
    /// miss. `gone` at or below `fresh` leaves no stale window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_stampede::Policy;
    ///
    /// // Fresh for 50 s, served stale while one refresh runs, gone at 120 s.
    /// let policy = Policy::stale_while_revalidate(Duration::from_secs(50), Duration::from_secs(120));
    /// # let _ = policy;
    /// ```
    pub fn stale_while_revalidate(fresh: Duration, gone: Duration) -> Self {
        Self::new(Kind::Swr {
            fresh,
            gone: gone.max(fresh),
        })
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
                Kind::Swr { .. } if now < lifetime.stale_until => Decision::Stale {
                    late: now.duration_since(lifetime.fresh_until).unwrap_or_default(),
                },
                _ => Decision::Expired,
            };
        }
        match self.kind {
            Kind::Bypass => Decision::Expired,
            Kind::XFetch { beta, .. } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    /// A response that says nothing about its freshness.
    const SILENT: OriginFreshness = OriginFreshness {
        fresh: None,
        stale_while_revalidate: None,
        stale_if_error: None,
        no_stale: false,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn ttl_is_fresh_until_the_ttl_has_passed() {
        let policy = Policy::ttl(secs(60));
        let lifetime = policy.lifetime(T0, 0.5, &SILENT).expect("ttl stores");
        assert_eq!(lifetime.fresh_until, T0 + secs(60));
        assert_eq!(lifetime.stale_until, T0 + secs(60));
        let decide = |at| policy.decide(lifetime, secs(1), at, || 0.5);
        assert_eq!(decide(T0), Decision::Fresh { ttl: secs(60) });
        assert_eq!(decide(T0 + secs(59)), Decision::Fresh { ttl: secs(1) });
        assert_eq!(decide(T0 + secs(60)), Decision::Expired);
        assert_eq!(decide(T0 + secs(3600)), Decision::Expired);
    }

    #[test]
    fn an_entry_from_a_clock_ahead_of_ours_is_fresh_for_its_whole_ttl() {
        let policy = Policy::ttl(secs(10));
        let lifetime = policy.lifetime(T0 + secs(5), 0.0, &SILENT).expect("ttl stores");
        assert_eq!(
            policy.decide(lifetime, secs(0), T0, || 0.0),
            Decision::Fresh { ttl: secs(15) }
        );
    }

    #[test]
    fn bypass_stores_nothing_and_serves_nothing() {
        let policy = Policy::bypass();
        assert!(policy.is_bypass());
        assert_eq!(policy.lifetime(T0, 0.0, &SILENT), None);
        let lifetime = Policy::ttl(secs(60))
            .lifetime(T0, 0.0, &SILENT)
            .expect("ttl stores");
        assert_eq!(policy.decide(lifetime, secs(0), T0, || 0.0), Decision::Expired);
    }

    #[test]
    fn keep_for_covers_the_stale_and_error_windows() {
        let lifetime = Policy::ttl(secs(30)).lifetime(T0, 0.0, &SILENT).expect("stores");
        assert_eq!(lifetime.keep_for(T0), secs(30));
        assert_eq!(lifetime.keep_for(T0 + secs(40)), Duration::ZERO);
        let swr = Policy::stale_while_revalidate(secs(50), secs(120)).stale_if_error(secs(300));
        let lifetime = swr.lifetime(T0, 0.0, &SILENT).expect("stores");
        assert_eq!(lifetime.keep_for(T0), secs(350));
    }

    #[test]
    fn a_ttl_beyond_the_end_of_time_stores_nothing() {
        assert_eq!(Policy::ttl(Duration::MAX).lifetime(T0, 0.0, &SILENT), None);
    }

    #[test]
    fn swr_serves_stale_inside_its_window_and_not_at_its_edge() {
        let policy = Policy::stale_while_revalidate(secs(50), secs(120));
        let lifetime = policy.lifetime(T0, 0.0, &SILENT).expect("stores");
        assert_eq!(lifetime.stale_until, T0 + secs(120));
        let decide = |at| policy.decide(lifetime, secs(1), at, || 0.0);
        assert_eq!(decide(T0 + secs(49)), Decision::Fresh { ttl: secs(1) });
        assert_eq!(decide(T0 + secs(50)), Decision::Stale { late: Duration::ZERO });
        assert_eq!(decide(T0 + ms(119_999)), Decision::Stale { late: ms(69_999) });
        assert_eq!(decide(T0 + secs(120)), Decision::Expired);
    }

    #[test]
    fn swr_with_gone_before_fresh_has_no_stale_window() {
        let policy = Policy::stale_while_revalidate(secs(50), secs(10));
        let lifetime = policy.lifetime(T0, 0.0, &SILENT).expect("stores");
        assert_eq!(
            policy.decide(lifetime, secs(0), T0 + secs(50), || 0.0),
            Decision::Expired
        );
    }

    #[test]
    fn stale_if_error_window_runs_from_the_end_of_freshness() {
        let policy = Policy::ttl(secs(10)).stale_if_error(secs(30));
        let lifetime = policy.lifetime(T0, 0.0, &SILENT).expect("stores");
        assert!(lifetime.serves_errors_at(T0 + secs(39)));
        assert!(lifetime.serves_errors_at(T0 + ms(39_999)));
        assert!(!lifetime.serves_errors_at(T0 + secs(40)));
        // Never shorter than the stale window.
        let swr = Policy::stale_while_revalidate(secs(10), secs(60)).stale_if_error(secs(5));
        let lifetime = swr.lifetime(T0, 0.0, &SILENT).expect("stores");
        assert_eq!(lifetime.error_until, T0 + secs(60));
        // Without it, an expired entry stands in for nothing.
        let plain = Policy::ttl(secs(10)).lifetime(T0, 0.0, &SILENT).expect("stores");
        assert!(!plain.serves_errors_at(T0 + secs(10)));
    }

    #[test]
    fn jitter_shortens_freshness_by_up_to_its_fraction() {
        let policy = Policy::ttl(secs(100)).jitter(0.2);
        let at = |random| policy.lifetime(T0, random, &SILENT).expect("stores").fresh_until;
        assert_eq!(at(0.0), T0 + secs(100));
        assert_eq!(at(0.5), T0 + secs(90));
        assert_eq!(at(0.999_999), T0 + Duration::from_secs_f64(80.00002));
        assert_eq!(Policy::ttl(secs(100)).jitter(7.0).jitter, 1.0);
        assert_eq!(Policy::ttl(secs(100)).jitter(f64::NAN).jitter, 0.0);
    }

    /// The fraction of requests that refresh early at `left` before expiry,
    /// over `n` draws of a seeded source.
    fn early_fraction(beta: f64, delta: Duration, left: Duration, n: usize) -> f64 {
        let policy = Policy::xfetch(secs(60)).beta(beta);
        let lifetime = policy.lifetime(T0, 0.0, &SILENT).expect("stores");
        let now = lifetime.fresh_until - left;
        let mut rng = fastrand::Rng::with_seed(7);
        let early = (0..n)
            .filter(|_| {
                matches!(
                    policy.decide(lifetime, delta, now, || rng.f64()),
                    Decision::RefreshEarly { .. }
                )
            })
            .count();
        early as f64 / n as f64
    }

    #[test]
    fn xfetch_refreshes_early_as_often_as_the_closed_form_says() {
        // P(-delta * beta * ln(u) >= left) = P(u <= e^(-left / (delta * beta)))
        //                                 = e^(-left / (delta * beta)).
        let delta = ms(200);
        for (beta, left_ms) in [
            (1.0, 10),
            (1.0, 50),
            (1.0, 200),
            (1.0, 600),
            (2.0, 200),
            (0.5, 100),
        ] {
            let left = ms(left_ms);
            let expected = (-(left.as_secs_f64()) / (delta.as_secs_f64() * beta)).exp();
            let measured = early_fraction(beta, delta, left, 100_000);
            assert!(
                (measured - expected).abs() < 0.01,
                "beta {beta}, {left_ms} ms before expiry: {measured} vs {expected}"
            );
        }
    }

    #[test]
    fn xfetch_never_refreshes_early_without_a_rebuild_time_or_with_beta_zero() {
        assert_eq!(early_fraction(1.0, Duration::ZERO, ms(1), 10_000), 0.0);
        assert_eq!(early_fraction(0.0, ms(200), ms(1), 10_000), 0.0);
        assert_eq!(early_fraction(-3.0, ms(200), ms(1), 10_000), 0.0);
    }

    #[test]
    fn xfetch_at_expiry_is_a_miss_like_ttl() {
        let policy = Policy::xfetch(secs(10));
        let lifetime = policy.lifetime(T0, 0.0, &SILENT).expect("stores");
        assert_eq!(
            policy.decide(lifetime, secs(1), T0 + secs(10), || 0.0),
            Decision::Expired
        );
    }

    #[test]
    fn respecting_the_origin_only_ever_shortens() {
        let origin = |fresh: Option<u64>, swr: Option<u64>, sie: Option<u64>, no_stale| OriginFreshness {
            fresh: fresh.map(secs),
            stale_while_revalidate: swr.map(secs),
            stale_if_error: sie.map(secs),
            no_stale,
        };
        let policy = Policy::stale_while_revalidate(secs(60), secs(180))
            .stale_if_error(secs(600))
            .respect_origin();
        let at = |o: &OriginFreshness| {
            policy.lifetime(T0, 0.0, o).map(|l| {
                (
                    l.fresh_until.duration_since(T0).expect("after"),
                    l.stale_until.duration_since(l.fresh_until).expect("after"),
                    l.error_until.duration_since(l.fresh_until).expect("after"),
                )
            })
        };
        assert_eq!(
            at(&origin(None, None, None, false)),
            Some((secs(60), secs(120), secs(600)))
        );
        assert_eq!(
            at(&origin(Some(5), Some(30), Some(60), false)),
            Some((secs(5), secs(30), secs(60)))
        );
        assert_eq!(
            at(&origin(Some(3600), Some(3600), Some(3600), false)),
            Some((secs(60), secs(120), secs(600)))
        );
        assert_eq!(
            at(&origin(Some(5), None, None, true)),
            Some((secs(5), secs(0), secs(0)))
        );
        assert_eq!(
            at(&origin(Some(0), None, None, true)),
            None,
            "nothing left to store"
        );
        assert_eq!(
            at(&origin(Some(0), None, None, false)),
            Some((secs(0), secs(120), secs(600)))
        );
        // Without respect_origin, the origin has no say.
        let plain = Policy::ttl(secs(60)).lifetime(T0, 0.0, &origin(Some(5), None, None, true));
        assert_eq!(plain.map(|l| l.fresh_until), Some(T0 + secs(60)));
    }

    #[test]
    fn only_xfetch_before_expiry_draws_a_random_number() {
        let draws = std::cell::Cell::new(0);
        let draw = || {
            draws.set(draws.get() + 1);
            0.5
        };
        for policy in [
            Policy::ttl(secs(60)),
            Policy::stale_while_revalidate(secs(60), secs(120)),
        ] {
            let lifetime = policy.lifetime(T0, 0.0, &SILENT).expect("stores");
            policy.decide(lifetime, secs(1), T0, draw);
            policy.decide(lifetime, secs(1), T0 + secs(90), draw);
        }
        assert_eq!(draws.get(), 0);
        let xfetch = Policy::xfetch(secs(60));
        let lifetime = xfetch.lifetime(T0, 0.0, &SILENT).expect("stores");
        xfetch.decide(lifetime, secs(1), T0, draw);
        assert_eq!(draws.get(), 1);
    }

    #[test]
    fn beta_only_changes_xfetch() {
        assert_eq!(Policy::ttl(secs(1)).beta(5.0), Policy::ttl(secs(1)));
    }
}

/// Properties of the decisions over generated lifetimes, times and draws
/// (proptest).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::cacheable::OriginFreshness;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn policies() -> impl Strategy<Value = Policy> {
        let secs = 1u64..3600;
        prop_oneof![
            secs.clone().prop_map(|s| Policy::ttl(Duration::from_secs(s))),
            (secs.clone(), 0.1f64..4.0)
                .prop_map(|(s, beta)| Policy::xfetch(Duration::from_secs(s)).beta(beta)),
            (secs, 0u64..3600).prop_map(|(s, more)| Policy::stale_while_revalidate(
                Duration::from_secs(s),
                Duration::from_secs(s + more)
            )),
        ]
    }

    proptest! {
        #[test]
        fn a_decision_follows_the_windows_of_the_lifetime(
            policy in policies(),
            at_ms in 0u64..8_000_000,
            draw in 0.0f64..1.0,
            recompute_ms in 0u64..10_000,
        ) {
            let lifetime = policy.lifetime(T0, draw, &OriginFreshness::of(&http::HeaderMap::new())).expect("stores");
            let now = T0 + Duration::from_millis(at_ms);
            let decision = policy.decide(lifetime, Duration::from_millis(recompute_ms), now, || draw);
            let xfetch = matches!(policy.kind, Kind::XFetch { .. });
            let swr = matches!(policy.kind, Kind::Swr { .. });
            match decision {
                Decision::Fresh { ttl } => {
                    prop_assert!(now < lifetime.fresh_until);
                    prop_assert_eq!(now + ttl, lifetime.fresh_until);
                }
                Decision::RefreshEarly { ttl } => {
                    prop_assert!(xfetch, "only XFetch refreshes early");
                    prop_assert!(now < lifetime.fresh_until);
                    prop_assert_eq!(now + ttl, lifetime.fresh_until);
                }
                Decision::Stale { late } => {
                    prop_assert!(swr, "only SWR serves stale");
                    prop_assert!(lifetime.fresh_until <= now && now < lifetime.stale_until);
                    prop_assert_eq!(lifetime.fresh_until + late, now);
                }
                Decision::Expired => prop_assert!(now >= lifetime.stale_until),
            }
        }

        #[test]
        fn an_early_refresh_stays_due_as_expiry_nears(
            ttl_s in 1u64..3600,
            beta in 0.1f64..4.0,
            draw in 0.0f64..1.0,
            recompute_ms in 1u64..10_000,
            at_ms in 0u64..3_600_000,
            later_ms in 0u64..3_600_000,
        ) {
            let policy = Policy::xfetch(Duration::from_secs(ttl_s)).beta(beta);
            let lifetime = policy.lifetime(T0, draw, &OriginFreshness::of(&http::HeaderMap::new())).expect("stores");
            let recompute = Duration::from_millis(recompute_ms);
            let now = T0 + Duration::from_millis(at_ms);
            let later = now + Duration::from_millis(later_ms);
            let early = |at| matches!(policy.decide(lifetime, recompute, at, || draw), Decision::RefreshEarly { .. });
            if early(now) && later < lifetime.fresh_until {
                prop_assert!(early(later), "the same draw refreshes at any later fresh moment");
            }
            // A draw of 0 means u = 1: no gap, no early refresh.
            let no_gap = policy.decide(lifetime, recompute, now, || 0.0);
            prop_assert!(!matches!(no_gap, Decision::RefreshEarly { .. }), "early with a draw of 0");
        }

        #[test]
        fn jitter_only_shortens_freshness(ttl_s in 1u64..3600, jitter in 0.0f64..1.0, draw in 0.0f64..1.0) {
            let ttl = Duration::from_secs(ttl_s);
            let policy = Policy::ttl(ttl).jitter(jitter);
            let lifetime = policy.lifetime(T0, draw, &OriginFreshness::of(&http::HeaderMap::new())).expect("stores");
            let fresh = lifetime.fresh_until.duration_since(T0).expect("after T0");
            prop_assert!(fresh <= ttl);
            prop_assert!(fresh.as_secs_f64() >= ttl.as_secs_f64() * (1.0 - jitter) - 1e-6);
        }
    }
}

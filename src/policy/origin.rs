//! The origin-driven policy: freshness from the response's own headers.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::HeaderName;

use super::{Kind, Lifetime, Policy};
use crate::rules::freshness::OriginFreshness;

impl Policy {
    /// Freshness as the origin's headers give it, as a shared HTTP cache
    /// computes it (RFC 9111 section 4.2), never longer than `max`: what a
    /// caching proxy in front of someone else's origin is expected to do.
    ///
    /// - The lifetime is `CDN-Cache-Control`'s `max-age` (RFC 9213) or that
    ///   of a [targeted field](Policy::targeted) when the response has one,
    ///   else `s-maxage`, else `max-age`, else `Expires` less `Date`; less
    ///   the age the response already had (its `Age` plus the time the
    ///   request took, or the age its `Date` shows if that is more). An
    ///   `Expires` that cannot be read means expired.
    /// - Without any of those, a tenth of the time since `Last-Modified`
    ///   (at most a day) for the statuses RFC 9110 lets a cache guess for.
    /// - A response with neither a lifetime nor a validator (`ETag`,
    ///   `Last-Modified`) is not stored. One with a validator and no
    ///   lifetime left, or that says `no-cache`, is stored and revalidated
    ///   before every use: one conditional request per key, across
    ///   replicas, whose `304` updates the stored headers and times.
    /// - `stale-while-revalidate` from the response: served stale while one
    ///   refresh runs. `stale-if-error` from the response, else this
    ///   policy's [`stale_if_error`](Policy::stale_if_error). Neither after
    ///   `must-revalidate`, `proxy-revalidate` or `s-maxage`.
    /// - Requests' own `max-age`, `min-fresh`, `max-stale`, `no-cache` and
    ///   `only-if-cached` (a `504` when nothing stored will do) are
    ///   honoured.
    /// - Any final status but `206` and `304` is stored when the response
    ///   gives its own lifetime.
    ///
    /// What is never shared stays so: `Set-Cookie`, `private` and
    /// `no-store` responses, and answers to credentials, as the crate's
    /// guarantees say, even where RFC 9111 would allow storing them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_stampede::Policy;
    ///
    /// // As the origin says, for a day at most.
    /// let policy = Policy::origin(Duration::from_secs(24 * 60 * 60));
    /// assert!(policy.follows_origin());
    /// ```
    pub fn origin(max: Duration) -> Self {
        let mut policy = Self::new(Kind::Origin { max, beta: 0.0 });
        policy.targeted = Targeted::Cdn;
        policy
    }

    /// Under [`Policy::origin`], a field such as `Acme-Cache-Control` that
    /// targets this cache (RFC 9213): read before `CDN-Cache-Control`, and
    /// when it parses, its directives replace those of `Cache-Control`.
    /// Fields named later are read first. Has no effect on other policies.
    pub fn targeted(mut self, field: HeaderName) -> Self {
        if matches!(self.kind, Kind::Origin { .. }) {
            let fields = std::iter::once(field).chain(self.targeted_fields().iter().cloned());
            self.targeted = Targeted::Named(fields.collect());
        }
        self
    }

    /// Whether this policy takes freshness from the origin's headers
    /// ([`Policy::origin`]) and honours requests' own directives.
    pub fn follows_origin(&self) -> bool {
        matches!(self.kind, Kind::Origin { .. })
    }

    /// The targeted fields an origin-driven policy reads, most specific
    /// first; none for other policies.
    pub(crate) fn targeted_fields(&self) -> &[HeaderName] {
        match &self.targeted {
            Targeted::None => &[],
            Targeted::Cdn => &CDN,
            Targeted::Named(fields) => fields,
        }
    }

    /// How long a store should keep an entry of `lifetime` written at
    /// `now` from a response that said `origin`: to its lifetime's end, and
    /// under [`Policy::origin`], for `max` if it can be revalidated, so
    /// that a stale entry costs a `304` rather than the whole response.
    pub(crate) fn keep_for(
        &self,
        lifetime: &Lifetime,
        now: SystemTime,
        origin: &OriginFreshness,
    ) -> Duration {
        let keep = lifetime.keep_for(now);
        match self.kind {
            Kind::Origin { max, .. } if origin.validator => keep.max(max),
            _ => keep,
        }
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

    /// [`Policy::lifetime`] under [`Policy::origin`].
    pub(super) fn origin_lifetime(
        &self,
        now: SystemTime,
        random: f64,
        origin: &OriginFreshness,
        max: Duration,
    ) -> Option<Lifetime> {
        let fresh = match (origin.revalidate, origin.fresh.or(origin.heuristic)) {
            (false, Some(fresh)) => fresh.min(max),
            // Only worth keeping if it can be revalidated.
            _ if origin.validator => Duration::ZERO,
            _ => return None,
        };
        let factor = 1.0 - self.jitter * random.clamp(0.0, 1.0);
        let fresh = Duration::try_from_secs_f64(fresh.as_secs_f64() * factor).unwrap_or(fresh);
        let (stale, on_error) = if origin.no_stale || origin.revalidate {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (
                origin.stale_while_revalidate.unwrap_or_default().min(max),
                origin.stale_if_error.unwrap_or(self.stale_if_error).min(max),
            )
        };
        let fresh_until = now.checked_add(fresh)?;
        let stale_until = fresh_until.checked_add(stale)?;
        Some(Lifetime {
            fresh_until,
            stale_until,
            error_until: fresh_until.checked_add(on_error)?.max(stale_until),
        })
    }
}

/// The targeted fields a policy reads. Every request carries its route's
/// policy: the usual lists are kept in place, and others shared, so that
/// carrying it allocates nothing.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Targeted {
    None,
    /// `CDN-Cache-Control` alone.
    Cdn,
    Named(Arc<[HeaderName]>),
}

static CDN: [HeaderName; 1] = [HeaderName::from_static("cdn-cache-control")];

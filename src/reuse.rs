//! Whether a stored entry may answer a request, and how (RFC 9111 section 4,
//! with the policy deciding freshness).
//!
//! Two questions: does the entry fit the request at all ([`fit`]: the
//! request's credentials and `Vary`), and what does the policy say of its
//! age ([`Decision`])? [`reuse`] combines the answers.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::{
    entry::Entry,
    policy::Decision,
    rules::{cache_control::CacheControl, storable::Credentials, vary::vary_matches},
};

/// Whether a stored response may answer a request, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    Yes,
    /// The request has `Authorization` and the response did not allow that.
    Authorization,
    /// The request has a `Cookie` the route does not account for, and the
    /// response did not say `public` or `s-maxage`.
    Cookie,
    /// The request's values of the headers the response varies on differ.
    Vary,
}

/// Whether `entry` may answer a request with `request`'s headers, which
/// carries `asked`.
pub(crate) fn fit(entry: &Entry, request: &HeaderMap, asked: Credentials) -> Fit {
    if asked.authorization && !entry.allows_authorized {
        Fit::Authorization
    } else if asked.cookie && !entry.allows_cookie {
        Fit::Cookie
    } else if !vary_matches(&entry.vary, &entry.vary_values, request) {
        Fit::Vary
    } else {
        Fit::Yes
    }
}

/// What to do with a request that found a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Serve the entry; it stays fresh for `ttl`.
    Serve { ttl: Duration },
    /// Serve the entry, and refresh it in the background.
    ServeAndRefresh(Refresh),
    /// Rebuild, with the entry as the last good response: its validators
    /// go to the origin, and it stands in if the origin fails.
    Revalidate,
    /// Rebuild as if nothing were stored.
    Miss,
    /// The entry is not this request's to have, and another's rebuild
    /// would not be either: forward the request, detail `why`.
    Pass(&'static str),
}

/// Why an entry that is served is refreshed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// XFetch drew an early refresh; still fresh for `ttl`.
    Early { ttl: Duration },
    /// Past its freshness by `late`, within the stale window.
    Stale { late: Duration },
}

impl Reuse {
    /// How long the entry stays fresh, when it is served as fresh: what a
    /// rebuild that finds another's write takes as good enough.
    pub(crate) fn fresh_for(self) -> Option<Duration> {
        match self {
            Self::Serve { ttl } | Self::ServeAndRefresh(Refresh::Early { ttl }) => Some(ttl),
            _ => None,
        }
    }
}

/// The policy's `decision` on `entry` at `now`, as far as the request's
/// own directives `asked` accept it (RFC 9111 section 5.2.1): an entry older
/// than its `max-age`, or fresh for less than its `min-fresh`, is
/// revalidated first; one stale by no more than its `max-stale` is served
/// (and refreshed behind it), unless the response forbids serving it stale.
pub(crate) fn as_asked(decision: Decision, asked: &CacheControl, entry: &Entry, now: SystemTime) -> Decision {
    let age = now.duration_since(entry.stored_at).unwrap_or_default();
    let left = entry.lifetime.fresh_until.duration_since(now).unwrap_or_default();
    let too_old = asked.max_age.is_some_and(|max| age > Duration::from_secs(max));
    let too_close = asked.min_fresh.is_some_and(|min| left < Duration::from_secs(min));
    if too_old || too_close {
        return Decision::Expired;
    }
    match (decision, asked.max_stale) {
        (Decision::Expired, Some(max_stale)) => {
            let late = now.duration_since(entry.lifetime.fresh_until).unwrap_or_default();
            let stored = CacheControl::parse(&entry.headers);
            let forbidden =
                stored.must_revalidate || stored.proxy_revalidate || stored.s_maxage || stored.no_cache;
            if !forbidden && late <= Duration::from_secs(max_stale) {
                Decision::Stale { late }
            } else {
                decision
            }
        }
        _ => decision,
    }
}

/// The decision table. `decision` is the policy's word on the entry's age,
/// `None` when the client refused stored responses (`no-cache`, honoured).
pub(crate) fn reuse(decision: Option<Decision>, fit: Fit) -> Reuse {
    match (decision, fit) {
        // Whatever its age, a response for other variants is no help.
        (_, Fit::Vary) => Reuse::Miss,
        // Refused or expired: rebuilt, from it if it fits.
        (None | Some(Decision::Expired), Fit::Yes) => Reuse::Revalidate,
        (None | Some(Decision::Expired), Fit::Authorization | Fit::Cookie) => Reuse::Miss,
        // Usable, but not by this request: its own call, not a flight of
        // others whose answer it could not have either.
        (Some(_), Fit::Authorization) => Reuse::Pass("authorization"),
        (Some(_), Fit::Cookie) => Reuse::Pass("cookie"),
        (Some(Decision::Fresh { ttl }), Fit::Yes) => Reuse::Serve { ttl },
        (Some(Decision::RefreshEarly { ttl }), Fit::Yes) => Reuse::ServeAndRefresh(Refresh::Early { ttl }),
        (Some(Decision::Stale { late }), Fit::Yes) => Reuse::ServeAndRefresh(Refresh::Stale { late }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{Response, header::ACCEPT_LANGUAGE};

    use super::*;
    use crate::rules::headers;

    const TTL: Duration = Duration::from_secs(7);

    #[test]
    fn every_row_of_the_reuse_table() {
        use Decision::*;
        let fresh = Fresh { ttl: TTL };
        let early = RefreshEarly { ttl: TTL };
        let stale = Stale { late: TTL };
        let rows = [
            (None, Fit::Yes, Reuse::Revalidate),
            (None, Fit::Vary, Reuse::Miss),
            (None, Fit::Authorization, Reuse::Miss),
            (None, Fit::Cookie, Reuse::Miss),
            (Some(Expired), Fit::Yes, Reuse::Revalidate),
            (Some(Expired), Fit::Vary, Reuse::Miss),
            (Some(Expired), Fit::Authorization, Reuse::Miss),
            (Some(Expired), Fit::Cookie, Reuse::Miss),
            (Some(fresh), Fit::Yes, Reuse::Serve { ttl: TTL }),
            (Some(fresh), Fit::Vary, Reuse::Miss),
            (Some(fresh), Fit::Authorization, Reuse::Pass("authorization")),
            (Some(fresh), Fit::Cookie, Reuse::Pass("cookie")),
            (
                Some(early),
                Fit::Yes,
                Reuse::ServeAndRefresh(Refresh::Early { ttl: TTL }),
            ),
            (Some(early), Fit::Vary, Reuse::Miss),
            (Some(early), Fit::Authorization, Reuse::Pass("authorization")),
            (Some(early), Fit::Cookie, Reuse::Pass("cookie")),
            (
                Some(stale),
                Fit::Yes,
                Reuse::ServeAndRefresh(Refresh::Stale { late: TTL }),
            ),
            (Some(stale), Fit::Vary, Reuse::Miss),
            (Some(stale), Fit::Authorization, Reuse::Pass("authorization")),
            (Some(stale), Fit::Cookie, Reuse::Pass("cookie")),
        ];
        for (decision, fit, expected) in rows {
            assert_eq!(reuse(decision, fit), expected, "{decision:?} x {fit:?}");
        }
    }

    #[test]
    fn only_fresh_serving_counts_as_fresh() {
        assert_eq!(Reuse::Serve { ttl: TTL }.fresh_for(), Some(TTL));
        assert_eq!(
            Reuse::ServeAndRefresh(Refresh::Early { ttl: TTL }).fresh_for(),
            Some(TTL)
        );
        for other in [
            Reuse::ServeAndRefresh(Refresh::Stale { late: TTL }),
            Reuse::Revalidate,
            Reuse::Miss,
            Reuse::Pass("authorization"),
        ] {
            assert_eq!(other.fresh_for(), None, "{other:?}");
        }
    }

    #[test]
    fn a_request_can_ask_for_a_younger_or_fresher_entry() {
        // Stored at 0 (born 10 s earlier: it came with Age 10), fresh until 60.
        let mut stored = Entry::from_response(
            Response::new(bytes::Bytes::new()),
            SystemTime::UNIX_EPOCH,
            TTL,
            Duration::ZERO,
        );
        stored.stored_at = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        stored.lifetime.fresh_until = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let fresh = Decision::Fresh { ttl: TTL };
        let asked = |value: &'static str| CacheControl::parse(&headers(&[("cache-control", value)]));
        let check = |value, now| as_asked(fresh, &asked(value), &stored, at(now));
        assert_eq!(check("max-age=20", 10), fresh, "20 s old");
        assert_eq!(check("max-age=20", 11), Decision::Expired, "21 s old");
        assert_eq!(check("max-age=0", 0), Decision::Expired);
        assert_eq!(check("min-fresh=50", 10), fresh, "50 s left");
        assert_eq!(check("min-fresh=50", 11), Decision::Expired, "49 s left");
        assert_eq!(check("no-transform", 50), fresh, "nothing asked");
        assert_eq!(
            as_asked(Decision::Expired, &asked("max-age=3600"), &stored, at(70)),
            Decision::Expired,
            "max-age never makes an entry fresher"
        );
        // 10 s stale at 70.
        let stale = |value| as_asked(Decision::Expired, &asked(value), &stored, at(70));
        let served = Decision::Stale {
            late: Duration::from_secs(10),
        };
        assert_eq!(stale("max-stale=10"), served);
        assert_eq!(stale("max-stale"), served, "any staleness");
        assert_eq!(stale("max-stale=9"), Decision::Expired);
        assert_eq!(stale("max-stale, max-age=79"), Decision::Expired, "80 s old");
        for forbids in ["must-revalidate", "proxy-revalidate", "s-maxage=60", "no-cache"] {
            let mut strict = stored.clone();
            strict.headers = headers(&[("cache-control", forbids)]);
            let decided = as_asked(Decision::Expired, &asked("max-stale"), &strict, at(70));
            assert_eq!(decided, Decision::Expired, "{forbids}");
        }
    }

    fn entry(response_headers: &[(&'static str, &'static str)], request: &HeaderMap) -> Entry {
        let mut response = Response::new(bytes::Bytes::new());
        *response.headers_mut() = headers(response_headers);
        let mut entry = Entry::from_response(response, SystemTime::UNIX_EPOCH, TTL, Duration::ZERO);
        entry.vary = crate::rules::vary::vary_names(&entry.headers).expect("not *");
        entry.vary_values = crate::rules::vary::vary_values(&entry.vary, request);
        entry
    }

    #[test]
    fn an_entry_fits_by_credentials_then_by_vary() {
        let none = Credentials::default();
        let english = headers(&[("accept-language", "en")]);
        let german = headers(&[("accept-language", "de")]);
        let plain = entry(&[], &english);
        assert_eq!(fit(&plain, &german, none), Fit::Yes, "varies on nothing");
        let varied = entry(&[("vary", "accept-language")], &english);
        assert_eq!(fit(&varied, &english, none), Fit::Yes);
        assert_eq!(fit(&varied, &german, none), Fit::Vary);
        assert_eq!(
            fit(&varied, &HeaderMap::new(), none),
            Fit::Vary,
            "absent is a value too"
        );
        assert_eq!(varied.vary, [ACCEPT_LANGUAGE]);

        let bearer = Credentials {
            authorization: true,
            cookie: false,
        };
        let cookie = Credentials {
            authorization: false,
            cookie: true,
        };
        assert_eq!(
            fit(&varied, &german, bearer),
            Fit::Authorization,
            "credentials first"
        );
        assert_eq!(fit(&varied, &german, cookie), Fit::Cookie, "credentials first");
        let revalidated = entry(&[("cache-control", "max-age=60, must-revalidate")], &english);
        assert_eq!(fit(&revalidated, &english, bearer), Fit::Yes);
        assert_eq!(fit(&revalidated, &english, cookie), Fit::Cookie);
        for shared in ["public", "s-maxage=60"] {
            let public = entry(
                &[("vary", "accept-language"), ("cache-control", shared)],
                &english,
            );
            assert_eq!(fit(&public, &english, bearer), Fit::Yes, "{shared}");
            assert_eq!(fit(&public, &english, cookie), Fit::Yes, "{shared}");
            assert_eq!(fit(&public, &german, cookie), Fit::Vary, "{shared}");
        }
    }
}

//! What may be stored, and what may be handed to requests other than the
//! one that caused it (RFC 9111 sections 3 and 3.5; the layer's own
//! stricter rules).

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, header};

use crate::rules::{
    cache_control::CacheControl, fields::Fields, freshness::OriginFreshness, vary::vary_names,
};

/// Why a response is given only to the request that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Private {
    SetCookie,
    CacheControl,
    Authorization,
    VaryStar,
    /// The request carried a `Cookie` and the response did not say
    /// `public` or `s-maxage`.
    Cookie,
}

impl Private {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::SetCookie => "set-cookie",
            Self::CacheControl => "cache-control",
            Self::Authorization => "authorization",
            Self::VaryStar => "vary",
            Self::Cookie => "cookie",
        }
    }
}

/// Only these methods are collapsed and stored.
pub(crate) fn method_is_cacheable(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Methods whose success invalidates what is stored for their target
/// (RFC 9111 section 4.4): all but the safe ones of RFC 9110 section 9.2.1,
/// methods the layer does not know included. `CONNECT` names a tunnel, not
/// a stored resource.
pub(crate) fn is_unsafe(method: &Method) -> bool {
    ![
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ]
    .contains(method)
}

/// Whether the request asks to skip the cache altogether: `no-store`, or a
/// `Range` that a stored full response would answer wrongly.
#[cfg(test)]
pub(crate) fn request_skips_cache(headers: &HeaderMap) -> bool {
    skips_cache(Fields::of(headers), &CacheControl::parse(headers))
}

/// As [`request_skips_cache`], for a request that carries `fields`, its
/// `Cache-Control` already read as `cc`.
pub(crate) fn skips_cache(fields: Fields, cc: &CacheControl) -> bool {
    fields.range || cc.no_store
}

/// What a request carries that makes the answer to it its own, unless the
/// answer says it is for everyone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// `Authorization` (RFC 9111 section 3.5).
    pub(crate) authorization: bool,
    /// A `Cookie` that the route does not account for: its key names no
    /// cookie, and the route does not ignore cookies.
    pub(crate) cookie: bool,
}

impl Credentials {
    /// The credentials of a request that carries `fields`;
    /// `cookies_accounted` says whether its route keys by the cookies that
    /// matter or ignores them, and is asked only of a request that has a
    /// `Cookie`.
    pub(crate) fn of(fields: Fields, cookies_accounted: impl FnOnce() -> bool) -> Self {
        Self {
            authorization: fields.authorization,
            cookie: fields.cookie && !cookies_accounted(),
        }
    }
}

/// How long a shareable response may be handed to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// For as long as the policy keeps it.
    Policy,
    /// For no longer than this, and never stale: a response to a request
    /// with credentials that the origin let shared caches reuse only by
    /// `s-maxage`, or (for `Authorization`) `must-revalidate`, lives no
    /// longer than its own freshness says.
    Within(Duration),
}

/// Whether a response may be handed to requests other than the one that
/// caused it (waiters of its flight, later hits), given what the request
/// that caused it carried, and for how long. `revalidates` says whether the
/// policy validates a `no-cache` response before each reuse
/// ([`Policy::origin`](crate::Policy::origin)) rather than keep it to its
/// client.
pub(crate) fn shareable(
    headers: &HeaderMap,
    cc: &CacheControl,
    asked: Credentials,
    revalidates: bool,
) -> Result<Sharing, Private> {
    if headers.contains_key(header::SET_COOKIE) {
        return Err(Private::SetCookie);
    }
    if cc.private || cc.no_store || (cc.no_cache && !revalidates) {
        return Err(Private::CacheControl);
    }
    if vary_names(headers).is_none() {
        return Err(Private::VaryStar);
    }
    if cc.public || !(asked.authorization || asked.cookie) {
        return Ok(Sharing::Policy);
    }
    let (permitted, reason) = if asked.authorization {
        (cc.allows_authorized(), Private::Authorization)
    } else {
        (cc.allows_cookie(), Private::Cookie)
    };
    // A permission that comes with no freshness of its own (`max-age=0,
    // must-revalidate`, `s-maxage=0`) shares nothing.
    match OriginFreshness::of(headers).fresh {
        Some(fresh) if permitted && !fresh.is_zero() => Ok(Sharing::Within(fresh)),
        _ => Err(reason),
    }
}

/// Whether the client asks not to be served from the cache without
/// revalidation: `Cache-Control: no-cache` (or `max-age=0`), or
/// `Pragma: no-cache` when there is no `Cache-Control`.
#[cfg(test)]
pub(crate) fn request_says_no_cache(headers: &HeaderMap) -> bool {
    says_no_cache(headers, Fields::of(headers), &CacheControl::parse(headers))
}

/// As [`request_says_no_cache`], for a request with `headers` that carries
/// `fields`, its `Cache-Control` already read as `cc`.
pub(crate) fn says_no_cache(headers: &HeaderMap, fields: Fields, cc: &CacheControl) -> bool {
    if fields.cache_control {
        return cc.no_cache || cc.max_age == Some(0);
    }
    fields.pragma
        && headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache"))
        })
}

/// Whether a response of `status` is stored: the successful statuses a
/// cache may store heuristically (RFC 9111 section 3); and, where the
/// policy `follows_origin`, any other final status but `206` and `304`
/// that the response gives a lifetime of its own (explicit or, for the
/// statuses RFC 9110 allows, heuristic).
pub(crate) fn status_is_storable(status: StatusCode, follows_origin: bool, origin: &OriginFreshness) -> bool {
    match status.as_u16() {
        200 | 203 | 204 => true,
        100..=199 | 206 | 304 => false,
        _ => follows_origin && (origin.fresh.is_some() || origin.heuristic.is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::headers;

    #[test]
    fn personal_responses_are_not_shareable() {
        let asked = |authorization, cookie| Credentials {
            authorization,
            cookie,
        };
        let with = |pairs: &[(&'static str, &'static str)], asked: Credentials| {
            let h = headers(pairs);
            shareable(&h, &CacheControl::parse(&h), asked, false)
        };
        let minute = Ok(Sharing::Within(std::time::Duration::from_secs(60)));
        let check = |pairs: &[(&'static str, &'static str)], auth: bool| with(pairs, asked(auth, false));
        assert_eq!(check(&[], false), Ok(Sharing::Policy));
        assert_eq!(check(&[("set-cookie", "id=1")], false), Err(Private::SetCookie));
        assert_eq!(
            check(&[("set-cookie", "id=1"), ("cache-control", "public")], false),
            Err(Private::SetCookie)
        );
        assert_eq!(
            check(&[("cache-control", "private")], false),
            Err(Private::CacheControl)
        );
        assert_eq!(
            check(&[("cache-control", "no-store")], false),
            Err(Private::CacheControl)
        );
        assert_eq!(
            check(&[("cache-control", "no-cache")], false),
            Err(Private::CacheControl)
        );
        assert_eq!(check(&[], true), Err(Private::Authorization));
        assert_eq!(
            check(&[("cache-control", "max-age=60")], true),
            Err(Private::Authorization)
        );
        assert_eq!(check(&[("cache-control", "public")], true), Ok(Sharing::Policy));
        assert_eq!(
            check(&[("cache-control", "s-maxage=5")], true),
            Ok(Sharing::Within(std::time::Duration::from_secs(5)))
        );
        assert_eq!(
            check(&[("cache-control", "max-age=60, must-revalidate")], true),
            minute
        );
        // The permission is only as long as the response's own freshness.
        for personal in [
            "must-revalidate",
            "max-age=0, must-revalidate",
            "s-maxage=0, max-age=60",
            "max-age=60, proxy-revalidate",
        ] {
            assert_eq!(
                check(&[("cache-control", personal)], true),
                Err(Private::Authorization),
                "{personal}"
            );
        }
        assert_eq!(
            check(&[("cache-control", "s-maxage=60"), ("age", "60")], true),
            Err(Private::Authorization),
            "no freshness left"
        );
        assert_eq!(check(&[("vary", "accept, *")], false), Err(Private::VaryStar));

        // A request's Cookie: only the origin's word that the response is
        // for everyone shares it.
        let cookie = asked(false, true);
        assert_eq!(with(&[], cookie), Err(Private::Cookie));
        assert_eq!(
            with(&[("cache-control", "max-age=60")], cookie),
            Err(Private::Cookie)
        );
        assert_eq!(
            with(&[("cache-control", "must-revalidate")], cookie),
            Err(Private::Cookie),
            "must-revalidate says nothing of cookies"
        );
        assert_eq!(
            with(&[("cache-control", "public, max-age=60")], cookie),
            Ok(Sharing::Policy)
        );
        assert_eq!(with(&[("cache-control", "s-maxage=60")], cookie), minute);
        assert_eq!(
            with(&[("cache-control", "s-maxage=0")], cookie),
            Err(Private::Cookie)
        );
        assert_eq!(
            with(&[("cache-control", "private")], cookie),
            Err(Private::CacheControl),
            "the response's own reason first"
        );
        assert_eq!(
            with(&[("cache-control", "max-age=60")], asked(true, true)),
            Err(Private::Authorization)
        );
    }

    #[test]
    fn a_cookie_counts_unless_the_route_accounts_for_it() {
        let cookie = headers(&[("cookie", "session=alice")]);
        assert_eq!(
            Credentials::of(Fields::of(&cookie), || false),
            Credentials {
                authorization: false,
                cookie: true
            }
        );
        assert_eq!(
            Credentials::of(Fields::of(&cookie), || true),
            Credentials::default()
        );
        let both = headers(&[("cookie", "a=1"), ("authorization", "Bearer x")]);
        assert_eq!(
            Credentials::of(Fields::of(&both), || true),
            Credentials {
                authorization: true,
                cookie: false
            },
            "Authorization is never the route's to waive"
        );
    }

    #[test]
    fn only_get_and_head_are_cacheable() {
        assert!(method_is_cacheable(&Method::GET));
        assert!(method_is_cacheable(&Method::HEAD));
        for m in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(!method_is_cacheable(&m), "{m}");
        }
    }

    #[test]
    fn only_writes_invalidate() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_unsafe(&method), "{method}");
        }
        let unknown = Method::from_bytes(b"M-SEARCH").expect("a method");
        assert!(is_unsafe(&unknown), "a method of unknown safety");
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::CONNECT,
        ] {
            assert!(!is_unsafe(&method), "{method}");
        }
    }

    #[test]
    fn storable_statuses_are_the_successful_ones_unless_the_origin_gives_a_lifetime() {
        let storable = |s, follows, origin: &OriginFreshness| {
            status_is_storable(StatusCode::from_u16(s).expect("valid"), follows, origin)
        };
        let silent = OriginFreshness::default();
        let explicit = OriginFreshness {
            fresh: Some(std::time::Duration::from_secs(60)),
            ..silent
        };
        for s in [200, 203, 204] {
            assert!(storable(s, false, &silent), "{s}");
            assert!(storable(s, true, &silent), "{s}");
        }
        for s in [201, 206, 301, 304, 404, 500, 503] {
            assert!(
                !storable(s, false, &explicit),
                "{s}: operator policies keep to the three"
            );
        }
        for s in [201, 301, 302, 404, 410, 500, 503, 599] {
            assert!(storable(s, true, &explicit), "{s}: its own lifetime");
            assert!(!storable(s, true, &silent), "{s}: no lifetime");
        }
        for s in [101, 206, 304] {
            assert!(!storable(s, true, &explicit), "{s}: never a whole response");
        }
    }

    #[test]
    fn a_request_says_no_cache_with_cache_control_or_pragma() {
        assert!(request_says_no_cache(&headers(&[("cache-control", "no-cache")])));
        assert!(request_says_no_cache(&headers(&[("cache-control", "max-age=0")])));
        assert!(request_says_no_cache(&headers(&[("pragma", "no-cache")])));
        assert!(!request_says_no_cache(&headers(&[(
            "cache-control",
            "max-age=60"
        )])));
        // Cache-Control wins over Pragma (RFC 9111 section 5.4).
        assert!(!request_says_no_cache(&headers(&[
            ("cache-control", "max-age=5"),
            ("pragma", "no-cache")
        ])));
        assert!(!request_says_no_cache(&HeaderMap::new()));
    }

    #[test]
    fn range_and_no_store_requests_skip_the_cache() {
        assert!(request_skips_cache(&headers(&[("range", "bytes=0-10")])));
        assert!(request_skips_cache(&headers(&[("cache-control", "no-store")])));
        assert!(!request_skips_cache(&headers(&[("cache-control", "max-age=0")])));
    }
}

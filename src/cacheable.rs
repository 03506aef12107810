//! RFC 9111 shared-cache rules: what may be stored, and what may be handed to
//! requests other than the one that caused it.

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, header};

use crate::vary::normalise;

/// The `Cache-Control` directives this layer acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) s_maxage: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage_secs: Option<u64>,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Reads every `Cache-Control` field in `headers`. Directive names are
    /// case-insensitive; a value that is not visible ASCII is ignored, as
    /// an unreadable directive must not make a response more shareable.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable: assume the worst.
                cc.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let mut parts = directive.splitn(2, '=');
                let name = parts.next().unwrap_or("").trim();
                let seconds = parts
                    .next()
                    .and_then(|v| v.trim().trim_matches('"').parse::<u64>().ok());
                let lowered = name.to_ascii_lowercase();
                match lowered.as_str() {
                    "max-age" => cc.max_age = cc.max_age.or(seconds),
                    "s-maxage" => cc.s_maxage_secs = cc.s_maxage_secs.or(seconds),
                    "stale-while-revalidate" => {
                        cc.stale_while_revalidate = cc.stale_while_revalidate.or(seconds)
                    }
                    "stale-if-error" => cc.stale_if_error = cc.stale_if_error.or(seconds),
                    _ => {}
                }
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "s-maxage" => cc.s_maxage = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    _ => {}
                }
            }
        }
        cc
    }

    /// RFC 9111 section 3.5: a response to a request with `Authorization` may
    /// be reused only when it says so explicitly.
    pub(crate) fn allows_authorized(&self) -> bool {
        self.public || self.s_maxage || self.must_revalidate
    }
}

/// What a response's own headers say about how long it may be reused
/// (RFC 9111 section 4.2, RFC 5861).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OriginFreshness {
    /// `s-maxage`, else `max-age`, else `Expires` less `Date`; less `Age`.
    pub(crate) fresh: Option<Duration>,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served
    /// stale by a shared cache.
    pub(crate) no_stale: bool,
}

impl OriginFreshness {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let cc = CacheControl::parse(headers);
        let date = |name| {
            headers
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
        };
        let expires = || {
            let expires = date(header::EXPIRES)?;
            // An unreadable Expires means already expired (RFC 9111 5.3).
            let since = date(header::DATE).unwrap_or(expires);
            Some(expires.duration_since(since).unwrap_or_default())
        };
        let age = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        Self {
            fresh: cc
                .s_maxage_secs
                .or(cc.max_age)
                .map(Duration::from_secs)
                .or_else(expires)
                .map(|fresh| fresh.saturating_sub(age)),
            stale_while_revalidate: cc.stale_while_revalidate.map(Duration::from_secs),
            stale_if_error: cc.stale_if_error.map(Duration::from_secs),
            no_stale: cc.must_revalidate || cc.s_maxage,
        }
    }
}

/// Why a response is given only to the request that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Private {
    SetCookie,
    CacheControl,
    Authorization,
    VaryStar,
}

impl Private {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::SetCookie => "set-cookie",
            Self::CacheControl => "cache-control",
            Self::Authorization => "authorization",
            Self::VaryStar => "vary",
        }
    }
}

/// Only these methods are collapsed and stored.
pub(crate) fn method_is_cacheable(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Whether the request asks to skip the cache altogether: `no-store`, or a
/// `Range` that a stored full response would answer wrongly.
pub(crate) fn request_skips_cache(headers: &HeaderMap) -> bool {
    headers.contains_key(header::RANGE) || CacheControl::parse(headers).no_store
}

/// Whether a response may be handed to requests other than the one that
/// caused it (waiters of its flight, later hits).
pub(crate) fn shareable(
    headers: &HeaderMap,
    cc: &CacheControl,
    request_had_authorization: bool,
) -> Result<(), Private> {
    if headers.contains_key(header::SET_COOKIE) {
        return Err(Private::SetCookie);
    }
    if cc.private || cc.no_store || cc.no_cache {
        return Err(Private::CacheControl);
    }
    if request_had_authorization && !cc.allows_authorized() {
        return Err(Private::Authorization);
    }
    if vary_names(headers).is_none() {
        return Err(Private::VaryStar);
    }
    Ok(())
}

/// Whether the client asks not to be served from the cache without
/// revalidation: `Cache-Control: no-cache` (or `max-age=0`), or
/// `Pragma: no-cache` when there is no `Cache-Control`.
pub(crate) fn request_says_no_cache(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::CACHE_CONTROL) {
        let cc = CacheControl::parse(headers);
        return cc.no_cache || cc.max_age == Some(0);
    }
    headers.get_all(header::PRAGMA).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache"))
    })
}

/// Successful statuses that RFC 9111 lets a cache store heuristically.
pub(crate) fn status_is_storable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204)
}

/// The request header names a response varies on, lowercased; `None` for
/// `Vary: *` (or an unreadable `Vary`), which no other request can match.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<header::HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().ok()?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = header::HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// The values `request` has for `names`, to be matched by later requests.
pub(crate) fn vary_values(names: &[header::HeaderName], request: &HeaderMap) -> HeaderMap {
    let mut values = HeaderMap::new();
    for name in names {
        for value in request.get_all(name) {
            values.append(name.clone(), value.clone());
        }
    }
    values
}

/// Whether `request` has the same values for `names` as `stored`, once
/// normalised as variant keys are (case and list spacing do not count).
pub(crate) fn vary_matches(names: &[header::HeaderName], stored: &HeaderMap, request: &HeaderMap) -> bool {
    names.iter().all(|name| {
        let (stored, asked) = (normalise(stored, name), normalise(request, name));
        stored.is_some() && stored == asked
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn cache_control_directives_are_case_insensitive_and_take_arguments() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "Public, S-MAXAGE=30"),
            ("cache-control", "private=\"x-user\""),
        ]));
        assert!(cc.public && cc.s_maxage && cc.private);
        assert!(!cc.no_store);
    }

    #[test]
    fn origin_freshness_prefers_s_maxage_then_max_age_then_expires_less_age() {
        let secs = |s| Some(Duration::from_secs(s));
        let of = |pairs: &[(&'static str, &'static str)]| OriginFreshness::of(&headers(pairs));
        assert_eq!(
            of(&[("cache-control", "max-age=60, s-maxage=30")]).fresh,
            secs(30)
        );
        assert_eq!(of(&[("cache-control", "max-age=60")]).fresh, secs(60));
        assert_eq!(
            of(&[("cache-control", "max-age=60"), ("age", "15")]).fresh,
            secs(45)
        );
        let expires = [
            ("date", "Tue, 01 Jan 2030 00:00:00 GMT"),
            ("expires", "Tue, 01 Jan 2030 00:02:00 GMT"),
        ];
        assert_eq!(of(&expires).fresh, secs(120));
        assert_eq!(of(&[("expires", "0")]).fresh, None, "unreadable: no say");
        assert_eq!(of(&[]).fresh, None);
        let rfc5861 = of(&[(
            "cache-control",
            "max-age=5, stale-while-revalidate=30, stale-if-error=600",
        )]);
        assert_eq!(
            (rfc5861.stale_while_revalidate, rfc5861.stale_if_error),
            (secs(30), secs(600))
        );
        assert!(!rfc5861.no_stale);
        assert!(of(&[("cache-control", "max-age=5, must-revalidate")]).no_stale);
        assert!(of(&[("cache-control", "s-maxage=5")]).no_stale);
    }

    #[test]
    fn unreadable_cache_control_counts_as_no_store() {
        let mut map = HeaderMap::new();
        map.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"public, \xff").expect("opaque bytes are a valid value"),
        );
        assert!(CacheControl::parse(&map).no_store);
    }

    #[test]
    fn personal_responses_are_not_shareable() {
        let check = |pairs: &[(&'static str, &'static str)], auth: bool| {
            let h = headers(pairs);
            shareable(&h, &CacheControl::parse(&h), auth)
        };
        assert_eq!(check(&[], false), Ok(()));
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
        assert_eq!(check(&[("cache-control", "public")], true), Ok(()));
        assert_eq!(check(&[("cache-control", "s-maxage=5")], true), Ok(()));
        assert_eq!(check(&[("cache-control", "must-revalidate")], true), Ok(()));
        assert_eq!(check(&[("vary", "accept, *")], false), Err(Private::VaryStar));
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
    fn storable_statuses_are_the_successful_heuristic_ones() {
        for s in [200, 203, 204] {
            assert!(status_is_storable(StatusCode::from_u16(s).expect("valid")), "{s}");
        }
        for s in [201, 206, 301, 304, 404, 500, 503] {
            assert!(
                !status_is_storable(StatusCode::from_u16(s).expect("valid")),
                "{s}"
            );
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

    #[test]
    fn vary_matches_only_the_same_values() {
        let response = headers(&[
            ("vary", "Accept-Encoding"),
            ("vary", "accept-language, accept-encoding"),
        ]);
        let names = vary_names(&response).expect("not *");
        assert_eq!(names.len(), 2);
        let leader = headers(&[("accept-encoding", "gzip"), ("accept-language", "en")]);
        let stored = vary_values(&names, &leader);
        assert!(vary_matches(&names, &stored, &leader));
        let other_language = headers(&[("accept-encoding", "gzip"), ("accept-language", "fr")]);
        assert!(!vary_matches(&names, &stored, &other_language));
        let no_language = headers(&[("accept-encoding", "gzip")]);
        assert!(!vary_matches(&names, &stored, &no_language));
        let shouting = headers(&[("accept-encoding", "GZIP"), ("accept-language", " EN")]);
        assert!(vary_matches(&names, &stored, &shouting), "normalised as keys are");
        assert!(vary_matches(&[], &HeaderMap::new(), &other_language));
    }
}

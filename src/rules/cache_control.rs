//! `Cache-Control` (RFC 9111 section 5.2) and what a response says of its
//! own freshness (section 4.2, RFC 5861).

use std::time::Duration;

use http::{HeaderMap, header};

/// The `Cache-Control` directives this layer acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) s_maxage: bool,
    pub(crate) must_revalidate: bool,
    /// `must-revalidate` for shared caches only: no stale serving, and,
    /// unlike `must-revalidate`, no permission to share (RFC 9111 3.5).
    pub(crate) proxy_revalidate: bool,
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
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    _ => {}
                }
            }
        }
        cc
    }

    /// RFC 9111 section 3.5: a response to a request with `Authorization` may
    /// be reused only when it says so explicitly: `public`, `s-maxage` or
    /// `must-revalidate` (not `proxy-revalidate`). Only `public` lets the
    /// layer's policy set its lifetime; see
    /// [`storable::shareable`](crate::rules::storable::shareable).
    pub(crate) fn allows_authorized(&self) -> bool {
        self.public || self.s_maxage || self.must_revalidate
    }

    /// The layer's own rule, stricter than RFC 9111's: a response to a
    /// request with a `Cookie` may be reused only when the origin says it
    /// is for everyone, with `public` or `s-maxage`.
    pub(crate) fn allows_cookie(&self) -> bool {
        self.public || self.s_maxage
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
            no_stale: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::rules::headers;

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
}

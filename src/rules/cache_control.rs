//! `Cache-Control` (RFC 9111 section 5.2), and targeted fields such as
//! `CDN-Cache-Control` (RFC 9213) read the same way.

use http::{HeaderMap, HeaderName, header};

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
    /// Request directives (RFC 9111 section 5.2.1).
    pub(crate) min_fresh: Option<u64>,
    pub(crate) max_stale: Option<u64>,
    pub(crate) only_if_cached: bool,
}

/// A directive's argument as written.
#[derive(Debug, Clone, Copy)]
enum Argument<'a> {
    Token(&'a str),
    Quoted(&'a str),
}

impl Argument<'_> {
    /// A number of seconds: digits only (a quoted one too, which RFC 9111
    /// lets recipients accept); too many saturate.
    fn seconds(self) -> Option<u64> {
        let (Self::Token(digits) | Self::Quoted(digits)) = self;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(digits.parse().unwrap_or(u64::MAX))
    }
}

/// The directives of one field value, as (name, argument): split at commas
/// outside quoted strings; a directive with whitespace around its `=` is
/// left out, as its name or argument would not be what it seems.
fn directives(value: &str) -> impl Iterator<Item = (&str, Option<Argument<'_>>)> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut quoted = false;
            let mut end = rest.len();
            for (i, b) in rest.bytes().enumerate() {
                match b {
                    b'"' => quoted = !quoted,
                    b',' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let directive = rest[..end].trim_matches([' ', '\t']);
            rest = rest.get(end + 1..).unwrap_or("");
            let parsed = match directive.split_once('=') {
                None if !directive.is_empty() => Some((directive, None)),
                None => None,
                Some((name, argument))
                    if name.ends_with([' ', '\t']) || argument.starts_with([' ', '\t']) =>
                {
                    None
                }
                Some((name, argument)) => match argument.strip_prefix('"') {
                    Some(inner) => inner
                        .strip_suffix('"')
                        .map(|inner| (name, Some(Argument::Quoted(inner)))),
                    None => Some((name, Some(Argument::Token(argument)))),
                },
            };
            if parsed.is_some() {
                return parsed;
            }
        }
    })
}

impl CacheControl {
    /// Reads every `Cache-Control` field in `headers`. Directive names are
    /// case-insensitive; a directive that does not parse (a space around
    /// its `=`, a number that is not one) is ignored, and a field that is
    /// not visible ASCII counts as `no-store`: an unreadable directive
    /// must not make a response more shareable.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                cc.no_store = true;
                continue;
            };
            for (name, argument) in directives(value) {
                cc.take(name, argument);
            }
        }
        cc
    }

    /// Reads a targeted field such as `CDN-Cache-Control` (RFC 9213), a
    /// structured dictionary: `None` when it is absent or does not parse
    /// as a whole (then `Cache-Control` decides), else its directives.
    pub(crate) fn parse_field(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        let mut cc = Self::default();
        let mut any = false;
        for value in headers.get_all(name) {
            for member in value.to_str().ok()?.split(',') {
                let member = member.trim_matches([' ', '\t']);
                let (name, argument) = match member.split_once('=') {
                    Some((name, argument)) => (name, Some(argument)),
                    None => (member, None),
                };
                let key = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.*".contains(&b));
                // A dictionary value here is a number or a token; a
                // string or anything else makes the whole field invalid.
                let value = argument.is_none_or(|a| {
                    !a.is_empty()
                        && a.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.*_/:".contains(&b))
                });
                if !key || !value {
                    return None;
                }
                cc.take(name, argument.map(Argument::Token));
                any = true;
            }
        }
        any.then_some(cc)
    }

    /// Records one directive; the first of a repeated one wins.
    fn take(&mut self, name: &str, argument: Option<Argument<'_>>) {
        let seconds = argument.and_then(Argument::seconds);
        match name.to_ascii_lowercase().as_str() {
            "max-age" => self.max_age = self.max_age.or(seconds),
            "s-maxage" => {
                self.s_maxage = true;
                self.s_maxage_secs = self.s_maxage_secs.or(seconds);
            }
            "stale-while-revalidate" => self.stale_while_revalidate = self.stale_while_revalidate.or(seconds),
            "stale-if-error" => self.stale_if_error = self.stale_if_error.or(seconds),
            "min-fresh" => self.min_fresh = self.min_fresh.or(seconds),
            // Without a number: any staleness will do.
            "max-stale" => self.max_stale = self.max_stale.or(Some(seconds.unwrap_or(u64::MAX))),
            "only-if-cached" => self.only_if_cached = true,
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            _ => {}
        }
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
    fn directives_parse_as_rfc_9111_reads_them() {
        let max_age =
            |value: &'static str| CacheControl::parse(&headers(&[("cache-control", value)])).max_age;
        assert_eq!(max_age("max-age=1800, max-age=1"), Some(1800), "the first wins");
        assert_eq!(max_age("max-age=\"3600\""), Some(3600), "quoted");
        assert_eq!(max_age("max-age=003600"), Some(3600));
        assert_eq!(max_age("extension=\"max-age=3600\", max-age=1"), Some(1));
        assert_eq!(
            max_age("extension=\"a, max-age=3600\", max-age=1"),
            Some(1),
            "commas in quotes"
        );
        for invalid in [
            "max-age =3600",
            "max-age= 3600",
            "max-age='3600'",
            "max-age=3600.5",
            "max-age=-1",
        ] {
            assert_eq!(max_age(invalid), None, "{invalid}");
        }
        assert_eq!(max_age("max-age=99999999999999999999999"), Some(u64::MAX));
        let request = CacheControl::parse(&headers(&[(
            "cache-control",
            "min-fresh=10, max-stale, only-if-cached",
        )]));
        assert_eq!(
            (request.min_fresh, request.max_stale, request.only_if_cached),
            (Some(10), Some(u64::MAX), true)
        );
        let bounded = CacheControl::parse(&headers(&[("cache-control", "max-stale=5")]));
        assert_eq!(bounded.max_stale, Some(5));
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

//! What a response says of its own freshness (RFC 9111 section 4.2, RFC
//! 5861, RFC 9213), and how old it already was when it arrived (section
//! 4.2.3).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::cache_control::CacheControl;

/// The most a heuristic lifetime may be, whatever `Last-Modified` says.
const HEURISTIC_CAP: Duration = Duration::from_secs(24 * 60 * 60);

/// `Age` values at or past this are taken as this (RFC 9111 section 1.2.2).
const AGE_CAP: u64 = 1 << 31;

/// When the request that brought a response left, and when its answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub(crate) sent: SystemTime,
    pub(crate) received: SystemTime,
}

/// What a response's own headers say about how long it may be reused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OriginFreshness {
    /// The explicit lifetime (the targeted field's `max-age`, else
    /// `s-maxage`, else `max-age`, else `Expires` less `Date`) less the
    /// age the response already had.
    pub(crate) fresh: Option<Duration>,
    /// Where there is no explicit lifetime and the status allows it, a
    /// tenth of the time since `Last-Modified` (at most a day), less the
    /// age the response already had (section 4.2.2).
    pub(crate) heuristic: Option<Duration>,
    /// How old the response was when it arrived: `corrected_initial_age`.
    pub(crate) age: Duration,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served
    /// stale by a shared cache.
    pub(crate) no_stale: bool,
    /// `no-cache`: stored, but validated before every reuse.
    pub(crate) revalidate: bool,
    /// Whether it has a validator (`ETag` or `Last-Modified`) to be
    /// revalidated with.
    pub(crate) validator: bool,
}

impl OriginFreshness {
    /// What `headers` say, with no exchange times (so no heuristic, and
    /// an `Expires` without `Date` gives nothing) and no targeted field.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        Self::at(headers, StatusCode::OK, None, &[])
    }

    /// What a response with `status` and `headers`, received in
    /// `exchange`, says; `targeted` are the fields (RFC 9213) whose
    /// directives replace those of `Cache-Control`: the first that parses.
    pub(crate) fn at(
        headers: &HeaderMap,
        status: StatusCode,
        exchange: Option<Exchange>,
        targeted: &[HeaderName],
    ) -> Self {
        let received = exchange.map(|e| e.received);
        let plain = CacheControl::parse(headers);
        let (cc, from_target) = match targeted
            .iter()
            .find_map(|name| CacheControl::parse_field(headers, name))
        {
            Some(cc) => (cc, true),
            None => (plain, false),
        };
        let age = initial_age(headers, exchange);
        let explicit = if from_target {
            cc.max_age.map(Duration::from_secs)
        } else {
            cc.s_maxage_secs
                .or(cc.max_age)
                .map(Duration::from_secs)
                .or_else(|| expires(headers, received))
        };
        let validator = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
        let heuristic = match explicit {
            None if heuristic_status(status) => received.and_then(|at| heuristic(headers, at)),
            _ => None,
        };
        Self {
            fresh: explicit.map(|fresh| fresh.saturating_sub(age)),
            heuristic: heuristic.map(|fresh| fresh.saturating_sub(age)),
            age,
            stale_while_revalidate: cc.stale_while_revalidate.map(Duration::from_secs),
            stale_if_error: cc.stale_if_error.map(Duration::from_secs),
            no_stale: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage,
            revalidate: cc.no_cache || plain.no_cache,
            validator,
        }
    }
}

fn date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// `Expires` less `Date` (or less `received`, the time it arrived, when
/// there is no `Date`). An `Expires` that cannot be read, or that is there
/// twice, means already expired (RFC 9111 section 5.3).
fn expires(headers: &HeaderMap, received: Option<SystemTime>) -> Option<Duration> {
    if !headers.contains_key(header::EXPIRES) {
        return None;
    }
    let Some(expires) = date(headers, header::EXPIRES) else {
        return Some(Duration::ZERO);
    };
    let since = date(headers, header::DATE).or(received).unwrap_or(expires);
    Some(expires.duration_since(since).unwrap_or_default())
}

/// A tenth of `Date` (or `received`) less `Last-Modified`, capped.
fn heuristic(headers: &HeaderMap, received: SystemTime) -> Option<Duration> {
    let modified = date(headers, header::LAST_MODIFIED)?;
    let now = date(headers, header::DATE).unwrap_or(received);
    let since = now.duration_since(modified).ok()?;
    Some((since / 10).min(HEURISTIC_CAP))
}

/// The statuses RFC 9110 section 15.1 calls heuristically cacheable.
fn heuristic_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The first value of the `Age` field (its first line's first member,
/// parameters dropped), if it is a number of seconds; huge values are
/// capped. Anything else is no `Age` at all.
pub(crate) fn age_value(headers: &HeaderMap) -> Option<u64> {
    let first = headers.get(header::AGE).map(HeaderValue::to_str)?.ok()?;
    let member = first.split(',').next()?;
    let digits = member.split(';').next()?.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse::<u64>().map_or(AGE_CAP, |age| age.min(AGE_CAP)))
}

/// RFC 9111 section 4.2.3: the larger of the age `Date` shows and the
/// origin's (or an upstream cache's) `Age` plus the time the request took.
fn initial_age(headers: &HeaderMap, exchange: Option<Exchange>) -> Duration {
    let Some(exchange) = exchange else {
        return age_value(headers).map_or(Duration::ZERO, Duration::from_secs);
    };
    let apparent = date(headers, header::DATE)
        .and_then(|date| exchange.received.duration_since(date).ok())
        .unwrap_or_default();
    let delay = exchange
        .received
        .duration_since(exchange.sent)
        .unwrap_or_default();
    let corrected = age_value(headers).map_or(Duration::ZERO, |age| Duration::from_secs(age) + delay);
    apparent.max(corrected)
}

#[cfg(test)]
mod tests;

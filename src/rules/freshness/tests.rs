//! Unit tests of `freshness`: the lifetime a response gives itself and the
//! age it arrives with, at fixed exchange times.

use std::time::{Duration, SystemTime};

use http::{HeaderName, StatusCode};

use super::*;
use crate::rules::headers;

/// 2030-01-01T00:00:00Z, the `Date` the tests' responses carry.
const DATE: &str = "Tue, 01 Jan 2030 00:00:00 GMT";

fn at_date(secs: u64) -> SystemTime {
    httpdate::parse_http_date(DATE).expect("a date") + Duration::from_secs(secs)
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

/// Sent `sent` and received `received` seconds after `DATE`.
fn exchange(sent: u64, received: u64) -> Option<Exchange> {
    Some(Exchange {
        sent: at_date(sent),
        received: at_date(received),
    })
}

fn with(pairs: &[(&'static str, &'static str)], exchange: Option<Exchange>) -> OriginFreshness {
    OriginFreshness::at(&headers(pairs), StatusCode::OK, exchange, &[])
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
    assert_eq!(
        of(&[("expires", "0")]).fresh,
        secs(0),
        "unreadable: already expired"
    );
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
fn the_initial_age_is_the_larger_of_date_and_age_plus_the_delay() {
    // Section 4.2.3: apparent age 10 s (received 10 s after Date); Age 3
    // plus a 2 s exchange is 5 s: the larger counts.
    let dated = [("cache-control", "max-age=60"), ("date", DATE), ("age", "3")];
    let origin = with(&dated, exchange(8, 10));
    assert_eq!(origin.age, Duration::from_secs(10));
    assert_eq!(origin.fresh, secs(50));
    // Age 30 plus a 2 s exchange beats a Date 10 s old: Age is added to,
    // not dropped.
    let aged = [("cache-control", "max-age=60"), ("date", DATE), ("age", "30")];
    assert_eq!(with(&aged, exchange(8, 10)).age, Duration::from_secs(32));
    // A Date in the future shows no age.
    assert_eq!(with(&dated, exchange(0, 0)).age, Duration::from_secs(3));
    // Older than its lifetime on arrival: nothing left.
    let old = [("cache-control", "max-age=60"), ("age", "90")];
    assert_eq!(with(&old, exchange(0, 0)).fresh, secs(0));
}

#[test]
fn age_takes_the_first_number_and_caps_it() {
    let age = |value: &'static str| age_value(&headers(&[("age", value)]));
    assert_eq!(age("7200"), Some(7200));
    assert_eq!(age("0, 7200"), Some(0));
    assert_eq!(age("7200, 0"), Some(7200));
    assert_eq!(age("7200;foo=bar"), Some(7200));
    assert_eq!(age("99999999999999999999"), Some(AGE_CAP));
    for invalid in ["abc", "-7200", "7200.0", ""] {
        assert_eq!(age(invalid), None, "{invalid:?}");
    }
    let two_lines = headers(&[("age", "0"), ("age", "7200")]);
    assert_eq!(age_value(&two_lines), Some(0), "the first line counts");
}

#[test]
fn an_unreadable_or_repeated_expires_is_already_expired() {
    for expires in [
        "0",
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 50 02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",
    ] {
        let headers = headers(&[("date", DATE), ("expires", expires)]);
        let origin = OriginFreshness::at(&headers, StatusCode::OK, exchange(0, 0), &[]);
        assert_eq!(origin.fresh, secs(0), "{expires}");
    }
    let twice = [
        ("date", DATE),
        ("expires", "Thu, 18 Aug 2050 02:01:18 GMT"),
        ("expires", "Thu, 18 Aug 2050 02:01:19 GMT"),
    ];
    assert_eq!(with(&twice, exchange(0, 0)).fresh, secs(0));
    // Without Date, Expires counts from the time the response came.
    let undated = [("expires", "Tue, 01 Jan 2030 00:01:00 GMT")];
    assert_eq!(with(&undated, exchange(0, 20)).fresh, secs(40));
}

#[test]
fn heuristic_freshness_only_without_explicit_freshness_and_for_some_statuses() {
    let modified = [("date", DATE), ("last-modified", "Mon, 31 Dec 2029 23:00:00 GMT")];
    let origin = with(&modified, exchange(0, 0));
    assert_eq!(
        (origin.fresh, origin.heuristic),
        (None, secs(360)),
        "a tenth of an hour"
    );
    assert!(origin.validator);
    let explicit = [
        ("date", DATE),
        ("last-modified", "Mon, 31 Dec 2029 23:00:00 GMT"),
        ("cache-control", "max-age=5"),
    ];
    assert_eq!(with(&explicit, exchange(0, 0)).heuristic, None);
    let of_status = |status| OriginFreshness::at(&headers(&modified), status, exchange(0, 0), &[]).heuristic;
    assert_eq!(of_status(StatusCode::NOT_FOUND), secs(360));
    assert_eq!(
        of_status(StatusCode::FOUND),
        None,
        "302 is not heuristically cacheable"
    );
    assert_eq!(of_status(StatusCode::INTERNAL_SERVER_ERROR), None);
    let ancient = [("date", DATE), ("last-modified", "Mon, 01 Jan 1990 00:00:00 GMT")];
    assert_eq!(with(&ancient, exchange(0, 0)).heuristic, Some(HEURISTIC_CAP));
    assert_eq!(with(&modified, None).heuristic, None, "no exchange, no guess");
}

#[test]
fn no_cache_and_validators_are_reported() {
    let origin = with(
        &[("cache-control", "no-cache, max-age=60"), ("etag", "\"v1\"")],
        None,
    );
    assert!(origin.revalidate && origin.validator);
    assert!(!with(&[("cache-control", "max-age=60")], None).validator);
}

#[test]
fn a_targeted_field_replaces_cache_control_when_it_parses() {
    let cdn = HeaderName::from_static("cdn-cache-control");
    let of = |pairs: &[(&'static str, &'static str)]| {
        OriginFreshness::at(
            &headers(pairs),
            StatusCode::OK,
            exchange(0, 0),
            std::slice::from_ref(&cdn),
        )
    };
    assert_eq!(
        of(&[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", "max-age=1")
        ])
        .fresh,
        secs(1)
    );
    assert_eq!(
        of(&[
            ("cdn-cache-control", "max-age=0"),
            ("expires", "Thu, 18 Aug 2050 02:01:18 GMT")
        ])
        .fresh,
        secs(0),
        "Expires is Cache-Control's business"
    );
    assert_eq!(of(&[("cdn-cache-control", "foobar, max-age=60")]).fresh, secs(60));
    assert!(of(&[("cdn-cache-control", "no-cache"), ("cache-control", "max-age=60")]).revalidate);
    // Not a dictionary of numbers and tokens: Cache-Control decides.
    for invalid in ["max-age=\"60\"", "max-age=60, &&&", "max-age =60", "max-age= 60"] {
        let origin = of(&[("cdn-cache-control", invalid), ("cache-control", "max-age=5")]);
        assert_eq!(origin.fresh, secs(5), "{invalid}");
    }
    // The shared Cache-Control reading ignores the targeted field.
    assert_eq!(
        OriginFreshness::of(&headers(&[
            ("cdn-cache-control", "max-age=1"),
            ("cache-control", "max-age=9")
        ]))
        .fresh,
        secs(9)
    );
}

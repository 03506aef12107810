//! Unit tests of `policy`.

use super::*;

const T0: SystemTime = SystemTime::UNIX_EPOCH;
/// A response that says nothing about its freshness.
const SILENT: OriginFreshness = OriginFreshness {
    fresh: None,
    heuristic: None,
    age: Duration::ZERO,
    stale_while_revalidate: None,
    stale_if_error: None,
    no_stale: false,
    revalidate: false,
    validator: false,
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
        ..SILENT
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

#[test]
fn the_origin_policy_takes_the_response_s_own_lifetime_capped() {
    let policy = Policy::origin(secs(3600));
    let with = |o: OriginFreshness| policy.lifetime(T0, 0.0, &o);
    let fresh = |s| OriginFreshness {
        fresh: Some(secs(s)),
        ..SILENT
    };
    assert_eq!(with(fresh(60)).map(|l| l.fresh_until), Some(T0 + secs(60)));
    assert_eq!(
        with(fresh(86_400)).map(|l| l.fresh_until),
        Some(T0 + secs(3600)),
        "max caps it"
    );
    let heuristic = OriginFreshness {
        heuristic: Some(secs(90)),
        ..SILENT
    };
    assert_eq!(with(heuristic).map(|l| l.fresh_until), Some(T0 + secs(90)));
    assert_eq!(with(SILENT), None, "no lifetime, no validator: not stored");
    let validated = OriginFreshness {
        validator: true,
        ..SILENT
    };
    let kept = with(validated).expect("stored to be revalidated");
    assert_eq!(kept.fresh_until, T0, "fresh for no time");
    assert_eq!(policy.keep_for(&kept, T0, &validated), secs(3600), "kept for max");
    assert_eq!(policy.keep_for(&kept, T0, &SILENT), secs(0));
    let no_cache = OriginFreshness {
        revalidate: true,
        ..fresh(60)
    };
    assert_eq!(with(no_cache), None, "no-cache and no validator");
    let no_cache = OriginFreshness {
        validator: true,
        ..no_cache
    };
    assert_eq!(
        with(no_cache).map(|l| l.fresh_until),
        Some(T0),
        "validated before each use"
    );
}

#[test]
fn the_origin_policy_serves_stale_as_the_response_says() {
    let policy = Policy::origin(secs(3600)).stale_if_error(secs(30));
    let origin = OriginFreshness {
        fresh: Some(secs(60)),
        stale_while_revalidate: Some(secs(20)),
        ..SILENT
    };
    let lifetime = policy.lifetime(T0, 0.0, &origin).expect("stored");
    assert_eq!(
        (lifetime.stale_until, lifetime.error_until),
        (T0 + secs(80), T0 + secs(90)),
        "the policy's stale-if-error where the response says none"
    );
    let decide = |at| policy.decide(lifetime, secs(1), at, || 0.0);
    assert_eq!(decide(T0 + secs(59)), Decision::Fresh { ttl: secs(1) });
    assert_eq!(decide(T0 + secs(70)), Decision::Stale { late: secs(10) });
    assert_eq!(decide(T0 + secs(80)), Decision::Expired);
    let own_error = OriginFreshness {
        stale_if_error: Some(secs(5)),
        ..origin
    };
    let lifetime = policy.lifetime(T0, 0.0, &own_error).expect("stored");
    assert_eq!(
        lifetime.error_until,
        T0 + secs(80),
        "the response's own, within the stale window"
    );
    let strict = OriginFreshness {
        no_stale: true,
        ..own_error
    };
    let lifetime = policy.lifetime(T0, 0.0, &strict).expect("stored");
    assert_eq!(
        (lifetime.stale_until, lifetime.error_until),
        (T0 + secs(60), T0 + secs(60))
    );
}

#[test]
fn xfetch_layers_on_the_origin_policy_only_when_asked() {
    let origin = OriginFreshness {
        fresh: Some(secs(60)),
        ..SILENT
    };
    let plain = Policy::origin(secs(3600));
    let lifetime = plain.lifetime(T0, 0.0, &origin).expect("stored");
    let draws = std::cell::Cell::new(0);
    let draw = || {
        draws.set(draws.get() + 1);
        0.999
    };
    assert_eq!(
        plain.decide(lifetime, secs(10), T0 + secs(59), draw),
        Decision::Fresh { ttl: secs(1) }
    );
    assert_eq!(draws.get(), 0, "beta 0 draws nothing");
    let early = Policy::origin(secs(3600)).beta(1.0);
    assert_eq!(
        early.decide(lifetime, secs(10), T0 + secs(59), draw),
        Decision::RefreshEarly { ttl: secs(1) }
    );
}

#[test]
fn targeted_fields_come_before_cdn_cache_control_on_the_origin_policy_only() {
    let acme = http::HeaderName::from_static("acme-cache-control");
    let policy = Policy::origin(secs(60)).targeted(acme.clone());
    let names: Vec<_> = policy
        .targeted_fields()
        .iter()
        .map(http::HeaderName::as_str)
        .collect();
    assert_eq!(names, ["acme-cache-control", "cdn-cache-control"]);
    assert!(Policy::ttl(secs(60)).targeted(acme).targeted_fields().is_empty());
    assert!(Policy::origin(secs(60)).follows_origin());
    assert!(!Policy::ttl(secs(60)).follows_origin());
}

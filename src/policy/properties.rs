//! Properties of the decisions over generated lifetimes, times and draws
//! (proptest).

use proptest::prelude::*;

use super::*;
use crate::rules::freshness::OriginFreshness;

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn policies() -> impl Strategy<Value = Policy> {
    let secs = 1u64..3600;
    prop_oneof![
        secs.clone().prop_map(|s| Policy::ttl(Duration::from_secs(s))),
        (secs.clone(), 0.1f64..4.0).prop_map(|(s, beta)| Policy::xfetch(Duration::from_secs(s)).beta(beta)),
        (secs, 0u64..3600).prop_map(|(s, more)| Policy::stale_while_revalidate(
            Duration::from_secs(s),
            Duration::from_secs(s + more)
        )),
    ]
}

proptest! {
    #![proptest_config(crate::rules::proptest_config())]

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

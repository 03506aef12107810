//! Properties over generated entries and bytes (proptest).

use proptest::{collection::vec, prelude::*};

use super::*;

fn header_map() -> impl Strategy<Value = HeaderMap> {
    vec(("[a-z][a-z0-9-]{0,15}", "[ -~]{0,40}"), 0..8).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("token");
            map.append(name, HeaderValue::from_str(value.trim()).expect("visible ascii"));
        }
        map
    })
}

prop_compose! {
    fn entries()(
        status in 200u16..600,
        headers in header_map(),
        body in vec(any::<u8>(), 0..4096),
        trailers in proptest::option::of(header_map()),
        vary_values in header_map(),
        stored_ms in 0u64..4_000_000_000_000,
        fresh_ms in 0u64..10_000_000,
        stale_ms in 0u64..10_000_000,
        error_ms in 0u64..10_000_000,
        recompute_us in 0u64..100_000_000,
    ) -> Entry {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(stored_ms);
        let fresh_until = at + Duration::from_millis(fresh_ms);
        let stale_until = fresh_until + Duration::from_millis(stale_ms);
        let vary = vary_values.keys().cloned().collect();
        Entry::new(
            StatusCode::from_u16(status).expect("in range"),
            headers,
            Bytes::from(body),
            trailers,
            (vary, vary_values),
            at,
            Lifetime { fresh_until, stale_until, error_until: stale_until + Duration::from_millis(error_ms) },
            Duration::from_micros(recompute_us),
        )
    }
}

proptest! {
    #![proptest_config(crate::rules::proptest_config())]

    #[test]
    fn every_entry_survives_the_round_trip(entry in entries()) {
        let back = Entry::decode(entry.encode()).expect("own encoding decodes");
        prop_assert_eq!(back.status, entry.status);
        prop_assert_eq!(&back.headers, &entry.headers);
        prop_assert_eq!(&back.body, &entry.body);
        prop_assert_eq!(&back.trailers, &entry.trailers);
        prop_assert_eq!(&back.vary, &entry.vary);
        prop_assert_eq!(&back.vary_values, &entry.vary_values);
        prop_assert_eq!(back.stored_at, entry.stored_at);
        prop_assert_eq!(back.lifetime, entry.lifetime);
        prop_assert_eq!(back.recompute, entry.recompute);
    }

    #[test]
    fn bytes_that_are_not_an_entry_are_an_error_not_a_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = Entry::decode(Bytes::from(bytes));
    }

    #[test]
    fn a_flipped_byte_never_panics_and_a_truncation_is_an_error(
        entry in entries(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let encoded = entry.encode().to_vec();
        let i = at.index(encoded.len());
        let mut flipped = encoded.clone();
        flipped[i] ^= flip;
        let _ = Entry::decode(Bytes::from(flipped));
        prop_assert!(Entry::decode(Bytes::copy_from_slice(&encoded[..i])).is_err());
    }
}

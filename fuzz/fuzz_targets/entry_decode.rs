//! The stored-entry decoder on arbitrary bytes: an error or an entry, never
//! a panic; and an entry it accepts encodes back to bytes it decodes the
//! same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tower_stampede::Entry;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::decode(Bytes::copy_from_slice(data)) {
        let again = Entry::decode(entry.encode()).expect("an accepted entry round-trips");
        assert_eq!(again.status(), entry.status());
        assert_eq!(again.headers(), entry.headers());
        assert_eq!(again.body(), entry.body());
        assert_eq!(again.trailers(), entry.trailers());
    }
});

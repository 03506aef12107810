//! Unit tests of the Redis store.

use super::{commands::token_arg, tags::write_allowed, *};
use crate::store::LockToken;

#[test]
fn keys_are_hash_tagged_and_escaped() {
    let store = RedisStore::from_url("redis://127.0.0.1:1").expect("valid url");
    assert_eq!(
        store.entry_key("GET a.example/x?y=1"),
        "stampede:{GET a.example/x?y=1}"
    );
    assert_eq!(store.lock_key("GET /"), "stampede:lock:{GET /}");
    assert_eq!(store.entry_key("GET /{id}%"), "stampede:{GET /%7Bid%7D%25}");
    assert_ne!(tag("a%7Bb"), tag("a{b"));
    assert_eq!(
        store.lock_key(""),
        "stampede:lock:{%}",
        "an empty tag would not be a tag"
    );
    assert_ne!(tag(""), tag("%"));
    assert_eq!(store.clone().prefix("{app}:").entry_key("k"), "%7Bapp%7D:{k}");
    let other = store.prefix("app:");
    assert_eq!(other.lock_key("k"), "app:lock:{k}");
}

#[test]
fn a_bad_url_is_a_clear_error_and_no_redis_is_needed() {
    let error = RedisStore::from_url("http://127.0.0.1")
        .map(|_| ())
        .expect_err("not redis");
    assert!(
        error.to_string().starts_with("invalid store configuration"),
        "{error}"
    );
    assert!(RedisStore::from_url("redis://127.0.0.1:1/0").is_ok());
}

#[test]
fn tokens_are_fixed_width_hex() {
    assert_eq!(
        token_arg(&LockToken::new(255)),
        "000000000000000000000000000000ff"
    );
}

#[test]
fn a_write_goes_ahead_only_when_no_tag_was_purged_since_its_lock() {
    let granted = Some(1_000_000);
    let now = 1_000_500;
    assert!(write_allowed(granted, [].into_iter(), now));
    assert!(
        write_allowed(granted, [999_999, 10].into_iter(), now),
        "purges before"
    );
    assert!(
        !write_allowed(granted, [10, 1_000_000].into_iter(), now),
        "same ms is after"
    );
    assert!(!write_allowed(granted, [1_000_200].into_iter(), now));
    let late = 1_000_000 + 2 * 60 * 1000;
    assert!(
        !write_allowed(granted, [].into_iter(), late),
        "purges may be forgotten"
    );
    assert!(write_allowed(None, [].into_iter(), now));
    assert!(
        !write_allowed(None, [1].into_iter(), now),
        "unknown grant: any purge"
    );
}

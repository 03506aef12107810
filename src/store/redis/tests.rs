//! Unit tests of the Redis store.

use super::{commands::token_arg, *};
use crate::store::LockToken;

#[test]
fn keys_are_hash_tagged_and_escaped() {
    let store = RedisStore::from_url("redis://127.0.0.1:1").expect("valid url");
    assert_eq!(
        store.entry_key("GET a.example/x?y=1"),
        "stampede:{GET a.example/x?y=1}"
    );
    assert_eq!(store.lock_key("GET /"), "stampede:{GET /}:lock");
    assert_eq!(store.entry_key("GET /{id}%"), "stampede:{GET /%7Bid%7D%25}");
    assert_ne!(tag("a%7Bb"), tag("a{b"));
    assert_eq!(
        store.lock_key(""),
        "stampede:{%}:lock",
        "an empty tag would not be a tag"
    );
    assert_ne!(tag(""), tag("%"));
    assert_eq!(store.clone().prefix("{app}:").entry_key("k"), "%7Bapp%7D:{k}");
    let other = store.prefix("app:");
    assert_eq!(other.lock_key("k"), "app:{k}:lock");
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

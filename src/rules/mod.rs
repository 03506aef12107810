//! The rules a shared HTTP cache follows (RFC 9110, 9111, 9211, 5861) and
//! those of gRPC, as pure functions: no I/O, no clock, no runtime. Each file
//! answers one question the request path asks.
//!
//! | file | question |
//! | --- | --- |
//! | `fields` | which of the fields the rules read does a request carry? |
//! | `storable` | may this request use the cache; may this response be stored and shared? |
//! | `target` | can the cache tell from the head what a request asks for? |
//! | `cache_control` | what do `Cache-Control` and targeted fields say? |
//! | `freshness` | how long is a response fresh, and how old was it when it came? |
//! | `vary` | does a request match what a response varies on? |
//! | `conditional` | `HEAD` and `If-None-Match` / `If-Modified-Since`, answered from a `GET` |
//! | `hop` | which fields belong to one connection, not to what is stored? |
//! | `grpc` | did a gRPC call succeed, fail on the server, or not say? |
//! | `status` | the `Cache-Status` and `Age` a response carries |

pub(crate) mod cache_control;
pub(crate) mod conditional;
pub(crate) mod fields;
pub(crate) mod freshness;
pub(crate) mod grpc;
pub(crate) mod hop;
pub(crate) mod status;
pub(crate) mod storable;
pub(crate) mod target;
pub(crate) mod vary;

/// A header map from name-value pairs, for the rules' table tests.
#[cfg(test)]
pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, http::HeaderValue::from_static(value));
    }
    map
}

/// The property tests' settings: a failing case is written to
/// `proptest-regressions/` beside the crate (kept in git), and replayed
/// first on every later run, so that a failure found once is never lost.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}

//! Route patterns from outside the code: `try_route` accepts exactly the
//! patterns the rules allow (a leading `/`, a `*` only in a final `/*`) and
//! never panics; its error names the pattern.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

static LAYER: LazyLock<StampedeLayer<MemoryStore>> = LazyLock::new(|| StampedeLayer::new(MemoryStore::new()));

fuzz_target!(|data: &[u8]| {
    let Ok(pattern) = std::str::from_utf8(data) else {
        return;
    };
    let valid = pattern.starts_with('/')
        && match pattern.strip_suffix("/*") {
            Some(prefix) => !prefix.contains('*'),
            None => !pattern.contains('*'),
        };
    match LAYER.clone().try_route(pattern, Policy::bypass()) {
        Ok(_) => assert!(valid, "accepted {pattern:?}"),
        Err(error) => {
            assert!(!valid, "refused {pattern:?}: {error}");
            assert!(error.to_string().starts_with("invalid route pattern"));
        }
    }
});

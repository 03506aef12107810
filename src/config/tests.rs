use std::time::Duration;

use http::{HeaderName, Request};

use super::*;
use crate::{MemoryStore, StampedeLayer};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Every kind of policy with every option it takes, as code writes it, and
/// as TOML and JSON write it.
fn policies() -> Vec<(Policy, &'static str, &'static str)> {
    vec![
        (
            Policy::ttl(secs(60)),
            r#"kind = "ttl"
ttl = "60s""#,
            r#"{"kind": "ttl", "ttl": "60s"}"#,
        ),
        (
            Policy::ttl(secs(5))
                .stale_if_error(secs(30))
                .jitter(0.25)
                .respect_origin(),
            r#"kind = "ttl"
ttl = "5s"
stale_if_error = "30s"
jitter = 0.25
respect_origin = true"#,
            r#"{"kind": "ttl", "ttl": "5s", "stale_if_error": "30s", "jitter": 0.25, "respect_origin": true}"#,
        ),
        (
            Policy::xfetch(Duration::from_millis(1500)).beta(2.0),
            r#"kind = "xfetch"
ttl = "1s500ms"
beta = 2.0"#,
            r#"{"kind": "xfetch", "ttl": "1s500ms", "beta": 2.0}"#,
        ),
        (
            Policy::stale_while_revalidate(secs(50), secs(120)).stale_if_error(secs(300)),
            r#"kind = "swr"
fresh = "50s"
gone = "2m"
stale_if_error = "5m""#,
            r#"{"kind": "swr", "fresh": "50s", "gone": "2m", "stale_if_error": "5m"}"#,
        ),
        (
            Policy::origin(secs(86_400))
                .beta(1.0)
                .targeted(HeaderName::from_static("b-cache-control"))
                .targeted(HeaderName::from_static("a-cache-control")),
            r#"kind = "origin"
max = "1d"
beta = 1.0
targeted = ["a-cache-control", "b-cache-control"]"#,
            r#"{"kind": "origin", "max": "1d", "beta": 1.0, "targeted": ["a-cache-control", "b-cache-control"]}"#,
        ),
        (Policy::bypass(), r#"kind = "bypass""#, r#"{"kind": "bypass"}"#),
    ]
}

#[test]
fn every_policy_in_code_equals_the_one_read_from_toml_and_from_json() {
    for (policy, toml_text, json_text) in policies() {
        let from_toml = Config::from_toml(&format!("policy = {{ {} }}", toml_text.replace('\n', ", ")))
            .expect(toml_text)
            .policy;
        assert_eq!(from_toml.as_ref(), Some(&policy), "{toml_text}");
        let from_json = Config::from_json(&format!(r#"{{"policy": {json_text}}}"#))
            .expect(json_text)
            .policy;
        assert_eq!(from_json.as_ref(), Some(&policy), "{json_text}");
        // And what code writes reads back as it was.
        let config = Config {
            policy: Some(policy.clone()),
            ..Config::default()
        };
        assert_eq!(
            Config::from_toml(&config.to_toml().expect("written")),
            Ok(config),
            "{toml_text}"
        );
    }
}

/// A file that gives every setting of the layer, and the builder calls
/// that give the same.
const EVERY_SETTING: &str = r#"
policy = { kind = "ttl", ttl = "30s" }
key = { headers = ["x-tenant"], without_query = true }
max_body_bytes = "1MiB"
max_body_wait = "10s"
max_buffered_bytes = 33554432
max_request_bytes = "16KiB"
fallback_max_bytes = "8MiB"
max_waiters = 500
max_refreshes = 8
store_timeout = "100ms"
store_retry_after = "2s"
lock_ttl = "5s"
lock_wait = "15s"
pass_for = "1m"
honor_no_cache = true
tag_header = "x-cache-tags"

[[routes]]
path = "/api/popular-posts"
policy = { kind = "swr", fresh = "50s", gone = "2m" }

[[routes]]
path = "/admin/*"
policy = { kind = "bypass" }

[[routes]]
path = "/docs/*"
key = { cookies = ["lang"] }
ignore_cookies = true

[[routes]]
path = "/graphql"
cache_posts = true
"#;

type Reading = StampedeLayer<
    MemoryStore,
    crate::Replay<fn(crate::StampedeBody<axum::body::Body>) -> axum::body::Body, axum::body::Body>,
>;

fn reading() -> Reading {
    let replay: fn(crate::StampedeBody<axum::body::Body>) -> axum::body::Body = axum::body::Body::new;
    StampedeLayer::new(MemoryStore::new()).replay_requests(replay)
}

fn built_in_code() -> Reading {
    reading()
        .policy(Policy::ttl(secs(30)))
        .key(DefaultKey::new().with_header("x-tenant").without_query())
        .route(
            "/api/popular-posts",
            Policy::stale_while_revalidate(secs(50), secs(120)),
        )
        .route("/admin/*", Policy::bypass())
        .route_key("/docs/*", DefaultKey::new().with_cookie("lang"))
        .ignore_cookies("/docs/*")
        .cache_posts("/graphql")
        .max_body_bytes(1 << 20)
        .max_body_wait(secs(10))
        .max_buffered_bytes(32 << 20)
        .max_request_bytes(16 << 10)
        .fallback_max_bytes(8 << 20)
        .max_waiters(500)
        .max_refreshes(8)
        .store_timeout(Duration::from_millis(100))
        .store_retry_after(secs(2))
        .lock_ttl(secs(5))
        .lock_wait(secs(15))
        .pass_for(secs(60))
        .honor_no_cache(true)
        .tag_header(Some(HeaderName::from_static("x-cache-tags")))
}

/// What a layer's settings decide, in a form two layers can be compared by.
fn settings<R>(layer: &StampedeLayer<MemoryStore, R>) -> String {
    let config = &layer.shared.config;
    let key = |path: &str| {
        let request = Request::get(path)
            .header("host", "a")
            .header("x-tenant", "t")
            .header("cookie", "lang=en");
        config.keys.make(&request.body(()).expect("valid").into_parts().0)
    };
    format!(
        "{:?}",
        (
            (
                &config.policy,
                &config.routes,
                &config.reads,
                &config.ignore_cookies
            ),
            (key("/x?q=1"), key("/docs/a?q=1")),
            (
                config.max_body_bytes,
                config.max_request_bytes,
                config.max_body_wait
            ),
            (
                config.store_timeout,
                config.lock_ttl,
                config.lock_wait,
                config.store_retry_after
            ),
            (
                config.pass_for,
                &config.tag_header,
                config.honor_no_cache,
                config.max_waiters
            ),
            (
                config.refreshes.available_permits(),
                layer.buffered_bytes(),
                config.fallback.max_bytes()
            ),
        )
    )
}

#[test]
fn every_setting_in_a_file_equals_the_builder_call_of_its_name() {
    let code = settings(&built_in_code());
    let from_toml = Config::from_toml(EVERY_SETTING).expect("valid");
    let layer = reading().with_config(&from_toml).expect("valid");
    assert_eq!(settings(&layer), code);
    // A layer that reads no bodies cannot cache POSTs: said, not ignored.
    let error = StampedeLayer::from_config(MemoryStore::new(), &from_toml).expect_err("cache_posts");
    assert_eq!(error.path(), "routes[3].cache_posts", "{error}");
    // The same settings through JSON, and written back as TOML.
    let json = serde_json::to_string(&from_toml).expect("serializable");
    let from_json = Config::from_json(&json).expect("valid");
    assert_eq!(from_json, from_toml);
    assert_eq!(
        Config::from_toml(&from_toml.to_toml().expect("written")),
        Ok(from_toml)
    );
    // Nothing given is the builder's defaults.
    let empty = StampedeLayer::from_config(MemoryStore::new(), &Config::default()).expect("valid");
    assert_eq!(
        settings(&empty),
        settings(&StampedeLayer::new(MemoryStore::new()))
    );
}

/// The error `text` gives, which must name `path` and `line`.
fn toml_error(text: &str, path: &str, line: usize, says: &str) {
    let error = Config::from_toml(text).expect_err(text);
    assert_eq!(
        (error.path(), error.line()),
        (path, Some(line)),
        "{text}\n{error}"
    );
    assert!(error.message().contains(says), "{text}\n{error}");
    let shown = error.to_string();
    assert!(
        shown.contains(path) && shown.contains(&format!("line {line}")),
        "{shown}"
    );
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    toml_error(
        "policy = { kind = \"ttl\", ttl = \"1s\" }\nmax_body_byte = 5\n",
        "max_body_byte",
        2,
        "unknown field",
    );
    toml_error(
        "[[routes]]\npath = \"/a\"\npolicy = { kind = \"ttl\", ttl = \"1s\", tll = \"2s\" }\n",
        "routes[0].policy.tll",
        3,
        "unknown field `tll`",
    );
    toml_error(
        "[[routes]]\npath = \"/a\"\npolcy = { kind = \"bypass\" }\n",
        "routes[0].polcy",
        3,
        "unknown field `polcy`",
    );
}

#[test]
fn a_route_pattern_the_table_refuses_is_named() {
    toml_error(
        "[[routes]]\npath = \"/a\"\npolicy = { kind = \"bypass\" }\n\n[[routes]]\npath = \"/b/*/c\"\npolicy = { kind = \"bypass\" }\n",
        "routes[1].path",
        6,
        "`*` may only end it",
    );
    toml_error(
        "[[routes]]\npath = \"api\"\npolicy = { kind = \"bypass\" }\n",
        "routes[0].path",
        2,
        "must start with `/`",
    );
    toml_error("[[routes]]\npath = \"/api\"\n", "routes[0]", 1, "sets nothing");
    let mut config = Config::default();
    config
        .routes
        .push(Route::new("no-slash").policy(Policy::bypass()));
    let error = StampedeLayer::from_config(MemoryStore::new(), &config).expect_err("refused");
    assert_eq!(error.path(), "routes[0].path");
}

#[test]
fn gone_before_fresh_is_refused() {
    toml_error(
        "\npolicy = { kind = \"swr\", fresh = \"2m\", gone = \"30s\" }\n",
        "policy",
        2,
        "`gone` (30s) is before `fresh` (2m)",
    );
}

#[test]
fn negative_unitless_and_absurd_durations_are_refused() {
    toml_error("lock_ttl = \"-5s\"\n", "lock_ttl", 1, "negative");
    toml_error("\n\nlock_ttl = \"500\"\n", "lock_ttl", 3, "not a duration");
    toml_error("lock_ttl = 500\n", "lock_ttl", 1, "expected a string");
    toml_error(
        "policy = { kind = \"ttl\", ttl = \"400d\" }\n",
        "policy.ttl",
        1,
        "longer than a year",
    );
    toml_error("max_body_bytes = \"8MB\"\n", "max_body_bytes", 1, "not a size");
}

#[test]
fn an_option_its_kind_does_not_take_or_needs_and_lacks_is_named() {
    toml_error(
        "policy = { kind = \"ttl\", ttl = \"1s\", beta = 2.0 }\n",
        "policy",
        1,
        "`beta` does not apply to a policy of kind \"ttl\"",
    );
    toml_error(
        "policy = { kind = \"bypass\", stale_if_error = \"1m\" }\n",
        "policy",
        1,
        "`stale_if_error` does not apply",
    );
    toml_error(
        "policy = { kind = \"swr\", fresh = \"1s\" }\n",
        "policy",
        1,
        "needs `gone`",
    );
    toml_error(
        "policy = { kind = \"ttl\", ttl = \"1s\", jitter = 1.5 }\n",
        "policy",
        1,
        "a fraction from 0 to 1",
    );
    toml_error(
        "policy = { kind = \"xfetch\", ttl = \"1s\", beta = -1.0 }\n",
        "policy",
        1,
        "0 or more",
    );
    toml_error(
        "policy = { kind = \"lru\" }\n",
        "policy.kind",
        1,
        "unknown variant `lru`",
    );
}

#[test]
fn bad_names_are_errors_not_panics() {
    toml_error(
        "key = { headers = [\"x tenant\"] }\n",
        "key",
        1,
        "\"x tenant\" is not a header name",
    );
    toml_error("key = { cookies = [\"a=b\"] }\n", "key", 1, "not a cookie name");
    toml_error("tag_header = true\n", "tag_header", 1, "or false for none");
    toml_error(
        "policy = { kind = \"origin\", max = \"1d\", targeted = [\"\"] }\n",
        "policy",
        1,
        "not a header name",
    );
}

#[test]
fn json_errors_name_the_field_and_line() {
    let error = Config::from_json("{\n  \"routes\": [\n    {\"path\": \"/a\", \"policy\": {\"kind\": \"swr\", \"fresh\": \"2m\", \"gone\": \"1m\"}}\n  ]\n}")
        .expect_err("gone before fresh");
    assert_eq!(
        (error.path(), error.line()),
        ("routes[0].policy", Some(3)),
        "{error}"
    );
    let error = Config::from_json("{\"lock_ttl\": \"1s\", \"lock_tll\": \"1s\"}").expect_err("unknown");
    assert_eq!(error.path(), "lock_tll", "{error}");
    assert!(error.message().contains("unknown field"), "{error}");
    let error = Config::from_toml("policy = [").expect_err("not TOML");
    assert_eq!((error.path(), error.line()), ("", Some(1)), "{error}");
}

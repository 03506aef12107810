//! The default key, table by table.

use super::*;
use http::Request;

fn key(req: Request<()>) -> Option<String> {
    DefaultKey::new().make_key(&req.into_parts().0)
}

#[test]
fn method_authority_path_and_query() {
    let req = Request::get("/api/posts?page=2").header("host", "Example.COM:8080");
    assert_eq!(
        key(req.body(()).expect("valid")).as_deref(),
        Some("GET example.com:8080/api/posts?page=2")
    );
    let absolute = Request::head("http://api.example.com/x").body(()).expect("valid");
    assert_eq!(key(absolute).as_deref(), Some("HEAD api.example.com/x"));
    let bare = Request::get("/").body(()).expect("valid");
    assert_eq!(key(bare).as_deref(), Some("GET /"));
}

#[test]
fn different_authorities_are_different_keys() {
    let a = Request::get("/x")
        .header("host", "a.example")
        .body(())
        .expect("valid");
    let b = Request::get("/x")
        .header("host", "b.example")
        .body(())
        .expect("valid");
    assert_ne!(key(a), key(b));
}

#[test]
fn a_host_that_differs_from_the_target_is_not_cached() {
    let poisoned = Request::get("http://api.example/x").header("host", "evil.example");
    assert_eq!(key(poisoned.body(()).expect("valid")), None);
    let same = Request::get("http://api.example/x").header("host", "API.example");
    assert_eq!(
        key(same.body(()).expect("valid")).as_deref(),
        Some("GET api.example/x")
    );
}

#[test]
fn a_host_that_is_not_a_bare_authority_is_not_cached() {
    for host in [
        "a.example/docs",
        "a.example?x",
        "user@a.example",
        "a.example#x",
        "a b",
    ] {
        let request = Request::get("/intro").header("host", host);
        assert_eq!(key(request.body(()).expect("valid")), None, "{host}");
    }
    let port = Request::get("/intro").header("host", "a.example:8080");
    assert_eq!(
        key(port.body(()).expect("valid")).as_deref(),
        Some("GET a.example:8080/intro")
    );
}

proptest::proptest! {
    #![proptest_config(crate::rules::proptest_config())]

    /// The quick acceptance of plain hosts takes nothing the parse refuses.
    #[test]
    fn a_host_taken_without_a_parse_is_one_the_parse_takes(host in "[a-zA-Z0-9.:@/?#\\[\\] -]{0,12}") {
        if let Some(taken) = bare_authority(&host) {
            let parsed: http::uri::Authority = taken.parse().expect("a valid authority");
            proptest::prop_assert_eq!(parsed.as_str(), taken);
            proptest::prop_assert!(!taken.contains('@'));
        }
    }
}

#[test]
fn what_links_are_built_from_is_keyed_and_escaped() {
    let plain = key(Request::get("/x").body(()).expect("valid"));
    for name in [
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-host",
        "forwarded",
    ] {
        let forwarded = Request::get("/x").header(name, "v").body(()).expect("valid");
        assert_ne!(key(forwarded), plain, "{name}");
    }
    // A value cannot spell a second part.
    let spelled = Request::get("/x")
        .header("x-forwarded-host", "a x-forwarded-proto=http")
        .body(())
        .expect("valid");
    let two = Request::get("/x")
        .header("x-forwarded-host", "a")
        .header("x-forwarded-proto", "http")
        .body(())
        .expect("valid");
    assert_eq!(
        key(spelled).as_deref(),
        Some("GET /x x-forwarded-host=a%20x-forwarded-proto=http")
    );
    assert_ne!(key(two.clone()), key(Request::get("/x").body(()).expect("valid")));
    assert_eq!(
        key(two).as_deref(),
        Some("GET /x x-forwarded-host=a x-forwarded-proto=http")
    );
}

#[test]
fn forwarded_hosts_are_part_of_the_key() {
    let plain = Request::get("/x")
        .header("host", "api.example")
        .body(())
        .expect("valid");
    let forwarded = Request::get("/x")
        .header("host", "api.example")
        .header("x-forwarded-host", "evil.example")
        .body(())
        .expect("valid");
    let standard = Request::get("/x")
        .header("host", "api.example")
        .header("forwarded", "host=evil.example")
        .body(())
        .expect("valid");
    assert_eq!(
        key(forwarded).as_deref(),
        Some("GET api.example/x x-forwarded-host=evil.example")
    );
    assert_eq!(
        key(standard).as_deref(),
        Some("GET api.example/x forwarded=host=evil.example")
    );
    assert_eq!(key(plain).as_deref(), Some("GET api.example/x"));
}

#[test]
fn named_cookies_are_part_of_the_key_and_no_other() {
    let key = |cookies: &[&str]| {
        let mut request = Request::get("http://api.example/docs");
        for cookie in cookies {
            request = request.header("cookie", *cookie);
        }
        DefaultKey::new()
            .with_cookie("lang")
            .make_key(&request.body(()).expect("valid").into_parts().0)
    };
    let english = key(&["lang=en; session=alice"]);
    assert_eq!(english.as_deref(), Some("GET api.example/docs cookie:lang=en"));
    assert_eq!(
        key(&["session=bob", "lang=en"]),
        english,
        "other cookies do not count"
    );
    assert_ne!(key(&["lang=de; session=alice"]), english);
    assert_eq!(key(&["session=alice"]).as_deref(), Some("GET api.example/docs"));
    assert_ne!(key(&["lang="]), key(&[]), "empty is a value");
    assert_ne!(key(&["xlang=en"]), english, "names match whole");
    assert!(DefaultKey::new().with_cookie("lang").covers_cookies());
    assert!(!DefaultKey::new().covers_cookies());
}

#[test]
#[should_panic(expected = "invalid cookie name")]
fn a_cookie_name_must_be_a_token() {
    let _ = DefaultKey::new().with_cookie("lang=en");
}

#[test]
fn parts_can_be_added_and_dropped() {
    let parts = |key: DefaultKey| {
        let req = Request::get("http://api.example/posts?utm=1")
            .header("x-tenant", "acme")
            .body(())
            .expect("valid");
        key.make_key(&req.into_parts().0)
    };
    assert_eq!(
        parts(DefaultKey::new()).as_deref(),
        Some("GET api.example/posts?utm=1")
    );
    assert_eq!(
        parts(DefaultKey::new().with_header("x-tenant").without_query()).as_deref(),
        Some("GET api.example/posts x-tenant=acme")
    );
    assert_eq!(
        parts(DefaultKey::new().without_authority()).as_deref(),
        Some("GET /posts?utm=1")
    );
}

#[test]
fn a_named_host_is_keyed_even_without_the_authority() {
    let key = |host| {
        let req = Request::get("/x").header("host", host).body(()).expect("valid");
        let key = DefaultKey::new().without_authority().with_header("host");
        key.make_key(&req.into_parts().0)
    };
    assert_eq!(key("a.example").as_deref(), Some("GET /x host=a.example"));
    assert_ne!(key("a.example"), key("b.example"));
}

#[test]
fn an_opaque_host_is_not_cached() {
    let req = Request::get("/x")
        .header(
            "host",
            http::HeaderValue::from_bytes(b"caf\xe9").expect("opaque is valid"),
        )
        .body(())
        .expect("valid");
    assert_eq!(key(req), None);
}

//! The rows of `settle`'s decision table, one by one.

use http_body_util::Full;

use http::header;

use super::*;
use crate::rules::headers;

type Body = Full<Bytes>;

const T0: SystemTime = SystemTime::UNIX_EPOCH;
const SECOND: Duration = Duration::from_secs(1);

fn parts(status: u16, pairs: &[(&'static str, &'static str)]) -> http::response::Parts {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).expect("valid");
    *response.headers_mut() = headers(pairs);
    response.into_parts().0
}

fn whole(status: u16, pairs: &[(&'static str, &'static str)]) -> Result<Fetched<Body>, &'static str> {
    whole_asked(status, pairs, Credentials::default())
}

/// A whole response to a request that carried `asked`, shareable as
/// fetching found it.
fn whole_asked(
    status: u16,
    pairs: &[(&'static str, &'static str)],
    asked: Credentials,
) -> Result<Fetched<Body>, &'static str> {
    let parts = parts(status, pairs);
    let cc = crate::rules::cache_control::CacheControl::parse(&parts.headers);
    let sharing = storable::shareable(&parts.headers, &cc, asked, false).expect("a shareable response");
    Ok(Fetched::Whole {
        parts,
        data: Bytes::from_static(b"new"),
        trailers: None,
        sharing,
    })
}

/// A stored `200` with an `ETag`, fresh for 10 s after `T0`, then usable on
/// errors for 100 s more.
fn last_good() -> Arc<Entry> {
    let mut response = Response::new(Bytes::from_static(b"old"));
    *response.headers_mut() = headers(&[("etag", "\"v1\""), ("surrogate-key", "posts")]);
    Arc::new(Entry::from_response(response, T0, 10 * SECOND, 100 * SECOND))
}

/// One line for a settlement: its kind, what waiters get, what is written,
/// and the `Cache-Status` of the leader's response.
fn seen(settled: Settled<Body, &'static str>) -> String {
    match settled {
        Settled::Own { reply, outcome, pass } => {
            let outcome = match outcome {
                Outcome::Failed => "failed",
                Outcome::Private(why) => why,
                Outcome::Shared { .. } | Outcome::Streaming { .. } | Outcome::LastGood(_) => "shared?",
            };
            let reply = match reply {
                Ok(response) => format!("{:?}", response.headers()[crate::rules::status::CACHE_STATUS]),
                Err(error) => format!("error {error}"),
            };
            format!("own waiters={outcome} pass={pass} {reply}")
        }
        Settled::Streamed => "streamed".to_owned(),
        Settled::StandIn { entry, status } => {
            format!("stand-in body={:?} {:?}", entry.body, status.value())
        }
        Settled::Share { entry, write, status } => {
            let write = write.map(|(write, keep)| format!("{write:?} for {}s", keep.as_secs()));
            format!(
                "share {} body={:?} write={write:?} {:?}",
                entry.status,
                entry.body,
                status.value()
            )
        }
    }
}

fn settle_at(
    now: SystemTime,
    fetched: Result<Fetched<Body>, &'static str>,
    last_good: Option<&Arc<Entry>>,
    policy: &Policy,
) -> String {
    settle_asked(now, fetched, last_good, policy, Credentials::default())
}

fn settle_asked(
    now: SystemTime,
    fetched: Result<Fetched<Body>, &'static str>,
    last_good: Option<&Arc<Entry>>,
    policy: &Policy,
    asked: Credentials,
) -> String {
    let request = HeaderMap::new();
    let surrogate = HeaderName::from_static("surrogate-key");
    seen(settle(
        fetched,
        Context {
            now,
            took: SECOND,
            policy,
            last_good,
            request: &request,
            asked,
            tag_header: Some(&surrogate),
            variant_of: None,
            random: || 0.5,
        },
    ))
}

#[test]
fn failures_are_stood_in_for_within_the_error_window_only() {
    let old = last_good();
    let ttl = Policy::ttl(60 * SECOND);
    let within = T0 + 20 * SECOND;
    let past = T0 + 200 * SECOND;
    let grpc_unavailable = || {
        Ok(Fetched::Whole {
            parts: parts(200, &[("content-type", "application/grpc")]),
            data: Bytes::new(),
            trailers: Some(headers(&[("grpc-status", "14")])),
            sharing: Sharing::Policy,
        })
    };
    let rows: [(_, _, Option<&Arc<Entry>>, &str); 7] = [
        (
            within,
            Err("boom"),
            Some(&old),
            r#"stand-in body=b"old" "tower-stampede; fwd=miss; detail=stale-if-error""#,
        ),
        (
            within,
            whole(503, &[]),
            Some(&old),
            r#"stand-in body=b"old" "tower-stampede; fwd=miss; fwd-status=503; detail=stale-if-error""#,
        ),
        (
            within,
            grpc_unavailable(),
            Some(&old),
            r#"stand-in body=b"old" "tower-stampede; fwd=miss; fwd-status=200; detail=stale-if-error""#,
        ),
        (
            past,
            Err("boom"),
            Some(&old),
            "own waiters=failed pass=false error boom",
        ),
        (
            within,
            Err("boom"),
            None,
            "own waiters=failed pass=false error boom",
        ),
        (
            past,
            whole(503, &[]),
            Some(&old),
            r#"share 503 Service Unavailable body=b"new" write=None "tower-stampede; fwd=miss; fwd-status=503""#,
        ),
        (
            within,
            whole(404, &[]),
            Some(&old),
            r#"share 404 Not Found body=b"new" write=None "tower-stampede; fwd=miss; fwd-status=404""#,
        ),
    ];
    for (now, fetched, last_good, expected) in rows {
        assert_eq!(settle_at(now, fetched, last_good, &ttl), expected);
    }
}

#[test]
fn personal_and_unread_responses_are_their_clients_own() {
    let ttl = Policy::ttl(60 * SECOND);
    let private = |reason| {
        Ok(Fetched::Private {
            parts: parts(200, &[]),
            body: Full::new(Bytes::from_static(b"mine")),
            reason,
        })
    };
    let partial = Ok(Fetched::Partial {
        parts: parts(200, &[]),
        body: StampedeBody::inner(Full::new(Bytes::from_static(b"huge"))),
    });
    let rows = [
        (
            private(Private::SetCookie),
            r#"own waiters=set-cookie pass=true "tower-stampede; fwd=miss; fwd-status=200; detail=set-cookie""#,
        ),
        (
            private(Private::CacheControl),
            r#"own waiters=cache-control pass=true "tower-stampede; fwd=miss; fwd-status=200; detail=cache-control""#,
        ),
        (
            private(Private::Cookie),
            r#"own waiters=cookie pass=true "tower-stampede; fwd=miss; fwd-status=200; detail=cookie""#,
        ),
        (
            private(Private::Authorization),
            r#"own waiters=authorization pass=false "tower-stampede; fwd=miss; fwd-status=200; detail=authorization""#,
        ),
        (
            partial,
            r#"own waiters=body-not-stored pass=true "tower-stampede; fwd=miss; fwd-status=200; detail=body-not-stored""#,
        ),
    ];
    for (fetched, expected) in rows {
        assert_eq!(settle_at(T0, fetched, Some(&last_good()), &ttl), expected);
    }
}

#[test]
fn a_304_renews_the_entry_it_validated_when_it_may() {
    let old = last_good();
    let now = T0 + 20 * SECOND;
    let not_modified = |pairs| {
        Ok(Fetched::NotModified {
            parts: parts(304, pairs),
        })
    };
    let ttl = Policy::ttl(60 * SECOND);
    let renewed = r#"share 200 OK body=b"old" write=Some("Times for 60s") "tower-stampede; fwd=miss; fwd-status=304; detail=revalidated""#;
    let as_it_was = r#"share 200 OK body=b"old" write=None "tower-stampede; fwd=miss; fwd-status=304; detail=revalidated""#;
    assert_eq!(settle_at(now, not_modified(&[]), Some(&old), &ttl), renewed);
    assert_eq!(
        settle_at(now, not_modified(&[("set-cookie", "id=1")]), Some(&old), &ttl),
        as_it_was,
        "a 304 for the leader's client alone renews nothing"
    );
    let cookie = Credentials {
        authorization: false,
        cookie: true,
    };
    assert_eq!(
        settle_asked(now, not_modified(&[]), Some(&old), &ttl, cookie),
        as_it_was,
        "a 304 to a request with a cookie says nothing for others"
    );
    assert_eq!(
        settle_asked(
            now,
            not_modified(&[("cache-control", "public")]),
            Some(&old),
            &ttl,
            cookie
        ),
        renewed.replace("Times", "Whole"),
        "new headers are written whole"
    );
    assert_eq!(
        settle_at(now, not_modified(&[]), Some(&old), &Policy::bypass()),
        as_it_was,
        "a policy that gives no time renews nothing"
    );
    let settled: Settled<Body, &'static str> = settle(
        not_modified(&[]),
        Context {
            now,
            took: 3 * SECOND,
            policy: &ttl,
            last_good: Some(&old),
            request: &HeaderMap::new(),
            asked: Credentials::default(),
            tag_header: Some(&HeaderName::from_static("surrogate-key")),
            variant_of: Some("GET a/"),
            random: || 0.5,
        },
    );
    let Settled::Share { entry, .. } = settled else {
        panic!("renewed");
    };
    assert_eq!(entry.stored_at, now);
    assert_eq!(entry.lifetime.fresh_until, now + 60 * SECOND);
    assert_eq!(entry.recompute, 3 * SECOND);
    assert_eq!(entry.tags, ["posts", "variant-of GET a/"], "tags survive renewal");
}

#[test]
fn a_whole_response_is_stored_when_status_grpc_and_policy_allow() {
    let ttl = Policy::ttl(60 * SECOND);
    let stored = |status: &str| {
        format!(
            r#"share {status} body=b"new" write=Some("Whole for 60s") "tower-stampede; fwd=miss; fwd-status={}""#,
            &status[..3]
        )
    };
    assert_eq!(settle_at(T0, whole(200, &[]), None, &ttl), stored("200 OK"));
    assert_eq!(
        settle_at(T0, whole(204, &[]), None, &ttl),
        stored("204 No Content")
    );
    let grpc_ok = Ok(Fetched::Whole {
        parts: parts(200, &[("content-type", "application/grpc")]),
        data: Bytes::from_static(b"new"),
        trailers: Some(headers(&[("grpc-status", "0")])),
        sharing: Sharing::Policy,
    });
    assert_eq!(settle_at(T0, grpc_ok, None, &ttl), stored("200 OK"));
    let unstored = |status: &str| {
        format!(
            r#"share {status} body=b"new" write=None "tower-stampede; fwd=miss; fwd-status={}""#,
            &status[..3]
        )
    };
    let grpc_not_found = Ok(Fetched::Whole {
        parts: parts(200, &[("content-type", "application/grpc")]),
        data: Bytes::from_static(b"new"),
        trailers: Some(headers(&[("grpc-status", "5")])),
        sharing: Sharing::Policy,
    });
    assert_eq!(
        settle_at(T0, grpc_not_found, None, &ttl),
        unstored("200 OK"),
        "a failed call answers its flight, unstored"
    );
    assert_eq!(
        settle_at(T0, whole(201, &[]), None, &ttl),
        unstored("201 Created")
    );
    let says_zero = whole(200, &[("cache-control", "max-age=0")]);
    assert_eq!(
        settle_at(T0, says_zero, None, &ttl.clone().respect_origin()),
        unstored("200 OK"),
        "no time left under the policy"
    );
}

#[test]
fn a_response_to_credentials_lives_no_longer_than_its_own_word_unless_public() {
    let swr = Policy::stale_while_revalidate(60 * SECOND, 120 * SECOND);
    let authorized = Credentials {
        authorization: true,
        cookie: false,
    };
    let cookie = Credentials {
        authorization: false,
        cookie: true,
    };
    let settled = |cc: &'static str, asked| {
        settle_asked(
            T0,
            whole_asked(200, &[("cache-control", cc)], asked),
            None,
            &swr,
            asked,
        )
    };
    // Shared by `s-maxage` or `must-revalidate` only: its own freshness,
    // with no stale window (the policy's would be 120 s).
    let seen = settled("s-maxage=5", authorized);
    assert!(seen.contains(r#"write=Some("Whole for 5s")"#), "{seen}");
    let seen = settled("max-age=30, must-revalidate", authorized);
    assert!(seen.contains(r#"write=Some("Whole for 30s")"#), "{seen}");
    let seen = settled("s-maxage=5", cookie);
    assert!(seen.contains(r#"write=Some("Whole for 5s")"#), "{seen}");
    // `public`: the policy's whole lifetime, stale window included.
    let seen = settled("public, max-age=5", authorized);
    assert!(seen.contains(r#"write=Some("Whole for 120s")"#), "{seen}");
    // Without credentials, the response's word is the policy's to weigh.
    let seen = settle_at(T0, whole(200, &[("cache-control", "s-maxage=5")]), None, &swr);
    assert!(seen.contains(r#"write=Some("Whole for 120s")"#), "{seen}");
}

#[test]
fn a_stored_entry_keeps_what_later_requests_are_matched_and_purged_by() {
    let mut request = HeaderMap::new();
    request.insert("accept-language", http::HeaderValue::from_static("de"));
    let policy = Policy::ttl(60 * SECOND);
    let settled: Settled<Body, &'static str> = settle(
        whole(
            200,
            &[
                ("vary", "Accept-Language"),
                ("surrogate-key", "posts post-1 posts"),
                ("age", "30"),
                ("connection", "close"),
            ],
        ),
        Context {
            now: T0,
            took: 2 * SECOND,
            policy: &policy,
            last_good: None,
            request: &request,
            asked: Credentials::default(),
            tag_header: Some(&HeaderName::from_static("surrogate-key")),
            variant_of: Some("GET a/"),
            random: || 0.5,
        },
    );
    let Settled::Share { entry, .. } = settled else {
        panic!("shared");
    };
    assert_eq!(entry.vary, [header::ACCEPT_LANGUAGE]);
    assert_eq!(entry.vary_values["accept-language"], "de");
    assert_eq!(entry.tags, ["post-1", "posts", "variant-of GET a/"]);
    assert_eq!(entry.recompute, 2 * SECOND);
    assert!(
        !entry.headers.contains_key(header::AGE),
        "Age is the cache's to set"
    );
    assert!(!entry.headers.contains_key(header::CONNECTION));
    assert_eq!(
        tags(&entry.headers, None),
        Vec::<String>::new(),
        "no tag header, no tags"
    );
}

#[test]
fn tags_are_whitespace_separated_and_deduplicated() {
    let mut response = HeaderMap::new();
    response.append("surrogate-key", http::HeaderValue::from_static("posts  post-42"));
    response.append("surrogate-key", http::HeaderValue::from_static("posts home"));
    let name = HeaderName::from_static("surrogate-key");
    assert_eq!(tags(&response, Some(&name)), ["home", "post-42", "posts"]);
    assert!(tags(&response, None).is_empty());
}

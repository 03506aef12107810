//! A `304` to the layer's own validators: the stored response renewed.

use std::sync::Arc;

use http::{HeaderMap, StatusCode, header};
use http_body::Body;

use super::{Context, Settled, Write, entry_tags, limited};
use crate::{
    entry::Entry,
    rules::{
        cache_control::CacheControl,
        hop::strip_unstorable_headers,
        status::{CacheStatus, Fwd},
        storable,
    },
};

/// The origin's `304` to the validators of `old`: `old` is current, with
/// the headers the `304` brings (RFC 9111 section 3.2). It is renewed,
/// unless the `304` is not for sharing (a cookie for the leader's client)
/// or the policy gives it no time: then it answers this flight as it is,
/// unstored.
pub(super) fn renew<B: Body, E, R: FnMut() -> f64>(
    old: &Arc<Entry>,
    answer: &HeaderMap,
    cx: &mut Context<'_, R>,
) -> Settled<B, E> {
    let now = cx.now;
    let sharing = storable::shareable(
        answer,
        &CacheControl::parse(answer),
        cx.asked,
        cx.policy.follows_origin(),
    );
    let mut headers = updated(&old.headers, answer);
    let origin = cx.origin_freshness(&headers, old.status);
    strip_unstorable_headers(&mut headers);
    let lifetime = cx
        .policy
        .lifetime(now, (cx.random)(), &origin)
        .and_then(|lifetime| limited(lifetime, now, sharing));
    let status = CacheStatus::forward(Fwd::Miss)
        .fwd_status(StatusCode::NOT_MODIFIED)
        .detail("revalidated");
    let Some(lifetime) = lifetime else {
        return Settled::Share {
            entry: Arc::clone(old),
            write: None,
            status,
        };
    };
    // Only new times need a store to rewrite only those.
    let write = if headers == old.headers {
        Write::Times
    } else {
        Write::Whole
    };
    let born = now.checked_sub(origin.age).unwrap_or(now);
    let mut renewed = old.renewed(headers, born, lifetime, cx.took);
    renewed.tags = entry_tags(cx, &renewed.headers);
    Settled::Share {
        write: Some((write, cx.policy.keep_for(&lifetime, now, &origin))),
        entry: Arc::new(renewed),
        status,
    }
}

/// The stored headers, each field the `304` carries replacing the stored
/// one, but for `Content-Length`, which describes the stored body.
fn updated(stored: &HeaderMap, answer: &HeaderMap) -> HeaderMap {
    let mut headers = stored.clone();
    for name in answer.keys() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        headers.remove(name);
        for value in answer.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use http::Response;

    use super::*;
    use crate::{
        policy::Policy,
        rules::{headers, storable::Credentials},
    };

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    const SECOND: Duration = Duration::from_secs(1);

    /// RFC 9111 section 3.2: each field of a `304` replaces the stored one,
    /// `Content-Length` excepted; fields it does not carry stay; the
    /// lifetime is the one the updated headers give.
    #[test]
    fn a_304_updates_the_stored_headers() {
        let mut response = Response::new(Bytes::from_static(b"old"));
        *response.headers_mut() = headers(&[
            ("etag", "\"v1\""),
            ("content-type", "text/plain"),
            ("content-length", "3"),
            ("x-kept", "1"),
        ]);
        let old = Arc::new(Entry::from_response(response, T0, 10 * SECOND, Duration::ZERO));
        let answer = headers(&[
            ("etag", "\"v1\""),
            ("content-type", "text/plain;charset=utf-8"),
            ("content-length", "10"),
            ("cache-control", "max-age=30"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ]);
        let policy = Policy::origin(3600 * SECOND);
        let mut cx = Context {
            now: T0 + 20 * SECOND,
            took: SECOND,
            policy: &policy,
            last_good: Some(&old),
            request: &HeaderMap::new(),
            asked: Credentials::default(),
            tag_header: None,
            variant_of: None,
            random: || 0.5,
        };
        let Settled::Share { entry, write, .. } =
            renew::<http_body_util::Empty<Bytes>, (), _>(&old, &answer, &mut cx)
        else {
            panic!("renewed");
        };
        let value = |name| entry.headers.get(name).map(|v| v.to_str().expect("text"));
        assert_eq!(value("content-type"), Some("text/plain;charset=utf-8"));
        assert_eq!(value("content-length"), Some("3"), "it describes the stored body");
        assert_eq!(value("x-kept"), Some("1"));
        assert_eq!(value("cache-control"), Some("max-age=30"));
        assert_eq!(
            (value("connection"), value("x-hop")),
            (None, None),
            "the hop's own"
        );
        assert_eq!(entry.lifetime.fresh_until, T0 + 50 * SECOND, "the 304's max-age");
        assert_eq!(write.map(|(write, _)| write), Some(Write::Whole));
    }
}

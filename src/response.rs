//! The responses the layer makes: from a stored or shared entry, from the
//! inner service's own response, and the few it makes up (`502`, `503`),
//! each with its `Cache-Status` (and `Age` when it comes from the store).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::Body;

use crate::{
    body::StampedeBody,
    entry::Entry,
    policy::Lifetime,
    rules::status::{CACHE_STATUS, CacheStatus, Fwd, age_value, set_age},
};

/// The detail of a request turned away by `max_waiters`.
pub(crate) const TOO_MANY_WAITERS: &str = "too-many-waiters";

/// A response built from a shared or stored entry; `Age` is set when it
/// comes from the store, `served_at` being the time of the read.
pub(crate) fn from_entry<B: Body>(
    entry: &Entry,
    status: CacheStatus,
    served_at: Option<SystemTime>,
) -> Response<StampedeBody<B>> {
    let mut response = Response::new(StampedeBody::buffered(entry.body.clone(), entry.trailers.clone()));
    *response.status_mut() = entry.status;
    let age = served_at.map(|now| now.duration_since(entry.stored_at).unwrap_or_default());
    if let Some(ready) = entry.ready() {
        // Its `Age` and `Cache-Status` are set in place: no slot is added.
        let headers = response.headers_mut();
        *headers = ready.clone();
        match age {
            // A hit: both set in one walk over the names, where looking
            // each up would hash it.
            Some(age) => set_in_place(headers, age_value(age), status.value()),
            // Not served from the store: the entry's own `Age`, if any.
            None => {
                match entry.headers.get(header::AGE) {
                    Some(own) => drop(headers.insert(header::AGE, own.clone())),
                    None => drop(headers.remove(header::AGE)),
                }
                headers.insert(CACHE_STATUS, status.value());
            }
        }
        return response;
    }
    // An entry with a `Cache-Status` of its own, which ours follows.
    *response.headers_mut() = entry.headers.clone();
    if let Some(age) = age {
        set_age(response.headers_mut(), age);
    }
    with_status(response, &status)
}

/// Sets the one `Age` and the one `Cache-Status` of a ready head.
fn set_in_place(headers: &mut HeaderMap, age: HeaderValue, status: HeaderValue) {
    let (mut age, mut status) = (Some(age), Some(status));
    for (name, value) in headers.iter_mut() {
        let new = if *name == header::AGE {
            &mut age
        } else if *name == CACHE_STATUS {
            &mut status
        } else {
            continue;
        };
        if let Some(new) = new.take() {
            *value = new;
        }
    }
    debug_assert!(
        age.is_none() && status.is_none(),
        "a ready head has both, once each"
    );
}

/// A response with `head`'s status and headers and `body`: a response
/// whose body streams to the flight.
pub(crate) fn from_head<B: Body>(
    head: &Entry,
    body: StampedeBody<B>,
    status: CacheStatus,
) -> Response<StampedeBody<B>> {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers.clone();
    with_status(response, &status)
}

/// A response built from an entry the origin just answered with: `Age`
/// only when it came already aged (from a cache before the origin, or by
/// its `Date`), as it then was not made for this request.
pub(crate) fn from_answer<B: Body>(
    entry: &Entry,
    status: CacheStatus,
    now: SystemTime,
) -> Response<StampedeBody<B>> {
    let aged = now
        .duration_since(entry.stored_at)
        .is_ok_and(|age| age >= Duration::from_secs(1));
    from_entry(entry, status, aged.then_some(now))
}

/// The inner service's own response, with this layer's `Cache-Status`
/// naming the status it forwarded.
pub(crate) fn forwarded<B: Body>(response: Response<B>, status: CacheStatus) -> Response<StampedeBody<B>> {
    let status = status.fwd_status(response.status());
    with_status(response.map(StampedeBody::inner), &status)
}

pub(crate) fn with_status<B: Body>(
    mut response: Response<StampedeBody<B>>,
    status: &CacheStatus,
) -> Response<StampedeBody<B>> {
    status.apply(response.headers_mut());
    response
}

/// How long an entry of `lifetime` stays fresh after `now`.
pub(crate) fn ttl_left(lifetime: Lifetime, now: SystemTime) -> Duration {
    lifetime.fresh_until.duration_since(now).unwrap_or_default()
}

/// What a request gets when its key's flight is full and nothing stored
/// can stand in: come back in a second.
pub(crate) fn too_many_waiters<B: Body>() -> Response<StampedeBody<B>> {
    let mut response = empty(StatusCode::SERVICE_UNAVAILABLE);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    let status = CacheStatus::forward(Fwd::Miss).detail(TOO_MANY_WAITERS);
    with_status(response, &status)
}

/// What a request with `Cache-Control: only-if-cached` gets when nothing
/// stored will do (RFC 9111 section 5.2.1.7).
pub(crate) fn only_if_cached<B: Body>() -> Response<StampedeBody<B>> {
    let status = CacheStatus::forward(Fwd::Miss).detail("only-if-cached");
    with_status(empty(StatusCode::GATEWAY_TIMEOUT), &status)
}

/// What waiters get when their leader's origin call failed.
pub(crate) fn bad_gateway<B: Body>(detail: &'static str) -> Response<StampedeBody<B>> {
    let status = CacheStatus::forward(Fwd::Miss).collapsed().detail(detail);
    with_status(empty(StatusCode::BAD_GATEWAY), &status)
}

fn empty<B: Body>(status: StatusCode) -> Response<StampedeBody<B>> {
    let mut response = Response::new(StampedeBody::buffered(Bytes::new(), None));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, header::HeaderName};
    use http_body_util::Full;

    use super::*;
    use crate::rules::headers;

    fn entry(pairs: &[(&'static str, &'static str)]) -> Entry {
        let mut response = Response::new(Bytes::from_static(b"hello"));
        *response.headers_mut() = headers(pairs);
        let stored = SystemTime::UNIX_EPOCH;
        Entry::from_response(response, stored, Duration::from_secs(60), Duration::ZERO)
    }

    fn fields(headers: &HeaderMap) -> Vec<(HeaderName, &str)> {
        headers
            .iter()
            .map(|(name, value)| (name.clone(), value.to_str().expect("ascii")))
            .collect()
    }

    /// The head from an entry's ready copy is the one built field by field:
    /// the entry's fields in order, its `Age` replaced, and this layer's
    /// `Cache-Status` after any the entry had.
    #[test]
    fn every_hit_gets_the_head_built_field_by_field() {
        let served = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        for pairs in [
            &[("content-type", "text/plain"), ("etag", "\"a\"")][..],
            &[
                ("age", "3"),
                ("content-type", "text/plain"),
                ("x-a", "1"),
                ("x-a", "2"),
            ],
            &[("cache-status", "upstream; hit"), ("content-type", "text/plain")],
        ] {
            let entry = entry(pairs);
            let mut by_hand = headers(pairs);
            set_age(&mut by_hand, Duration::from_secs(7));
            CacheStatus::hit(Duration::from_secs(53)).apply(&mut by_hand);
            for round in 0..2 {
                let response: Response<StampedeBody<Full<Bytes>>> =
                    from_entry(&entry, CacheStatus::hit(Duration::from_secs(53)), Some(served));
                assert_eq!(
                    fields(response.headers()),
                    fields(&by_hand),
                    "{pairs:?}, hit {round}"
                );
            }
        }
    }

    #[test]
    fn an_answer_not_aged_keeps_the_entrys_own_age_or_none() {
        let status = || CacheStatus::forward(Fwd::Miss).collapsed();
        for pairs in [
            &[("content-type", "text/plain"), ("etag", "\"a\"")][..],
            &[("content-type", "text/plain"), ("age", "3"), ("x-a", "1")],
        ] {
            let entry = entry(pairs);
            let mut by_hand = headers(pairs);
            status().apply(&mut by_hand);
            for round in 0..2 {
                let response: Response<StampedeBody<Full<Bytes>>> =
                    from_answer(&entry, status(), SystemTime::UNIX_EPOCH);
                assert_eq!(fields(response.headers()), fields(&by_hand), "{pairs:?}, {round}");
            }
        }
    }

    #[test]
    fn an_answer_not_aged_has_no_age() {
        let entry = entry(&[("content-type", "text/plain")]);
        let response: Response<StampedeBody<Full<Bytes>>> = from_answer(
            &entry,
            CacheStatus::hit(Duration::from_secs(60)),
            SystemTime::UNIX_EPOCH,
        );
        assert!(!response.headers().contains_key(header::AGE));
        assert!(
            response
                .headers()
                .contains_key(crate::rules::status::CACHE_STATUS)
        );
    }
}

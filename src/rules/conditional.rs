//! What a client asked beyond the resource itself: `HEAD`, and conditional
//! headers. The origin is asked for the whole `GET` response, which is what
//! is shared and stored; each client's own `HEAD` or condition is answered
//! from it.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;

use crate::{body::StampedeBody, rules::fields::Fields};

/// The parts of a request that shape its answer from a shared response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ask {
    head: bool,
    if_none_match: Option<String>,
    if_modified_since: Option<SystemTime>,
}

impl Ask {
    /// What a request with `method` and `headers`, which carry `fields`,
    /// asks.
    pub(crate) fn of(method: &Method, headers: &HeaderMap, fields: Fields) -> Self {
        // Conditions only apply to a GET or HEAD (RFC 9110 section 13.2.1).
        if ![Method::GET, Method::HEAD].contains(method) {
            return Self::default();
        }
        if !fields.conditions {
            return Self {
                head: method == Method::HEAD,
                ..Self::default()
            };
        }
        let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        Self {
            head: method == Method::HEAD,
            if_none_match: text(header::IF_NONE_MATCH).map(str::to_owned),
            if_modified_since: text(header::IF_MODIFIED_SINCE)
                .and_then(|v| httpdate::parse_http_date(v).ok()),
        }
    }

    /// Whether a `200` with `headers` may be answered `304 Not Modified`
    /// (RFC 9110 section 13.1: `If-None-Match`, with weak comparison, wins
    /// over `If-Modified-Since`).
    fn not_modified(&self, headers: &HeaderMap) -> bool {
        if let Some(wanted) = &self.if_none_match {
            let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            return wanted.trim() == "*" || wanted.split(',').any(|tag| weak_eq(tag, etag));
        }
        let Some(since) = self.if_modified_since else {
            return false;
        };
        headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|modified| modified <= since)
    }

    /// This client's answer, made from a response for a plain `GET`.
    #[inline]
    pub(crate) fn shape<B: Body<Error: Into<crate::body::BoxError>>>(
        &self,
        response: Response<StampedeBody<B>>,
    ) -> Response<StampedeBody<B>> {
        // Most requests ask for the response as it is: handed back where
        // it is, not moved through a call (a response is some 240 bytes,
        // and each move of it a `memcpy`).
        if *self == Self::default() {
            return response;
        }
        self.reshape(response)
    }

    fn reshape<B: Body<Error: Into<crate::body::BoxError>>>(
        &self,
        mut response: Response<StampedeBody<B>>,
    ) -> Response<StampedeBody<B>> {
        if response.status() == StatusCode::OK && self.not_modified(response.headers()) {
            let mut not_modified = Response::new(StampedeBody::buffered(bytes::Bytes::new(), None));
            *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
            let headers = response.headers_mut();
            for name in NOT_MODIFIED_KEEPS {
                for value in headers.get_all(&name) {
                    not_modified.headers_mut().append(name.clone(), value.clone());
                }
            }
            return not_modified;
        }
        if self.head {
            // Headers as for GET, Content-Length included; no body.
            let length = response.body().size_hint().exact();
            let (mut parts, _) = response.into_parts();
            if let Some(length) = length
                && !parts.headers.contains_key(header::CONTENT_LENGTH)
            {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            response = Response::from_parts(parts, StampedeBody::buffered(bytes::Bytes::new(), None));
        }
        response
    }
}

/// The fields a 304 carries (RFC 9110 section 15.4.5), and this layer's.
const NOT_MODIFIED_KEEPS: [header::HeaderName; 9] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::VARY,
    header::AGE,
    crate::rules::status::CACHE_STATUS,
];

/// Weak comparison of two entity tags: equal opaque tags, `W/` ignored.
fn weak_eq(a: &str, b: &str) -> bool {
    let opaque = |tag: &str| {
        let tag = tag.trim();
        tag.strip_prefix("W/").unwrap_or(tag).to_owned()
    };
    opaque(a) == opaque(b)
}

/// The request to send to the origin for a shared response: a plain `GET`
/// (a `HEAD` becomes one), without the client's conditions or what belongs
/// to its own connection, so that the whole response comes back.
pub(crate) fn origin_request<B>(mut request: Request<B>) -> Request<B> {
    if request.method() == Method::HEAD {
        *request.method_mut() = Method::GET;
    }
    let headers = request.headers_mut();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::CONNECTION,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    // `TE: trailers` stays true of this layer, which keeps trailers; gRPC
    // servers look for it.
    if headers
        .get(header::TE)
        .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(pairs: &[(&str, &str)]) -> Ask {
        let mut request = Request::get("/");
        for (name, value) in pairs {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("valid");
        Ask::of(request.method(), request.headers(), Fields::of(request.headers()))
    }

    fn response(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    /// What `shape` skips for a request that asked for nothing: `reshape`
    /// would hand that response back as it is, even one that a condition
    /// could have made a `304`.
    #[test]
    fn a_plain_ask_would_not_reshape_a_response() {
        let plain = ask(&[("accept", "application/json")]);
        assert_eq!(plain, Ask::default());
        let mut answer = Response::new(StampedeBody::<http_body_util::Full<bytes::Bytes>>::buffered(
            bytes::Bytes::from_static(b"hello"),
            None,
        ));
        *answer.headers_mut() = response(&[
            ("etag", "\"v7\""),
            ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        let headers = answer.headers().clone();
        let reshaped = plain.reshape(answer);
        assert_eq!(reshaped.status(), StatusCode::OK);
        assert_eq!(reshaped.headers(), &headers);
        assert_eq!(reshaped.body().size_hint().exact(), Some(5));
    }

    #[test]
    fn if_none_match_compares_weakly_and_star_matches_anything() {
        let tagged = response(&[("etag", "W/\"v7\"")]);
        assert!(ask(&[("if-none-match", "\"v7\"")]).not_modified(&tagged));
        assert!(ask(&[("if-none-match", "\"v1\", W/\"v7\"")]).not_modified(&tagged));
        assert!(ask(&[("if-none-match", "*")]).not_modified(&tagged));
        assert!(!ask(&[("if-none-match", "\"v8\"")]).not_modified(&tagged));
        assert!(!ask(&[("if-none-match", "\"v7\"")]).not_modified(&response(&[])));
    }

    #[test]
    fn if_modified_since_compares_dates_unless_if_none_match_is_there() {
        let dated = response(&[("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT")]);
        assert!(ask(&[("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT")]).not_modified(&dated));
        assert!(ask(&[("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT")]).not_modified(&dated));
        assert!(!ask(&[("if-modified-since", "Mon, 31 Dec 2029 00:00:00 GMT")]).not_modified(&dated));
        assert!(!ask(&[("if-modified-since", "yesterday")]).not_modified(&dated));
        let both = [
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT"),
        ];
        assert!(!ask(&both).not_modified(&dated), "If-None-Match decides");
    }

    #[test]
    fn the_origin_is_asked_for_the_whole_get() {
        let request = Request::head("/a")
            .header("if-none-match", "\"v1\"")
            .header("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT")
            .header("connection", "keep-alive")
            .header("accept", "application/json")
            .body(())
            .expect("valid");
        let sent = origin_request(request);
        assert_eq!(sent.method(), Method::GET);
        let names: Vec<_> = sent.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }
}

//! gRPC over HTTP/2: a call's outcome is its `grpc-status`, carried in the
//! trailers, or in the headers of an answer that has no message
//! ("Trailers-Only"), whatever the HTTP status says.

use http::{HeaderMap, header};

const GRPC_STATUS: &str = "grpc-status";

/// The codes (of the gRPC status codes) that mean the server, not the
/// request, failed: those `stale_if_error` stands in for, as for a 5xx.
const SERVER_FAILURES: [u32; 6] = [
    2,  // UNKNOWN
    4,  // DEADLINE_EXCEEDED
    8,  // RESOURCE_EXHAUSTED
    13, // INTERNAL
    14, // UNAVAILABLE
    15, // DATA_LOSS
];

/// Whether a message is gRPC (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web`...).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..16)
                .is_some_and(|t| t.eq_ignore_ascii_case("application/grpc"))
        })
}

/// The `grpc-status` of a gRPC response: from its trailers, or from its
/// headers when it has no trailers. `None` when absent or unreadable.
fn status(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Option<u32> {
    trailers
        .and_then(|t| t.get(GRPC_STATUS))
        .or_else(|| headers.get(GRPC_STATUS))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether a response may be stored as far as gRPC is concerned: it is not
/// gRPC, or its call ended with `grpc-status: 0`. A gRPC response whose
/// status cannot be read (gRPC-Web carries it inside the body) is not.
pub(crate) fn storable(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> bool {
    !is_grpc(headers) || status(headers, trailers) == Some(0)
}

/// Whether a gRPC response reports a server failure.
pub(crate) fn failed(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> bool {
    is_grpc(headers) && status(headers, trailers).is_some_and(|code| SERVER_FAILURES.contains(&code))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (header::HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn grpc_content_types() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC-web",
        ] {
            assert!(is_grpc(&map(&[("content-type", grpc)])), "{grpc}");
        }
        for other in ["application/json", "application/gr", "text/grpc"] {
            assert!(!is_grpc(&map(&[("content-type", other)])), "{other}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn only_status_zero_is_stored() {
        let headers = map(&[("content-type", "application/grpc")]);
        let ok = map(&[("grpc-status", "0")]);
        let not_found = map(&[("grpc-status", "5"), ("grpc-message", "no such post")]);
        assert!(storable(&headers, Some(&ok)));
        assert!(!storable(&headers, Some(&not_found)));
        assert!(!storable(&headers, None), "no status, no store");
        assert!(!storable(&headers, Some(&map(&[("grpc-status", "zero")]))));
    }

    #[test]
    fn trailers_only_answers_carry_the_status_in_their_headers() {
        let unavailable = map(&[("content-type", "application/grpc"), ("grpc-status", "14")]);
        assert!(!storable(&unavailable, None));
        assert!(failed(&unavailable, None));
        let ok = map(&[("content-type", "application/grpc"), ("grpc-status", "0")]);
        assert!(storable(&ok, None));
    }

    #[test]
    fn trailers_win_over_headers() {
        let headers = map(&[("content-type", "application/grpc"), ("grpc-status", "0")]);
        let trailers = map(&[("grpc-status", "13")]);
        assert!(!storable(&headers, Some(&trailers)));
        assert!(failed(&headers, Some(&trailers)));
    }

    #[test]
    fn client_errors_are_not_failures_of_the_server() {
        let headers = map(&[("content-type", "application/grpc")]);
        for code in ["3", "5", "7", "16"] {
            let trailers: HeaderMap = [(
                header::HeaderName::from_static("grpc-status"),
                HeaderValue::from_str(code).expect("valid"),
            )]
            .into_iter()
            .collect();
            assert!(!failed(&headers, Some(&trailers)), "{code}");
            assert!(!storable(&headers, Some(&trailers)), "{code}");
        }
    }

    #[test]
    fn plain_http_is_left_to_the_http_rules() {
        let json = map(&[("content-type", "application/json"), ("grpc-status", "5")]);
        assert!(storable(&json, None));
        assert!(!failed(&json, None));
    }
}

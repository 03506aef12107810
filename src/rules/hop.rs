//! The fields that belong to one hop or one response instance, not to what
//! a cache stores (RFC 9110 section 7.6.1, RFC 9111 section 3.1).

use http::{HeaderMap, HeaderName, header};

/// Headers that describe one hop or one response instance and must not be
/// replayed from a stored copy.
pub(crate) fn strip_unstorable_headers(headers: &mut HeaderMap) {
    // The fields `Connection` names belong to the hop too (RFC 9110
    // section 7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [header::CONNECTION, header::TRANSFER_ENCODING, header::AGE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::headers;

    #[test]
    fn the_hop_s_own_fields_and_age_are_not_stored() {
        let mut stored = headers(&[
            ("connection", "x-hop, close"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("age", "30"),
            ("content-type", "text/plain"),
        ]);
        strip_unstorable_headers(&mut stored);
        let names: Vec<_> = stored.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }
}

//! `Vary` (RFC 9111 section 4.1): which request headers a response depends
//! on, and whether another request has the same values for them.

use http::{HeaderMap, HeaderName, header};

/// The request header names a response varies on, lowercased; `None` for
/// `Vary: *` (or an unreadable `Vary`), which no other request can match.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<header::HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().ok()?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = header::HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// The values `request` has for `names`, to be matched by later requests.
pub(crate) fn vary_values(names: &[header::HeaderName], request: &HeaderMap) -> HeaderMap {
    let mut values = HeaderMap::new();
    for name in names {
        for value in request.get_all(name) {
            values.append(name.clone(), value.clone());
        }
    }
    values
}

/// Whether `request` has the same values for `names` as `stored`, once
/// normalised as variant keys are (case and list spacing do not count).
pub(crate) fn vary_matches(names: &[header::HeaderName], stored: &HeaderMap, request: &HeaderMap) -> bool {
    names.iter().all(|name| {
        let (stored, asked) = (normalise(stored, name), normalise(request, name));
        stored.is_some() && stored == asked
    })
}

/// Request headers whose values are case-insensitive by their grammar
/// (RFC 9110 section 12.5: media types, charsets, content codings and
/// language tags). Any other header's values compare as sent: `Vary:
/// X-Api-Key` must not make `abc` and `ABC` one variant.
const CASELESS: [HeaderName; 4] = [
    header::ACCEPT,
    header::ACCEPT_CHARSET,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
];

/// A request's values for `name`, with the whitespace around list members
/// dropped and, for the content-negotiation headers, lowercased: `gzip, br`
/// and `GZIP,br` are one variant. `%`, `;` and `]` are percent-encoded, so
/// that in a variant key no value can spell the next name. `None` for a
/// value that is not visible ASCII (not cached).
pub(crate) fn normalise(request: &HeaderMap, name: &HeaderName) -> Option<String> {
    let caseless = CASELESS.contains(name);
    let mut out = String::new();
    for value in request.get_all(name) {
        for member in value
            .to_str()
            .ok()?
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            if !out.is_empty() {
                out.push(',');
            }
            for c in member.chars() {
                match c {
                    '%' => out.push_str("%25"),
                    ';' => out.push_str("%3B"),
                    ']' => out.push_str("%5D"),
                    c if caseless => out.push(c.to_ascii_lowercase()),
                    c => out.push(c),
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::headers;

    #[test]
    fn vary_matches_only_the_same_values() {
        let response = headers(&[
            ("vary", "Accept-Encoding"),
            ("vary", "accept-language, accept-encoding"),
        ]);
        let names = vary_names(&response).expect("not *");
        assert_eq!(names.len(), 2);
        let leader = headers(&[("accept-encoding", "gzip"), ("accept-language", "en")]);
        let stored = vary_values(&names, &leader);
        assert!(vary_matches(&names, &stored, &leader));
        let other_language = headers(&[("accept-encoding", "gzip"), ("accept-language", "fr")]);
        assert!(!vary_matches(&names, &stored, &other_language));
        let no_language = headers(&[("accept-encoding", "gzip")]);
        assert!(!vary_matches(&names, &stored, &no_language));
        let shouting = headers(&[("accept-encoding", "GZIP"), ("accept-language", " EN")]);
        assert!(vary_matches(&names, &stored, &shouting), "normalised as keys are");
        assert!(vary_matches(&[], &HeaderMap::new(), &other_language));
    }

    #[test]
    fn only_negotiation_headers_compare_without_case() {
        let key = HeaderName::from_static("x-api-key");
        let names = [key.clone()];
        let stored = vary_values(&names, &headers(&[("x-api-key", "abc")]));
        assert!(vary_matches(&names, &stored, &headers(&[("x-api-key", "abc")])));
        assert!(!vary_matches(&names, &stored, &headers(&[("x-api-key", "ABC")])));
        assert_eq!(
            normalise(
                &headers(&[("accept-language", "EN;q=1")]),
                &header::ACCEPT_LANGUAGE
            )
            .as_deref(),
            Some("en%3Bq=1"),
            "a value cannot spell the next name of a variant key"
        );
        assert_eq!(
            normalise(&headers(&[("x-api-key", "K]%")]), &key).as_deref(),
            Some("K%5D%25")
        );
    }
}

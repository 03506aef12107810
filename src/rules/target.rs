//! Whether the cache can tell what a request asks for from its head: a
//! path in normal form, one `Host`, and no header that makes the origin
//! answer for another target or method than the one the key names.
//!
//! A request that fails is sent to the origin uncached, whatever its route
//! says: caching it would store an answer under a key (and a route policy)
//! other than the one the origin served it for.

use http::{HeaderMap, HeaderName, header};

use super::fields::Fields;

/// Headers some frameworks take a request's path or method from, in place
/// of its own. The origin then answers for a target the key does not name,
/// and the route policy was matched on the other path: such requests are
/// not cached (keying them would still let one reach a bypassed route
/// through a cached one).
pub(crate) static REWRITES: [HeaderName; 5] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Why a request with `headers`, which carries `fields`, is not one the
/// cache may key.
pub(crate) fn unclear(path: &str, headers: &HeaderMap, fields: Fields) -> Option<&'static str> {
    if !path_is_normal(path) {
        return Some("path-not-normal");
    }
    if fields.repeated && headers.get_all(header::HOST).iter().nth(1).is_some() {
        // RFC 9112 section 3.2 has a server answer 400: which one an origin
        // reads is anyone's guess.
        return Some("two-hosts");
    }
    if fields.rewrite {
        return Some("rewritten");
    }
    None
}

/// Whether `path` is in the normal form of RFC 3986 section 6 as far as an
/// origin's router could tell it from another spelling: no dot segments,
/// no empty segment but a trailing one, no percent-encoding of a character
/// that needs none nor of `/` or `\` (which some servers decode into
/// separators), hexadecimal digits upper case, and no `\` or `;` (which
/// some servers read as a separator or a parameter). Case is kept:
/// paths are case-sensitive, and a route table for a case-insensitive
/// origin must name every spelling it bypasses.
pub(crate) fn path_is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    // Most paths hold nothing that could spell them otherwise: one look at
    // each byte, in a table, tells, where splitting them into segments cost
    // a fifth of a hit.
    let mut after_slash = true;
    for &b in rest.as_bytes() {
        let suspect = match BYTE[usize::from(b)] {
            Byte::Plain => false,
            Byte::SegmentStart => after_slash,
            Byte::Suspect => true,
        };
        if suspect {
            return segments_are_normal(rest);
        }
        after_slash = b == b'/';
    }
    true
}

/// What a byte of a path tells [`path_is_normal`]'s first look.
#[derive(Clone, Copy)]
enum Byte {
    Plain,
    /// `/` or `.`: an empty segment, or perhaps a dot segment, when it
    /// follows a `/`.
    SegmentStart,
    /// A percent-encoding, or a separator some servers read.
    Suspect,
}

static BYTE: [Byte; 256] = {
    let mut table = [Byte::Plain; 256];
    table[b'/' as usize] = Byte::SegmentStart;
    table[b'.' as usize] = Byte::SegmentStart;
    table[b'%' as usize] = Byte::Suspect;
    table[b'\\' as usize] = Byte::Suspect;
    table[b';' as usize] = Byte::Suspect;
    table
};

/// [`path_is_normal`] for the path after its first `/`, segment by segment.
fn segments_are_normal(rest: &str) -> bool {
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
        if !segment_is_normal(segment) {
            return false;
        }
    }
    true
}

fn segment_is_normal(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' | b';' => return false,
            b'%' => {
                let hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
                let (Some(&high), Some(&low)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return false;
                };
                if !hex(high) || !hex(low) {
                    return false;
                }
                let decoded = u8::from_str_radix(&segment[i + 1..i + 3], 16).unwrap_or(b'%');
                let unreserved = decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded);
                if unreserved || decoded == b'/' || decoded == b'\\' {
                    return false;
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::headers;

    #[test]
    fn paths_in_normal_form_and_others() {
        for normal in [
            "/",
            "/admin/users",
            "/docs/",
            "/a%20b",
            "/caf%C3%A9",
            "/search%3Fq",
            "/Admin",
        ] {
            assert!(path_is_normal(normal), "{normal}");
        }
        for other in [
            "//admin/users",
            "/admin//users",
            "/./admin/users",
            "/x/../admin/users",
            "/admin/.",
            "/admin/..",
            "/%61dmin/users",
            "/admin%2Fusers",
            "/admin%2fusers",
            "/admin%5Cusers",
            "/caf%c3%a9",
            "/admin%7Eusers",
            "/admin%",
            "/admin%4",
            "/admin%zz",
            "/admin;jsessionid=1/users",
            "/admin\\users",
            "*",
            "",
        ] {
            assert!(!path_is_normal(other), "{other}");
        }
    }

    fn unclear_of(path: &str, headers: &HeaderMap) -> Option<&'static str> {
        unclear(path, headers, Fields::of(headers))
    }

    proptest::proptest! {
        #![proptest_config(crate::rules::proptest_config())]

        /// The byte scan lets through only what the segment rules pass.
        #[test]
        fn the_quick_look_agrees_with_the_segment_rules(path in "/[a./%2Ff;\\\\]{0,12}") {
            proptest::prop_assert_eq!(path_is_normal(&path), segments_are_normal(&path[1..]));
        }
    }

    #[test]
    fn two_hosts_and_rewriting_headers_are_unclear() {
        assert_eq!(unclear_of("/a", &headers(&[("host", "a.example")])), None);
        assert_eq!(
            unclear_of("/a", &headers(&[("host", "a.example"), ("host", "b.example")])),
            Some("two-hosts")
        );
        let two_accepts = headers(&[("host", "a.example"), ("accept", "a/b"), ("accept", "c/d")]);
        assert_eq!(unclear_of("/a", &two_accepts), None, "another field twice");
        for name in [
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ] {
            let mut request = headers(&[("host", "a.example")]);
            request.insert(HeaderName::from_static(name), "/admin".parse().expect("valid"));
            assert_eq!(unclear_of("/a", &request), Some("rewritten"), "{name}");
        }
        assert_eq!(unclear_of("//a", &headers(&[])), Some("path-not-normal"));
    }
}

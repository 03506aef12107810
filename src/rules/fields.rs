//! Which of the request fields the rules read a request carries, found in
//! one walk over its names: most requests carry few of them, and looking
//! each one up would hash its name, some ten times a request.

use http::{HeaderMap, header};

use super::{cache_control::CacheControl, target::REWRITES};

/// What the rules read of a request's head, read once while planning:
/// which of their fields it carries, and its `Cache-Control`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) fields: Fields,
    pub(crate) asked: CacheControl,
}

impl Head {
    /// The head of a request with `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let fields = Fields::of(headers);
        // Parsed only where there is one: most requests carry none.
        let asked = if fields.cache_control {
            CacheControl::parse(headers)
        } else {
            CacheControl::default()
        };
        Self { fields, asked }
    }
}

/// The request fields the rules read that a request carries. A rule asks
/// here before it looks a field up; where a field is present, the rule
/// still reads it from the header map.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) cache_control: bool,
    pub(crate) pragma: bool,
    pub(crate) range: bool,
    pub(crate) authorization: bool,
    pub(crate) cookie: bool,
    /// `If-None-Match` or `If-Modified-Since`.
    pub(crate) conditions: bool,
    /// One of the fields that rewrite a request's target or method.
    pub(crate) rewrite: bool,
    /// Some field appears more than once.
    pub(crate) repeated: bool,
}

impl Fields {
    /// The fields of a request with `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut fields = Self {
            repeated: headers.len() != headers.keys_len(),
            ..Self::default()
        };
        for name in headers.keys() {
            let flag = if name == header::CACHE_CONTROL {
                &mut fields.cache_control
            } else if name == header::PRAGMA {
                &mut fields.pragma
            } else if name == header::RANGE {
                &mut fields.range
            } else if name == header::AUTHORIZATION {
                &mut fields.authorization
            } else if name == header::COOKIE {
                &mut fields.cookie
            } else if name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE {
                &mut fields.conditions
            } else if REWRITES.contains(name) {
                &mut fields.rewrite
            } else {
                continue;
            };
            *flag = true;
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rules::headers;

    #[test]
    fn each_field_is_found_whatever_else_is_there() {
        type Found = fn(&Fields) -> bool;
        let cases: [(&str, Found); 9] = [
            ("cache-control", |f| f.cache_control),
            ("pragma", |f| f.pragma),
            ("range", |f| f.range),
            ("authorization", |f| f.authorization),
            ("cookie", |f| f.cookie),
            ("if-none-match", |f| f.conditions),
            ("if-modified-since", |f| f.conditions),
            ("x-original-url", |f| f.rewrite),
            ("x-http-method-override", |f| f.rewrite),
        ];
        for (name, found) in cases {
            let alone = Fields::of(&headers(&[(name, "x")]));
            assert!(found(&alone), "{name}");
            let among = Fields::of(&headers(&[
                ("host", "a"),
                ("accept", "*/*"),
                (name, "x"),
                ("x-y", "z"),
            ]));
            assert!(found(&among), "{name} among others");
            assert_eq!(
                Fields {
                    repeated: false,
                    ..alone
                },
                Fields {
                    repeated: false,
                    ..among
                },
                "{name}: nothing else found"
            );
        }
        assert_eq!(
            Fields::of(&headers(&[("host", "a"), ("accept", "*/*")])),
            Fields::default()
        );
        assert!(Fields::of(&headers(&[("host", "a"), ("host", "b")])).repeated);
    }

    proptest! {
        #![proptest_config(crate::rules::proptest_config())]

        /// What the walk finds is what looking each field up finds.
        #[test]
        fn the_walk_agrees_with_lookups(picks in proptest::collection::vec(0..12_usize, 0..8)) {
            const NAMES: [&str; 12] = [
                "cache-control", "pragma", "range", "authorization", "cookie", "if-none-match",
                "if-modified-since", "x-rewrite-url", "host", "accept", "x-forwarded-host", "etag",
            ];
            let pairs: Vec<_> = picks.iter().map(|&i| (NAMES[i], "v")).collect();
            let map = headers(&pairs);
            let fields = Fields::of(&map);
            prop_assert_eq!(fields.cache_control, map.contains_key(header::CACHE_CONTROL));
            prop_assert_eq!(fields.pragma, map.contains_key(header::PRAGMA));
            prop_assert_eq!(fields.range, map.contains_key(header::RANGE));
            prop_assert_eq!(fields.authorization, map.contains_key(header::AUTHORIZATION));
            prop_assert_eq!(fields.cookie, map.contains_key(header::COOKIE));
            prop_assert_eq!(
                fields.conditions,
                map.contains_key(header::IF_NONE_MATCH) || map.contains_key(header::IF_MODIFIED_SINCE)
            );
            prop_assert_eq!(fields.rewrite, REWRITES.iter().any(|name| map.contains_key(name)));
            let repeated = map.keys().any(|name| map.get_all(name).iter().nth(1).is_some());
            prop_assert_eq!(fields.repeated, repeated);
        }
    }
}

//! The per-route policy table.

use std::{collections::HashMap, fmt};

use crate::policy::Policy;

/// Values (policies, key functions) by path. An exact path beats any
/// prefix; a longer prefix beats a shorter one; a later insert for the same
/// pattern replaces the earlier.
#[derive(Debug, Clone)]
pub(crate) struct Routes<T = Policy> {
    exact: HashMap<String, T>,
    /// Prefixes without their `/*`, longest first.
    prefixes: Vec<(String, T)>,
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            prefixes: Vec::new(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Pattern<'a> {
    Exact(&'a str),
    Prefix(&'a str),
}

fn parse(pattern: &str) -> Result<Pattern<'_>, &'static str> {
    if !pattern.starts_with('/') {
        return Err("it must start with `/`");
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) if !prefix.contains('*') => Ok(Pattern::Prefix(prefix)),
        _ if pattern.contains('*') => Err("`*` may only end it, as `/prefix/*`"),
        _ => Ok(Pattern::Exact(pattern)),
    }
}

/// A route pattern that breaks the rules of
/// [`StampedeLayer::route`](crate::StampedeLayer::route): it names the
/// pattern and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pattern: String,
    rule: &'static str,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid route pattern {:?}: {}", self.pattern, self.rule)
    }
}

impl std::error::Error for RouteError {}

/// Whether `pattern` is one the route table takes.
#[cfg(feature = "config")]
pub(crate) fn check_pattern(pattern: &str) -> Result<(), RouteError> {
    parse(pattern).map(drop).map_err(|rule| RouteError {
        pattern: pattern.to_owned(),
        rule,
    })
}

impl<T> Routes<T> {
    /// Adds a route, or says why the pattern is invalid.
    pub(crate) fn try_insert(&mut self, pattern: &str, policy: T) -> Result<(), RouteError> {
        match parse(pattern) {
            Ok(Pattern::Exact(path)) => {
                self.exact.insert(path.to_owned(), policy);
            }
            Ok(Pattern::Prefix(prefix)) => {
                self.prefixes.retain(|(p, _)| p != prefix);
                self.prefixes.push((prefix.to_owned(), policy));
                self.prefixes
                    .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
            }
            Err(rule) => {
                return Err(RouteError {
                    pattern: pattern.to_owned(),
                    rule,
                });
            }
        }
        Ok(())
    }

    /// Adds a route; an invalid pattern written in code is a programming
    /// error, reported with the pattern and the rule it breaks.
    pub(crate) fn insert(&mut self, pattern: &str, policy: T) {
        if let Err(error) = self.try_insert(pattern, policy) {
            panic!("{error}");
        }
    }

    /// The value of the most specific route matching `path`.
    pub(crate) fn get(&self, path: &str) -> Option<&T> {
        if let Some(policy) = self.exact.get(path) {
            return Some(policy);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(_, policy)| policy)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ttl(s: u64) -> Policy {
        Policy::ttl(Duration::from_secs(s))
    }

    #[test]
    fn most_specific_match_wins() {
        let mut routes: Routes = Routes::default();
        routes.insert("/*", ttl(1));
        routes.insert("/api/*", ttl(2));
        routes.insert("/api/prices/*", ttl(3));
        routes.insert("/api/prices/today", ttl(4));
        assert_eq!(routes.get("/"), Some(&ttl(1)));
        assert_eq!(routes.get("/api"), Some(&ttl(2)));
        assert_eq!(routes.get("/api/posts"), Some(&ttl(2)));
        assert_eq!(routes.get("/api/prices"), Some(&ttl(3)));
        assert_eq!(routes.get("/api/prices/eur"), Some(&ttl(3)));
        assert_eq!(routes.get("/api/prices/today"), Some(&ttl(4)));
        assert_eq!(
            routes.get("/api/pricesx"),
            Some(&ttl(2)),
            "a prefix ends at a segment"
        );
    }

    #[test]
    fn no_match_without_a_route() {
        let mut routes: Routes = Routes::default();
        routes.insert("/admin/*", Policy::bypass());
        assert_eq!(routes.get("/api"), None);
        assert_eq!(routes.get("/administrator"), None);
        assert_eq!(routes.get("/admin/users"), Some(&Policy::bypass()));
    }

    #[test]
    fn a_later_route_replaces_the_same_pattern() {
        let mut routes: Routes = Routes::default();
        routes.insert("/a/*", ttl(1));
        routes.insert("/a/*", ttl(2));
        routes.insert("/a/b", ttl(3));
        routes.insert("/a/b", ttl(4));
        assert_eq!(routes.get("/a/c"), Some(&ttl(2)));
        assert_eq!(routes.get("/a/b"), Some(&ttl(4)));
        assert_eq!(routes.prefixes.len(), 1);
    }

    #[test]
    fn patterns_are_checked() {
        assert_eq!(
            parse("/pkg.Service/Method"),
            Ok(Pattern::Exact("/pkg.Service/Method"))
        );
        assert_eq!(parse("/a/*"), Ok(Pattern::Prefix("/a")));
        assert!(parse("api/*").is_err());
        assert!(parse("/a*/b").is_err());
        assert!(parse("/a/*/b/*").is_err());
        assert!(parse("/a*").is_err());
    }

    #[test]
    fn an_invalid_pattern_is_an_error_naming_it_and_the_rule() {
        let error = Routes::<Policy>::default()
            .try_insert("api/*", ttl(1))
            .expect_err("no leading slash");
        assert_eq!(
            error.to_string(),
            "invalid route pattern \"api/*\": it must start with `/`"
        );
    }

    #[test]
    #[should_panic(expected = "invalid route pattern \"/a*\"")]
    fn an_invalid_pattern_panics_with_the_pattern() {
        Routes::<Policy>::default().insert("/a*", ttl(1));
    }
}

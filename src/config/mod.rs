//! The layer's settings as a file holds them, in TOML or JSON: the default
//! policy, the route table, and the builder's limits and timeouts, each
//! named as its builder method is.
//!
//! A file maps onto the builder one to one: [`StampedeLayer::from_config`](crate::StampedeLayer::from_config)
//! calls, for each setting given, the method of its name; what a file does
//! not give keeps the builder's default. Settings are read once, when the
//! layer is made: a changed file takes effect on the next start.
//!
//! ```
//! # fn main() -> Result<(), tower_stampede::ConfigError> {
//! use std::time::Duration;
//! use tower_stampede::{Config, MemoryStore, Policy, StampedeLayer};
//!
//! let config = Config::from_toml(r#"
//!     policy = { kind = "ttl", ttl = "60s" }
//!     max_body_bytes = "1MiB"
//!
//!     [[routes]]
//!     path = "/api/popular-posts"
//!     policy = { kind = "swr", fresh = "50s", gone = "2m", stale_if_error = "5m" }
//!
//!     [[routes]]
//!     path = "/admin/*"
//!     policy = { kind = "bypass" }
//! "#)?;
//! assert_eq!(config.policy, Some(Policy::ttl(Duration::from_secs(60))));
//! let layer = StampedeLayer::from_config(MemoryStore::new(), &config)?;
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! A file is checked as it is read, and the first thing wrong in it is
//! the error: a field this crate does not know, an option its policy's
//! kind does not take, `gone` before `fresh`, a duration that is
//! negative, unitless or longer than a year, a route
//! pattern the table refuses. Each is a [`ConfigError`] that names the
//! field's path (`routes[1].policy`) and, in TOML and JSON, its line.

use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use crate::{
    human::header_name,
    key::{DefaultKey, check_pattern},
    policy::Policy,
};

mod error;
#[cfg(test)]
mod tests;

pub use crate::human::{duration, size};
pub use error::ConfigError;

/// Reads any serde type from a TOML document, with this module's errors:
/// the field's path and line. For an application's own file that holds a
/// [`Config`] among its settings (the `proxy` example's does).
///
/// # Errors
///
/// A [`ConfigError`] naming the field's path and line.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    error::from_toml(text)
}

/// [`from_toml`], for a JSON document.
///
/// # Errors
///
/// As [`from_toml`].
pub fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    error::from_json(text)
}

/// Reads a duration as a file writes it: `"500ms"`, `"60s"`, `"2m"`,
/// `"1h30m"`, `"1d"`; whole numbers, at most a year.
///
/// ```
/// use std::time::Duration;
/// use tower_stampede::config::parse_duration;
///
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("90").is_err());
/// ```
///
/// # Errors
///
/// What is wrong with `text`, in words.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::human::parse(text)
}

/// Reads a size as a file writes it: bytes, or `"512KiB"`, `"64MiB"`,
/// `"1GiB"`.
///
/// # Errors
///
/// What is wrong with `text`, in words.
pub fn parse_size(text: &str) -> Result<u64, String> {
    crate::human::parse_size(text)
}

/// The layer's settings, as a TOML or JSON file gives them (the module's
/// example). Every field is optional: one not given keeps the builder's
/// default. With the `config` feature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// [`StampedeLayer::policy`](crate::StampedeLayer::policy): for
    /// requests no route matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// [`StampedeLayer::key`](crate::StampedeLayer::key), as a
    /// [`DefaultKey`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<DefaultKey>,
    /// The route table, each route with what it sets for its pattern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// [`StampedeLayer::max_body_bytes`](crate::StampedeLayer::max_body_bytes).
    #[serde(default, with = "size", skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// [`StampedeLayer::max_body_wait`](crate::StampedeLayer::max_body_wait).
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    pub max_body_wait: Option<Duration>,
    /// [`StampedeLayer::max_buffered_bytes`](crate::StampedeLayer::max_buffered_bytes).
    #[serde(default, with = "size", skip_serializing_if = "Option::is_none")]
    pub max_buffered_bytes: Option<u64>,
    /// [`StampedeLayer::max_request_bytes`](crate::StampedeLayer::max_request_bytes).
    #[serde(default, with = "size", skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
    /// [`StampedeLayer::fallback_max_bytes`](crate::StampedeLayer::fallback_max_bytes).
    #[serde(default, with = "size", skip_serializing_if = "Option::is_none")]
    pub fallback_max_bytes: Option<u64>,
    /// [`StampedeLayer::max_waiters`](crate::StampedeLayer::max_waiters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_waiters: Option<usize>,
    /// [`StampedeLayer::max_refreshes`](crate::StampedeLayer::max_refreshes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_refreshes: Option<usize>,
    /// [`StampedeLayer::store_timeout`](crate::StampedeLayer::store_timeout).
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    pub store_timeout: Option<Duration>,
    /// [`StampedeLayer::store_retry_after`](crate::StampedeLayer::store_retry_after).
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    pub store_retry_after: Option<Duration>,
    /// [`StampedeLayer::lock_ttl`](crate::StampedeLayer::lock_ttl).
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    pub lock_ttl: Option<Duration>,
    /// [`StampedeLayer::lock_wait`](crate::StampedeLayer::lock_wait).
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    pub lock_wait: Option<Duration>,
    /// [`StampedeLayer::pass_for`](crate::StampedeLayer::pass_for).
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    pub pass_for: Option<Duration>,
    /// [`StampedeLayer::honor_no_cache`](crate::StampedeLayer::honor_no_cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_no_cache: Option<bool>,
    /// [`StampedeLayer::tag_header`](crate::StampedeLayer::tag_header): a
    /// header name, or `false` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_header: Option<TagHeader>,
}

/// What a route sets for the requests its `path` pattern matches: each
/// field is the builder method of its name called with the pattern. With
/// the `config` feature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WrittenRoute")]
#[non_exhaustive]
pub struct Route {
    /// An exact path, or a prefix ending in `/*`, as for
    /// [`StampedeLayer::route`](crate::StampedeLayer::route).
    pub path: String,
    /// [`StampedeLayer::route`](crate::StampedeLayer::route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// [`StampedeLayer::route_key`](crate::StampedeLayer::route_key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<DefaultKey>,
    /// [`StampedeLayer::ignore_cookies`](crate::StampedeLayer::ignore_cookies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_cookies: bool,
    /// [`StampedeLayer::cache_posts`](crate::StampedeLayer::cache_posts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_posts: bool,
}

impl Route {
    /// A route for `path` that sets nothing yet.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// The route with `policy`.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The route with `key`.
    pub fn key(mut self, key: DefaultKey) -> Self {
        self.key = Some(key);
        self
    }
}

/// A route as written, checked before it is one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenRoute {
    #[serde(deserialize_with = "pattern")]
    path: String,
    #[serde(default)]
    policy: Option<Policy>,
    #[serde(default)]
    key: Option<DefaultKey>,
    #[serde(default)]
    ignore_cookies: bool,
    #[serde(default)]
    cache_posts: bool,
}

impl TryFrom<WrittenRoute> for Route {
    type Error = String;

    fn try_from(written: WrittenRoute) -> Result<Self, String> {
        let sets_nothing = written.policy.is_none() && written.key.is_none();
        if sets_nothing && !written.ignore_cookies && !written.cache_posts {
            return Err(format!(
                "route {:?} sets nothing: give it a `policy`, a `key`, `ignore_cookies` or `cache_posts`",
                written.path
            ));
        }
        Ok(Self {
            path: written.path,
            policy: written.policy,
            key: written.key,
            ignore_cookies: written.ignore_cookies,
            cache_posts: written.cache_posts,
        })
    }
}

/// A route pattern the table takes.
fn pattern<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let pattern = String::deserialize(deserializer)?;
    check_pattern(&pattern).map_err(D::Error::custom)?;
    Ok(pattern)
}

/// The header responses name their tags in, or none: `"surrogate-key"`
/// or `false` in a file. With the `config` feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagHeader {
    /// No tags are read.
    Off,
    /// Tags are read from this header.
    Name(HeaderName),
}

impl TagHeader {
    /// What [`StampedeLayer::tag_header`](crate::StampedeLayer::tag_header) takes.
    pub(crate) fn header(&self) -> Option<HeaderName> {
        match self {
            Self::Off => None,
            Self::Name(name) => Some(name.clone()),
        }
    }
}

impl Serialize for TagHeader {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => serializer.serialize_bool(false),
            Self::Name(name) => serializer.serialize_str(name.as_str()),
        }
    }
}

impl<'de> Deserialize<'de> for TagHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Flag(bool),
            Name(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Flag(false) => Ok(Self::Off),
            Written::Flag(true) => Err(D::Error::custom(
                "`tag_header` is a header name, or false for none",
            )),
            Written::Name(name) => header_name(&name).map(Self::Name).map_err(D::Error::custom),
        }
    }
}

impl Config {
    /// Reads a TOML document (the module's example).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field's path and line, for anything
    /// the file gets wrong.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        from_toml(text)
    }

    /// Reads a JSON document, whose fields are those of the TOML form.
    ///
    /// # Errors
    ///
    /// As [`Config::from_toml`].
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        from_json(text)
    }

    /// The settings as a TOML document, which [`Config::from_toml`]
    /// reads back as they are.
    ///
    /// # Errors
    ///
    /// None that this crate's types make; the error of the TOML writer,
    /// should it refuse one.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|error| ConfigError::new("", error.to_string()))
    }
}

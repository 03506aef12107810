//! Cache keys: what makes two requests the same ([`MakeKey`],
//! [`DefaultKey`]), which key function a path takes (the route table), and
//! the keys of `Vary` variants.

use std::{mem, sync::Arc};

use http::{Method, header, request::Parts};
use tracing::debug;

#[cfg(feature = "config")]
mod config;
mod route;
mod variant;

pub use route::RouteError;
pub(crate) use route::Routes;
#[cfg(feature = "config")]
pub(crate) use route::check_pattern;
pub(crate) use variant::{Varies, is_variant_of, variant_tag};

/// Derives the cache key of a request; `None` sends the request straight to
/// the inner service.
///
/// Any `Fn(&http::request::Parts) -> Option<String>` closure is a key
/// function. Two requests with the same key share flights and stored
/// responses, so a key must include every part of the request that changes
/// the response (headers a response `Vary`s on are matched separately).
///
/// ```
/// use http::request::Parts;
/// use tower_stampede::{MemoryStore, StampedeLayer};
///
/// // Cache per tenant, never across tenants.
/// let layer = StampedeLayer::new(MemoryStore::new()).key(|req: &Parts| {
///     let tenant = req.headers.get("x-tenant")?.to_str().ok()?;
///     Some(format!("{tenant} {} {}", req.method, req.uri))
/// });
/// # let _ = layer;
/// ```
pub trait MakeKey: Send + Sync + 'static {
    /// The key of `request`, or `None` to leave it uncached.
    fn make_key(&self, request: &Parts) -> Option<String>;

    /// Whether the key holds every cookie a response may depend on, so that
    /// a request's other cookies are no reason to keep its response from
    /// others ([`DefaultKey::with_cookie`]). Default: `false`: a request's
    /// `Cookie` is a credential, and the response to it is shared only if it
    /// says `public` or `s-maxage`.
    fn covers_cookies(&self) -> bool {
        false
    }
}

impl<F> MakeKey for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn make_key(&self, request: &Parts) -> Option<String> {
        self(request)
    }
}

/// The default key: method, authority (lowercased, from the URI or the
/// `Host` header) and path with query, as in `GET example.com/a?b=1`.
///
/// What an application might build links from is part of it, so that no
/// one can poison a page for others by sending another value:
/// `X-Forwarded-Host`, `Forwarded`, `X-Forwarded-Proto`, `X-Forwarded-Port`
/// and `X-Forwarded-Prefix`, when present, are appended (their values with
/// `%` and space percent-encoded, so that no value can spell other parts).
/// A request whose URI names one authority and whose `Host` another, or
/// whose `Host` is not a bare authority (`host` or `host:port`, with no
/// path, query or user information), gets no key and is not cached.
///
/// Requests the layer never keys, whatever the key function: those with
/// two `Host` fields, a path not in normal form (`//a`, `/./a`, `/%61`), or
/// a header that makes some frameworks answer for another path or method
/// (`X-Original-URL`, `X-Rewrite-URL`, `X-HTTP-Method-Override`,
/// `X-HTTP-Method`, `X-Method-Override`): they go to the inner service
/// uncached.
///
/// Parts can be added or dropped, for the whole layer with
/// [`StampedeLayer::key`](crate::StampedeLayer::key) or for some routes with
/// [`StampedeLayer::route_key`](crate::StampedeLayer::route_key):
///
/// ```
/// use tower_stampede::DefaultKey;
///
/// // Per tenant; the query string (tracking parameters) does not matter.
/// let key = DefaultKey::new().with_header("x-tenant").without_query();
/// # let _ = key;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultKey {
    headers: Vec<header::HeaderName>,
    cookies: Vec<String>,
    without_query: bool,
    without_authority: bool,
}

/// Request headers that applications behind proxies build links from.
static FORWARDED: [header::HeaderName; 5] = [
    header::HeaderName::from_static("x-forwarded-host"),
    header::FORWARDED,
    header::HeaderName::from_static("x-forwarded-proto"),
    header::HeaderName::from_static("x-forwarded-port"),
    header::HeaderName::from_static("x-forwarded-prefix"),
];

impl DefaultKey {
    /// Method, authority, path and query, and the forwarded hosts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the request's values of `name` (a header the responses depend
    /// on without saying `Vary`, such as a tenant id).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn with_header(mut self, name: &str) -> Self {
        let name = header::HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("invalid header name {name:?} for a cache key"));
        self.headers.push(name);
        self
    }

    /// Adds the value of the request's cookie `name` (a language, a theme,
    /// a currency): requests with `lang=en` and `lang=de` get two entries,
    /// requests without it a third. Every other cookie is then taken not to
    /// matter: a request's `Cookie` no longer keeps the response to it from
    /// other requests with the same named values. Name every cookie the
    /// responses depend on; a session cookie named here gives each session
    /// an entry of its own.
    ///
    /// ```
    /// use tower_stampede::{DefaultKey, MemoryStore, StampedeLayer};
    ///
    /// let layer = StampedeLayer::new(MemoryStore::new())
    ///     .route_key("/docs/*", DefaultKey::new().with_cookie("lang"));
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    ///
    /// If `name` is empty or has a character a cookie name cannot have
    /// (white space, `=`, `;`, `,`, control characters).
    pub fn with_cookie(mut self, name: &str) -> Self {
        assert!(
            cookie_name_is_valid(name),
            "invalid cookie name {name:?} for a cache key"
        );
        self.cookies.push(name.to_owned());
        self
    }

    /// Leaves the query string out: requests that differ only in it share
    /// a key.
    pub fn without_query(mut self) -> Self {
        self.without_query = true;
        self
    }

    /// Leaves the authority out: every host shares the key (only for
    /// services whose responses never depend on the host). The forwarded
    /// hosts stay in.
    pub fn without_authority(mut self) -> Self {
        self.without_authority = true;
        self
    }
}

/// Whether `name` can be a cookie's name (RFC 6265's token): not empty,
/// no white space, `=`, `;`, `,` or other separator, no control character.
fn cookie_name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

impl MakeKey for DefaultKey {
    fn covers_cookies(&self) -> bool {
        !self.cookies.is_empty()
    }

    fn make_key(&self, request: &Parts) -> Option<String> {
        // One pass over the fields finds the `Host` and tells whether any
        // named part is there (most requests carry none), where looking
        // each up would hash its name.
        let named = |name: &header::HeaderName| FORWARDED.contains(name) || self.headers.contains(name);
        let (mut host, mut any_named) = (None, false);
        for (name, value) in &request.headers {
            if name == header::HOST {
                host = host.or(Some(value));
            }
            any_named = any_named || named(name);
        }
        let host = match host {
            Some(host) => Some(bare_authority(host.to_str().ok()?)?),
            None => None,
        };
        let authority = match (request.uri.authority(), host) {
            (Some(authority), Some(host)) if !authority.as_str().eq_ignore_ascii_case(host) => return None,
            (Some(authority), _) => authority.as_str(),
            (None, host) => host.unwrap_or(""),
        };
        let path = match (request.uri.path_and_query(), self.without_query) {
            (Some(pq), false) => pq.as_str(),
            (Some(pq), true) => pq.path(),
            (None, _) => "/",
        };
        let method = request.method.as_str();
        let mut key = String::with_capacity(method.len() + authority.len() + path.len() + 1);
        key.push_str(method);
        key.push(' ');
        if !self.without_authority {
            let start = key.len();
            key.push_str(authority);
            key[start..].make_ascii_lowercase();
        }
        key.push_str(path);
        if any_named {
            for name in FORWARDED.iter().chain(&self.headers) {
                for value in request.headers.get_all(name) {
                    key.push(' ');
                    key.push_str(name.as_str());
                    key.push('=');
                    push_escaped(&mut key, value.to_str().ok()?);
                }
            }
        }
        for name in &self.cookies {
            for value in cookie_values(request, name)? {
                key.push_str(" cookie:");
                key.push_str(name);
                key.push('=');
                push_escaped(&mut key, value);
            }
        }
        Some(key)
    }
}

/// `host` if it is an authority with no user information, as a `Host`
/// must be (RFC 9110 section 7.2): a `/` or `?` in it would spell the key
/// of another path.
fn bare_authority(host: &str) -> Option<&str> {
    if is_plain_authority(host.as_bytes()) {
        return Some(host);
    }
    let authority: http::uri::Authority = host.parse().ok()?;
    (authority.as_str() == host && !host.contains('@')).then_some(host)
}

/// Whether `host` is a name or an address with perhaps a port (`a.b`,
/// `a.b:8080`), which needs no parse. One look at each byte in a table and
/// one search for the colon: a match on each byte, carrying the colon's
/// place along, was a third of the key's instructions.
fn is_plain_authority(host: &[u8]) -> bool {
    if host.is_empty() || !host.iter().all(|&b| HOST_BYTE[usize::from(b)]) {
        return false;
    }
    match host.iter().position(|&b| b == b':') {
        None => true,
        Some(at) => {
            let port = &host[at + 1..];
            at > 0 && (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit)
        }
    }
}

/// The bytes of a plain authority: letters, digits, `.`, `-` and `:`.
static HOST_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c: u8 = 0;
    loop {
        table[c as usize] = c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b':';
        if c == u8::MAX {
            break table;
        }
        c += 1;
    }
};

/// Appends `value`, with `%` and space percent-encoded: key parts are
/// separated by spaces, so no value can pass for more than one part.
fn push_escaped(key: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '%' => key.push_str("%25"),
            ' ' => key.push_str("%20"),
            c => key.push(c),
        }
    }
}

/// The values of the request's cookie `name`, in order; `None` when a
/// `Cookie` field is not visible ASCII (the request is then not cached).
fn cookie_values<'a>(request: &'a Parts, name: &str) -> Option<Vec<&'a str>> {
    let mut values = Vec::new();
    for field in request.headers.get_all(header::COOKIE) {
        for pair in field.to_str().ok()?.split(';') {
            if let Some((key, value)) = pair.trim().split_once('=')
                && key == name
            {
                values.push(value);
            }
        }
    }
    Some(values)
}

/// The longest key a request is cached under; a request with a longer one
/// goes to the inner service uncached. Keys are kept in every table the
/// layer has (flights, hit-for-pass, `Vary` names, the store's index): a
/// bound on each keeps a client that sends huge headers from making
/// each of its requests cost that much memory. 8 KiB holds any URL that
/// browsers and common servers accept in a request line.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// A layer's key functions: the default, and those of route patterns.
#[derive(Clone)]
pub(crate) struct Keys {
    default: Arc<dyn MakeKey>,
    routes: Routes<Arc<dyn MakeKey>>,
}

impl Keys {
    pub(crate) fn new() -> Self {
        Self {
            default: Arc::new(DefaultKey::new()),
            routes: Routes::default(),
        }
    }

    pub(crate) fn set_default(&mut self, key: impl MakeKey) {
        self.default = Arc::new(key);
    }

    /// # Panics
    ///
    /// For an invalid pattern, as `StampedeLayer::route`.
    pub(crate) fn route(&mut self, pattern: &str, key: impl MakeKey) {
        self.routes.insert(pattern, Arc::new(key));
    }

    /// The key function of requests to `path`.
    fn of(&self, path: &str) -> &dyn MakeKey {
        self.routes.get(path).unwrap_or(&self.default).as_ref()
    }

    /// The key of `parts` as they are, by the route's key function or the
    /// default; `None` for a key over [`MAX_KEY_BYTES`].
    pub(crate) fn make(&self, parts: &Parts) -> Option<String> {
        let key = self.of(parts.uri.path()).make_key(parts)?;
        if key.len() > MAX_KEY_BYTES {
            debug!(bytes = key.len(), "key too long: not cached");
            return None;
        }
        Some(key)
    }

    /// Whether the keys of requests to `path` hold the cookies that matter.
    pub(crate) fn cover_cookies(&self, path: &str) -> bool {
        self.of(path).covers_cookies()
    }

    /// The key of a `GET` for `parts`' target: what a `HEAD` shares, and
    /// what a write to the target invalidates.
    pub(crate) fn of_get(&self, parts: &mut Parts) -> Option<String> {
        let method = mem::replace(&mut parts.method, Method::GET);
        let key = self.make(parts);
        parts.method = method;
        key
    }
}

#[cfg(test)]
mod tests;

//! Cache keys: what makes two requests the same ([`MakeKey`],
//! [`DefaultKey`]), which key function a path takes (the route table), and
//! the keys of `Vary` variants.

use std::{mem, sync::Arc};

use http::{Method, header, request::Parts};

mod route;
mod variant;

pub use route::RouteError;
pub(crate) use route::Routes;
pub(crate) use variant::{Varies, variant_tag};

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
/// Hosts an application might build links from are part of it, so that no
/// one can poison a page for others by sending a different one:
/// `X-Forwarded-Host` and `Forwarded`, when present, are appended; a request
/// whose URI names one authority and whose `Host` another, or whose `Host`
/// is not visible ASCII, gets no key and is not cached.
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
#[derive(Debug, Clone, Default)]
pub struct DefaultKey {
    headers: Vec<header::HeaderName>,
    cookies: Vec<String>,
    without_query: bool,
    without_authority: bool,
}

/// Request headers naming a host that applications behind proxies trust.
const FORWARDED_HOSTS: [header::HeaderName; 2] = [
    header::HeaderName::from_static("x-forwarded-host"),
    header::FORWARDED,
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
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        assert!(valid, "invalid cookie name {name:?} for a cache key");
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

impl MakeKey for DefaultKey {
    fn covers_cookies(&self) -> bool {
        !self.cookies.is_empty()
    }

    fn make_key(&self, request: &Parts) -> Option<String> {
        let host = match request.headers.get(header::HOST) {
            Some(host) => Some(host.to_str().ok()?),
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
        for name in FORWARDED_HOSTS.iter().chain(&self.headers) {
            for value in request.headers.get_all(name) {
                key.push(' ');
                key.push_str(name.as_str());
                key.push('=');
                key.push_str(value.to_str().ok()?);
            }
        }
        for name in &self.cookies {
            for value in cookie_values(request, name)? {
                key.push_str(" cookie:");
                key.push_str(name);
                key.push('=');
                key.push_str(value);
            }
        }
        Some(key)
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
    /// default.
    pub(crate) fn make(&self, parts: &Parts) -> Option<String> {
        self.of(parts.uri.path()).make_key(parts)
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
mod tests {
    use super::*;
    use http::Request;

    fn key(req: Request<()>) -> Option<String> {
        DefaultKey::new().make_key(&req.into_parts().0)
    }

    #[test]
    fn method_authority_path_and_query() {
        let req = Request::get("/api/posts?page=2").header("host", "Example.COM:8080");
        assert_eq!(
            key(req.body(()).expect("valid")).as_deref(),
            Some("GET example.com:8080/api/posts?page=2")
        );
        let absolute = Request::head("http://api.example.com/x").body(()).expect("valid");
        assert_eq!(key(absolute).as_deref(), Some("HEAD api.example.com/x"));
        let bare = Request::get("/").body(()).expect("valid");
        assert_eq!(key(bare).as_deref(), Some("GET /"));
    }

    #[test]
    fn different_authorities_are_different_keys() {
        let a = Request::get("/x")
            .header("host", "a.example")
            .body(())
            .expect("valid");
        let b = Request::get("/x")
            .header("host", "b.example")
            .body(())
            .expect("valid");
        assert_ne!(key(a), key(b));
    }

    #[test]
    fn a_host_that_differs_from_the_target_is_not_cached() {
        let poisoned = Request::get("http://api.example/x").header("host", "evil.example");
        assert_eq!(key(poisoned.body(()).expect("valid")), None);
        let same = Request::get("http://api.example/x").header("host", "API.example");
        assert_eq!(
            key(same.body(()).expect("valid")).as_deref(),
            Some("GET api.example/x")
        );
    }

    #[test]
    fn forwarded_hosts_are_part_of_the_key() {
        let plain = Request::get("/x")
            .header("host", "api.example")
            .body(())
            .expect("valid");
        let forwarded = Request::get("/x")
            .header("host", "api.example")
            .header("x-forwarded-host", "evil.example")
            .body(())
            .expect("valid");
        let standard = Request::get("/x")
            .header("host", "api.example")
            .header("forwarded", "host=evil.example")
            .body(())
            .expect("valid");
        assert_eq!(
            key(forwarded).as_deref(),
            Some("GET api.example/x x-forwarded-host=evil.example")
        );
        assert_eq!(
            key(standard).as_deref(),
            Some("GET api.example/x forwarded=host=evil.example")
        );
        assert_eq!(key(plain).as_deref(), Some("GET api.example/x"));
    }

    #[test]
    fn named_cookies_are_part_of_the_key_and_no_other() {
        let key = |cookies: &[&str]| {
            let mut request = Request::get("http://api.example/docs");
            for cookie in cookies {
                request = request.header("cookie", *cookie);
            }
            DefaultKey::new()
                .with_cookie("lang")
                .make_key(&request.body(()).expect("valid").into_parts().0)
        };
        let english = key(&["lang=en; session=alice"]);
        assert_eq!(english.as_deref(), Some("GET api.example/docs cookie:lang=en"));
        assert_eq!(
            key(&["session=bob", "lang=en"]),
            english,
            "other cookies do not count"
        );
        assert_ne!(key(&["lang=de; session=alice"]), english);
        assert_eq!(key(&["session=alice"]).as_deref(), Some("GET api.example/docs"));
        assert_ne!(key(&["lang="]), key(&[]), "empty is a value");
        assert_ne!(key(&["xlang=en"]), english, "names match whole");
        assert!(DefaultKey::new().with_cookie("lang").covers_cookies());
        assert!(!DefaultKey::new().covers_cookies());
    }

    #[test]
    #[should_panic(expected = "invalid cookie name")]
    fn a_cookie_name_must_be_a_token() {
        let _ = DefaultKey::new().with_cookie("lang=en");
    }

    #[test]
    fn parts_can_be_added_and_dropped() {
        let parts = |key: DefaultKey| {
            let req = Request::get("http://api.example/posts?utm=1")
                .header("x-tenant", "acme")
                .body(())
                .expect("valid");
            key.make_key(&req.into_parts().0)
        };
        assert_eq!(
            parts(DefaultKey::new()).as_deref(),
            Some("GET api.example/posts?utm=1")
        );
        assert_eq!(
            parts(DefaultKey::new().with_header("x-tenant").without_query()).as_deref(),
            Some("GET api.example/posts x-tenant=acme")
        );
        assert_eq!(
            parts(DefaultKey::new().without_authority()).as_deref(),
            Some("GET /posts?utm=1")
        );
    }

    #[test]
    fn an_opaque_host_is_not_cached() {
        let req = Request::get("/x")
            .header(
                "host",
                http::HeaderValue::from_bytes(b"caf\xe9").expect("opaque is valid"),
            )
            .body(())
            .expect("valid");
        assert_eq!(key(req), None);
    }
}

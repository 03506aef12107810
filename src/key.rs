//! Cache keys.

use http::{header, request::Parts};

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
/// A request whose `Host` is not visible ASCII gets no key and is not cached.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultKey;

impl MakeKey for DefaultKey {
    fn make_key(&self, request: &Parts) -> Option<String> {
        let authority = match request.uri.authority() {
            Some(authority) => authority.as_str(),
            None => match request.headers.get(header::HOST) {
                Some(host) => host.to_str().ok()?,
                None => "",
            },
        };
        let path = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let method = request.method.as_str();
        let mut key = String::with_capacity(method.len() + authority.len() + path.len() + 1);
        key.push_str(method);
        key.push(' ');
        key.extend(authority.chars().map(|c| c.to_ascii_lowercase()));
        key.push_str(path);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn key(req: Request<()>) -> Option<String> {
        DefaultKey.make_key(&req.into_parts().0)
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

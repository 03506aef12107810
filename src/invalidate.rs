//! Invalidation: by key and by tag on the layer, and by successful unsafe
//! requests (RFC 9111 section 4.4).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use http_body::Body;
use tower_service::Service;

use crate::{
    body::StampedeBody,
    service::{Shared, forwarded},
    status::{CacheStatus, Fwd},
    store::Store,
    vary::variant_tag,
};

/// Methods whose success invalidates what is stored for their target.
pub(crate) fn is_unsafe(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// The tags of a response, from `name`: whitespace-separated, as in
/// `Surrogate-Key: posts post-42`.
pub(crate) fn tags(headers: &HeaderMap, name: Option<&header::HeaderName>) -> Vec<String> {
    let Some(name) = name else { return Vec::new() };
    let mut tags: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// What an unsafe request needs to know to invalidate after it succeeds:
/// the key of a `GET` of its own target, and its authority, against which
/// `Location` and `Content-Location` are resolved.
pub(crate) struct Target {
    pub(crate) key: Option<String>,
    pub(crate) host: Option<HeaderValue>,
}

impl<St: Store> Shared<St> {
    /// The cache key of a `GET` for a `Location`-style `value`, if it names
    /// the same authority as `host` (a relative reference always does).
    fn location_key(&self, value: &HeaderValue, host: Option<&HeaderValue>) -> Option<String> {
        let uri: Uri = value.to_str().ok()?.parse().ok()?;
        if let Some(authority) = uri.authority() {
            let host = host?.to_str().ok()?;
            if !authority.as_str().eq_ignore_ascii_case(host) {
                return None;
            }
        }
        let path = uri.path_and_query()?.as_str();
        if !path.starts_with('/') {
            return None;
        }
        let mut request = Request::get(path);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        let (mut parts, ()) = request.body(()).ok()?.into_parts();
        self.get_key(&mut parts)
    }

    /// Invalidates `key` and its `Vary` variants in the store, and forgets
    /// any hit-for-pass mark.
    pub(crate) async fn invalidate(&self, key: &str) {
        self.state.forget_in_process(key).await;
        let timeout = self.config.store_timeout;
        self.store_call_always("invalidate", key, timeout, self.store.invalidate(key))
            .await;
        let variants = variant_tag(key);
        let purge = self.store.invalidate_tag(&variants);
        self.store_call_always("invalidate variants", key, timeout, purge)
            .await;
    }
}

/// Sends an unsafe request to the inner service and, if it succeeds (2xx or
/// 3xx), invalidates the stored `GET` of its target and of the same-authority
/// `Location` and `Content-Location` it answers with, before answering.
pub(crate) async fn write_through<S, St, ReqBody, B>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    request: Request<ReqBody>,
    target: Target,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    St: Store,
    B: Body,
{
    let response = inner.call(request).await?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        let locations = [header::LOCATION, header::CONTENT_LOCATION]
            .iter()
            .filter_map(|name| response.headers().get(name))
            .filter_map(|value| shared.location_key(value, target.host.as_ref()));
        let mut keys: Vec<String> = target.key.into_iter().chain(locations).collect();
        keys.dedup();
        // In a task of its own: a client that hangs up once the write is
        // done must not leave the old page in place.
        let invalidation = tokio::spawn(async move {
            for key in &keys {
                shared.invalidate(key).await;
            }
        });
        let _ = invalidation.await;
    }
    Ok(forwarded(response, CacheStatus::forward(Fwd::Method)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_whitespace_separated_and_deduplicated() {
        let mut headers = HeaderMap::new();
        headers.append("surrogate-key", HeaderValue::from_static("posts  post-42"));
        headers.append("surrogate-key", HeaderValue::from_static("posts home"));
        let name = header::HeaderName::from_static("surrogate-key");
        assert_eq!(tags(&headers, Some(&name)), ["home", "post-42", "posts"]);
        assert!(tags(&headers, None).is_empty());
    }

    #[test]
    fn only_writes_invalidate() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_unsafe(&method), "{method}");
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_unsafe(&method), "{method}");
        }
    }
}

//! Unsafe requests (`POST`, `PUT`, `PATCH`, `DELETE`): forwarded, and on
//! success their target invalidated (RFC 9111 section 4.4).

use std::sync::Arc;

use http::{HeaderValue, Request, Response, Uri, header};
use http_body::Body;
use tower_service::Service;

use crate::{
    body::StampedeBody,
    key::Keys,
    plan::Target,
    response::forwarded,
    rules::status::{CacheStatus, Fwd},
    shared::Shared,
    store::Store,
};

/// Sends an unsafe request to the inner service and, if it succeeds (2xx or
/// 3xx), invalidates the stored `GET` of its target and of the same-authority
/// `Location` and `Content-Location` it answers with, before answering.
pub(crate) async fn write<S, St, ReqBody, B>(
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
        let keys = &shared.config.keys;
        let locations = [header::LOCATION, header::CONTENT_LOCATION]
            .iter()
            .filter_map(|name| response.headers().get(name))
            .filter_map(|value| location_key(keys, value, target.host.as_ref()));
        let mut stale: Vec<String> = target.key.into_iter().chain(locations).collect();
        stale.dedup();
        // In a task of its own: a client that hangs up once the write is
        // done must not leave the old page in place.
        let invalidation = tokio::spawn(async move {
            let timeout = Some(shared.config.store_timeout);
            for key in &stale {
                // A failure is counted; the write itself succeeded.
                let _ = shared.invalidate(key, timeout).await;
            }
        });
        let _ = invalidation.await;
    }
    Ok(forwarded(response, CacheStatus::forward(Fwd::Method)))
}

/// The cache key of a `GET` for a `Location`-style `value`, if it names the
/// same authority as `host` (a relative reference always does).
fn location_key(keys: &Keys, value: &HeaderValue, host: Option<&HeaderValue>) -> Option<String> {
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
    keys.of_get(&mut parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_keys_on_the_same_authority_only() {
        let keys = Keys::new();
        let host = HeaderValue::from_static("api.example");
        let key =
            |location: &'static str| location_key(&keys, &HeaderValue::from_static(location), Some(&host));
        assert_eq!(key("/posts/1").as_deref(), Some("GET api.example/posts/1"));
        assert_eq!(
            key("http://API.example/posts/1?x=1").as_deref(),
            Some("GET api.example/posts/1?x=1")
        );
        assert_eq!(key("http://evil.example/posts/1"), None, "another authority");
        assert_eq!(key("posts/1"), None, "not a path");
    }
}

//! Sending a request on to the inner service, untouched but for the
//! response's `Cache-Status`.

use http::{Request, Response};
use http_body::Body;
use tower::ServiceExt;
use tower_service::Service;

use crate::{body::StampedeBody, response::forwarded, rules::status::CacheStatus, shared::Shared};

/// Sends a request that cannot use the cache to the inner service.
pub(super) async fn forward<S, St, ReqBody, B>(
    shared: &Shared<St>,
    inner: S,
    request: Request<ReqBody>,
    status: CacheStatus,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    B: Body,
{
    shared.state.counters.origin_calls.incr();
    // Boxed: the inner service's future (an HTTP client's is kilobytes)
    // would otherwise be part of every cacheable request's future, though
    // few go forward: a thousand waiters of one flight would each carry it.
    Ok(forwarded(Box::pin(inner.oneshot(request)).await?, status))
}

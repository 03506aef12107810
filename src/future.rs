//! The service's response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use crate::{body::StampedeBody, rules::status::CACHE_STATUS};

type CachedFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<StampedeBody<B>>, E>> + Send>>;

pin_project! {
    /// Response future of [`Stampede`](crate::Stampede).
    ///
    /// A request that does not use the cache (a bypass route, a `POST`) is
    /// the inner service's future with a `Cache-Status` added on the way out:
    /// no allocation. A hit on an entry the store has at hand (the memory
    /// store, a near cache) is answered in `call` itself: the response is
    /// ready, again with no allocation. Any other cacheable request runs
    /// the cache flow in one boxed future.
    pub struct ResponseFuture<F, B, E>
    where
        B: Body,
    {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E>
    where
        B: Body,
    {
        Forward { #[pin] future: F, status: Option<HeaderValue> },
        Cached { future: CachedFuture<B, E> },
        Ready { response: Option<Response<StampedeBody<B>>> },
    }
}

impl<F, B: Body, E> ResponseFuture<F, B, E> {
    pub(crate) fn forward(future: F, status: HeaderValue) -> Self {
        Self {
            kind: Kind::Forward {
                future,
                status: Some(status),
            },
        }
    }

    pub(crate) fn cached(future: CachedFuture<B, E>) -> Self {
        Self {
            kind: Kind::Cached { future },
        }
    }

    pub(crate) fn ready(response: Response<StampedeBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<StampedeBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Forward { future, status } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some(status) = status.take() {
                    response.headers_mut().append(CACHE_STATUS, status);
                }
                Poll::Ready(Ok(response.map(StampedeBody::inner)))
            }
            KindProj::Cached { future } => future.as_mut().poll(cx),
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F, B: Body, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Forward { .. } => "forward",
            Kind::Cached { .. } => "cached",
            Kind::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture").field("kind", &kind).finish()
    }
}

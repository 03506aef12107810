//! The middleware service: each request is planned from its head, then
//! handed to one request stage.

use std::{
    fmt, mem,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::{
    body::{BoxError, StampedeBody},
    future::ResponseFuture,
    plan::{Plan, plan},
    request::{self, NoReplay, Reader},
    shared::Shared,
    stats::Stats,
    store::Store,
};

/// The middleware made by [`StampedeLayer`](crate::StampedeLayer): caches
/// and collapses the requests of an inner `http` service.
///
/// It keeps the inner service's error type: the inner service's errors reach
/// the client that caused them, and the cache itself never adds one.
///
/// `poll_ready` is the inner service's. A request that reaches the inner
/// service is served by the instance that was readied, a clone taking its
/// place. A hit on an entry the store has at hand (the memory store, a
/// near cache: [`Store::get_now`](crate::Store::get_now)) is answered in
/// `call` and leaves the readied instance, and whatever it reserved (a
/// concurrency limit's permit), for the next request; until then the
/// reservation is held. Any other request takes the readied instance with
/// it, whether or not it reaches the inner service (a request collapsed
/// onto another's does not), and dropping it releases what it reserved.
///
/// With [`NoReplay`] (the default) it takes requests with any body; with a
/// [`Replay`](crate::Replay) (from
/// [`StampedeLayer::replay_requests`](crate::StampedeLayer::replay_requests)),
/// whose `POST` requests it may read, the body must be an
/// [`http_body::Body`].
pub struct Stampede<S, St, R = NoReplay> {
    inner: S,
    shared: Arc<Shared<St>>,
    replay: R,
}

impl<S, St, R> Stampede<S, St, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>, replay: R) -> Self {
        Self {
            inner,
            shared,
            replay,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the layer.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St, R> Stampede<S, St, R> {
    /// The readied inner service, for a request that may call it, a clone
    /// left in its place: the clone may not be ready (tower-service's "be
    /// careful when cloning inner services").
    fn take_inner(&mut self) -> S {
        let clone = self.inner.clone();
        mem::replace(&mut self.inner, clone)
    }
}

impl<S, St: Store, R> Stampede<S, St, R> {
    /// The counters of the layer this service came from.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}

impl<S: Clone, St, R: Clone> Clone for Stampede<S, St, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            replay: self.replay.clone(),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, R> fmt::Debug for Stampede<S, St, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stampede")
            .field("inner", &self.inner)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

impl<S, St, R, ReqBody, ResBody> Service<Request<ReqBody>> for Stampede<S, St, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store,
    R: Reader<ReqBody>,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError> + Send,
{
    type Response = Response<StampedeBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        shared.state.counters.requests.incr();
        let (mut parts, body) = request.into_parts();
        let plan = plan(&shared.config, &shared.state.varies, &mut parts, R::READS);
        // A hit is answered from the request's parts: neither the request
        // (some 220 bytes, each move a `memcpy`) is put back together, nor
        // the readied inner service cloned and dropped.
        let judged = match &plan {
            Plan::Cache(job) => match request::at_once(shared, &parts, job) {
                Ok(response) => return ResponseFuture::ready(response),
                Err(judged) => judged,
            },
            _ => None,
        };
        let mut inner = self.take_inner();
        let request = Request::from_parts(parts, body);
        let shared = &self.shared;
        let counters = &shared.state.counters;
        match plan {
            Plan::Forward(fwd) => {
                counters.bypassed.incr();
                counters.origin_calls.incr();
                ResponseFuture::forward(inner.call(request), fwd.static_value())
            }
            Plan::Write(target) => {
                counters.bypassed.incr();
                counters.origin_calls.incr();
                let shared = Arc::clone(shared);
                ResponseFuture::cached(Box::pin(request::write(shared, inner, request, target)))
            }
            Plan::Cache(job) => {
                let shared = Arc::clone(shared);
                ResponseFuture::cached(Box::pin(request::lookup(shared, inner, request, job, judged)))
            }
            Plan::Read(read) => {
                let (shared, replay) = (Arc::clone(shared), self.replay.clone());
                ResponseFuture::cached(Box::pin(request::post_read(shared, replay, inner, request, read)))
            }
        }
    }
}

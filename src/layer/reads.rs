//! The builder of a layer that reads request bodies, so that `POST`
//! requests can be cached as reads (gRPC unary calls, GraphQL queries).

use http_body::Body;

use super::StampedeLayer;
use crate::{body::StampedeBody, request::Replay, store::Store};

impl<St: Store, R> StampedeLayer<St, R> {
    /// The largest request body a layer that reads them
    /// ([`cache_posts`](StampedeLayer::cache_posts)) buffers to key the
    /// request by. A larger body streams to the inner service as it
    /// comes, and the request is not cached. Default: 64 KiB.
    pub fn max_request_bytes(mut self, limit: usize) -> Self {
        self.config().max_request_bytes = limit;
        self
    }

    /// Lets the layer read request bodies, so that `POST` requests can be
    /// cached as reads ([`cache_posts`](StampedeLayer::cache_posts)):
    /// `replay` turns a body as the layer read it (a [`StampedeBody`] that
    /// yields the client's frames unchanged) back into the inner service's
    /// body type.
    ///
    /// For tonic, `tonic::body::Body::new`; for axum,
    /// `axum::body::Body::new`.
    ///
    /// ```
    /// use tower_stampede::{MemoryStore, StampedeLayer};
    ///
    /// let layer = StampedeLayer::new(MemoryStore::new())
    ///     .replay_requests(axum::body::Body::new)
    ///     .cache_posts("/graphql");
    /// # let _ = layer;
    /// ```
    pub fn replay_requests<B, F>(self, replay: F) -> StampedeLayer<St, Replay<F, B>>
    where
        B: Body,
        F: Fn(StampedeBody<B>) -> B + Send + Sync + 'static,
    {
        StampedeLayer {
            shared: self.shared,
            replay: Replay::new(replay),
        }
    }
}

impl<St: Store, F, B> StampedeLayer<St, Replay<F, B>> {
    /// Caches `POST` requests to paths matching `pattern` as reads: a gRPC
    /// unary method (`/pkg.Service/Method`), a GraphQL endpoint that
    /// answers queries. Patterns and precedence as for
    /// [`route`](StampedeLayer::route), whose policy they take.
    ///
    /// The body is read up to
    /// [`max_request_bytes`](StampedeLayer::max_request_bytes) and handed
    /// to the inner service unchanged; the key is the target's key (the
    /// route's key function, with the metadata headers it names), the
    /// request's `Content-Type`, `Content-Encoding`, `grpc-encoding` and
    /// `grpc-accept-encoding`, and the SHA-256 of the body. A gRPC response
    /// is stored only with `grpc-status: 0`, trailers included; other
    /// statuses answer the requests collapsed onto their call and are not
    /// stored. Since keys hold a digest, purge such entries by tag: a
    /// service that sends `surrogate-key` metadata (the
    /// [`tag_header`](StampedeLayer::tag_header)) tags them for
    /// [`invalidate_tag`](StampedeLayer::invalidate_tag).
    ///
    /// Name unary methods only: a streaming method under a pattern would
    /// have its request, and then its response, buffered whole. gRPC
    /// requests to methods not named here pass through untouched, and
    /// their `POST` invalidates nothing. Other `POST` requests keep
    /// invalidating their target on success.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_stampede::{DefaultKey, MemoryStore, Policy, StampedeLayer};
    ///
    /// let layer = StampedeLayer::new(MemoryStore::new())
    ///     // `tonic::body::Body::new` for tonic.
    ///     .replay_requests(axum::body::Body::new)
    ///     .route("/posts.Posts/Popular", Policy::ttl(Duration::from_secs(60)))
    ///     .cache_posts("/posts.Posts/Popular")
    ///     // A metadata header the answer depends on.
    ///     .route_key("/posts.Posts/Popular", DefaultKey::new().with_header("x-tenant"));
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    ///
    /// As [`route`](StampedeLayer::route), for an invalid pattern.
    pub fn cache_posts(mut self, pattern: &str) -> Self {
        self.config().reads.insert(pattern, ());
        self
    }
}

//! A [Tower] middleware that keeps a cache stampede away from your origin.
//!
//! When a hot cached response expires under load, every request that misses
//! would otherwise run the same slow origin call at once. [`StampedeLayer`]
//! puts one cache in front of any `http` service (axum, tonic, hyper + tower)
//! and makes sure that, for each cache key, only one request at a time goes to
//! the origin:
//!
//! - **single flight**: identical in-flight requests in one process share one
//!   origin call; the others wait for it and are woken by the leader, not by
//!   polling;
//! - **a rebuild lock in the store**: layers that share a [`Store`] (replicas
//!   sharing a `RedisStore`, say) take a fenced lock before calling the
//!   origin, so only one of them rebuilds and the others are woken by its
//!   write;
//! - **early refresh and stale serving**: [`Policy::xfetch`] refreshes hot
//!   entries in the background before they expire, with a probability that
//!   rises as expiry nears; [`Policy::stale_while_revalidate`] serves the
//!   stale entry at once while one refresh runs; [`Policy::stale_if_error`]
//!   serves the last good entry while the origin fails;
//! - **HTTP shared-cache rules**: responses that belong to one user are never
//!   stored nor handed to other requests (see [Guarantees](#guarantees)).
//!
//! [Tower]: https://docs.rs/tower
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_stampede::{MemoryStore, Policy, StampedeLayer};
//!
//! let layer = StampedeLayer::new(MemoryStore::new())
//!     .policy(Policy::ttl(Duration::from_secs(60)))
//!     .route("/admin/*", Policy::bypass());
//!
//! let app: Router = Router::new()
//!     .route("/api/popular-posts", get(|| async { "[1, 2, 3]" }))
//!     .layer(layer.clone());
//!
//! // Every service the layer makes shares one flight table and one set of counters.
//! assert_eq!(layer.stats().requests, 0);
//! # let _ = app;
//! ```
//!
//! # Runtime
//!
//! The layer needs a Tokio runtime with time enabled (`#[tokio::main]` has
//! it): the leader's origin call runs in a task of its own, and every store
//! call has a timeout.
//!
//! # Cargo features
//!
//! - `redis` (default): `RedisStore`, on deadpool-redis.
//! - `redis-cluster`: `RedisStore::cluster` for Redis Cluster.
//! - `redis-tls`: `rediss://` URLs, through rustls.
//! - `metrics`: the counters of [`Stats`] and a histogram of origin latency,
//!   reported through the [`metrics`](https://docs.rs/metrics) facade to
//!   whatever recorder the application installs (a Prometheus exporter, say);
//!   see `describe_metrics` for the names.
//!
//! # What is cached
//!
//! Only `GET` and `HEAD` requests are collapsed and stored; the origin is
//! always asked for a plain `GET`, whose response also answers `HEAD` and
//! the client's `If-None-Match` / `If-Modified-Since` (`304`). A response is
//! stored when its status is `200`, `203` or `204`, its body is complete and
//! no larger than [`StampedeLayer::max_body_bytes`], and it may be shared (see
//! below). Requests with `Cache-Control: no-store` or a `Range` header go
//! straight to the inner service. The cache key is the method, the authority
//! and the path with its query, and the values of the headers a response
//! `Vary`s on ([`DefaultKey`]); [`StampedeLayer::key`] and
//! [`StampedeLayer::route_key`] swap in your own.
//!
//! `POST` requests are cached only where a route opts in, as reads (gRPC
//! unary methods, GraphQL queries): see [`StampedeLayer::cache_posts`]. Their
//! key adds the SHA-256 of the body, which the layer reads (up to
//! [`StampedeLayer::max_request_bytes`]) and hands back to the inner service
//! unchanged. A gRPC response is stored only when its call succeeded
//! (`grpc-status: 0`), with its trailers.
//!
//! ```
//! use std::time::Duration;
//! use tower_stampede::{MemoryStore, Policy, StampedeLayer};
//!
//! // tonic: `Server::builder().layer(layer).add_service(...)`.
//! let layer = StampedeLayer::new(MemoryStore::new())
//!     .replay_requests(tonic::body::Body::new)
//!     .route("/posts.Posts/Popular", Policy::ttl(Duration::from_secs(60)))
//!     .cache_posts("/posts.Posts/Popular");
//! # let _ = layer;
//! ```
//!
//! Any other successful `POST`, `PUT`, `PATCH` or `DELETE` invalidates what
//! is stored for its target (a gRPC call invalidates nothing); [`StampedeLayer::invalidate`] and
//! [`StampedeLayer::invalidate_tag`] purge by key and by `Surrogate-Key` tag.
//! The README's "Standards" section lists the RFC 9111 rules the layer
//! follows and where it departs from them.
//!
//! Every response that passes through the layer carries a `Cache-Status`
//! header ([RFC 9211]) with the member `tower-stampede`, and responses served
//! from the store carry `Age`.
//!
//! [RFC 9211]: https://www.rfc-editor.org/rfc/rfc9211
//!
//! # Guarantees
//!
//! What concurrent callers of one key see:
//!
//! 1. While a request for a key is being answered by the origin, every other
//!    cacheable request for that key on the same layer waits for it and makes
//!    no origin call of its own; it is answered as soon as the leader's
//!    response body is complete (`Cache-Status: ...; collapsed`). With
//!    [`StampedeLayer::max_waiters`] set, requests beyond that many are
//!    answered at once instead (the expired entry if still held, else
//!    `503`), and still make no origin call.
//! 2. Layers sharing one store take the store's rebuild lock before calling
//!    the origin: a layer that loses waits for the winner's write to land
//!    (woken by the store, not by polling) and then serves it. A winner that
//!    dies leaves a lock that expires after [`StampedeLayer::lock_ttl`];
//!    then one waiting layer takes over. A layer waits at most
//!    [`StampedeLayer::lock_wait`], then goes to the origin without storing.
//! 3. The origin call runs in its own task. A leader whose client goes away
//!    does not cancel it: its waiters are still answered and the response is
//!    still stored.
//! 4. If the inner service returns an error or panics, the leader's own
//!    client gets that error (or the panic, re-raised in its future, as if the
//!    layer were not there), and every waiter gets a `502 Bad Gateway` with
//!    `Cache-Status: tower-stampede; fwd=miss; collapsed; detail=origin-error`.
//!    Waiters do not retry, so a failing origin sees one call per flight, not
//!    a herd. The key is free again at once: the next request starts a new
//!    flight.
//! 5. A response that belongs to one user (it sets a cookie, says `private`,
//!    `no-store` or `no-cache`, or answers a request with `Authorization`
//!    without saying `public`, `s-maxage` or `must-revalidate`) is given only
//!    to the request that caused it. It is not stored, and the waiters of its
//!    flight go to the origin themselves, concurrently.
//! 6. A response whose body is larger than the limit, or whose body fails
//!    midway, reaches its own client exactly as the inner service produced
//!    it; it is not stored, and its waiters go to the origin themselves.
//! 7. A stored response is served to a later request only while the policy
//!    says it is fresh, only if the request's values of the headers the
//!    response `Vary`s on match those of the request that produced it, and,
//!    for a request with `Authorization`, only if the response said `public`,
//!    `s-maxage` or `must-revalidate`.
//! 8. A background refresh (XFetch's early one, or a stale entry's) never
//!    makes a request wait: the request is answered from the store first.
//!    At most one runs per key in a layer, and one per key across layers
//!    sharing a store; when it fails, the entry it was refreshing stays.
//! 9. A store that errors or does not answer within
//!    [`StampedeLayer::store_timeout`] never fails a request: the request goes
//!    on with in-process coalescing only and the failure is counted in
//!    [`Stats::store_errors`]. For [`StampedeLayer::store_retry_after`] after
//!    a failure the layer does not call the store at all, so a store that is
//!    down costs each request at most one timeout; then it tries again.
//!    Meanwhile each process keeps what it builds (in memory, up to 32 MiB)
//!    and serves it as its policy says: an outage costs the origin one call
//!    per key per entry's life in each process, not one per flight. Once the
//!    store answers again, only the store is read.
//! 10. An invalidation (by write, key or tag) that lands while the key is
//!     being rebuilt keeps that rebuild's response out of the store; the
//!     requests already waiting for it still get it.
//! 11. After a key's response turned out to be for one client only, its
//!     requests go to the origin concurrently for
//!     [`StampedeLayer::pass_for`], instead of queueing behind a leader.
//! 12. A gRPC response is stored only if its call ended with `grpc-status: 0`;
//!     its trailers are stored and replayed exactly. A failed call's status
//!     answers the calls collapsed onto it and nothing else. Calls to
//!     methods no [`StampedeLayer::cache_posts`] pattern names, streaming
//!     ones included, pass through untouched, frame by frame.
//! 13. A request body the layer reads reaches the inner service exactly as
//!     the client sent it; one over [`StampedeLayer::max_request_bytes`], or
//!     that does not end within [`StampedeLayer::max_body_wait`], streams on
//!     as it comes and its request is not cached.
#![forbid(unsafe_code)]
// The library reports through `tracing`; examples and benches may print.
#![warn(clippy::print_stdout, clippy::print_stderr)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod ask;
mod body;
mod breaker;
mod cacheable;
pub mod clock;
mod entry;
mod flight;
mod future;
mod grpc;
mod invalidate;
mod key;
mod layer;
mod pass;
mod policy;
mod read;
mod rebuild;
mod route;
mod service;
mod stats;
mod status;
pub mod store;
mod vary;

pub use body::StampedeBody;
pub use entry::{DecodeError, Entry};
pub use future::ResponseFuture;
pub use key::{DefaultKey, MakeKey};
pub use layer::StampedeLayer;
pub use policy::Policy;
pub use read::{NoReplay, Replay};
pub use route::RouteError;
pub use service::Stampede;
pub use stats::Stats;
#[cfg(feature = "metrics")]
pub use stats::describe_metrics;
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{LockToken, MemoryStore, Store, StoreError};

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
//!   write; with `RedisStore::near_cache`, each replica also serves hot keys
//!   from its own memory, dropped as Redis reports each write;
//! - **early refresh and stale serving**: [`Policy::xfetch`] refreshes hot
//!   entries in the background before they expire, with a probability that
//!   rises as expiry nears; [`Policy::stale_while_revalidate`] serves the
//!   stale entry at once while one refresh runs; [`Policy::stale_if_error`]
//!   serves the last good entry while the origin fails;
//! - **freshness from the origin, when asked**: [`Policy::origin`] computes
//!   freshness and age from the response's headers as a shared HTTP cache
//!   does (RFC 9111, `CDN-Cache-Control`), revalidates with one conditional
//!   request per key, and honours requests' own directives;
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
//! // tonic: `.replay_requests(tonic::body::Body::new)`, then
//! // `Server::builder().layer(layer).add_service(...)` (examples/grpc).
//! let layer = StampedeLayer::new(MemoryStore::new())
//!     .replay_requests(axum::body::Body::new)
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
#![doc = include_str!("docs/guarantees.md")]
#![forbid(unsafe_code)]
// The library reports through `tracing`; examples and benches may print.
#![warn(clippy::print_stdout, clippy::print_stderr)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The request path, top down: each module uses only those below it
// (`.ci/layers` checks that). Where each question is decided:
//
// | question                         | file                                             |
// | -------------------------------- | ------------------------------------------------ |
// | what stage a request goes to     | plan.rs                                          |
// | whether a stored entry is served | reuse.rs (its age: policy/)                      |
// | who calls the origin             | request/lookup.rs (this process), rebuild/lock.rs (across layers) |
// | what is stored                   | rebuild/settle/ (what may be: rules/storable.rs) |
// | what waiters get                 | rebuild/settle/, served by request/wait.rs       |
// | what an invalidation cancels     | shared/mod.rs (`Shared::invalidate`)             |
mod layer; // the builder
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config; // the builder's settings from a file
mod service; // `Service::call`: plan, then one stage
mod request; // the stages: forward, write, post_read, lookup, wait
mod rebuild; // a leader's work: lock, fetch, settle, commit
mod plan; // what to do with a request, from its head
mod shared; // config, store calls, in-process tables, invalidation
mod flight; // in-process single flight, hit-for-pass
mod response; // the responses the layer makes
mod reuse; // may a stored entry answer a request
mod key; // cache keys, the route table, variants
pub mod store; // the `Store` trait, memory and Redis
mod entry; // the stored response and its format
mod policy; // freshness decisions
mod future; // the service's future
mod rules; // RFC 9110/9111/9211 and gRPC rules
mod stats; // counters
pub mod clock; // injected time
mod body; // the response body
mod sync; // std's locks, or shuttle's for the concurrency models
#[cfg(feature = "config")]
mod human; // durations, sizes and header names as people write them
mod time; // deadlines that never overflow the clock

pub use body::{BodyError, BoxError, StampedeBody};
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::{Config, ConfigError};
pub use entry::{DecodeError, Entry};
pub use future::ResponseFuture;
pub use key::RouteError;
pub use key::{DefaultKey, MAX_KEY_BYTES, MakeKey};
pub use layer::StampedeLayer;
pub use policy::Policy;
pub use request::{NoReplay, Replay};
pub use service::Stampede;
pub use stats::Stats;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use stats::describe_metrics;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::RedisStore;
pub use store::{LockToken, MemoryStore, NearStats, Store, StoreError};

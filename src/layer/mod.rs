//! The layer and its builder.

use std::{fmt, sync::Arc, time::Duration};

use http::HeaderName;
use tower_layer::Layer;

use crate::{
    clock::Clock,
    key::{MakeKey, RouteError},
    policy::Policy,
    request::NoReplay,
    service::Stampede,
    shared::{Config, Shared, State},
    stats::Stats,
    store::{Store, StoreError},
};

#[cfg(feature = "config")]
mod config;
mod limits;
mod reads;

/// Puts a stampede-proof cache in front of an `http` service.
///
/// Cheap to clone: clones, and every [`Stampede`] service they make, share
/// one store, one table of in-flight requests and one set of counters.
///
/// Policies per route, two ways. With the layer's own route table, one
/// layer over the whole app:
///
/// ```
/// use std::time::Duration;
/// use tower_stampede::{MemoryStore, Policy, StampedeLayer};
///
/// let layer = StampedeLayer::new(MemoryStore::new())
///     .policy(Policy::ttl(Duration::from_secs(60)))
///     .route("/api/popular-posts", Policy::stale_while_revalidate(
///         Duration::from_secs(50),
///         Duration::from_secs(120),
///     ))
///     .route("/api/prices/*", Policy::ttl(Duration::from_secs(5)).stale_if_error(Duration::from_secs(30)))
///     .route("/admin/*", Policy::bypass())
///     .max_body_bytes(1024 * 1024);
/// # let _ = layer;
/// ```
///
/// Or with axum's `route_layer`, one layer per route, all on one store (each
/// layer has its own flight table and counters). `route_layer` wraps every
/// route added before it, so each route goes on a router of its own:
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use tower_stampede::{MemoryStore, Policy, StampedeLayer};
///
/// let store = MemoryStore::new();
/// let popular = Router::new()
///     .route("/api/popular-posts", get(|| async { "[]" }))
///     .route_layer(StampedeLayer::new(store.clone()).policy(Policy::xfetch(Duration::from_secs(60))));
/// let prices = Router::new()
///     .route("/api/prices", get(|| async { "{}" }))
///     .route_layer(StampedeLayer::new(store).policy(Policy::ttl(Duration::from_secs(5))));
/// let app: Router = popular.merge(prices);
/// # let _ = app;
/// ```
///
/// In the route table an exact path beats any prefix and a longer prefix
/// beats a shorter one; requests no route matches take
/// [`policy`](Self::policy).
pub struct StampedeLayer<St, R = NoReplay> {
    pub(crate) shared: Arc<Shared<St>>,
    replay: R,
}

impl<St: Store> StampedeLayer<St> {
    /// A layer over `store` with the defaults: [`Policy::ttl`] of 60 s for
    /// every route, only `GET` and `HEAD` cached, bodies stored up to 8 MiB
    /// and 64 MiB buffered at once, store calls bounded by 250 ms
    /// and skipped for 1 s after one fails, rebuild locks of 10 s (extended
    /// while a rebuild runs) waited on for up to 30 s, up to 64 background
    /// refreshes at once, [`DefaultKey`](crate::DefaultKey) and the system clock.
    pub fn new(store: St) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                config: Config::default(),
                state: Arc::new(State::new()),
            }),
            replay: NoReplay,
        }
    }
}

impl<St: Store, R> StampedeLayer<St, R> {
    /// The settings, for a builder method to change: copied first if
    /// services already share them (theirs do not change).
    fn config(&mut self) -> &mut Config {
        &mut Arc::make_mut(&mut self.shared).config
    }

    /// The policy of every request no [`route`](Self::route) matches.
    /// Default: `Policy::ttl(Duration::from_secs(60))`.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config().policy = policy;
        self
    }

    /// The policy of requests whose path matches `pattern`: an exact path
    /// (`/api/popular-posts`, or a gRPC method such as `/pkg.Svc/Method`), or
    /// a prefix ending in `/*` (`/api/prices/*` matches `/api/prices` and
    /// everything below it).
    ///
    /// An exact path wins over any prefix, and a longer prefix over a shorter
    /// one; a pattern given twice keeps the later policy.
    ///
    /// # Panics
    ///
    /// If `pattern` does not start with `/`, or has a `*` anywhere but in a
    /// final `/*`.
    pub fn route(mut self, pattern: &str, policy: Policy) -> Self {
        self.config().routes.insert(pattern, policy);
        self
    }

    /// As [`route`](Self::route), for patterns that come from outside the
    /// code (a configuration file): an invalid pattern is an error naming
    /// it and the rule it breaks, not a panic.
    ///
    /// ```
    /// use tower_stampede::{MemoryStore, Policy, StampedeLayer};
    ///
    /// let layer = StampedeLayer::new(MemoryStore::new());
    /// let error = layer.try_route("api/*", Policy::bypass()).expect_err("no leading slash");
    /// assert_eq!(error.to_string(), "invalid route pattern \"api/*\": it must start with `/`");
    /// ```
    pub fn try_route(mut self, pattern: &str, policy: Policy) -> Result<Self, RouteError> {
        self.config().routes.try_insert(pattern, policy)?;
        Ok(self)
    }

    /// How requests whose path matches `pattern` map to cache keys, instead
    /// of [`key`](Self::key); patterns and precedence as for
    /// [`route`](Self::route).
    ///
    /// ```
    /// use tower_stampede::{DefaultKey, MemoryStore, StampedeLayer};
    ///
    /// let layer = StampedeLayer::new(MemoryStore::new())
    ///     .route_key("/api/search", DefaultKey::new().with_header("accept-language"))
    ///     .route_key("/assets/*", DefaultKey::new().without_query());
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    ///
    /// As [`route`](Self::route), for an invalid pattern.
    pub fn route_key(mut self, pattern: &str, key: impl MakeKey) -> Self {
        self.config().keys.route(pattern, key);
        self
    }

    /// Declares that the responses of requests whose path matches
    /// `pattern` never depend on the request's cookies (analytics or consent
    /// cookies on public pages): a request's `Cookie` no longer keeps the
    /// response to it from others, nor others' responses from it. Patterns
    /// and precedence as for [`route`](Self::route).
    ///
    /// Elsewhere a `Cookie` is a credential, as `Authorization` is in RFC
    /// 9111 section 3.5: the response to a request that carries one is
    /// shared (and a stored response served to it) only if the response
    /// says `public` or `s-maxage`. Where responses depend on some cookies
    /// only, key by those instead
    /// ([`DefaultKey::with_cookie`](crate::DefaultKey::with_cookie)). A
    /// response that sets a cookie is never shared, here either.
    ///
    /// ```
    /// use tower_stampede::{MemoryStore, StampedeLayer};
    ///
    /// let layer = StampedeLayer::new(MemoryStore::new()).ignore_cookies("/blog/*");
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    ///
    /// As [`route`](Self::route), for an invalid pattern.
    pub fn ignore_cookies(mut self, pattern: &str) -> Self {
        self.config().ignore_cookies.insert(pattern, ());
        self
    }

    /// How long one store call may take before the request goes on without
    /// the store. Default: 250 ms.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config().store_timeout = timeout;
        self
    }

    /// The response header whose whitespace-separated values tag a stored
    /// entry, for [`invalidate_tag`](Self::invalidate_tag); `None` stores no
    /// tags. Default: `Surrogate-Key`.
    pub fn tag_header(mut self, name: Option<HeaderName>) -> Self {
        self.config().tag_header = name;
        self
    }

    /// How long a key whose response turned out to be for one client only
    /// (a cookie, `private`, a body over the limit...) is remembered as such
    /// ("hit-for-pass"): meanwhile its requests go straight to the origin,
    /// concurrently, instead of queueing behind a leader whose answer they
    /// could not have. Remembered per layer, not across replicas.
    /// `Duration::ZERO` turns it off. Default: 30 s.
    pub fn pass_for(mut self, pause: Duration) -> Self {
        self.config().pass_for = pause;
        self
    }

    /// Whether a request's `Cache-Control: no-cache` (or `max-age=0`, or
    /// `Pragma: no-cache`) skips the stored response. Off by default: a
    /// client could otherwise force origin calls at will. When on, such a
    /// request is still collapsed with the others of its key, so it cannot
    /// cause a stampede either. Default: false.
    pub fn honor_no_cache(mut self, honor: bool) -> Self {
        self.config().honor_no_cache = honor;
        self
    }

    /// How long the layer leaves the store alone after a store call failed
    /// or timed out: meanwhile requests go on with in-process coalescing
    /// only, then the store is tried again. An unreadable stored value does
    /// not count as a failure. Default: 1 s.
    pub fn store_retry_after(mut self, pause: Duration) -> Self {
        self.config().store_retry_after = pause;
        self
    }

    /// How long a rebuild lock lasts if its holder stops extending it (a
    /// crashed process); a live holder extends it every third of this, so
    /// the lock of a dead holder is taken over within this time. Default:
    /// 10 s.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.config().lock_ttl = ttl;
        self
    }

    /// How long a layer that lost the rebuild lock waits for the holder's
    /// write before it goes to the origin itself (without storing), as
    /// nginx's `proxy_cache_lock_timeout` does. Default: 30 s.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.config().lock_wait = wait;
        self
    }

    /// How requests map to cache keys. Default: [`DefaultKey`](crate::DefaultKey).
    pub fn key(mut self, key: impl MakeKey) -> Self {
        self.config().keys.set_default(key);
        self
    }

    /// Where the layer reads the time that decides freshness. Default: the
    /// system clock; tests use [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config().clock = Arc::new(clock);
        self
    }

    /// Where XFetch and jitter draw their random numbers, uniform in [0, 1).
    /// Default: a fast thread-local generator; tests pass a seeded one.
    pub fn random(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.config().random = Arc::new(random);
        self
    }

    /// The counters of this layer and every service it made.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Removes what is stored for cache key `key` (see [`DefaultKey`](crate::DefaultKey) for
    /// its form), in this layer's store and so for every replica sharing it.
    /// A rebuild of the key under way when this lands does not store its
    /// outdated response: its write is fenced by the rebuild lock, which
    /// this voids.
    ///
    /// Unlike requests, which go on without a failing store, this reports
    /// the store's error.
    ///
    /// ```
    /// # async fn purge() -> Result<(), tower_stampede::StoreError> {
    /// use tower_stampede::{MemoryStore, StampedeLayer};
    ///
    /// let layer = StampedeLayer::new(MemoryStore::new());
    /// layer.invalidate("GET api.example/api/popular-posts").await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        self.shared.invalidate(key, None).await
    }

    /// Removes every entry stored with `tag` in its
    /// [`tag_header`](Self::tag_header) (`Surrogate-Key: posts post-42`), for
    /// every replica sharing the store, and returns how many keys it named.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        self.shared.invalidate_tag(tag).await
    }

    /// How many keys have an origin call under way in this layer.
    pub fn in_flight(&self) -> usize {
        self.shared.state.flights.len()
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}

impl<S, St: Store, R: Clone> Layer<S> for StampedeLayer<St, R> {
    type Service = Stampede<S, St, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Stampede::new(inner, Arc::clone(&self.shared), self.replay.clone())
    }
}

impl<St, R: Clone> Clone for StampedeLayer<St, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            replay: self.replay.clone(),
        }
    }
}

impl<St: fmt::Debug, R> fmt::Debug for StampedeLayer<St, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.shared.config;
        f.debug_struct("StampedeLayer")
            .field("store", &self.shared.store)
            .field("policy", &config.policy)
            .field("routes", &config.routes)
            .field("reads", &config.reads)
            .field("max_body_bytes", &config.max_body_bytes)
            .field("max_buffered_bytes", &config.buffers.limit())
            .field("max_request_bytes", &config.max_request_bytes)
            .field("store_timeout", &config.store_timeout)
            .field("lock_ttl", &config.lock_ttl)
            .field("lock_wait", &config.lock_wait)
            .field("store_retry_after", &config.store_retry_after)
            .field("fallback", &config.fallback)
            .finish_non_exhaustive()
    }
}

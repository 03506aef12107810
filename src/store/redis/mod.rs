//! The Redis store: entries and rebuild locks shared by every replica.

mod commands;
mod connection;
mod near;
mod scripts;
mod tags;
mod tracking;
mod wake;

use std::{
    borrow::Cow,
    fmt,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use tokio::sync::watch;
use tracing::warn;

use self::{
    connection::{Connections, Pool},
    near::Near,
    scripts::{EXTEND, INVALIDATE, LOCK, RENEW, SET, TAKE_TAG, UNLOCK},
    tracking::Tracking,
    wake::Wakeups,
};
use super::{NearStats, StoreError};

/// The default bound on one Redis command.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// A waiter with no subscription to be pushed by re-checks the lock after
/// this, doubling up to [`MAX_RECHECK`]; a subscribed one waits
/// `MAX_RECHECK` between checks from the first, since the release's push
/// wakes it (and a resubscription makes it check at once).
const FIRST_RECHECK: Duration = Duration::from_millis(50);
const MAX_RECHECK: Duration = Duration::from_secs(1);
/// How long a tag's last purge is remembered: a rebuild that has held its
/// lock longer than this cannot tell whether a purge of one of its tags
/// came after it began, so it does not store. Three times the layer's own
/// bound on holding a lock with its defaults (`lock_wait`, 30 s, and one
/// `lock_ttl`, 10 s), and short enough that a service writing to a
/// thousand pages a second (each write purges its page's variants) keeps
/// some 120 000 small keys in Redis for it.
const PURGES_KEPT: Duration = Duration::from_secs(2 * 60);

/// A [`Store`](crate::Store) in Redis, through [deadpool-redis]: every replica that uses
/// the same Redis (and prefix) shares entries and rebuild locks, so a key
/// costs one origin call across all of them.
///
/// - Entries are stored in [`Entry::encode`](crate::Entry::encode)'s format with a Redis expiry;
///   a value the store did not write is reported as a corrupt read (the
///   layer counts it and treats it as a miss) and replaced by the next
///   rebuild.
/// - The rebuild lock is a `SET PX` of a random token where the key is free
///   (`SET NX`, in a script so that a retried call finds its own token). The leader's write
///   is one Lua script that checks the token, stores the entry, releases the
///   lock and publishes the key, in one round trip; a former holder whose
///   lock expired cannot overwrite a newer value.
/// - Waiting layers are woken by that publish, received on one pub/sub
///   connection per store (opened on first use, outside the pool, and
///   reopened with back-off when lost). A missed message is covered by
///   re-checking the lock with back-off, from 50 ms up to 1 s.
/// - Keys are `{prefix}{<cache key>}` and `{prefix}lock:{<cache key>}`: the
///   braces are a hash tag, so in a cluster an entry and its lock share a
///   slot. Tags are sets at `{prefix}tag:{<tag>}` holding cache keys, kept
///   as long as their longest-lived entry. A purge marks the tag purged at
///   `{prefix}tag:{<tag>}:purged` (Redis's clock, kept two minutes), so
///   that a rebuild whose lock it predates, and whose key it could not yet
///   find in the set, does not store; invalidating a key purges its `Vary`
///   variants' tag, so each write leaves one such mark.
///
/// Every command is bounded by [`RedisStore::timeout`]; the layer bounds
/// every store call as well, and goes on without the store when one fails.
///
/// ```
/// use tower_stampede::{RedisStore, StampedeLayer};
///
/// // Checks the URL; needs no Redis yet: a service must start while Redis is down.
/// let store = RedisStore::from_url("redis://127.0.0.1:6379")?.prefix("myapp:");
/// let layer = StampedeLayer::new(store);
/// # let _ = layer;
/// # Ok::<_, tower_stampede::StoreError>(())
/// ```
///
/// [deadpool-redis]: https://docs.rs/deadpool-redis
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    settings: Settings,
    conns: Connections,
    wakeups: Arc<Wakeups>,
    /// The near cache and its tracking connection, if asked for.
    tracking: Option<Arc<Tracking>>,
    warned_no_pubsub: AtomicBool,
}

#[derive(Clone)]
struct Settings {
    prefix: String,
    timeout: Duration,
    pubsub: Vec<redis::Client>,
    /// The near cache's bound in bytes, if one is asked for.
    near: Option<u64>,
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://`, `rediss://` with the
    /// `redis-tls` feature, `unix://`), with a pool of up to 16 connections
    /// and a pub/sub connection for wake-ups.
    ///
    /// Only the URL is checked: connections are opened on first use, so a
    /// service starts while Redis is down and the store recovers by itself
    /// when Redis comes up.
    pub fn from_url(url: impl AsRef<str>) -> Result<Self, StoreError> {
        let url = url.as_ref();
        let client = redis::Client::open(url).map_err(StoreError::config)?;
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(pool_config(DEFAULT_TIMEOUT));
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(StoreError::config)?;
        Ok(Self::build(Pool::Single(pool), Settings::new(vec![client])))
    }

    /// A store on an existing pool.
    ///
    /// A pool does not say where it connects, so give the store a client for
    /// its pub/sub connection with [`RedisStore::pubsub`]; without one,
    /// waiting layers find the lock released by re-checking with back-off
    /// (50 ms doubling to 1 s) instead of being woken.
    pub fn new(pool: deadpool_redis::Pool) -> Self {
        Self::build(Pool::Single(pool), Settings::new(Vec::new()))
    }

    /// A store on a Redis Cluster, given some of its nodes' URLs.
    ///
    /// Entries and their locks are hash-tagged into one slot; the pub/sub
    /// connection goes to one of the given nodes, the next one when it is
    /// lost (a publish reaches every node of a cluster).
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn cluster<U: AsRef<str>>(urls: impl IntoIterator<Item = U>) -> Result<Self, StoreError> {
        let urls: Vec<String> = urls.into_iter().map(|u| u.as_ref().to_owned()).collect();
        if urls.is_empty() {
            return Err(StoreError::config("a cluster needs at least one node URL"));
        }
        let clients = urls
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::config)?;
        let mut config = deadpool_redis::cluster::Config::from_urls(urls);
        config.pool = Some(pool_config(DEFAULT_TIMEOUT));
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(StoreError::config)?;
        Ok(Self::build(Pool::Cluster(pool), Settings::new(clients)))
    }

    fn build(pool: Pool, settings: Settings) -> Self {
        let channel = format!("{}done", settings.prefix);
        let tracking = settings
            .near
            .and_then(|max_bytes| tracking(&pool, &settings, max_bytes));
        Self {
            inner: Arc::new(Inner {
                conns: Connections::new(pool.clone(), settings.timeout),
                wakeups: Arc::new(Wakeups::new(channel, settings.pubsub.clone())),
                tracking,
                pool,
                settings,
                warned_no_pubsub: AtomicBool::new(false),
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.inner.settings.clone();
        change(&mut settings);
        Self::build(self.inner.pool.clone(), settings)
    }

    /// Prefix of every key and of the wake-up channel, so that several
    /// applications can share one Redis. Default: `stampede:`. Braces in it
    /// are escaped like those of cache keys: a hash tag in the prefix would
    /// put every key in one cluster slot.
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let prefix = if prefix.is_empty() {
            prefix
        } else {
            tag(&prefix).into_owned()
        };
        self.with(|s| s.prefix = prefix)
    }

    /// Bound on one Redis command, connecting included. Default: 200 ms.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|s| s.timeout = timeout)
    }

    /// The client the pub/sub connection for wake-ups is opened with.
    pub fn pubsub(self, client: redis::Client) -> Self {
        self.with(|s| s.pubsub = vec![client])
    }

    /// Keeps up to `max_bytes` of the entries this process reads in its own
    /// memory, as a near cache in front of Redis: a hot key is then served
    /// without a round trip. Off by default.
    ///
    /// It stays coherent with Redis: one more connection per store asks
    /// Redis to report every write under the store's prefix (`CLIENT
    /// TRACKING` in broadcast mode, Redis 6 or later), and each report drops
    /// the key here as it arrives, typically within a millisecond of the
    /// write. Until Redis confirms the tracking, and as soon as that
    /// connection is lost or leaves a ping unanswered for a second, the near
    /// cache is emptied and every read goes to Redis. An entry is kept no
    /// longer than its copy in Redis. Invalidations by key and by tag reach
    /// every replica's near cache through the same reports. Freshness is
    /// still decided from the stored entry's times, and rebuilds still take
    /// the Redis lock.
    ///
    /// The cost: the memory (per replica), the connection, and the reports:
    /// every write under the prefix reaches every replica with a near cache.
    /// The connection is made like the pub/sub one (so a store made with
    /// [`RedisStore::new`] needs [`RedisStore::pubsub`]). A cluster store
    /// has one such connection to each master, found with `CLUSTER SLOTS`;
    /// its near cache is on only while all of them are, and is emptied
    /// when the set of masters changes.
    pub fn near_cache(self, max_bytes: u64) -> Self {
        self.with(|s| s.near = Some(max_bytes))
    }

    /// The near cache's counters as they change: at each invalidation or
    /// flush, and when tracking starts or stops (hits are counted, not
    /// announced). For metrics, or to wait for an invalidation to arrive.
    pub fn near_updates(&self) -> Option<watch::Receiver<NearStats>> {
        let tracking = self.inner.tracking.as_ref()?;
        tracking.start();
        Some(tracking.near.updates())
    }

    /// Whether the pub/sub connection is up and subscribed.
    pub fn is_subscribed(&self) -> bool {
        self.inner.wakeups.is_subscribed()
    }

    /// Opens the store's connections now rather than on first use: checks
    /// that Redis answers, loads the store's scripts, and waits (up to a
    /// second, or the store timeout if longer) until the pub/sub connection
    /// is subscribed and, with a near cache, until Redis tracks for it. Useful at start-up to warm up, or to fail fast; never
    /// required, since the store connects and reconnects by itself.
    pub async fn connect(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.wakeups.start();
        inner.conns.query::<String>(&redis::cmd("PING")).await?;
        // Else the first rebuild lock of a cold stampede pays for loading
        // its script (a refused EVALSHA, then SCRIPT LOAD) on its way.
        inner
            .conns
            .run(|mut conn| async move {
                for script in [&LOCK, &SET, &RENEW, &UNLOCK, &INVALIDATE, &EXTEND, &TAKE_TAG] {
                    script.load_async(&mut conn).await?;
                }
                Ok(())
            })
            .await?;
        let patience = inner.settings.timeout.max(Duration::from_secs(1));
        if inner.wakeups.can_push() {
            tokio::time::timeout(patience, inner.wakeups.subscribed())
                .await
                .map_err(|_| StoreError::timeout())?;
        }
        if let Some(tracking) = &inner.tracking {
            tracking.start();
            tokio::time::timeout(patience, tracking.tracking())
                .await
                .map_err(|_| StoreError::timeout())?;
        }
        Ok(())
    }

    /// The Redis key an entry for cache key `key` is stored at.
    pub fn entry_key(&self, key: &str) -> String {
        format!("{}{{{}}}", self.inner.settings.prefix, tag(key))
    }

    /// The Redis key of the rebuild lock for cache key `key`: in the
    /// entry's slot, outside the entries' prefix (which the near cache's
    /// tracking covers).
    pub fn lock_key(&self, key: &str) -> String {
        format!("{}lock:{{{}}}", self.inner.settings.prefix, tag(key))
    }

    /// The Redis set that lists the cache keys stored with `tag`.
    pub fn tag_key(&self, tag: &str) -> String {
        format!("{}tag:{{{}}}", self.inner.settings.prefix, self::tag(tag))
    }

    /// Where the time of `tag`'s last purge is kept: in the tag's slot.
    fn purge_key(&self, tag: &str) -> String {
        format!("{}:purged", self.tag_key(tag))
    }

    fn channel(&self) -> String {
        format!("{}done", self.inner.settings.prefix)
    }
}

impl Settings {
    fn new(pubsub: Vec<redis::Client>) -> Self {
        Self {
            prefix: "stampede:".into(),
            timeout: DEFAULT_TIMEOUT,
            pubsub,
            near: None,
        }
    }
}

/// The near cache of a store with these settings, tracked on a connection
/// made like the pub/sub one; none (with a warning) where it cannot work.
fn tracking(pool: &Pool, settings: &Settings, max_bytes: u64) -> Option<Arc<Tracking>> {
    if settings.pubsub.is_empty() {
        warn!("a store made from a pool needs RedisStore::pubsub for a near cache: every read goes to Redis");
        return None;
    }
    let cluster = !matches!(pool, Pool::Single(_));
    let entries = format!("{}{{", settings.prefix);
    match Tracking::new(Near::new(max_bytes), &settings.pubsub, cluster, entries) {
        Ok(tracking) => Some(Arc::new(tracking)),
        Err(error) => {
            warn!(%error, "no near cache");
            None
        }
    }
}

fn pool_config(timeout: Duration) -> deadpool_redis::PoolConfig {
    let mut config = deadpool_redis::PoolConfig::new(16);
    config.timeouts.wait = Some(timeout);
    config.timeouts.create = Some(timeout);
    config.timeouts.recycle = Some(timeout);
    config
}

/// The cache key as the content of a hash tag: `{`, `}` and `%` escaped so
/// that the tag is the whole key and distinct keys stay distinct. The empty
/// key becomes `%` (which no escaped key can be), because Redis ignores an
/// empty `{}` and would put an entry and its lock in different slots.
fn tag(key: &str) -> Cow<'_, str> {
    if key.is_empty() {
        return Cow::Borrowed("%");
    }
    if !key.contains(['{', '}', '%']) {
        return Cow::Borrowed(key);
    }
    Cow::Owned(key.replace('%', "%25").replace('{', "%7B").replace('}', "%7D"))
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.settings.prefix)
            .field("timeout", &self.inner.settings.timeout)
            .field("subscribed", &self.is_subscribed())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;

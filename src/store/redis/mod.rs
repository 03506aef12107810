//! The Redis store: entries and rebuild locks shared by every replica.

mod connection;
mod wake;

use std::{
    borrow::Cow,
    fmt,
    pin::pin,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use redis::Script;
use tokio::time::Instant;
use tracing::warn;

use self::{
    connection::{Connections, Pool},
    wake::Wakeups,
};
use super::{LockToken, Store, StoreError};
use crate::entry::Entry;

/// The default bound on one Redis command.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// A waiter whose push went missing re-checks the lock after this, doubling
/// up to [`MAX_RECHECK`].
const FIRST_RECHECK: Duration = Duration::from_millis(50);
const MAX_RECHECK: Duration = Duration::from_secs(1);

/// Takes the lock `KEYS[1]` with the token `ARGV[1]` for `ARGV[2]` ms if it
/// is free, or already holds that token (a retry whose first answer was
/// lost must not find its own lock taken).
static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local holder = redis.call('GET', KEYS[1])
        if holder == false then
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1
        end
        if holder == ARGV[1] then return 1 end
        return 0",
    )
});

/// Stores `ARGV[2]` at `KEYS[2]` for `ARGV[3]` ms, releases the lock
/// `KEYS[1]` and publishes the key, only if the lock still holds the token
/// `ARGV[1]`: a fenced write in one round trip.
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if tonumber(ARGV[3]) > 0 then
            redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
        end
        redis.call('DEL', KEYS[1])
        redis.call('PUBLISH', ARGV[4], ARGV[5])
        return 1",
    )
});

/// Renews the entry `KEYS[2]` in place: writes its times `ARGV[2]` at byte
/// `ARGV[3]`, keeps it `ARGV[4]` ms, releases the lock `KEYS[1]` and
/// publishes, only if the lock holds `ARGV[1]`. Returns 2, leaving the lock,
/// when the entry is gone (there is nothing to renew in place).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
        redis.call('SETRANGE', KEYS[2], ARGV[3], ARGV[2])
        redis.call('PEXPIRE', KEYS[2], ARGV[4])
        redis.call('DEL', KEYS[1])
        redis.call('PUBLISH', ARGV[5], ARGV[6])
        return 1",
    )
});

/// Releases the lock `KEYS[1]` if it holds `ARGV[1]`, and publishes the key.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1])
        redis.call('PUBLISH', ARGV[2], ARGV[3])
        return 1",
    )
});

/// Deletes the entry `KEYS[2]` and the lock `KEYS[1]` whoever holds it (a
/// rebuild under way then cannot write), and publishes the key.
static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('DEL', KEYS[1], KEYS[2])
        redis.call('PUBLISH', ARGV[1], ARGV[2])
        return 1",
    )
});

/// Extends the lock `KEYS[1]` to `ARGV[2]` ms if it holds `ARGV[1]`.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        return redis.call('PEXPIRE', KEYS[1], ARGV[2])",
    )
});

/// A [`Store`] in Redis, through [deadpool-redis]: every replica that uses
/// the same Redis (and prefix) shares entries and rebuild locks, so a key
/// costs one origin call across all of them.
///
/// - Entries are stored in [`Entry::encode`]'s format with a Redis expiry;
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
/// - Keys are `{prefix}{<cache key>}` and `{prefix}{<cache key>}:lock`: the
///   braces are a hash tag, so in a cluster an entry and its lock share a
///   slot. Tags are sets at `{prefix}tag:{<tag>}` holding cache keys, kept
///   as long as their longest-lived entry.
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
    warned_no_pubsub: AtomicBool,
}

#[derive(Clone)]
struct Settings {
    prefix: String,
    timeout: Duration,
    pubsub: Vec<redis::Client>,
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
        Self {
            inner: Arc::new(Inner {
                conns: Connections::new(pool.clone(), settings.timeout),
                wakeups: Arc::new(Wakeups::new(channel, settings.pubsub.clone())),
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

    /// Whether the pub/sub connection is up and subscribed.
    pub fn is_subscribed(&self) -> bool {
        self.inner.wakeups.is_subscribed()
    }

    /// Opens the store's connections now rather than on first use: checks
    /// that Redis answers, loads the store's scripts, and waits (up to a
    /// second, or the store timeout if longer) until the pub/sub connection
    /// is subscribed. Useful at start-up to warm up, or to fail fast; never
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
                for script in [&LOCK, &SET, &RENEW, &UNLOCK, &INVALIDATE, &EXTEND] {
                    script.load_async(&mut conn).await?;
                }
                Ok(())
            })
            .await?;
        if inner.wakeups.can_push() {
            let patience = inner.settings.timeout.max(Duration::from_secs(1));
            tokio::time::timeout(patience, inner.wakeups.subscribed())
                .await
                .map_err(|_| StoreError::timeout())?;
        }
        Ok(())
    }

    /// The Redis key an entry for cache key `key` is stored at.
    pub fn entry_key(&self, key: &str) -> String {
        format!("{}{{{}}}", self.inner.settings.prefix, tag(key))
    }

    /// The Redis key of the rebuild lock for cache key `key`.
    pub fn lock_key(&self, key: &str) -> String {
        format!("{}{{{}}}:lock", self.inner.settings.prefix, tag(key))
    }

    /// The Redis set that lists the cache keys stored with `tag`.
    pub fn tag_key(&self, tag: &str) -> String {
        format!("{}tag:{{{}}}", self.inner.settings.prefix, self::tag(tag))
    }

    /// Adds `key` to the sets of `tags`, kept at least `keep_for` ms, in one
    /// round trip. Done before the entry is written: an index entry for a
    /// write that then fails is harmless, an entry missing from its index
    /// would escape purges. (In a cluster a tag's set lives in its own slot,
    /// so this cannot be part of the write's script.)
    async fn index_tags(&self, key: &str, tags: &[String], keep_for: u64) -> Result<(), StoreError> {
        if tags.is_empty() || keep_for == 0 {
            return Ok(());
        }
        let mut index = redis::pipe();
        for tag in tags {
            let tag_key = self.tag_key(tag);
            index.cmd("SADD").arg(&tag_key).arg(key).ignore();
            // New sets get the entry's life; longer lives extend it.
            index
                .cmd("PEXPIRE")
                .arg(&tag_key)
                .arg(keep_for)
                .arg("NX")
                .ignore();
            index
                .cmd("PEXPIRE")
                .arg(&tag_key)
                .arg(keep_for)
                .arg("GT")
                .ignore();
        }
        self.inner
            .conns
            .run(|mut conn| {
                let index = &index;
                async move { index.query_async::<()>(&mut conn).await }
            })
            .await
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

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn token_arg(token: &LockToken) -> String {
    format!("{:032x}", token.get())
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

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        self.inner.wakeups.start();
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.entry_key(key));
        let Some(bytes) = self.inner.conns.query::<Option<Vec<u8>>>(&cmd).await? else {
            return Ok(None);
        };
        Entry::decode(Bytes::from(bytes))
            .map(|entry| Some(Arc::new(entry)))
            .map_err(StoreError::corrupt)
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.inner.wakeups.start();
        let token = LockToken::new(fastrand::u128(..));
        let mut lock = LOCK.key(self.lock_key(key));
        lock.arg(token_arg(&token)).arg(millis(ttl));
        let taken = self.inner.conns.invoke::<i64>(&lock).await? == 1;
        Ok(taken.then_some(token))
    }

    async fn extend_lock(&self, key: &str, token: &LockToken, ttl: Duration) -> Result<bool, StoreError> {
        let mut extend = EXTEND.key(self.lock_key(key));
        extend.arg(token_arg(token)).arg(millis(ttl));
        Ok(self.inner.conns.invoke::<i64>(&extend).await? == 1)
    }

    async fn set(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        let keep_for = if keep_for.is_zero() { 0 } else { millis(keep_for) };
        let mut set = SET.key(self.lock_key(key));
        set.key(self.entry_key(key))
            .arg(token_arg(token))
            .arg(&entry.encode()[..])
            .arg(keep_for)
            .arg(self.channel())
            .arg(tag(key).as_ref());
        self.index_tags(key, entry.tags(), keep_for).await?;
        Ok(self.inner.conns.invoke::<i64>(&set).await? == 1)
    }

    async fn renew(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        // The tag sets must outlive the renewed entry too.
        self.index_tags(key, entry.tags(), millis(keep_for)).await?;
        let mut renew = RENEW.key(self.lock_key(key));
        renew
            .key(self.entry_key(key))
            .arg(token_arg(token))
            .arg(&entry.encode_times()[..])
            .arg(crate::entry::TIMES_AT)
            .arg(millis(keep_for))
            .arg(self.channel())
            .arg(tag(key).as_ref());
        match self.inner.conns.invoke::<i64>(&renew).await? {
            // Gone meanwhile (evicted, invalidated): write it whole.
            2 => self.set(key, entry, token, keep_for).await,
            renewed => Ok(renewed == 1),
        }
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        let mut unlock = UNLOCK.key(self.lock_key(key));
        unlock
            .arg(token_arg(token))
            .arg(self.channel())
            .arg(tag(key).as_ref());
        self.inner.conns.invoke::<i64>(&unlock).await?;
        Ok(())
    }

    async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        let mut invalidate = INVALIDATE.key(self.lock_key(key));
        invalidate
            .key(self.entry_key(key))
            .arg(self.channel())
            .arg(tag(key).as_ref());
        self.inner.conns.invoke::<i64>(&invalidate).await?;
        Ok(())
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        let tag_key = self.tag_key(tag);
        let mut members = redis::cmd("SMEMBERS");
        members.arg(&tag_key);
        let keys: Vec<String> = self.inner.conns.query(&members).await?;
        for key in &keys {
            self.invalidate(key).await?;
        }
        let mut delete = redis::cmd("DEL");
        delete.arg(&tag_key);
        self.inner.conns.query::<i64>(&delete).await?;
        Ok(keys.len() as u64)
    }

    async fn wait_unlocked(&self, key: &str, timeout: Duration) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.wakeups.start();
        if !inner.wakeups.can_push() && !inner.warned_no_pubsub.swap(true, Ordering::Relaxed) {
            warn!(
                "RedisStore has no pub/sub client: waiters re-check with back-off; \
                 give it one with RedisStore::pubsub"
            );
        }
        let deadline = Instant::now() + timeout;
        let registration = inner.wakeups.register(&tag(key));
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.lock_key(key));
        let mut recheck = FIRST_RECHECK;
        loop {
            // Registered before the check, so a release right after it wakes us.
            let signals = &registration.signals;
            let (mut released, mut look_again) = (
                pin!(signals.released.notified()),
                pin!(signals.recheck.notified()),
            );
            released.as_mut().enable();
            look_again.as_mut().enable();
            let locked: bool = inner.conns.query(&exists).await?;
            let now = Instant::now();
            if !locked || now >= deadline {
                return Ok(());
            }
            tokio::select! {
                () = released => return Ok(()),
                () = look_again => {}
                () = tokio::time::sleep_until(deadline.min(now + recheck)) => {}
            }
            recheck = (recheck * 2).min(MAX_RECHECK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hash_tagged_and_escaped() {
        let store = RedisStore::from_url("redis://127.0.0.1:1").expect("valid url");
        assert_eq!(
            store.entry_key("GET a.example/x?y=1"),
            "stampede:{GET a.example/x?y=1}"
        );
        assert_eq!(store.lock_key("GET /"), "stampede:{GET /}:lock");
        assert_eq!(store.entry_key("GET /{id}%"), "stampede:{GET /%7Bid%7D%25}");
        assert_ne!(tag("a%7Bb"), tag("a{b"));
        assert_eq!(
            store.lock_key(""),
            "stampede:{%}:lock",
            "an empty tag would not be a tag"
        );
        assert_ne!(tag(""), tag("%"));
        assert_eq!(store.clone().prefix("{app}:").entry_key("k"), "%7Bapp%7D:{k}");
        let other = store.prefix("app:");
        assert_eq!(other.lock_key("k"), "app:{k}:lock");
    }

    #[test]
    fn a_bad_url_is_a_clear_error_and_no_redis_is_needed() {
        let error = RedisStore::from_url("http://127.0.0.1")
            .map(|_| ())
            .expect_err("not redis");
        assert!(
            error.to_string().starts_with("invalid store configuration"),
            "{error}"
        );
        assert!(RedisStore::from_url("redis://127.0.0.1:1/0").is_ok());
    }

    #[test]
    fn tokens_are_fixed_width_hex() {
        assert_eq!(
            token_arg(&LockToken::new(255)),
            "000000000000000000000000000000ff"
        );
    }
}

//! Where entries live, and the rebuild lock that lets layers sharing a store
//! make one origin call between them.
//!
//! The protocol, as [`Stampede`](crate::Stampede) drives it for a key that
//! misses:
//!
//! 1. [`Store::try_lock`]: the winner gets a [`LockToken`] and calls the
//!    origin, calling [`Store::extend_lock`] while the rebuild runs long.
//! 2. The winner ends with [`Store::set`] (a write fenced by the token, which
//!    also releases the lock and wakes waiters) or [`Store::unlock`].
//! 3. A loser calls [`Store::wait_unlocked`], which returns once the lock is
//!    released, has expired or the timeout passes, and then reads the key.

mod memory;
#[cfg(feature = "redis")]
mod redis;
mod table;

use std::{error::Error, fmt, future::Future, sync::Arc, time::Duration};

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisStore;

use crate::entry::Entry;
pub use crate::stats::NearStats;

type BoxError = Box<dyn Error + Send + Sync>;

/// A shared cache of [`Entry`]s with a per-key rebuild lock.
///
/// Implementations are cheap handles: clones share the same data. The layer
/// bounds every call with a timeout and treats an error as "no cache", so a
/// store may fail freely; it must never block a thread.
pub trait Store: Clone + Send + Sync + 'static {
    /// The entry stored at `key`, if any. A value the store cannot read is a
    /// [`StoreError::corrupt`] error: the layer counts it, treats it as a
    /// miss, and the next rebuild replaces it.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Arc<Entry>>, StoreError>> + Send;

    /// The entry stored at `key` if the store holds it in this process's
    /// memory, found without waiting: the layer then answers a hit in
    /// [`Service::call`](tower_service::Service::call) itself, with no
    /// future to allocate or poll. `None` says only that it has none at
    /// hand; the layer then calls [`Store::get`], which must find whatever
    /// this would have. The default has none at hand.
    fn get_now(&self, key: &str) -> Option<Arc<Entry>> {
        let _ = key;
        None
    }

    /// Takes the rebuild lock for `key` for `ttl`, or returns `None` while
    /// another holder has it.
    fn try_lock(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<LockToken>, StoreError>> + Send;

    /// Extends a held lock to `ttl` from now; `false` when `token` no longer
    /// holds it.
    fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores `entry` at `key` for `keep_for`, releases the lock and wakes
    /// the key's waiters, all only if `token` still holds the lock and none
    /// of the entry's [`Entry::tags`] was purged ([`Store::invalidate_tag`])
    /// since the lock was taken; a refused write still releases the lock.
    /// Returns whether the write was accepted: a former holder whose lock
    /// expired and was taken by another cannot overwrite the newer value,
    /// and a response the origin made before a purge of one of its tags is
    /// not stored after it, though the key was not yet in the tag's index.
    fn set(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep_for: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces the entry at `key` with `entry`, which differs from the
    /// stored one only in its times (an origin's `304 Not Modified` renewed
    /// it), with the same fence and effects as [`Store::set`]. The default
    /// writes the whole entry; a store may rewrite the times in place, so
    /// that the body does not travel again.
    fn renew(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep_for: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.set(key, entry, token, keep_for)
    }

    /// Releases the lock without writing, if `token` still holds it, and
    /// wakes the key's waiters.
    fn unlock(&self, key: &str, token: &LockToken) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the entry at `key` and voids its rebuild lock, waking the
    /// key's waiters: a rebuild under way when this lands cannot store its
    /// now-outdated response, because its fenced [`Store::set`] finds the
    /// lock gone (as a delete voids a memcache lease).
    fn invalidate(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Invalidates every key whose entry was stored with `tag` among its
    /// [`Entry::tags`], and returns how many keys the tag named. Rebuilds
    /// under way whose entries will carry `tag` cannot store them (see
    /// [`Store::set`]).
    fn invalidate_tag(&self, tag: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Returns once nobody holds the lock for `key` (released, written or
    /// expired), or when `timeout` has passed, whichever is first. By the
    /// time the caller acts, another may hold the lock again: the caller
    /// reads the key and tries the lock again, as the layer does.
    fn wait_unlocked(
        &self,
        key: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The counters of the store's near cache, if it keeps one in process
    /// in front of a shared store ([`RedisStore::near_cache`]); the layer's
    /// [`Stats`](crate::Stats) report them. Default: none.
    ///
    /// [`RedisStore::near_cache`]: https://docs.rs/tower-stampede/latest/tower_stampede/struct.RedisStore.html#method.near_cache
    fn near_stats(&self) -> Option<NearStats> {
        None
    }
}

/// Proof of holding a rebuild lock: an opaque random or unique value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockToken {
    value: u128,
    /// When the store granted the lock, in milliseconds on the store's own
    /// clock (0: not known), so that a write can tell whether a tag purge
    /// came after the rebuild began.
    taken_at: u64,
}

impl LockToken {
    /// A token with the given value; it must be unique per lock taken.
    pub fn new(value: u128) -> Self {
        Self { value, taken_at: 0 }
    }

    /// The token's value.
    pub fn get(&self) -> u128 {
        self.value
    }

    /// The token, granted at `taken_at` ms on the store's clock.
    #[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "only Redis says when"))]
    pub(crate) fn taken_at(self, taken_at: u64) -> Self {
        Self { taken_at, ..self }
    }

    /// When the lock was granted, if the store said: ms on its clock.
    #[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "only Redis says when"))]
    pub(crate) fn granted(&self) -> Option<u64> {
        (self.taken_at > 0).then_some(self.taken_at)
    }
}

/// A store call that failed or did not answer in time.
///
/// The layer never passes it to a client: it is counted in
/// [`Stats::store_errors`](crate::Stats::store_errors) and logged.
#[derive(Debug)]
pub struct StoreError {
    kind: ErrorKind,
}

#[derive(Debug)]
enum ErrorKind {
    Timeout,
    Corrupt(BoxError),
    Config(BoxError),
    Other(BoxError),
}

impl StoreError {
    /// A failure with its cause.
    pub fn new(cause: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Other(cause.into()),
        }
    }

    /// The store holds a value at the key that it cannot read (garbage, an
    /// old format, a truncated value). The store itself is fine.
    pub fn corrupt(cause: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Corrupt(cause.into()),
        }
    }

    /// The store cannot be set up as asked (say, an invalid URL).
    pub fn config(cause: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Config(cause.into()),
        }
    }

    /// Whether the value read was unreadable, rather than the store failing.
    pub fn is_corrupt(&self) -> bool {
        matches!(self.kind, ErrorKind::Corrupt(_))
    }

    /// The call did not answer within the layer's store timeout.
    pub fn timeout() -> Self {
        Self {
            kind: ErrorKind::Timeout,
        }
    }

    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Timeout => f.write_str("store call timed out"),
            ErrorKind::Corrupt(cause) => write!(f, "stored value is unreadable: {cause}"),
            ErrorKind::Config(cause) => write!(f, "invalid store configuration: {cause}"),
            ErrorKind::Other(cause) => write!(f, "store call failed: {cause}"),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            ErrorKind::Timeout => None,
            ErrorKind::Corrupt(cause) | ErrorKind::Config(cause) | ErrorKind::Other(cause) => {
                Some(cause.as_ref())
            }
        }
    }
}

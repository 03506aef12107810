//! The embedded store: one process, bounded by bytes, nothing to run.

mod tags;

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use self::tags::Tags;
use super::{
    LockToken, Store, StoreError,
    table::{self, Gone, Table},
};
use crate::{entry::Entry, time::after};

/// How often expired entries are dropped when no request comes.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// The default bound: 128 MiB of entries.
const DEFAULT_MAX_BYTES: u64 = 128 * 1024 * 1024;

/// An in-process [`Store`], bounded by the bytes its entries hold. Clones
/// share one table.
///
/// # Memory
///
/// What the store keeps is what it counts: each entry is copied into
/// allocations of its own size when stored (a response read off a
/// connection is otherwise a slice of the connection's read buffer, which
/// it would keep alive whole), and weighed with its key, the table's own
/// records of it and what its tags add to the index of keys by tag, so
/// that the memory the entries hold stays within the bound
/// ([`used_bytes`](Self::used_bytes) reports it). Entries past their
/// lifetime are never served, and their memory is given back within a
/// second or so even when no request comes, by a task the store starts on
/// the Tokio runtime it is first written from.
///
/// Layers that share a `MemoryStore` share its rebuild lock too, so two
/// layers in one process (say, two `route_layer`s) make one origin call
/// between them for a key.
///
/// ```
/// use tower_stampede::MemoryStore;
///
/// let store = MemoryStore::with_max_bytes(16 * 1024 * 1024);
/// assert_eq!(store.max_bytes(), 16 * 1024 * 1024);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    table: Table,
    locks: Mutex<HashMap<String, Lock>>,
    /// Keys by tag, for purges, each with the entry it was indexed for, so
    /// that only the leaving entry (not its replacement) un-tags its key;
    /// and when tags were purged while rebuilds were under way.
    tags: Mutex<Tags>,
    next_token: AtomicU64,
    max_bytes: u64,
    /// Whether the task that drops expired entries without traffic runs.
    maintained: AtomicBool,
}

struct Lock {
    token: LockToken,
    // tokio's clock, so that tests with a paused runtime move it.
    taken: Instant,
    deadline: Instant,
    released: Arc<Notify>,
}

impl MemoryStore {
    /// A store that holds up to 128 MiB of entries.
    pub fn new() -> Self {
        Self::with_max_bytes(DEFAULT_MAX_BYTES)
    }

    /// A store that holds up to `max_bytes` of entries, as weighed by
    /// [`Entry::weight`] plus their keys and about 320 bytes each of the
    /// store's own records, and for each of an entry's tags, the tag, the
    /// key again and about 320 bytes of the tag index's records. An entry
    /// larger than the whole bound is not kept at all.
    ///
    /// When full, an entry read since the last eviction looked at it is
    /// kept, and the oldest one not read is evicted (SIEVE): an entry stored
    /// and never asked for again leaves before one that is read, and a run
    /// of one-off keys cannot push out the keys asked for.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                table: Table::new(max_bytes),
                locks: Mutex::new(HashMap::new()),
                tags: Mutex::default(),
                next_token: AtomicU64::new(1),
                max_bytes,
                maintained: AtomicBool::new(false),
            }),
        }
    }

    /// The bound given at construction.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// The bytes the entries hold now (as weighed against
    /// [`max_bytes`](Self::max_bytes)).
    pub fn used_bytes(&self) -> u64 {
        self.inner.table.size().1
    }

    /// Removes every entry (rebuild locks stay), and their tags from the
    /// index.
    pub fn clear(&self) {
        self.untag(self.inner.table.clear());
    }

    /// How many entries are held now.
    pub fn entry_count(&self) -> u64 {
        self.inner.table.size().0
    }

    /// Drops the entries that expired, and their tags.
    fn untag_swept(&self) {
        self.untag(self.inner.table.sweep(Instant::now().into_std()));
    }

    /// Takes what left the table out of the tag index, under one hold of
    /// its lock, and only if something that left had tags.
    fn untag(&self, gone: impl IntoIterator<Item = Gone>) {
        let mut tagged = (gone.into_iter())
            .filter(|(_, entry)| !entry.tags.is_empty())
            .peekable();
        if tagged.peek().is_none() {
            return;
        }
        let mut tags = self.inner.tags.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, entry) in tagged {
            tags.untag(&key, &entry);
        }
    }

    /// Starts, once, where a Tokio runtime runs, the task that drops
    /// expired entries every [`MAINTAIN_EVERY`]: a read finds an expired
    /// entry absent, but without this one nobody reads would hold its
    /// memory until an eviction reached it. The task ends with the store.
    fn maintain(&self) {
        if self.inner.maintained.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.maintained.swap(true, Ordering::Relaxed) {
            return;
        }
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(MAINTAIN_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(inner) = inner.upgrade() else { break };
                MemoryStore { inner }.untag_swept();
            }
        });
    }

    fn locks(&self) -> MutexGuard<'_, HashMap<String, Lock>> {
        self.inner.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the lock at `key` if `token` holds it, running `then` first
    /// under the lock table's mutex so nobody sees the key unlocked before
    /// it, and returns what `then` says (`false` when the lock was not
    /// held). An expired lock found here goes too, whoever took it: the
    /// table keeps no lock nobody holds.
    fn release(&self, key: &str, token: &LockToken, then: impl FnOnce(&Lock) -> bool) -> bool {
        let mut locks = self.locks();
        let Some(lock) = locks.get(key) else {
            return false;
        };
        let expired = lock.deadline <= Instant::now();
        if !expired && lock.token != *token {
            return false;
        }
        let done = !expired && then(lock);
        let lock = locks.remove(key);
        drop(locks);
        if let Some(lock) = lock {
            lock.released.notify_waiters();
        }
        done
    }

    /// How many rebuild locks the table holds, expired or not.
    #[cfg(test)]
    fn lock_count(&self) -> usize {
        self.locks().len()
    }
}

/// What the tag index keeps per tag of an entry besides the tag's and the
/// key's bytes: the tag's slot and its map of keys, the key's slot in it,
/// and the two `String`s. Measured on x86-64 with a counting allocator,
/// for tags of one key each (a variant's tag has its variants alone):
/// 267 to 307 bytes as the index's tables fill. A tag that many keys share
/// costs less (about 54 bytes a key besides the key), so entries that
/// share tags are counted more than they hold, never less.
const PER_TAG: usize = 320;

/// The bytes an entry at `key` costs the store: the entry, its key, the
/// table's records of it, and its share of the tag index (a copy of each tag and,
/// under each, of the key), which an entry with many tags, or a long key,
/// makes as large as the entry.
fn weigh(key: &str, entry: &Entry) -> u32 {
    let indexed: usize = entry.tags.iter().map(|tag| PER_TAG + tag.len() + key.len()).sum();
    table::weight(key, entry, indexed)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.inner.max_bytes)
            .field("entries", &self.entry_count())
            .finish_non_exhaustive()
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        Ok(self.get_now(key))
    }

    fn get_now(&self, key: &str) -> Option<Arc<Entry>> {
        self.inner.table.get(key, Instant::now().into_std())
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        let now = Instant::now();
        let mut locks = self.locks();
        if let Some(lock) = locks.get(key) {
            if lock.deadline > now {
                return Ok(None);
            }
            // Expired: whoever still waits on it re-checks and finds it taken.
            lock.released.notify_waiters();
        }
        let token = LockToken::new(u128::from(self.inner.next_token.fetch_add(1, Ordering::Relaxed)));
        locks.insert(
            key.to_owned(),
            Lock {
                token: token.clone(),
                taken: now,
                deadline: after(now, ttl),
                released: Arc::new(Notify::new()),
            },
        );
        Ok(Some(token))
    }

    async fn extend_lock(&self, key: &str, token: &LockToken, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut locks = self.locks();
        match locks.get_mut(key) {
            Some(lock) if lock.token == *token && lock.deadline > now => {
                lock.deadline = after(now, ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        self.maintain();
        // What is kept owns what it is counted by.
        let entry = Arc::new(entry.owned());
        let weight = weigh(key, &entry);
        // Tokio's clock, as for the locks: a test that pauses it moves the
        // entries' expiry with it.
        let now = Instant::now().into_std();
        let expires = after(now, keep_for);
        let kept = self.inner.table.keeps(weight, now, expires);
        Ok(self.release(key, token, |lock| {
            // Checked and indexed under the index's mutex, which a purge
            // holds to mark the tag and take its keys: either the purge
            // comes first and is seen here, or it finds the key.
            let mut tags = self.inner.tags.lock().unwrap_or_else(PoisonError::into_inner);
            if tags.purged_since(&entry, lock.taken) {
                return false;
            }
            if kept {
                tags.index(key, &entry);
            }
            drop(tags);
            // The entry replaced here (kept or not, the key holds no older
            // one) un-tags the key for the tags it had alone, as do those
            // evicted.
            self.untag(self.inner.table.insert(key, entry, weight, now, expires));
            true
        }))
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.release(key, token, |_| true);
        Ok(())
    }

    async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        let lock = self.locks().remove(key);
        self.untag(self.inner.table.remove(key));
        if let Some(lock) = lock {
            lock.released.notify_waiters();
        }
        Ok(())
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        let now = Instant::now();
        // Only a lock taken before now can be held by a rebuild that read
        // what the purge outdates; the oldest one says which purges still
        // matter. (The lock table first: `set` takes the two in that order.)
        let oldest = self.locks().values().map(|lock| lock.taken).min();
        let keys = (self.inner.tags.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .purge(tag, now, oldest);
        for key in keys.keys() {
            self.invalidate(key).await?;
        }
        Ok(keys.len() as u64)
    }

    async fn wait_unlocked(&self, key: &str, timeout: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let released: Arc<Notify>;
        let (deadline, notified);
        {
            let locks = self.locks();
            let Some(lock) = locks.get(key).filter(|lock| lock.deadline > now) else {
                return Ok(());
            };
            released = Arc::clone(&lock.released);
            deadline = lock.deadline.min(after(now, timeout));
            // Made while the table is locked, so a release that follows
            // cannot be missed.
            notified = released.notified();
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

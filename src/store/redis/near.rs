//! The near cache: entries this process read from Redis, kept in its own
//! memory and dropped as soon as Redis says they changed. Redis tells every
//! replica of every write under the store's entry prefix (`CLIENT TRACKING`
//! in broadcast mode, on the connection of [`super::tracking`]); until that
//! connection is confirmed, and from the moment it is in doubt, the near
//! cache is off and empty, and every read goes to Redis.
//!
//! A read that misses takes a reservation for its key before it sends its
//! `GET`; an invalidation of the key (or a flush) cancels every reservation
//! it finds, and the reply is kept only if its reservation was not
//! cancelled. Both happen under one mutex, so an invalidation that arrives
//! before the reply is never overwritten by the older value, whichever
//! socket it came on.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::watch;

use crate::{
    entry::Entry,
    store::{
        NearStats,
        table::{self, Table},
    },
    time::after,
};

pub(super) struct Near {
    /// Each entry expires when its copy in Redis would have, and leaves
    /// then when it is next read, when eviction meets it, or when Redis
    /// reports the key changed; none is served past it.
    entries: Table,
    /// Reads under way, by Redis key: the reservation each took.
    reading: Mutex<HashMap<String, u64>>,
    next: AtomicU64,
    on: AtomicBool,
    /// Which tracking connection turned the near cache on: the loss of an
    /// older one, reported late, must not turn it off.
    connection: AtomicU64,
    hits: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    updates: watch::Sender<NearStats>,
}

/// A read's claim to fill the near cache with its reply.
pub(super) struct Reservation {
    near: Arc<Near>,
    key: String,
    id: u64,
}

impl Near {
    pub(super) fn new(max_bytes: u64) -> Self {
        Self {
            entries: Table::new(max_bytes),
            reading: Mutex::default(),
            next: AtomicU64::new(0),
            on: AtomicBool::new(false),
            connection: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            updates: watch::Sender::new(NearStats::default()),
        }
    }

    fn reading(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.reading.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry at Redis key `key`, if this process holds it and Redis
    /// tracks writes for it now.
    pub(super) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let entry = self.entries.get(key, Instant::now())?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    /// Claims `key` for a read about to be sent, while the near cache is on.
    pub(super) fn reserve(self: &Arc<Self>, key: &str) -> Option<Reservation> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.reading().insert(key.to_owned(), id);
        Some(Reservation {
            near: Arc::clone(self),
            key: key.to_owned(),
            id,
        })
    }

    /// Drops `key`, and the claim of any read of it under way.
    pub(super) fn remove(&self, key: &str) {
        let mut reading = self.reading();
        reading.remove(key);
        let gone = self.entries.remove(key);
        drop(reading);
        drop(gone);
    }

    /// Drops `key`: Redis said it changed.
    fn invalidate(&self, key: &str) {
        self.remove(key);
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops everything, and every read's claim.
    pub(super) fn flush(&self) {
        let mut reading = self.reading();
        reading.clear();
        let gone = self.entries.clear();
        drop(reading);
        // Dropped with no lock held: the last reference frees the bodies.
        drop(gone);
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Turns the near cache on: Redis confirmed tracking on the tracking
    /// connection numbered `connection`.
    pub(super) fn tracked_by(&self, connection: u64) {
        self.connection.store(connection, Ordering::Release);
        self.set_tracking(true);
    }

    /// Turns the near cache on (Redis confirmed tracking) or off (tracking
    /// is lost or in doubt). Either way it starts empty: nothing read before
    /// can be known to be current.
    pub(super) fn set_tracking(&self, on: bool) {
        if !on {
            // Off first, so that no read fills what is flushed next.
            self.on.store(false, Ordering::Release);
        }
        self.flush();
        if on {
            self.on.store(true, Ordering::Release);
        }
        self.publish();
    }

    /// Applies a push from the tracking connection numbered `connection`:
    /// each key of an invalidation, or everything for a flush (`FLUSHALL`,
    /// `FLUSHDB`: no keys) or the loss of the connection in use.
    pub(super) fn push(&self, push: PushInfo, connection: u64) {
        match push.kind {
            PushKind::Invalidate => {
                match push.data.first() {
                    Some(Value::Array(keys)) => {
                        for key in keys {
                            if let Value::BulkString(key) = key {
                                self.invalidate(&String::from_utf8_lossy(key));
                            }
                        }
                    }
                    _ => self.flush(),
                }
                self.publish();
            }
            PushKind::Disconnection if self.connection.load(Ordering::Acquire) == connection => {
                self.set_tracking(false);
            }
            _ => {}
        }
    }

    pub(super) fn stats(&self) -> NearStats {
        NearStats {
            hits: self.hits.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            tracking: self.on.load(Ordering::Acquire),
        }
    }

    fn publish(&self) {
        self.updates.send_replace(self.stats());
    }

    pub(super) fn updates(&self) -> watch::Receiver<NearStats> {
        self.updates.subscribe()
    }

    /// The bytes the entries weigh.
    #[cfg(test)]
    fn used_bytes(&self) -> u64 {
        self.entries.size().1
    }
}

impl Reservation {
    /// Keeps `entry`, which Redis holds for `life` more, unless the key was
    /// invalidated (or everything flushed) since the reservation.
    pub(super) fn fill(self, entry: Arc<Entry>, life: Duration) {
        let near = &self.near;
        let weight = table::weight(&self.key, &entry, 0);
        let mut reading = near.reading();
        if reading.get(&self.key) == Some(&self.id) {
            reading.remove(&self.key);
            if near.on.load(Ordering::Acquire) {
                let now = Instant::now();
                let gone = near
                    .entries
                    .insert(&self.key, entry, weight, now, after(now, life));
                drop(reading);
                drop(gone);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // A read that failed, found nothing or was cancelled leaves no claim.
        let mut reading = self.near.reading();
        if reading.get(&self.key) == Some(&self.id) {
            reading.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Arc<Entry> {
        let response = http::Response::new(bytes::Bytes::from_static(b"v"));
        Arc::new(Entry::from_response(
            response,
            std::time::SystemTime::UNIX_EPOCH,
            Duration::from_secs(60),
            Duration::ZERO,
        ))
    }

    fn tracking() -> Arc<Near> {
        let near = Arc::new(Near::new(1024 * 1024));
        near.tracked_by(1);
        near
    }

    const LIFE: Duration = Duration::from_secs(60);

    #[test]
    fn a_reply_is_kept_and_served_while_tracking() {
        let near = tracking();
        near.reserve("k").expect("on").fill(entry(), LIFE);
        assert!(near.get("k").is_some());
        assert_eq!(near.stats().hits, 1);
    }

    #[test]
    fn an_invalidation_before_the_reply_keeps_the_reply_out() {
        let near = tracking();
        let read = near.reserve("k").expect("on");
        near.invalidate("k");
        read.fill(entry(), LIFE);
        assert!(near.get("k").is_none());
    }

    #[test]
    fn a_flush_before_the_reply_keeps_the_reply_out() {
        let near = tracking();
        let read = near.reserve("k").expect("on");
        near.push(
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Nil],
            },
            1,
        );
        read.fill(entry(), LIFE);
        assert!(near.get("k").is_none());
        assert_eq!(near.stats().flushes, 2, "on at start, then the flush");
    }

    #[test]
    fn every_key_of_an_invalidation_is_dropped() {
        let near = tracking();
        for key in ["a", "b", "c"] {
            near.reserve(key).expect("on").fill(entry(), LIFE);
        }
        let keys = ["a", "b"].map(|k| Value::BulkString(k.as_bytes().to_vec()));
        near.push(
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Array(keys.to_vec())],
            },
            1,
        );
        assert!(near.get("a").is_none() && near.get("b").is_none());
        assert!(near.get("c").is_some());
    }

    #[test]
    fn off_serves_nothing_takes_nothing_and_comes_back_empty() {
        let near = tracking();
        near.reserve("k").expect("on").fill(entry(), LIFE);
        let read = near.reserve("j").expect("on");
        near.push(
            PushInfo {
                kind: PushKind::Disconnection,
                data: Vec::new(),
            },
            1,
        );
        assert!(near.get("k").is_none());
        assert!(near.reserve("k").is_none(), "no reads are kept while off");
        read.fill(entry(), LIFE);
        near.tracked_by(2);
        assert!(near.get("k").is_none() && near.get("j").is_none());
        let late = PushInfo {
            kind: PushKind::Disconnection,
            data: Vec::new(),
        };
        near.push(late, 1);
        assert!(
            near.stats().tracking,
            "the loss of an older connection, reported late"
        );
    }

    #[test]
    fn a_newer_read_of_the_key_wins_and_a_dropped_one_leaves_no_claim() {
        let near = tracking();
        let older = near.reserve("k").expect("on");
        let newer = near.reserve("k").expect("on");
        older.fill(entry(), LIFE);
        assert!(near.get("k").is_none(), "the older read's claim was replaced");
        drop(newer);
        assert!(near.reading().is_empty());
    }

    /// Redis reports lives of up to 292 million years (a key given a
    /// `PEXPIRE` that long by hand): kept, where the instant that far off
    /// would panic.
    #[test]
    fn a_life_past_the_clocks_range_is_kept() {
        let near = tracking();
        near.reserve("k")
            .expect("on")
            .fill(entry(), Duration::from_millis(i64::MAX as u64));
        assert!(near.get("k").is_some());
    }

    #[test]
    fn an_entry_heavier_than_the_bound_is_not_kept() {
        let near = Arc::new(Near::new(256));
        near.tracked_by(1);
        near.reserve("k").expect("on").fill(entry(), LIFE);
        assert!(near.get("k").is_none());
        assert_eq!(near.used_bytes(), 0);
    }

    #[test]
    fn the_entries_stay_within_the_bound() {
        let near = Arc::new(Near::new(64 * 1024));
        near.set_tracking(true);
        for i in 0..1000 {
            near.reserve(&format!("key {i}")).expect("on").fill(entry(), LIFE);
        }
        assert!(near.used_bytes() <= 64 * 1024, "{}", near.used_bytes());
    }
}

//! The table of the memory store and of the Redis store's near cache:
//! entries by key within a byte bound, evicted by SIEVE, and expired by
//! the instants it is given (the memory store gives Tokio's, so that a test
//! that pauses it moves expiry with it; the near cache the system's, as
//! Redis counts the lives it reports).
//!
//! A read takes a shared lock, one hash and one probe, and marks the entry
//! visited with a relaxed store (made only when it was unmarked, so that a
//! hot entry's line is not written by every read). moka, which this
//! replaces, also read the clock and queued every read for its
//! housekeeping: some 1 080 instructions a hit against about 250 here.
//!
//! SIEVE (Zhang et al., NSDI 2024) keeps one queue, newest first, and a
//! hand that walks it from the oldest end: an entry read since the hand
//! last passed is kept (and unmarked), the first one not read is evicted.
//! An entry stored once and never read again goes at the hand's next
//! pass; one read often stays. Expired entries go when read, when the hand
//! meets them, and at each [`Table::sweep`].

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use crate::entry::Entry;

/// Seeded per table from the process's random source, so that keys chosen
/// to collide in one process do not in another; quicker than std's
/// SipHash on keys of a path's length.
type Hasher = foldhash::quality::RandomState;

/// No slot: the end of the queue.
const END: usize = usize::MAX;

/// How many slots a sweep looks at under one hold of the write lock: some
/// ten microseconds.
const SWEEP_RUN: usize = 1024;

/// What a table keeps per entry besides the entry itself and its key's
/// bytes: the table's node (64 bytes on x86-64) and index slot (25), the
/// key's allocation header, and the spare room of tables that double as
/// they grow: at most about 220 bytes, counted as 320, what moka (the
/// table before) kept. `tests/memory_bound.rs` measures what a stored
/// response holds in all against what is counted.
pub(super) const PER_ENTRY: usize = 320;

/// What `entry` at `key` weighs in a table, with `beside` bytes its owner
/// keeps for it elsewhere (the memory store's tag index).
pub(super) fn weight(key: &str, entry: &Entry, beside: usize) -> u32 {
    u32::try_from(PER_ENTRY + key.len() + entry.weight() + beside).unwrap_or(u32::MAX)
}

/// An entry that left the table, and its key: what the memory store's tag
/// index forgets.
pub(super) type Gone = (Arc<str>, Arc<Entry>);

/// Entries by key, within `max` bytes as their weights count them.
pub(super) struct Table {
    inner: RwLock<Inner>,
}

struct Inner {
    index: HashMap<Arc<str>, usize, Hasher>,
    /// The queue's nodes; a free slot is `None`, and listed in `free`.
    slots: Vec<Option<Node>>,
    free: Vec<usize>,
    /// The newest node; `tail` the oldest; `hand` where eviction looks next.
    head: usize,
    tail: usize,
    hand: usize,
    weight: u64,
    max: u64,
}

struct Node {
    key: Arc<str>,
    entry: Arc<Entry>,
    weight: u32,
    expires: Instant,
    /// Read since the hand last passed.
    visited: AtomicBool,
    /// Toward the head (newer) and toward the tail (older).
    newer: usize,
    older: usize,
}

impl Table {
    pub(super) fn new(max: u64) -> Self {
        Self {
            inner: RwLock::new(Inner {
                index: HashMap::with_hasher(Hasher::default()),
                slots: Vec::new(),
                free: Vec::new(),
                head: END,
                tail: END,
                hand: END,
                weight: 0,
                max,
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry at `key`, unless it expired by `now`.
    pub(super) fn get(&self, key: &str, now: Instant) -> Option<Arc<Entry>> {
        let inner = self.read();
        let node = inner.node(*inner.index.get(key)?);
        if node.expires <= now {
            return None;
        }
        if !node.visited.load(Ordering::Relaxed) {
            node.visited.store(true, Ordering::Relaxed);
        }
        Some(Arc::clone(&node.entry))
    }

    /// Whether an entry weighing `weight`, until `expires`, would be kept
    /// from `now`: whether it is within the bound, and lives at all.
    pub(super) fn keeps(&self, weight: u32, now: Instant, expires: Instant) -> bool {
        self.read().keeps(weight, now, expires)
    }

    /// Stores `entry` at `key` from `now` until `expires`, weighing
    /// `weight`, if the table [`keeps`](Self::keeps) it; either way what the
    /// key held leaves. Returns what left: the entry at the key, and those
    /// evicted to make room.
    pub(super) fn insert(
        &self,
        key: &str,
        entry: Arc<Entry>,
        weight: u32,
        now: Instant,
        expires: Instant,
    ) -> Vec<Gone> {
        let mut inner = self.write();
        let replaced = inner.remove(key);
        // A replaced entry's key serves its successor: no new allocation.
        let key = (replaced.as_ref()).map_or_else(|| Arc::from(key), |(old, _)| Arc::clone(old));
        let mut gone = Vec::from_iter(replaced);
        if !inner.keeps(weight, now, expires) {
            return gone;
        }
        while inner.weight + u64::from(weight) > inner.max && inner.tail != END {
            gone.push(inner.evict(now));
        }
        inner.push(Node {
            key,
            entry,
            weight,
            expires,
            visited: AtomicBool::new(false),
            newer: END,
            older: END,
        });
        gone
    }

    /// Removes the entry at `key`.
    pub(super) fn remove(&self, key: &str) -> Option<Gone> {
        self.write().remove(key)
    }

    /// Removes every entry.
    pub(super) fn clear(&self) -> Vec<Gone> {
        let mut inner = self.write();
        inner.index.clear();
        inner.free.clear();
        (inner.head, inner.tail, inner.hand, inner.weight) = (END, END, END, 0);
        inner
            .slots
            .drain(..)
            .flatten()
            .map(|node| (node.key, node.entry))
            .collect()
    }

    /// Removes the entries expired by `now`, [`SWEEP_RUN`] slots at a
    /// time, so that reads wait at most for one run of the scan.
    pub(super) fn sweep(&self, now: Instant) -> Vec<Gone> {
        let mut gone = Vec::new();
        let mut start = 0;
        loop {
            let mut inner = self.write();
            let end = inner.slots.len().min(start + SWEEP_RUN);
            for at in start..end {
                if inner.slots[at].as_ref().is_some_and(|node| node.expires <= now) {
                    gone.push(inner.unlink(at));
                }
            }
            if end == inner.slots.len() {
                inner.compact();
                return gone;
            }
            start = end;
        }
    }

    /// How many entries it holds, and their weight.
    pub(super) fn size(&self) -> (u64, u64) {
        let inner = self.read();
        (inner.index.len() as u64, inner.weight)
    }

    /// Every entry and its key.
    #[cfg(test)]
    pub(super) fn entries(&self) -> Vec<Gone> {
        (self.read().slots.iter().flatten())
            .map(|node| (Arc::clone(&node.key), Arc::clone(&node.entry)))
            .collect()
    }
}

impl Inner {
    /// Whether an entry is within the bound (a heavier one would only
    /// empty the table) and lives at all (else it would leave at once).
    fn keeps(&self, weight: u32, now: Instant, expires: Instant) -> bool {
        u64::from(weight) <= self.max && expires > now
    }

    fn node(&self, at: usize) -> &Node {
        self.slots[at].as_ref().expect("the index names only nodes")
    }

    fn node_mut(&mut self, at: usize) -> &mut Node {
        self.slots[at].as_mut().expect("the queue links only nodes")
    }

    fn remove(&mut self, key: &str) -> Option<Gone> {
        let at = *self.index.get(key)?;
        Some(self.unlink(at))
    }

    /// Evicts one entry: the first the hand finds that expired by `now` or
    /// was not read since it last passed.
    fn evict(&mut self, now: Instant) -> Gone {
        let mut at = if self.hand == END { self.tail } else { self.hand };
        loop {
            let node = self.node_mut(at);
            if node.expires <= now || !*node.visited.get_mut() {
                break;
            }
            *node.visited.get_mut() = false;
            at = if node.newer == END { self.tail } else { node.newer };
        }
        self.hand = self.node(at).newer;
        self.unlink(at)
    }

    /// Gives back the room of slots left free, once they are most of the
    /// table and more than [`SWEEP_RUN`]: the weight counts each entry's
    /// slot while it lives, and a table once grown by many small entries
    /// would otherwise keep their slots (some 100 bytes each) past them.
    fn compact(&mut self) {
        if self.free.len() <= SWEEP_RUN || self.free.len() * 2 <= self.slots.len() {
            return;
        }
        let mut moved = vec![END; self.slots.len()];
        let mut slots = Vec::with_capacity(self.index.len());
        for (at, slot) in self.slots.drain(..).enumerate() {
            if slot.is_some() {
                moved[at] = slots.len();
                slots.push(slot);
            }
        }
        let to = |at: usize| if at == END { END } else { moved[at] };
        for node in slots.iter_mut().flatten() {
            (node.newer, node.older) = (to(node.newer), to(node.older));
        }
        for at in self.index.values_mut() {
            *at = to(*at);
        }
        (self.head, self.tail, self.hand) = (to(self.head), to(self.tail), to(self.hand));
        self.slots = slots;
        self.free = Vec::new();
        self.index.shrink_to_fit();
    }

    /// Puts `node` at the head of the queue.
    fn push(&mut self, mut node: Node) {
        node.older = self.head;
        self.weight += u64::from(node.weight);
        let key = Arc::clone(&node.key);
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at] = Some(node);
                at
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        };
        match self.head {
            END => self.tail = at,
            head => self.node_mut(head).newer = at,
        }
        self.head = at;
        self.index.insert(key, at);
    }

    /// Takes the node at `at` out of the queue and the index.
    fn unlink(&mut self, at: usize) -> Gone {
        let node = self.slots[at].take().expect("unlinked once");
        self.free.push(at);
        self.index.remove(&node.key);
        self.weight -= u64::from(node.weight);
        match node.newer {
            END => self.head = node.older,
            newer => self.node_mut(newer).older = node.older,
        }
        match node.older {
            END => self.tail = node.newer,
            older => self.node_mut(older).newer = node.newer,
        }
        if self.hand == at {
            self.hand = node.newer;
        }
        (node.key, node.entry)
    }
}

#[cfg(test)]
mod tests;

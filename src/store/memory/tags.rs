//! The memory store's index of keys by tag, and the purges that rebuilds
//! under way must see.

use std::{collections::HashMap, sync::Arc};

use tokio::time::Instant;

use crate::entry::Entry;

#[derive(Default)]
pub(super) struct Tags {
    /// Tag, then key, then the entry the key was indexed for, so that only
    /// the leaving entry (not its replacement) un-tags its key.
    pub(super) keys: HashMap<String, HashMap<String, usize>>,
    /// When each tag was last purged, kept only while a lock taken before
    /// the purge may still be held: a rebuild that began before a purge of
    /// one of its tags must not store what it read.
    pub(super) purged: HashMap<String, Instant>,
}

impl Tags {
    /// Whether a tag of `entry` was purged at or after `taken`.
    pub(super) fn purged_since(&self, entry: &Entry, taken: Instant) -> bool {
        (entry.tags.iter()).any(|tag| self.purged.get(tag).is_some_and(|at| *at >= taken))
    }

    /// Takes `key` out of `entry`'s tags, where it is still indexed for
    /// `entry` and not for a newer one.
    pub(super) fn untag(&mut self, key: &str, entry: &Arc<Entry>) {
        for tag in &entry.tags {
            if let Some(keys) = self.keys.get_mut(tag) {
                if keys.get(key) == Some(&identity(entry)) {
                    keys.remove(key);
                }
                if keys.is_empty() {
                    self.keys.remove(tag);
                }
            }
        }
    }

    /// Indexes `key` under each tag of `entry`.
    pub(super) fn index(&mut self, key: &str, entry: &Arc<Entry>) {
        for tag in &entry.tags {
            (self.keys.entry(tag.clone()).or_default()).insert(key.to_owned(), identity(entry));
        }
    }

    /// Takes `tag`'s keys out of the index and marks it purged `now`, for
    /// the locks taken before (the oldest held was taken at `oldest`, if
    /// any lock is held: a mark older than it can outdate nothing).
    pub(super) fn purge(
        &mut self,
        tag: &str,
        now: Instant,
        oldest: Option<Instant>,
    ) -> HashMap<String, usize> {
        match oldest {
            Some(oldest) => {
                self.purged.retain(|_, at| *at >= oldest);
                self.purged.insert(tag.to_owned(), now);
            }
            None => self.purged.clear(),
        }
        self.keys.remove(tag).unwrap_or_default()
    }
}

/// Identifies an entry while it is alive.
fn identity(entry: &Arc<Entry>) -> usize {
    Arc::as_ptr(entry) as usize
}

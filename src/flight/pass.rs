//! Hit-for-pass: keys whose responses turned out to be for one client only,
//! remembered for a while so that their requests go straight to the origin
//! instead of queueing behind a leader whose answer they cannot have.
//!
//! # Memory
//!
//! The marks are bounded by bytes, and not by how long keys are: keys are
//! the client's to make long (the default key holds the forwarded hosts),
//! and any key whose answer was private is marked. So the table holds each
//! key as its SHA-256 (as the `Vary` table does, and for the same reason:
//! moka frees what it evicts late, so the keys themselves would be held
//! past any weight), at most [`BUDGET`] (4 MiB) of marks, each weighed as
//! [`PER_MARK`] bytes; when full, moka's admission keeps the keys asked for
//! most, and a key whose mark is pushed out only queues behind a leader
//! again. Each mark leaves at its own deadline, however few the marks:
//! read after it, it is dropped at once; unread, moka drops it within
//! about a second of it (its timer wheel's first step) when it next tends
//! the table.

use std::{sync::OnceLock, time::Duration};

use moka::{Expiry, sync::Cache};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// The most the marks may hold, in bytes as [`PER_MARK`] counts them:
/// 4 MiB, some 12 000 marks. A mark lives as long as `pass_for` (30 s by
/// default): that is a new private key every 2.5 ms held for 30 s, far
/// more than a service answers privately on cacheable routes; past it the
/// least asked keys queue behind a leader again.
pub(crate) const BUDGET: u64 = 4 * 1024 * 1024;

/// What the table keeps per mark: moka's records of the entry (node, hash
/// table slot, deque links, timer wheel node), the key's digest and the
/// mark. Measured on x86-64 with a counting allocator over 2 000 to 20 000
/// marks: 310 to 338 bytes.
const PER_MARK: u32 = 352;

/// A key as the table holds it: 32 bytes, however long the key.
type Digested = [u8; 32];

/// The SHA-256 of `key`: keys that differ never share a mark, whoever
/// chose them.
fn digest(key: &str) -> Digested {
    Sha256::digest(key.as_bytes()).into()
}

#[derive(Clone)]
struct Mark {
    /// Tokio's clock, which tests pause and move, decides whether a mark
    /// still holds; moka's own (real) clock only decides when it leaves
    /// memory unread.
    until: Instant,
    /// How long the mark was made for, which moka counts by its own clock.
    pause: Duration,
}

/// Each mark leaves memory after its own pause.
struct OwnPause;

impl Expiry<Digested, Mark> for OwnPause {
    fn expire_after_create(&self, _: &Digested, mark: &Mark, _: std::time::Instant) -> Option<Duration> {
        Some(mark.pause)
    }

    fn expire_after_update(
        &self,
        _: &Digested,
        mark: &Mark,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(mark.pause)
    }
}

/// The table, made with the first mark. Every mark weighs the same, so
/// moka's own housekeeping (after 64 writes, or 384 when it is busy) keeps
/// what is held past the budget under 384 marks, 132 KiB.
fn table() -> Cache<Digested, Mark> {
    Cache::builder()
        .max_capacity(BUDGET)
        .weigher(|_: &Digested, _: &Mark| PER_MARK)
        .expire_after(OwnPause)
        .build()
}

/// The keys that pass for now. Until one is marked, lookups cost a load of
/// one flag, and building a layer allocates nothing here.
#[derive(Default)]
pub(crate) struct Passes {
    /// Made with the first mark.
    marks: OnceLock<Cache<Digested, Mark>>,
}

impl Passes {
    /// Remembers `key` as one to pass for `pause`, within [`BUDGET`].
    pub(crate) fn insert(&self, key: &str, pause: Duration) {
        if pause.is_zero() {
            return;
        }
        let marks = self.marks.get_or_init(table);
        let until = crate::time::after(Instant::now(), pause);
        marks.insert(digest(key), Mark { until, pause });
    }

    /// Forgets `key`: its next response decides again.
    pub(crate) fn remove(&self, key: &str) {
        if let Some(marks) = self.marks.get() {
            marks.invalidate(&digest(key));
        }
    }

    /// Whether requests for `key` should pass straight to the origin now.
    pub(crate) fn contains(&self, key: &str) -> bool {
        let Some(marks) = self.marks.get() else {
            return false;
        };
        let key = digest(key);
        match marks.get(&key) {
            Some(mark) if mark.until > Instant::now() => true,
            Some(_) => {
                marks.invalidate(&key);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Passes {
        /// How many marks the table holds, after the evictions and expiries
        /// that were pending.
        fn held(&self) -> u64 {
            self.marks.get().map_or(0, |marks| {
                marks.run_pending_tasks();
                marks.entry_count()
            })
        }

        /// The bytes the table holds now, pending evictions included.
        fn held_bytes(&self) -> u64 {
            self.marks
                .get()
                .map_or(0, |marks| marks.iter().count() as u64 * u64::from(PER_MARK))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_passes_for_its_pause_then_not() {
        let passes = Passes::default();
        passes.insert("k", Duration::from_secs(30));
        assert!(passes.contains("k"));
        assert!(!passes.contains("other"));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!passes.contains("k"));
        assert_eq!(passes.held(), 0, "an expired mark is dropped when seen");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_pause_remembers_nothing() {
        let passes = Passes::default();
        passes.insert("k", Duration::ZERO);
        assert!(!passes.contains("k"));
        assert!(passes.marks.get().is_none(), "no table made");
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_key_passes_no_more() {
        let passes = Passes::default();
        passes.insert("k", Duration::from_secs(30));
        passes.remove("k");
        assert!(!passes.contains("k"));
    }

    /// Marks `count` keys of `len` bytes for 30 s, checking twenty times
    /// on the way that what is held between two evictions stays near the
    /// budget.
    fn mark_many(passes: &Passes, count: usize, len: usize) {
        let mut key = "k".repeat(len);
        for i in 0..count {
            key.replace_range(..8, &format!("{i:08}"));
            passes.insert(&key, Duration::from_secs(30));
            if i % (count / 20) == 0 {
                let held = passes.held_bytes();
                // Moka's write log holds up to 384 writes before it applies them.
                let most = BUDGET + 384 * u64::from(PER_MARK);
                assert!(held <= most, "{held} bytes held after {i} marks, budget {BUDGET}");
            }
        }
    }

    /// The attack: 1000 keys of 240 KB, as requests with four 60 KB
    /// `X-Forwarded-Host` lines make, each answered privately.
    #[test]
    fn marks_stay_within_their_budget() {
        let passes = Passes::default();
        mark_many(&passes, 1000, 240 * 1024);
        assert_eq!(passes.held(), 1000);
        let held = passes.held_bytes();
        assert!(held <= BUDGET, "{held} bytes held, budget {BUDGET}");
        assert_eq!(held, 1000 * u64::from(PER_MARK), "a key's length costs nothing");
    }

    /// More marks than the budget holds (some 12 000): the table evicts
    /// down to it, and stays full.
    #[test]
    fn a_full_table_evicts_to_its_budget() {
        let passes = Passes::default();
        mark_many(&passes, 20_000, 64);
        passes.held();
        let held = passes.held_bytes();
        assert!(held <= BUDGET, "{held} bytes held, budget {BUDGET}");
        assert!(held > BUDGET / 2, "the table is used, not emptied: {held}");
    }

    /// Moka drops an unread mark by its own (real) clock, which a test
    /// cannot move: this waits for it in real time, bounded, checking as
    /// traffic would. The marks are far fewer than any count that used to
    /// start a sweep.
    #[tokio::test]
    async fn expired_marks_leave_though_few_and_never_seen_again() {
        let passes = Passes::default();
        for i in 0..10 {
            passes.insert(&format!("k{i}"), Duration::from_millis(20));
        }
        assert_eq!(passes.held(), 10);
        let deadline = Instant::now() + Duration::from_secs(5);
        while passes.held() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} expired marks still held",
                passes.held()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

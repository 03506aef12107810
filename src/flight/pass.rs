//! Hit-for-pass: keys whose responses turned out to be for one client only,
//! remembered for a while so that their requests go straight to the origin
//! instead of queueing behind a leader whose answer they cannot have.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

/// Above this many keys, expired ones are swept, at most once every
/// [`SWEEP_EVERY`] inserts so that sweeping stays linear overall.
const SWEEP_ABOVE: usize = 4096;
const SWEEP_EVERY: usize = 1024;
/// A hard bound: past it, the marks start over (keys then queue behind a
/// leader once more until their responses are seen again).
const MAX_MARKS: usize = 100_000;

#[derive(Default)]
pub(crate) struct Passes {
    until: Mutex<HashMap<String, Instant>>,
    inserts: std::sync::atomic::AtomicUsize,
}

impl Passes {
    fn until(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers `key` as one to pass for `pause`.
    pub(crate) fn insert(&self, key: &str, pause: Duration) {
        if pause.is_zero() {
            return;
        }
        let now = Instant::now();
        let inserts = self.inserts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut until = self.until();
        if until.len() >= SWEEP_ABOVE && inserts.is_multiple_of(SWEEP_EVERY) {
            until.retain(|_, deadline| *deadline > now);
        }
        if until.len() >= MAX_MARKS {
            until.clear();
        }
        until.insert(key.to_owned(), now + pause);
    }

    /// Forgets `key`: its next response decides again.
    pub(crate) fn remove(&self, key: &str) {
        self.until().remove(key);
    }

    /// Whether requests for `key` should pass straight to the origin now.
    pub(crate) fn contains(&self, key: &str) -> bool {
        let mut until = self.until();
        match until.get(key) {
            Some(deadline) if *deadline > Instant::now() => true,
            Some(_) => {
                until.remove(key);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_passes_for_its_pause_then_not() {
        let passes = Passes::default();
        passes.insert("k", Duration::from_secs(30));
        assert!(passes.contains("k"));
        assert!(!passes.contains("other"));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!passes.contains("k"));
        assert!(passes.until().is_empty(), "an expired mark is dropped when seen");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_pause_remembers_nothing() {
        let passes = Passes::default();
        passes.insert("k", Duration::ZERO);
        assert!(!passes.contains("k"));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_marks_are_swept_when_many() {
        let passes = Passes::default();
        for i in 0..SWEEP_ABOVE {
            passes.insert(&format!("old-{i}"), Duration::from_secs(1));
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        // The next sweep comes with the next multiple of SWEEP_EVERY inserts.
        let mut inserted = 0;
        while passes.until().len() > inserted {
            passes.insert(&format!("new-{inserted}"), Duration::from_secs(1));
            inserted += 1;
            assert!(inserted <= SWEEP_EVERY, "swept within {SWEEP_EVERY} inserts");
        }
        assert_eq!(passes.until().len(), inserted);
    }
}

//! The bytes a layer's flights may hold buffered together, so that many
//! distinct large responses, their clients gone, cannot take the process's
//! memory one `max_body_bytes` at a time.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// A bound on the bytes buffered at once, shared by the reservations
/// taken from it.
pub(crate) struct Budget {
    limit: usize,
    // Only ever changed by read-modify-write operations, so the bound holds
    // whatever their ordering; nothing else is published through it.
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes reserved now, at most `limit`.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes taken from a [`Budget`] for data being held, given back when
/// dropped, so that no path out of a flight (an error, a panic, a client
/// gone) keeps them.
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    /// A reservation of nothing yet.
    pub(crate) fn new(budget: &Arc<Budget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    /// Takes `bytes` more if the budget has them left; otherwise takes
    /// nothing and says so.
    pub(crate) fn grow(&mut self, bytes: usize) -> bool {
        let limit = self.budget.limit;
        let taken = self
            .budget
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .is_ok();
        if taken {
            self.bytes += bytes;
        }
        taken
    }

    /// The bytes taken so far.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_bound_and_a_refused_one_takes_nothing() {
        let budget = Budget::new(100);
        let mut a = Reservation::new(&budget);
        let mut b = Reservation::new(&budget);
        assert!(a.grow(60));
        assert!(!b.grow(41), "60 + 41 is over 100");
        assert_eq!((b.bytes(), budget.used()), (0, 60));
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
        assert!(!a.grow(1));
    }

    #[test]
    fn dropping_a_reservation_gives_back_what_it_held() {
        let budget = Budget::new(100);
        let mut a = Reservation::new(&budget);
        assert!(a.grow(30) && a.grow(30));
        let mut b = Reservation::new(&budget);
        assert!(b.grow(40));
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_grow_that_would_overflow_is_refused() {
        let budget = Budget::new(usize::MAX);
        let mut a = Reservation::new(&budget);
        assert!(a.grow(usize::MAX - 1));
        assert!(!a.grow(2));
        assert_eq!(budget.used(), usize::MAX - 1);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_bound() {
        let budget = Budget::new(1000);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = Arc::clone(&budget);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut held = Reservation::new(&budget);
                        while held.grow(7) {
                            assert!(budget.used() <= 1000);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no thread panics");
        }
        assert_eq!(budget.used(), 0, "every reservation was dropped");
    }
}

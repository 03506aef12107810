//! In-process single flight: one leader per key; waiters are woken by the
//! leader's value, or by its disappearance, never by polling.
//!
//! Waiters are woken in the order they joined: the first requests of a
//! stampede, which have waited longest, are answered first. (A `watch`
//! channel spreads its receivers over eight lists and wakes them list by
//! list, which answered some of the first requests last and added the
//! spread of their arrivals to the stampede's tail.)

use std::{
    collections::HashMap,
    pin::pin,
    sync::{Arc, PoisonError, atomic::Ordering},
};

use tokio::sync::Notify;

// shuttle's under `--cfg shuttle`, so that the models drive this table.
use crate::sync::{AtomicUsize, Mutex, MutexGuard};

#[cfg(all(test, shuttle))]
mod model;
mod outcome;
mod pass;

pub(crate) use outcome::Outcome;
pub(crate) use pass::Passes;

/// The flights under way, by key.
pub(crate) struct Flights<T> {
    /// Each key's flight under way, by what its leader and waiters share:
    /// a leader removes its key only while the flight there is its own.
    map: Mutex<HashMap<Arc<str>, Arc<State<T>>>>,
}

/// What a flight's leader and its waiters share.
struct State<T> {
    /// `None` while the leader works; then its value, or `None` inside if it
    /// went away without one.
    value: Mutex<Option<Option<T>>>,
    /// Wakes waiters oldest first.
    done: Notify,
    /// How many waiters the flight has; each leaves the count when dropped.
    waiters: AtomicUsize,
}

impl<T> State<T> {
    fn value(&self) -> MutexGuard<'_, Option<Option<T>>> {
        self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the flight's value and wakes everyone waiting for it.
    fn settle(&self, value: Option<T>) {
        *self.value() = Some(value);
        self.done.notify_waiters();
    }
}

/// What a request becomes when it joins a key's flight.
pub(crate) enum Join<T> {
    Leader(Leader<T>),
    Waiter(Waiter<T>),
    /// The flight has as many waiters as it may.
    Full,
}

/// The one request of a flight that does the work. Dropping it without
/// [`Leader::finish`] or [`Leader::end`] (a panic, a cancelled task) frees
/// the key and tells the waiters that no value is coming, unless one was
/// published.
pub(crate) struct Leader<T> {
    flights: Arc<Flights<T>>,
    key: Arc<str>,
    state: Arc<State<T>>,
    /// Whether the flight has ended ([`Leader::finish`], [`Leader::end`]).
    ended: bool,
}

/// A request that waits for a leader's value.
pub(crate) struct Waiter<T> {
    state: Arc<State<T>>,
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        self.state.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> Flights<T> {
    pub(crate) fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<State<T>>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many keys have a flight under way.
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// Lets later requests for every key that `matches` start a new
    /// flight: the ones under way (their answers now outdated) keep only the
    /// waiters they have.
    pub(crate) fn detach_where(&self, matches: impl Fn(&str) -> bool) {
        self.map().retain(|key, _| !matches(key));
    }

    /// Joins the flight for `key`, starting one if there is none; a flight
    /// that already has `max_waiters` waiters takes no more.
    pub(crate) fn join(self: &Arc<Self>, key: &str, max_waiters: usize) -> Join<T> {
        let mut map = self.map();
        if let Some(flight) = map.get(key) {
            let waiters = &flight.waiters;
            // Counted under the table's lock: two joins cannot both take
            // the last place.
            if waiters.load(Ordering::Relaxed) >= max_waiters {
                return Join::Full;
            }
            waiters.fetch_add(1, Ordering::Relaxed);
            return Join::Waiter(Waiter {
                state: Arc::clone(flight),
            });
        }
        let state = Arc::new(State {
            value: Mutex::new(None),
            done: Notify::new(),
            waiters: AtomicUsize::new(0),
        });
        let key: Arc<str> = Arc::from(key);
        map.insert(Arc::clone(&key), Arc::clone(&state));
        Join::Leader(Leader {
            flights: Arc::clone(self),
            key,
            state,
            ended: false,
        })
    }
}

impl<T> Leader<T> {
    /// Ends the flight: the key is free for a new flight, and every waiter
    /// gets `value`.
    pub(crate) fn finish(mut self, value: T) {
        self.remove();
        self.ended = true;
        self.state.settle(Some(value));
    }

    /// Hands every waiter `value` now while the flight goes on: requests
    /// that join later get it too, until [`Leader::close`] or the end.
    pub(crate) fn publish(&self, value: T) {
        self.state.settle(Some(value));
    }

    /// Ends a flight whose value was published: the key is free, and
    /// waiters not yet woken get the published value.
    pub(crate) fn end(mut self) {
        self.remove();
        self.ended = true;
    }

    /// Takes no more waiters: later requests for the key start a flight of
    /// their own. Those already waiting keep theirs.
    pub(crate) fn close(&self) {
        self.remove();
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// How many requests wait on this flight.
    #[cfg(test)]
    pub(crate) fn waiters(&self) -> usize {
        self.state.waiters.load(Ordering::Relaxed)
    }

    fn remove(&self) {
        let mut map = self.flights.map();
        if map
            .get(&self.key)
            .is_some_and(|flight| Arc::ptr_eq(flight, &self.state))
        {
            map.remove(&self.key);
        }
    }
}

impl<T> Drop for Leader<T> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.remove();
        // A published value stands; else the waiters learn none is coming.
        self.state.value().get_or_insert(None);
        self.state.done.notify_waiters();
    }
}

impl<T: Clone> Waiter<T> {
    /// The leader's value, or `None` if the leader went away without one.
    pub(crate) async fn wait(self) -> Option<T> {
        loop {
            let mut notified = pin!(self.state.done.notified());
            // Listening before looking: a value set after the look wakes it.
            notified.as_mut().enable();
            if let Some(value) = &*self.state.value() {
                return value.clone();
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(join: Join<u32>) -> Leader<u32> {
        match join {
            Join::Leader(l) => l,
            _ => panic!("expected to lead"),
        }
    }

    fn waiter(join: Join<u32>) -> Waiter<u32> {
        match join {
            Join::Waiter(w) => w,
            _ => panic!("expected to wait"),
        }
    }

    #[tokio::test]
    async fn one_leader_per_key_and_every_waiter_gets_its_value() {
        let flights = Arc::new(Flights::new());
        let lead = leader(flights.join("a", usize::MAX));
        let other = leader(flights.join("b", usize::MAX));
        let waiters: Vec<_> = (0..100)
            .map(|_| tokio::spawn(waiter(flights.join("a", usize::MAX)).wait()))
            .collect();
        assert_eq!(lead.waiters(), 100);
        lead.finish(7);
        for w in waiters {
            assert_eq!(w.await.expect("no panic"), Some(7));
        }
        assert_eq!(flights.len(), 1, "only b is still in flight");
        other.finish(1);
        assert_eq!(flights.len(), 0);
    }

    /// A stampede's first requests have waited longest: they are answered
    /// first, not in an order of the wake-up's own.
    #[tokio::test]
    async fn waiters_are_woken_in_the_order_they_joined() {
        let flights = Arc::new(Flights::new());
        let lead = leader(flights.join("a", usize::MAX));
        let (started, woken) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(std::sync::Mutex::new(Vec::new())),
        );
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let waiter = waiter(flights.join("a", usize::MAX));
                let (started, woken) = (Arc::clone(&started), Arc::clone(&woken));
                tokio::spawn(async move {
                    // In the same poll as the wait's first: once counted, it
                    // listens.
                    started.fetch_add(1, Ordering::Relaxed);
                    let value = waiter.wait().await;
                    woken.lock().expect("not poisoned").push(i);
                    value
                })
            })
            .collect();
        // This runtime has one thread and runs tasks in the order spawned.
        while started.load(Ordering::Relaxed) < 200 {
            tokio::task::yield_now().await;
        }
        lead.finish(7);
        for task in tasks {
            assert_eq!(task.await.expect("no panic"), Some(7));
        }
        let woken = woken.lock().expect("not poisoned").clone();
        assert_eq!(woken, (0..200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_leader_dropped_without_a_value_frees_the_key_and_its_waiters() {
        let flights = Arc::new(Flights::new());
        let lead = leader(flights.join("a", usize::MAX));
        let w = tokio::spawn(waiter(flights.join("a", usize::MAX)).wait());
        drop(lead);
        assert_eq!(w.await.expect("no panic"), None);
        assert_eq!(flights.len(), 0);
        leader(flights.join("a", usize::MAX)).finish(2);
    }

    #[tokio::test]
    async fn a_leader_that_panics_frees_the_key() {
        let flights = Arc::new(Flights::new());
        let lead = leader(flights.join("a", usize::MAX));
        let w = tokio::spawn(waiter(flights.join("a", usize::MAX)).wait());
        let task = tokio::spawn(async move {
            let _lead = lead;
            panic!("origin blew up");
        });
        assert!(task.await.expect_err("panicked").is_panic());
        assert_eq!(w.await.expect("no panic"), None);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_detached_flight_keeps_its_waiters_and_lets_newcomers_start_afresh() {
        let flights = Arc::new(Flights::new());
        let old = leader(flights.join("a", usize::MAX));
        let before = tokio::spawn(waiter(flights.join("a", usize::MAX)).wait());
        flights.detach_where(|key| key == "a");
        let fresh = leader(flights.join("a", usize::MAX));
        old.finish(1);
        assert_eq!(before.await.expect("no panic"), Some(1));
        assert_eq!(flights.len(), 1, "the old leader did not remove the new flight");
        fresh.finish(2);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn detaching_by_a_test_leaves_the_other_keys_their_flights() {
        let flights = Arc::new(Flights::new());
        let (a, ab, b) = (
            leader(flights.join("a", usize::MAX)),
            leader(flights.join("ab", usize::MAX)),
            leader(flights.join("b", usize::MAX)),
        );
        flights.detach_where(|key| key.starts_with('a'));
        assert_eq!(flights.len(), 1);
        assert!(matches!(flights.join("b", usize::MAX), Join::Waiter(_)));
        let fresh = leader(flights.join("a", usize::MAX));
        for old in [a, ab, b] {
            old.finish(1);
        }
        assert_eq!(flights.len(), 1, "only the new flight of a is left");
        fresh.finish(2);
    }

    #[tokio::test]
    async fn a_late_waiter_of_a_finished_flight_starts_a_new_one() {
        let flights = Arc::new(Flights::new());
        leader(flights.join("a", usize::MAX)).finish(1);
        let second = leader(flights.join("a", usize::MAX));
        assert_eq!(second.waiters(), 0);
    }

    #[tokio::test]
    async fn a_full_flight_takes_no_more_waiters_until_one_leaves() {
        let flights = Arc::new(Flights::new());
        let lead = leader(flights.join("a", 2));
        let first = waiter(flights.join("a", 2));
        let second = waiter(flights.join("a", 2));
        assert!(matches!(flights.join("a", 2), Join::Full));
        drop(first);
        let third = waiter(flights.join("a", 2));
        assert!(matches!(flights.join("a", 2), Join::Full));
        assert!(matches!(flights.join("b", 2), Join::Leader(_)), "per key");
        lead.finish(7);
        assert_eq!((second.wait().await, third.wait().await), (Some(7), Some(7)));
    }
}

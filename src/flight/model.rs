//! Models of the flight table under shuttle (`.ci/models`): the real
//! [`Flights`], with shuttle's lock and atomics (src/sync.rs), driven
//! through thousands of random and PCT schedules. A task that never ends
//! fails a run as a deadlock, so "every waiter ends" needs no assertion of
//! its own beyond joining every task.

use std::sync::{Arc, atomic::Ordering};

use shuttle::{
    future,
    sync::atomic::{AtomicBool, AtomicUsize},
};

use super::{Flights, Join, Leader};
use crate::sync::model::{check, join_all};

/// Every waiter ends, with its leader's value or, when that leader went
/// away without one, `None`. On key "a" every leader finishes with 7, on
/// key "b" every leader is dropped: which task leads is up to the schedule,
/// what a waiter may get is not.
#[test]
fn every_waiter_gets_its_leaders_value_or_none_when_the_leader_was_dropped() {
    check(|| {
        future::block_on(async {
            let flights = Arc::new(Flights::<u32>::new());
            let tasks = ["a", "a", "a", "b", "b", "b"]
                .into_iter()
                .map(|key| {
                    let flights = Arc::clone(&flights);
                    future::spawn(async move {
                        let join = flights.join(key, usize::MAX);
                        // Shuttle switches tasks only at its own operations;
                        // on a runtime of several threads, the others run on
                        // between a join and what follows it (the leader's
                        // origin call, the first poll of `wait`).
                        future::yield_now().await;
                        match join {
                            Join::Leader(leader) if key == "a" => leader.finish(7),
                            Join::Leader(leader) => drop(leader),
                            Join::Waiter(waiter) => {
                                let expected = (key == "a").then_some(7);
                                assert_eq!(waiter.wait().await, expected, "a waiter of {key}");
                            }
                            Join::Full => panic!("no limit was set"),
                        }
                    })
                })
                .collect();
            join_all(tasks).await;
        });
    });
}

/// Once every task has ended, whatever each did (finish, drop its leader,
/// wait, leave without waiting, find the flight full, detach), the table
/// holds no key and the next request starts a flight afresh.
#[test]
fn no_key_is_left_in_the_table_once_every_task_has_ended() {
    check(|| {
        future::block_on(async {
            let flights = Arc::new(Flights::<u32>::new());
            let tasks = (0..4)
                .map(|task| {
                    let flights = Arc::clone(&flights);
                    future::spawn(async move {
                        // One waiter at most: the fourth task may find the flight full.
                        match flights.join("k", 1) {
                            Join::Leader(leader) if task % 2 == 0 => leader.finish(1),
                            Join::Leader(leader) => drop(leader),
                            Join::Waiter(waiter) if task == 1 => drop(waiter),
                            Join::Waiter(waiter) => drop(waiter.wait().await),
                            Join::Full => {}
                        }
                    })
                })
                .chain([{
                    let flights = Arc::clone(&flights);
                    future::spawn(async move { flights.detach_where(|key| key == "k") })
                }])
                .collect();
            join_all(tasks).await;
            assert_eq!(flights.len(), 0, "a key is stuck in the table");
            assert!(
                matches!(flights.join("k", 1), Join::Leader(_)),
                "the key starts afresh"
            );
        });
    });
}

/// How an old leader ends.
type End = fn(Leader<u32>);

/// A flight detached while its leader works keeps its leader, and that
/// leader, dropped (key "a") or finishing (key "b"), never removes the newer
/// flight that took the key meanwhile: requests after it join the newer one.
#[test]
fn a_detached_flight_never_removes_a_newer_flight_of_its_key() {
    check(|| {
        future::block_on(async {
            let flights = Arc::new(Flights::<u32>::new());
            let ends: [(&str, End); 2] = [("a", drop), ("b", |old| old.finish(1))];
            let mut newer = Vec::new();
            let mut ended = Vec::new();
            for (key, end) in ends {
                let Join::Leader(old) = flights.join(key, usize::MAX) else {
                    panic!("the first join leads");
                };
                let flights = Arc::clone(&flights);
                newer.push(future::spawn(async move {
                    flights.detach_where(|k| k == key);
                    match flights.join(key, usize::MAX) {
                        Join::Leader(newer) => newer,
                        _ => panic!("after the detach the key is free"),
                    }
                }));
                ended.push(future::spawn(async move { end(old) }));
            }
            let newer = join_all(newer).await;
            join_all(ended).await;
            for leader in newer {
                assert!(
                    matches!(flights.join(leader.key(), usize::MAX), Join::Waiter(_)),
                    "the old leader of {} removed the newer flight",
                    leader.key()
                );
                leader.finish(2);
            }
            assert_eq!(flights.len(), 0);
        });
    });
}

/// With room for one waiter, `Full` comes only when a waiter really holds
/// the place: the waiter that held it leaves, then says so; a join that
/// starts after that cannot be turned away with nobody else in the place.
/// And the two joins that race for the freed place never both take it.
#[test]
fn full_only_when_the_flight_holds_max_waiters_and_the_last_place_is_taken_once() {
    check(|| {
        future::block_on(async {
            let flights = Arc::new(Flights::<u32>::new());
            let Join::Leader(leader) = flights.join("k", 1) else {
                panic!("the first join leads");
            };
            let Join::Waiter(first) = flights.join("k", 1) else {
                panic!("one place is free");
            };
            // Set once the first waiter has left.
            let left = Arc::new(AtomicBool::new(false));
            let leaving = {
                let left = Arc::clone(&left);
                future::spawn(async move {
                    drop(first);
                    left.store(true, Ordering::SeqCst);
                })
            };
            let joins: Vec<_> = (0..2)
                .map(|_| {
                    let (flights, left) = (Arc::clone(&flights), Arc::clone(&left));
                    future::spawn(async move {
                        let after_leave = left.load(Ordering::SeqCst);
                        // Held until the end: the place stays taken.
                        (after_leave, flights.join("k", 1))
                    })
                })
                .collect();
            let joins = join_all(joins).await;
            leaving.await.expect("no panic");
            let taken = joins.iter().filter(|(_, j)| matches!(j, Join::Waiter(_))).count();
            assert!(taken <= 1, "two joins took the last place");
            if joins.iter().any(|(after_leave, _)| *after_leave) {
                assert_eq!(taken, 1, "full with the place free");
            }
            drop(joins);
            leader.finish(1);
        });
    });
}

/// At most one leader per key at any instant: each task counts itself in
/// while it leads, and out just before it leaves. The leader that detaches
/// its flight counts itself out before the detach, since a newer leader may
/// start from then on ("except across a detach"), and finishes later, when
/// its finish must not free the newer flight for a third leader.
#[test]
fn at_most_one_leader_per_key_at_any_instant() {
    check(|| {
        future::block_on(async {
            let flights = Arc::new(Flights::<u32>::new());
            let leading = Arc::new(AtomicUsize::new(0));
            let tasks = (0..3)
                .map(|task| {
                    let (flights, leading) = (Arc::clone(&flights), Arc::clone(&leading));
                    future::spawn(async move {
                        for _ in 0..2 {
                            match flights.join("k", usize::MAX) {
                                Join::Leader(leader) => {
                                    let others = leading.fetch_add(1, Ordering::SeqCst);
                                    assert_eq!(others, 0, "two leaders of one key at once");
                                    // The origin call: others join meanwhile.
                                    future::yield_now().await;
                                    leading.fetch_sub(1, Ordering::SeqCst);
                                    if task == 0 {
                                        flights.detach_where(|key| key == "k");
                                        future::yield_now().await;
                                    }
                                    leader.finish(1);
                                }
                                Join::Waiter(waiter) => drop(waiter.wait().await),
                                Join::Full => panic!("no limit was set"),
                            }
                        }
                    })
                })
                .collect();
            join_all(tasks).await;
        });
    });
}

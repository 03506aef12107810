//! Models of the wake-up registry under shuttle (`.ci/models`): the real
//! [`Wakeups`], with shuttle's lock (src/sync.rs), without a subscriber
//! (no clients: the models call what its messages call), driven through
//! thousands of random and PCT schedules. A waiter that is never woken
//! fails a run as a deadlock.

use std::{
    pin::pin,
    sync::{Arc, atomic::Ordering},
};

use shuttle::{future, sync::atomic::AtomicBool};

use super::{Registration, Wakeups};
use crate::sync::model::{check, join_all};

fn wakeups() -> Arc<Wakeups> {
    Arc::new(Wakeups::new("wake".to_owned(), Vec::new()))
}

/// The Redis lock of one key, as `wait_unlocked` sees it. shuttle's
/// atomic, so that its reads and writes are scheduling points.
struct Lock(AtomicBool);

impl Lock {
    /// `EXISTS` on the lock key: the answer is the lock's state when Redis
    /// read it, and the reply takes a while to arrive (the yield), during
    /// which the lock may be released.
    async fn is_held(&self) -> bool {
        let held = self.0.load(Ordering::SeqCst);
        future::yield_now().await;
        held
    }

    fn release(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The waiter's side of `commands.rs::wait_unlocked`, step for step:
/// register, create and enable both signals, only then ask whether the lock
/// is held, and wait for a release or a re-check. Without the back-off
/// timer of the real loop, which would hide a lost wake-up: here only a
/// signal can end the wait.
async fn wait_unlocked(wakeups: Arc<Wakeups>, lock: Arc<Lock>, tag: &str) {
    let registration = wakeups.register(tag);
    loop {
        let signals = &registration.signals;
        let (mut released, mut look_again) = (
            pin!(signals.released.notified()),
            pin!(signals.recheck.notified()),
        );
        released.as_mut().enable();
        look_again.as_mut().enable();
        if !lock.is_held().await {
            return;
        }
        // Biased: tokio's random branch order would make a failing schedule
        // impossible to replay.
        tokio::select! {
            biased;
            () = released => return,
            () = look_again => {}
        }
    }
}

/// Two waiters on the lock's tag; the holder releases the lock, then
/// `announce`s it the way the subscriber would. Every waiter ends, in each
/// schedule tried, and leaves nothing in the map behind it.
fn no_waiter_misses(announce: fn(&Wakeups, &str)) {
    future::block_on(async move {
        let wakeups = wakeups();
        let lock = Arc::new(Lock(AtomicBool::new(true)));
        let mut tasks: Vec<_> = ["t", "t"]
            .into_iter()
            .map(|tag| future::spawn(wait_unlocked(Arc::clone(&wakeups), Arc::clone(&lock), tag)))
            .collect();
        tasks.push(future::spawn({
            let wakeups = Arc::clone(&wakeups);
            async move {
                lock.release();
                announce(&wakeups, "t");
            }
        }));
        join_all(tasks).await;
        assert!(
            wakeups.waiters().is_empty(),
            "the waiters left their registrations"
        );
    });
}

/// A release published on the channel: `wake` for the lock's tag.
#[test]
fn a_waiter_never_misses_the_wake_that_follows_a_release() {
    check(|| no_waiter_misses(|wakeups, tag| wakeups.wake(tag)));
}

/// A release whose publish was lost while the subscription was down: the
/// subscriber's `recheck_all` on coming back is all the waiter gets.
#[test]
fn a_waiter_never_misses_the_recheck_that_follows_a_lost_release() {
    check(|| no_waiter_misses(|wakeups, _| wakeups.recheck_all()));
}

/// Whether `wake` for the registration's tag reaches it: the map holds the
/// tag, with that registration's signals.
fn assert_reachable(wakeups: &Wakeups, registration: &Registration) {
    let map = wakeups.waiters();
    let signals = map.get(&registration.tag).map(|waiting| &waiting.signals);
    assert!(
        signals.is_some_and(|signals| Arc::ptr_eq(signals, &registration.signals)),
        "a live registration is not reachable by wake"
    );
}

/// Tasks register and leave on one tag at once, one of them twice over.
/// While a registration lives, `wake` for its tag reaches it; once the last
/// one has left, the map holds nothing.
#[test]
fn a_live_registration_is_in_the_map_and_the_last_to_leave_removes_its_tag() {
    check(|| {
        future::block_on(async {
            let wakeups = wakeups();
            let tasks = (0..3)
                .map(|task| {
                    let wakeups = Arc::clone(&wakeups);
                    future::spawn(async move {
                        let first = wakeups.register("t");
                        // Others register and leave meanwhile.
                        future::yield_now().await;
                        assert_reachable(&wakeups, &first);
                        let second = (task == 0).then(|| wakeups.register("t"));
                        drop(first);
                        future::yield_now().await;
                        if let Some(second) = second {
                            assert_reachable(&wakeups, &second);
                        }
                    })
                })
                .collect();
            join_all(tasks).await;
            assert!(wakeups.waiters().is_empty(), "a tag outlived its registrations");
        });
    });
}

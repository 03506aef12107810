//! The lock and the atomics of the two tables that every request touches
//! (the flight table and the Redis store's wake-up registry): std's, or
//! shuttle's when the crate's tests are built with `--cfg shuttle`
//! (`.ci/models`). Shuttle can only interleave tasks at operations it
//! controls, so the models drive the real tables only if these come from it.
//!
//! Both lock the same way (`lock()` gives a `LockResult` whose
//! `PoisonError` is std's), so the code that uses them is the same either
//! way. shuttle is a dev-dependency: `test` is part of the condition, so a
//! stray `--cfg shuttle` on a normal build keeps std's.

#[cfg(all(test, shuttle))]
pub(crate) use shuttle::sync::{Mutex, MutexGuard, atomic::AtomicUsize};
#[cfg(not(all(test, shuttle)))]
pub(crate) use std::sync::{Mutex, MutexGuard, atomic::AtomicUsize};

/// What the models of both tables share.
#[cfg(all(test, shuttle))]
pub(crate) mod model {
    use shuttle::future::JoinHandle;

    /// PCT's bug depth: the races modelled need two or three preemptions.
    const DEPTH: usize = 3;

    /// Runs `model` under `MODEL_SCHEDULES` random schedules (5000 unless
    /// set), then as many PCT schedules, which bound the number of
    /// preemptions and so reach the shallow races more often. `.ci/models`
    /// sets it; a longer hunt sets it higher.
    pub(crate) fn check(model: fn()) {
        let schedules = std::env::var("MODEL_SCHEDULES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(5_000);
        shuttle::check_random(model, schedules);
        shuttle::check_pct(model, schedules, DEPTH);
    }

    /// Waits for every task, in turn; a panic in one fails the model. A task
    /// that never ends fails it too, as a deadlock: so "every waiter ends"
    /// needs no assertion of its own.
    pub(crate) async fn join_all<R>(tasks: Vec<JoinHandle<R>>) -> Vec<R> {
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(task.await.expect("a task of the model panicked"));
        }
        out
    }
}

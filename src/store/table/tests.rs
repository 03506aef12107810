//! Unit tests of `table`.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::*;
use crate::policy::Lifetime;

fn entry() -> Arc<Entry> {
    let now = SystemTime::now();
    let lifetime = Lifetime::expired(now);
    let parts = (Vec::new(), HeaderMap::new());
    let body = Bytes::from_static(b"x");
    Arc::new(Entry::new(
        StatusCode::OK,
        HeaderMap::new(),
        body,
        None,
        parts,
        now,
        lifetime,
        Duration::ZERO,
    ))
}

const LATER: Duration = Duration::from_secs(60);

/// A table of `max` bytes with `keys` stored in turn, each weighing 10.
fn table(max: u64, keys: &[&str], now: Instant) -> Table {
    let table = Table::new(max);
    for key in keys {
        assert!(table.insert(key, entry(), 10, now, now + LATER).is_empty());
    }
    table
}

fn keys(gone: &[Gone]) -> Vec<&str> {
    gone.iter().map(|(key, _)| &**key).collect()
}

#[test]
fn a_stored_entry_is_read_back_until_it_expires() {
    let now = Instant::now();
    let table = Table::new(100);
    let stored = entry();
    table.insert("a", Arc::clone(&stored), 10, now, now + LATER);
    let read = table.get("a", now).expect("stored");
    assert!(Arc::ptr_eq(&read, &stored));
    assert!(table.get("b", now).is_none());
    assert!(table.get("a", now + LATER).is_none(), "expired");
    assert_eq!(table.size(), (1, 10), "held until swept");
    assert_eq!(keys(&table.sweep(now + LATER)), ["a"]);
    assert_eq!(table.size(), (0, 0));
}

#[test]
fn the_oldest_entry_not_read_is_evicted_first() {
    let now = Instant::now();
    let table = table(30, &["a", "b", "c"], now);
    table.get("a", now).expect("stored");
    // "a" was read: the hand passes it (and unmarks it), "b" goes.
    assert_eq!(keys(&table.insert("d", entry(), 10, now, now + LATER)), ["b"]);
    // The hand moves on, toward the newest, from where it stopped.
    assert_eq!(keys(&table.insert("e", entry(), 10, now, now + LATER)), ["c"]);
}

/// A run of keys asked for once each cannot push out a key that is read.
#[test]
fn an_entry_read_outlives_a_run_of_one_off_keys() {
    let now = Instant::now();
    let table = table(30, &["hot", "b", "c"], now);
    table.get("hot", now).expect("stored");
    for i in 0..100 {
        let gone = table.insert(&format!("once-{i}"), entry(), 10, now, now + LATER);
        assert_eq!(gone.len(), 1);
        assert_ne!(keys(&gone), ["hot"], "after {i} one-off keys");
    }
    assert!(table.get("hot", now).is_some());
}

#[test]
fn when_every_entry_was_read_the_hand_goes_round_and_evicts_the_oldest() {
    let now = Instant::now();
    let table = table(30, &["a", "b", "c"], now);
    for key in ["a", "b", "c"] {
        table.get(key, now).expect("stored");
    }
    assert_eq!(keys(&table.insert("d", entry(), 10, now, now + LATER)), ["a"]);
}

#[test]
fn an_expired_entry_is_evicted_before_one_not_read() {
    let now = Instant::now();
    let table = Table::new(30);
    table.insert("old", entry(), 10, now, now + LATER);
    table.insert("short", entry(), 10, now, now + Duration::from_secs(1));
    table.insert("new", entry(), 10, now, now + LATER);
    table.get("old", now).expect("stored");
    let later = now + Duration::from_secs(2);
    assert_eq!(
        keys(&table.insert("next", entry(), 10, later, later + LATER)),
        ["short"]
    );
}

#[test]
fn a_large_entry_evicts_as_many_as_it_needs() {
    let now = Instant::now();
    let table = table(30, &["a", "b", "c"], now);
    assert_eq!(
        keys(&table.insert("big", entry(), 25, now, now + LATER)),
        ["a", "b", "c"]
    );
    assert_eq!(table.size(), (1, 25));
}

#[test]
fn replacing_an_entry_gives_back_the_old_one_and_its_weight() {
    let now = Instant::now();
    let table = table(100, &["a", "b"], now);
    let (old, new) = (table.get("a", now).expect("stored"), entry());
    let gone = table.insert("a", Arc::clone(&new), 30, now, now + LATER);
    assert_eq!(keys(&gone), ["a"]);
    assert!(Arc::ptr_eq(&gone[0].1, &old));
    assert!(Arc::ptr_eq(&table.get("a", now).expect("stored"), &new));
    assert_eq!(table.size(), (2, 40));
}

#[test]
fn removing_and_clearing_give_back_what_left() {
    let now = Instant::now();
    let table = table(100, &["a", "b", "c"], now);
    assert_eq!(table.remove("b").map(|(key, _)| key), Some(Arc::from("b")));
    assert!(table.remove("b").is_none());
    assert_eq!(table.size(), (2, 20));
    let mut cleared = keys(&table.clear()).join(",");
    cleared.push('.');
    assert_eq!(cleared, "a,c.");
    assert_eq!(table.size(), (0, 0));
    // Still usable, its freed slots reused.
    table.insert("d", entry(), 10, now, now + LATER);
    assert!(table.get("d", now).is_some());
}

/// Many stores, reads and removals in turn: the queue stays whole (every
/// key is reached from the head, once) and the weight adds up.
#[test]
fn the_queue_and_the_weight_stay_consistent() {
    let now = Instant::now();
    let table = Table::new(200);
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..5_000 {
        let key = format!("k{}", rng.usize(..60));
        match rng.u8(..4) {
            0 => drop(table.remove(&key)),
            1 => drop(table.get(&key, now)),
            _ => drop(table.insert(&key, entry(), rng.u32(1..40), now, now + LATER)),
        }
        assert_queue_is_whole(&table);
        assert!(table.size().1 <= 200, "round {round}");
    }
}

/// A sweep looks at the table a run of slots at a time: entries on both
/// sides of a run's end go, the live ones stay.
#[test]
fn a_sweep_over_several_runs_removes_every_expired_entry() {
    let now = Instant::now();
    let table = Table::new(u64::MAX);
    let soon = now + Duration::from_secs(1);
    for i in 0..3 * SWEEP_RUN + 7 {
        let expires = if i % 3 == 0 { soon } else { now + LATER };
        table.insert(&format!("k{i}"), entry(), 1, now, expires);
    }
    let gone = table.sweep(soon);
    assert_eq!(gone.len(), SWEEP_RUN + 3);
    assert!(
        gone.iter()
            .all(|(key, _)| key[1..].parse::<usize>().expect("a number") % 3 == 0)
    );
    assert_eq!(table.size().0, (3 * SWEEP_RUN + 7 - gone.len()) as u64);
}

/// Many entries, most of them gone: a sweep gives their slots back, and
/// the queue, the index and the hand still agree.
#[test]
fn a_sweep_gives_back_the_slots_of_a_table_that_shrank() {
    let now = Instant::now();
    let (soon, n) = (now + Duration::from_secs(1), 4 * SWEEP_RUN);
    let table = Table::new(n as u64);
    for i in 0..n {
        let expires = if i % 8 == 0 { now + LATER } else { soon };
        table.insert(&format!("k{i}"), entry(), 1, now, expires);
    }
    assert_eq!(table.sweep(soon).len(), n - n / 8);
    {
        let inner = table.read();
        assert_eq!((inner.slots.len(), inner.free.len()), (n / 8, 0));
    }
    assert_queue_is_whole(&table);
    for i in (0..n).step_by(8) {
        assert!(table.get(&format!("k{i}"), soon).is_some(), "k{i}");
    }
    // Full again with new keys; then the hand walks the old ones, each
    // read just now, oldest first, and evicts the first new one.
    for i in 0..n - n / 8 {
        assert!(
            table
                .insert(&format!("f{i}"), entry(), 1, soon, soon + LATER)
                .is_empty()
        );
    }
    let gone = table.insert("next", entry(), 1, soon, soon + LATER);
    assert_eq!(keys(&gone), ["f0"]);
    assert_queue_is_whole(&table);
}

/// Every key is reached once from the head, from newest to oldest, and
/// back from the tail; the weight adds up.
fn assert_queue_is_whole(table: &Table) {
    let inner = table.read();
    let (mut at, mut seen, mut weight, mut newer) = (inner.head, 0, 0, END);
    while at != END {
        let node = inner.node(at);
        assert_eq!(inner.index.get(&node.key), Some(&at));
        assert_eq!(node.newer, newer);
        (seen, weight, newer) = (seen + 1, weight + u64::from(node.weight), at);
        at = node.older;
    }
    assert_eq!(inner.tail, newer);
    assert_eq!((seen, weight), (inner.index.len(), inner.weight));
    assert!(inner.hand == END || inner.slots[inner.hand].is_some());
}

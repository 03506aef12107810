//! Unit tests of `memory`.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::*;
use crate::policy::Lifetime;

fn entry(body_len: usize) -> Arc<Entry> {
    let now = SystemTime::now();
    Arc::new(Entry::new(
        StatusCode::OK,
        HeaderMap::new(),
        Bytes::from(vec![b'x'; body_len]),
        None,
        (Vec::new(), HeaderMap::new()),
        now,
        Lifetime::expired(now),
        Duration::ZERO,
    ))
}

const MINUTE: Duration = Duration::from_secs(60);

/// The lock on `key` for `ttl`, which must be free.
async fn lock(store: &MemoryStore, key: &str, ttl: Duration) -> LockToken {
    store.try_lock(key, ttl).await.expect("memory").expect("free")
}

async fn store(store: &MemoryStore, key: &str, body_len: usize) -> bool {
    let token = lock(store, key, MINUTE).await;
    store
        .set(key, entry(body_len), &token, MINUTE)
        .await
        .expect("memory")
}

#[tokio::test]
async fn stays_within_its_byte_bound() {
    let bound = 64 * 1024;
    let memory = MemoryStore::with_max_bytes(bound);
    for i in 0..200 {
        assert!(store(&memory, &format!("key-{i}"), 4 * 1024).await);
    }
    let used = memory.used_bytes();
    assert!(used <= bound, "{used} bytes held, bound {bound}");
    assert!(used > bound / 2, "the store should be used, not emptied: {used}");
}

#[tokio::test]
async fn an_entry_larger_than_the_bound_is_not_kept() {
    let memory = MemoryStore::with_max_bytes(1024);
    assert!(store(&memory, "big", 4096).await, "the fence accepts the write");
    assert!(memory.get("big").await.expect("memory").is_none());
    assert_eq!(memory.used_bytes(), 0);
}

/// `Store::set` takes any duration: one past the clock's range (a
/// `Policy::ttl(Duration::MAX)`, say) keeps the entry, where adding it to
/// an instant would panic.
#[tokio::test]
async fn a_life_past_the_clocks_range_is_kept() {
    let memory = MemoryStore::new();
    let token = lock(&memory, "k", MINUTE).await;
    let kept = memory.set("k", entry(8), &token, Duration::MAX).await;
    assert!(kept.expect("memory"));
    assert!(memory.get("k").await.expect("memory").is_some());
}

/// The lock's durations too: a lock taken or extended for
/// `Duration::MAX` holds, and a wait with that timeout returns at the
/// release.
#[tokio::test]
async fn lock_durations_past_the_clocks_range_hold() {
    let memory = MemoryStore::new();
    let token = lock(&memory, "k", Duration::MAX).await;
    assert!(
        memory
            .extend_lock("k", &token, Duration::MAX)
            .await
            .expect("memory")
    );
    assert!(
        memory.try_lock("k", MINUTE).await.expect("memory").is_none(),
        "held"
    );
    let waiter = tokio::spawn({
        let memory = memory.clone();
        async move { memory.wait_unlocked("k", Duration::MAX).await }
    });
    tokio::task::yield_now().await;
    memory.unlock("k", &token).await.expect("memory");
    waiter.await.expect("no panic").expect("memory");
}

/// A write the store cannot keep (heavier than the bound, or with no
/// life) still replaces what the key held: the older value is not served
/// as if the write had not happened.
#[tokio::test]
async fn a_write_that_cannot_be_kept_leaves_no_older_value() {
    let memory = MemoryStore::with_max_bytes(4096);
    for (body_len, keep_for) in [(8192, MINUTE), (8, Duration::ZERO)] {
        assert!(store(&memory, "k", 8).await);
        let token = lock(&memory, "k", MINUTE).await;
        let accepted = memory.set("k", entry(body_len), &token, keep_for).await;
        assert!(accepted.expect("memory"), "the fence accepts the write");
        assert!(
            memory.get("k").await.expect("memory").is_none(),
            "{body_len} bytes for {keep_for:?}"
        );
        assert_eq!(memory.used_bytes(), 0);
    }
}

#[tokio::test]
async fn one_holder_at_a_time_and_the_write_is_fenced() {
    let memory = MemoryStore::new();
    let first = lock(&memory, "k", MINUTE).await;
    assert!(memory.try_lock("k", MINUTE).await.expect("memory").is_none());
    assert!(memory.try_lock("other", MINUTE).await.expect("memory").is_some());
    let stranger = LockToken::new(u128::MAX);
    assert!(
        !memory
            .set("k", entry(1), &stranger, MINUTE)
            .await
            .expect("memory")
    );
    assert!(memory.get("k").await.expect("memory").is_none());
    assert!(memory.set("k", entry(1), &first, MINUTE).await.expect("memory"));
    assert!(memory.get("k").await.expect("memory").is_some());
    // Released by the write: a second write with the same token is stale.
    assert!(!memory.set("k", entry(2), &first, MINUTE).await.expect("memory"));
    assert_eq!(
        memory.get("k").await.expect("memory").expect("kept").body.len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_holder_cannot_write_over_the_next_one() {
    let memory = MemoryStore::new();
    let paused = lock(&memory, "k", Duration::from_secs(1)).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let next = memory
        .try_lock("k", MINUTE)
        .await
        .expect("memory")
        .expect("expired lock is free");
    assert!(memory.set("k", entry(7), &next, MINUTE).await.expect("memory"));
    assert!(!memory.set("k", entry(1), &paused, MINUTE).await.expect("memory"));
    assert!(!memory.extend_lock("k", &paused, MINUTE).await.expect("memory"));
    assert_eq!(
        memory.get("k").await.expect("memory").expect("kept").body.len(),
        7
    );
}

#[tokio::test(start_paused = true)]
async fn extending_keeps_the_lock_past_its_first_ttl() {
    let memory = MemoryStore::new();
    let token = lock(&memory, "k", Duration::from_secs(1)).await;
    tokio::time::advance(Duration::from_millis(900)).await;
    assert!(
        memory
            .extend_lock("k", &token, Duration::from_secs(1))
            .await
            .expect("memory")
    );
    tokio::time::advance(Duration::from_millis(900)).await;
    assert!(memory.try_lock("k", MINUTE).await.expect("memory").is_none());
    assert!(memory.set("k", entry(1), &token, MINUTE).await.expect("memory"));
}

fn tagged(body_len: usize, tags: &[&str]) -> Arc<Entry> {
    let mut entry = (*entry(body_len)).clone();
    entry.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    Arc::new(entry)
}

#[tokio::test]
async fn invalidating_voids_a_rebuild_under_way() {
    let memory = MemoryStore::new();
    assert!(store(&memory, "k", 1).await);
    let rebuilding = lock(&memory, "k", MINUTE).await;
    memory.invalidate("k").await.expect("memory");
    assert!(memory.get("k").await.expect("memory").is_none());
    assert!(
        !memory
            .set("k", entry(2), &rebuilding, MINUTE)
            .await
            .expect("memory")
    );
    assert!(
        memory.get("k").await.expect("memory").is_none(),
        "the outdated write was refused"
    );
}

#[tokio::test]
async fn a_tag_purges_every_key_stored_with_it_and_no_other() {
    let memory = MemoryStore::new();
    for (key, tags) in [
        ("a", &["posts"][..]),
        ("b", &["posts", "home"][..]),
        ("c", &["home"][..]),
    ] {
        let token = lock(&memory, key, MINUTE).await;
        assert!(
            memory
                .set(key, tagged(1, tags), &token, MINUTE)
                .await
                .expect("memory")
        );
    }
    assert_eq!(memory.invalidate_tag("posts").await.expect("memory"), 2);
    assert!(memory.get("a").await.expect("memory").is_none());
    assert!(memory.get("b").await.expect("memory").is_none());
    assert!(memory.get("c").await.expect("memory").is_some());
    assert_eq!(memory.invalidate_tag("posts").await.expect("memory"), 0);
    assert_eq!(memory.invalidate_tag("home").await.expect("memory"), 1);
}

#[tokio::test]
async fn a_replaced_entry_leaves_the_tags_it_had_alone() {
    let memory = MemoryStore::new();
    for tags in [&["posts", "home"][..], &["posts"][..]] {
        let token = lock(&memory, "a", MINUTE).await;
        assert!(
            memory
                .set("a", tagged(1, tags), &token, MINUTE)
                .await
                .expect("memory")
        );
    }
    assert_eq!(
        memory.invalidate_tag("home").await.expect("memory"),
        0,
        "home was the old entry's"
    );
    assert_eq!(memory.invalidate_tag("posts").await.expect("memory"), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_woken_by_the_release_not_by_the_timeout() {
    let memory = MemoryStore::new();
    let token = lock(&memory, "k", MINUTE).await;
    let waiter = tokio::spawn({
        let memory = memory.clone();
        async move {
            let start = Instant::now();
            memory.wait_unlocked("k", MINUTE).await.expect("memory");
            start.elapsed()
        }
    });
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(memory.set("k", entry(1), &token, MINUTE).await.expect("memory"));
    let waited = waiter.await.expect("waiter finishes");
    assert_eq!(waited, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn waiting_ends_at_the_timeout_or_the_lock_expiry() {
    let memory = MemoryStore::new();
    let _token = lock(&memory, "k", Duration::from_secs(5)).await;
    let start = Instant::now();
    memory
        .wait_unlocked("k", Duration::from_secs(2))
        .await
        .expect("memory");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    memory.wait_unlocked("k", MINUTE).await.expect("memory");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let start = Instant::now();
    memory.wait_unlocked("free", MINUTE).await.expect("memory");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// Nothing reads the expired entries: the store's own task gives their
/// memory back, on Tokio's clock.
#[tokio::test(start_paused = true)]
async fn expired_entries_leave_memory_without_traffic() {
    let memory = MemoryStore::new();
    for i in 0..50 {
        let key = format!("k{i}");
        let token = lock(&memory, &key, MINUTE).await;
        let kept = memory
            .set(&key, entry(1024), &token, Duration::from_millis(100))
            .await
            .expect("memory");
        assert!(kept);
    }
    // Not yet expired: the task's first round leaves them.
    tokio::time::advance(Duration::from_millis(50)).await;
    tokio::task::yield_now().await;
    assert_eq!(memory.entry_count(), 50);
    assert!(memory.get_now("k0").is_some());
    // Expired: never read, though held until the task's next round.
    tokio::time::advance(Duration::from_millis(60)).await;
    assert!(memory.get_now("k0").is_none());
    assert_eq!(memory.entry_count(), 50);
    tokio::time::advance(MAINTAIN_EVERY).await;
    tokio::task::yield_now().await;
    assert_eq!((memory.entry_count(), memory.used_bytes()), (0, 0));
}

/// What the store holds: each entry as weighed before the tag index was
/// counted (the entry, its key, the table's records), plus the tags and
/// keys the index holds, counted from the index itself.
fn held(memory: &MemoryStore) -> u64 {
    let entries: usize = (memory.inner.table.entries().iter())
        .map(|(key, entry)| table::PER_ENTRY + key.len() + entry.weight())
        .sum();
    let index = memory.inner.tags.lock().unwrap_or_else(PoisonError::into_inner);
    let indexed: usize = index
        .keys
        .iter()
        .map(|(tag, keys)| tag.len() + keys.keys().map(String::len).sum::<usize>())
        .sum();
    (entries + indexed) as u64
}

/// Entries with long keys and many tags: the index holds a copy of the key
/// under each tag, several times the entry itself.
#[tokio::test]
async fn entries_and_their_tag_index_stay_within_the_bound() {
    let bound = 256 * 1024;
    let memory = MemoryStore::with_max_bytes(bound);
    for i in 0..500 {
        let key = format!("{i:0>1024}");
        let tags: Vec<String> = (0..8).map(|t| format!("{i}-{t:0>256}")).collect();
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let token = lock(&memory, &key, MINUTE).await;
        assert!(
            memory
                .set(&key, tagged(1, &tags), &token, MINUTE)
                .await
                .expect("memory")
        );
    }
    let held = held(&memory);
    assert!(held <= bound, "{held} bytes held, bound {bound}");
    assert!(held > bound / 2, "the store is used, not emptied: {held}");
    assert!(held <= memory.used_bytes(), "the weight counts all it holds");
}

#[tokio::test(start_paused = true)]
async fn a_lock_released_after_it_expired_leaves_nothing_behind() {
    let memory = MemoryStore::new();
    let late = lock(&memory, "k", Duration::from_secs(1)).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        !memory.set("k", entry(1), &late, MINUTE).await.expect("memory"),
        "expired"
    );
    assert_eq!(memory.lock_count(), 0, "the expired lock is gone from the table");
    let gone = lock(&memory, "j", Duration::from_secs(1)).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    memory.unlock("j", &gone).await.expect("memory");
    assert_eq!(memory.lock_count(), 0, "so is one released without a write");
}

#[tokio::test(start_paused = true)]
async fn a_tag_purged_during_a_rebuild_refuses_its_write_and_frees_its_lock() {
    let memory = MemoryStore::new();
    let before = lock(&memory, "a", MINUTE).await;
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        memory.invalidate_tag("posts").await.expect("memory"),
        0,
        "not indexed yet"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let after = lock(&memory, "b", MINUTE).await;

    let refused = memory.set("a", tagged(1, &["posts"]), &before, MINUTE).await;
    assert!(!refused.expect("memory"), "read before the purge");
    assert!(memory.get("a").await.expect("memory").is_none());
    assert!(
        memory.try_lock("a", MINUTE).await.expect("memory").is_some(),
        "and unlocked"
    );
    let other_tag = memory.set("b", tagged(1, &["home"]), &after, MINUTE).await;
    assert!(other_tag.expect("memory"), "another tag's write stands");
}

#[tokio::test(start_paused = true)]
async fn a_rebuild_that_began_after_a_purge_stores_and_old_purges_are_forgotten() {
    let memory = MemoryStore::new();
    let held = lock(&memory, "held", MINUTE).await;
    tokio::time::advance(Duration::from_millis(1)).await;
    memory.invalidate_tag("posts").await.expect("memory");
    tokio::time::advance(Duration::from_millis(1)).await;
    let after = lock(&memory, "a", MINUTE).await;
    assert!(
        memory
            .set("a", tagged(1, &["posts"]), &after, MINUTE)
            .await
            .expect("memory")
    );
    assert_eq!(memory.inner.tags.lock().expect("not poisoned").purged.len(), 1);

    memory.unlock("held", &held).await.expect("memory");
    memory.invalidate_tag("other").await.expect("memory");
    let purged = &memory.inner.tags.lock().expect("not poisoned").purged;
    assert!(purged.is_empty(), "no lock is held that a purge could outdate");
}

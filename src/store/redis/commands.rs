//! The [`Store`] protocol on Redis: each call one command or script.

use std::{
    future::{self, Future},
    pin::pin,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::Either;
use tokio::time::Instant;
use tracing::warn;

use super::{
    FIRST_RECHECK, MAX_RECHECK, PURGES_KEPT, RedisStore,
    near::Reservation,
    scripts::{EXTEND, INVALIDATE, LOCK, RENEW, SET, TAKE_TAG, UNLOCK},
    tag,
};
use crate::{
    entry::Entry,
    store::{LockToken, NearStats, Store, StoreError},
};

impl Store for RedisStore {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Arc<Entry>>, StoreError>> + Send {
        self.inner.wakeups.start();
        let entry_key = self.entry_key(key);
        let mut reservation = None;
        if let Some(tracking) = &self.inner.tracking {
            tracking.start();
            if let Some(entry) = tracking.near.get(&entry_key) {
                return Either::Left(future::ready(Ok(Some(entry))));
            }
            reservation = tracking.near.reserve(&entry_key);
        }
        // Boxed: a read's state (a pool checkout, a command in flight) is
        // kilobytes, which every future holding a near hit would carry and
        // copy as it moves.
        let this = self.clone();
        Either::Right(Box::pin(async move { this.read(&entry_key, reservation).await }))
    }

    fn get_now(&self, key: &str) -> Option<Arc<Entry>> {
        let tracking = self.inner.tracking.as_ref()?;
        self.inner.wakeups.start();
        tracking.start();
        tracking.near.get(&self.entry_key(key))
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.inner.wakeups.start();
        let token = LockToken::new(fastrand::u128(..));
        let mut lock = LOCK.key(self.lock_key(key));
        lock.arg(token_arg(&token)).arg(millis(ttl));
        let granted = self.inner.conns.invoke::<u64>(&lock).await?;
        Ok((granted > 0).then(|| token.taken_at(granted)))
    }

    async fn extend_lock(&self, key: &str, token: &LockToken, ttl: Duration) -> Result<bool, StoreError> {
        let mut extend = EXTEND.key(self.lock_key(key));
        extend.arg(token_arg(token)).arg(millis(ttl));
        Ok(self.inner.conns.invoke::<i64>(&extend).await? == 1)
    }

    async fn set(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        let life = if keep_for.is_zero() { 0 } else { millis(keep_for) };
        if !self.index_or_release(key, entry.tags(), life, token).await? {
            return Ok(false);
        }
        self.write(key, &entry, token, life).await
    }

    async fn renew(
        &self,
        key: &str,
        entry: Arc<Entry>,
        token: &LockToken,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        // The tag sets must outlive the renewed entry too.
        let life = millis(keep_for);
        if !self.index_or_release(key, entry.tags(), life, token).await? {
            return Ok(false);
        }
        let mut renew = RENEW.key(self.lock_key(key));
        renew
            .key(self.entry_key(key))
            .arg(token_arg(token))
            .arg(&entry.encode_times()[..])
            .arg(crate::entry::TIMES_AT)
            .arg(life)
            .arg(self.channel())
            .arg(tag(key).as_ref());
        match self.inner.conns.invoke::<i64>(&renew).await? {
            // Gone meanwhile (evicted, invalidated): write it whole; its tags
            // are indexed already.
            2 => self.write(key, &entry, token, life).await,
            renewed => Ok(renewed == 1),
        }
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        let mut unlock = UNLOCK.key(self.lock_key(key));
        unlock
            .arg(token_arg(token))
            .arg(self.channel())
            .arg(tag(key).as_ref());
        self.inner.conns.invoke::<i64>(&unlock).await?;
        Ok(())
    }

    async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        let mut invalidate = INVALIDATE.key(self.lock_key(key));
        invalidate
            .key(self.entry_key(key))
            .arg(self.channel())
            .arg(tag(key).as_ref());
        self.inner.conns.invoke::<i64>(&invalidate).await?;
        // At once here; Redis reports it to every other replica.
        if let Some(tracking) = &self.inner.tracking {
            tracking.near.remove(&self.entry_key(key));
        }
        Ok(())
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        let tag_key = self.tag_key(tag);
        let (life, keys): (i64, Vec<String>) = {
            let mut take = TAKE_TAG.key(&tag_key);
            take.key(self.purge_key(tag)).arg(millis(PURGES_KEPT));
            let taken: Vec<redis::Value> = self.inner.conns.invoke(&take).await?;
            let mut taken = taken.into_iter();
            let life = taken
                .next()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or(-1);
            let keys = taken.filter_map(|v| redis::from_redis_value(v).ok()).collect();
            (life, keys)
        };
        for (done, key) in keys.iter().enumerate() {
            if let Err(error) = self.invalidate(key).await {
                // The rest stay indexed, so that the next purge reaches them.
                self.put_back(&tag_key, &keys[done..], life).await;
                return Err(error);
            }
        }
        Ok(keys.len() as u64)
    }

    fn near_stats(&self) -> Option<NearStats> {
        Some(self.inner.tracking.as_ref()?.near.stats())
    }

    async fn wait_unlocked(&self, key: &str, timeout: Duration) -> Result<(), StoreError> {
        let waited = self.wait_released(key, timeout).await;
        // The holder has probably just written: the write's report may come
        // after the wake-up (another connection), and the waiter reads the
        // key next, so what the near cache holds of it goes now.
        if let Some(tracking) = &self.inner.tracking {
            tracking.near.remove(&self.entry_key(key));
        }
        waited
    }
}

impl RedisStore {
    /// The fenced write of `entry`, kept `life` ms (0: not kept, the lock
    /// released all the same), its tags indexed already.
    async fn write(
        &self,
        key: &str,
        entry: &Entry,
        token: &LockToken,
        life: u64,
    ) -> Result<bool, StoreError> {
        let mut set = SET.key(self.lock_key(key));
        set.key(self.entry_key(key))
            .arg(token_arg(token))
            .arg(&entry.encode()[..])
            .arg(life)
            .arg(self.channel())
            .arg(tag(key).as_ref());
        Ok(self.inner.conns.invoke::<i64>(&set).await? == 1)
    }

    /// Reads the entry at `entry_key` from Redis; with a `reservation`, for
    /// the near cache too, with what is left of its life in Redis.
    async fn read(
        &self,
        entry_key: &str,
        reservation: Option<Reservation>,
    ) -> Result<Option<Arc<Entry>>, StoreError> {
        let Some(reservation) = reservation else {
            let mut cmd = redis::cmd("GET");
            cmd.arg(entry_key);
            let bytes = self.inner.conns.query::<Option<Vec<u8>>>(&cmd).await?;
            return bytes.map(decode).transpose();
        };
        let mut read = redis::pipe();
        read.cmd("GET").arg(entry_key).cmd("PTTL").arg(entry_key);
        let (bytes, life): (Option<Vec<u8>>, i64) = self.inner.conns.pipeline(&read).await?;
        let Some(entry) = bytes.map(decode).transpose()? else {
            return Ok(None);
        };
        let life = Duration::from_millis(u64::try_from(life).unwrap_or(0));
        reservation.fill(Arc::clone(&entry), life);
        Ok(Some(entry))
    }

    async fn wait_released(&self, key: &str, timeout: Duration) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.wakeups.start();
        if !inner.wakeups.can_push() && !inner.warned_no_pubsub.swap(true, Ordering::Relaxed) {
            warn!(
                "RedisStore has no pub/sub client: waiters re-check with back-off; \
                 give it one with RedisStore::pubsub"
            );
        }
        let deadline = crate::time::after(Instant::now(), timeout);
        let registration = inner.wakeups.register(&tag(key));
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.lock_key(key));
        let mut recheck = FIRST_RECHECK;
        loop {
            // Registered before the check, so a release right after it wakes us.
            let signals = &registration.signals;
            let (mut released, mut look_again) = (
                pin!(signals.released.notified()),
                pin!(signals.recheck.notified()),
            );
            released.as_mut().enable();
            look_again.as_mut().enable();
            let locked: bool = inner.conns.query(&exists).await?;
            let now = Instant::now();
            if !locked || now >= deadline {
                return Ok(());
            }
            // Pushed to while subscribed: a check is only a safety net then.
            let pause = if inner.wakeups.is_subscribed() {
                MAX_RECHECK
            } else {
                recheck
            };
            tokio::select! {
                () = released => return Ok(()),
                () = look_again => {}
                () = tokio::time::sleep_until(deadline.min(now + pause)) => {}
            }
            recheck = (recheck * 2).min(MAX_RECHECK);
        }
    }
}

/// An entry read from Redis; a value the store did not write is a corrupt
/// read.
fn decode(bytes: Vec<u8>) -> Result<Arc<Entry>, StoreError> {
    Entry::decode(Bytes::from(bytes))
        .map(Arc::new)
        .map_err(StoreError::corrupt)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

pub(super) fn token_arg(token: &LockToken) -> String {
    format!("{:032x}", token.get())
}

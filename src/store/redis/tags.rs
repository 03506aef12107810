//! Tags on Redis: each a set of the cache keys stored with it, and the time
//! of its last purge, both in the tag's own slot.

use tracing::debug;

use super::{PURGES_KEPT, RedisStore};
use crate::store::{LockToken, Store, StoreError};

impl RedisStore {
    /// Indexes `keys` in `tag_key` again, for `life` ms (if positive), after
    /// a purge that took them failed before it reached them. Best effort: the
    /// purge reports its own error.
    pub(super) async fn put_back(&self, tag_key: &str, keys: &[String], life: i64) {
        let mut again = redis::pipe();
        index(&mut again, tag_key, keys, u64::try_from(life).unwrap_or(0));
        let answer = self.inner.conns.pipeline::<()>(&again).await;
        if let Err(error) = answer {
            debug!(tag_key, %error, "keys of a failed purge not put back");
        }
    }

    /// Before a write under `token`: adds `key` to the sets of `tags`, kept
    /// at least `keep_for` ms, and reads when each tag was last purged, in
    /// one round trip. Returns whether the write may go ahead: no purge of
    /// its tags since the lock was granted; when not, the lock is released
    /// here (a refused write still frees its key).
    ///
    /// Indexing comes first, so that a purge either finds the key (and
    /// voids the lock or deletes the entry) or was marked before the marks
    /// are read here; an index entry for a write that then fails is
    /// harmless. (In a cluster a tag's set lives in its own slot, so this
    /// cannot be part of the write's script.)
    pub(super) async fn index_or_release(
        &self,
        key: &str,
        tags: &[String],
        keep_for: u64,
        token: &LockToken,
    ) -> Result<bool, StoreError> {
        if tags.is_empty() || keep_for == 0 {
            return Ok(true);
        }
        let mut pipe = redis::pipe();
        for tag in tags {
            index(&mut pipe, &self.tag_key(tag), &[key], keep_for);
        }
        for tag in tags {
            pipe.cmd("GET").arg(self.purge_key(tag));
        }
        pipe.cmd("TIME");
        let mut answers: Vec<redis::Value> = self.inner.conns.pipeline(&pipe).await?;
        let now: (u64, u64) = answers
            .pop()
            .and_then(|time| redis::from_redis_value(time).ok())
            .ok_or_else(|| StoreError::new("TIME gave no time"))?;
        let now = now.0 * 1000 + now.1 / 1000;
        let purges = answers
            .into_iter()
            .filter_map(|purged| redis::from_redis_value::<Option<u64>>(purged).ok().flatten());
        if write_allowed(token.granted(), purges, now) {
            return Ok(true);
        }
        self.unlock(key, token).await?;
        Ok(false)
    }
}

/// Whether a write under a lock granted at `granted` (ms, if known) may go
/// ahead, given its tags' last `purges` and the time `now`, all on Redis's
/// clock: not when a tag was purged at or after the grant, nor when the
/// lock is older than the purges remembered. A purge in the same
/// millisecond counts as after.
pub(super) fn write_allowed(granted: Option<u64>, mut purges: impl Iterator<Item = u64>, now: u64) -> bool {
    let kept = u64::try_from(PURGES_KEPT.as_millis()).unwrap_or(u64::MAX);
    match granted {
        Some(granted) if now.saturating_sub(granted) < kept => purges.all(|purged| purged < granted),
        // Purges since then may be forgotten already.
        Some(_) => false,
        // A token this store did not grant: only tags with no purge
        // remembered are safe.
        None => purges.next().is_none(),
    }
}

/// Adds `members` to the tag set `tag_key`, which lives at least `life` ms
/// from now (none: as it was): a new set gets that life, a longer one
/// extends it.
fn index(pipe: &mut redis::Pipeline, tag_key: &str, members: &[impl redis::ToRedisArgs], life: u64) {
    pipe.cmd("SADD").arg(tag_key).arg(members).ignore();
    if life > 0 {
        pipe.cmd("PEXPIRE").arg(tag_key).arg(life).arg("NX").ignore();
        pipe.cmd("PEXPIRE").arg(tag_key).arg(life).arg("GT").ignore();
    }
}

//! The Lua scripts of the lock protocol: each checks and changes a key and
//! its lock in one round trip, so no other client sees a step half done.

use std::sync::LazyLock;

use redis::Script;

// A lock holds `<token>:<ms>`: the holder's 32 hex digits and when Redis
// granted it. The fence compares the token alone.

/// Takes the lock `KEYS[1]` with the token `ARGV[1]` for `ARGV[2]` ms if it
/// is free, or already holds that token (a retry whose first answer was
/// lost must not find its own lock taken). Returns when it was granted, in
/// ms on Redis's clock, or 0 when another holds it.
pub(super) static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local holder = redis.call('GET', KEYS[1])
        if holder == false then
            local now = redis.call('TIME')
            local granted = now[1] * 1000 + math.floor(now[2] / 1000)
            redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', granted), 'PX', ARGV[2])
            return granted
        end
        if string.sub(holder, 1, 32) == ARGV[1] then
            return tonumber(string.sub(holder, 34)) or 1
        end
        return 0",
    )
});

/// Stores `ARGV[2]` at `KEYS[2]` for `ARGV[3]` ms, releases the lock
/// `KEYS[1]` and publishes the key, only if the lock still holds the token
/// `ARGV[1]`: a fenced write in one round trip. A retry whose first run
/// landed (the lock is gone, the entry is the one it writes) is told so.
pub(super) static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if string.sub(redis.call('GET', KEYS[1]) or '', 1, 32) ~= ARGV[1] then
            if tonumber(ARGV[3]) > 0 and redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
            return 0
        end
        if tonumber(ARGV[3]) > 0 then
            redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
        end
        redis.call('DEL', KEYS[1])
        redis.call('PUBLISH', ARGV[4], ARGV[5])
        return 1",
    )
});

/// Renews the entry `KEYS[2]` in place: writes its times `ARGV[2]` at byte
/// `ARGV[3]`, keeps it `ARGV[4]` ms, releases the lock `KEYS[1]` and
/// publishes, only if the lock holds `ARGV[1]`. Returns 2, leaving the lock,
/// when the entry is gone (there is nothing to renew in place). A retry
/// whose first run landed is told so, as by [`SET`].
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if string.sub(redis.call('GET', KEYS[1]) or '', 1, 32) ~= ARGV[1] then
            local from = tonumber(ARGV[3])
            if redis.call('GETRANGE', KEYS[2], from, from + #ARGV[2] - 1) == ARGV[2] then return 1 end
            return 0
        end
        if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
        redis.call('SETRANGE', KEYS[2], ARGV[3], ARGV[2])
        redis.call('PEXPIRE', KEYS[2], ARGV[4])
        redis.call('DEL', KEYS[1])
        redis.call('PUBLISH', ARGV[5], ARGV[6])
        return 1",
    )
});

/// Releases the lock `KEYS[1]` if it holds `ARGV[1]`, and publishes the key.
pub(super) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if string.sub(redis.call('GET', KEYS[1]) or '', 1, 32) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1])
        redis.call('PUBLISH', ARGV[2], ARGV[3])
        return 1",
    )
});

/// Deletes the entry `KEYS[2]` and the lock `KEYS[1]` whoever holds it (a
/// rebuild under way then cannot write), and publishes the key.
pub(super) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('DEL', KEYS[1], KEYS[2])
        redis.call('PUBLISH', ARGV[1], ARGV[2])
        return 1",
    )
});

/// Extends the lock `KEYS[1]` to `ARGV[2]` ms if it holds `ARGV[1]`.
pub(super) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if string.sub(redis.call('GET', KEYS[1]) or '', 1, 32) ~= ARGV[1] then return 0 end
        return redis.call('PEXPIRE', KEYS[1], ARGV[2])",
    )
});

/// Takes the tag set `KEYS[1]`: deletes it and returns its remaining life
/// in ms (negative for none) followed by its members, in one step, so that
/// a key indexed again while the purge goes through them is kept for the
/// next purge. It also marks the tag purged now, at `KEYS[2]` for `ARGV[1]`
/// ms, so that a rebuild under way whose entry will carry the tag (not yet
/// indexed, so not among the members) sees the purge before it writes. Two
/// keys with the tag's hash tag: Cluster-safe.
pub(super) static TAKE_TAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local now = redis.call('TIME')
        local purged = now[1] * 1000 + math.floor(now[2] / 1000)
        redis.call('SET', KEYS[2], string.format('%d', purged), 'PX', ARGV[1])
        local taken = {redis.call('PTTL', KEYS[1])}
        for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            taken[#taken + 1] = key
        end
        redis.call('DEL', KEYS[1])
        return taken",
    )
});

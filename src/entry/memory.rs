//! What an entry holds in memory: a copy that owns its bytes, for stores
//! that keep entries, and the weight they count it by.

use std::mem::size_of;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::Entry;

/// What the `http` crate keeps per slot of a header map: the entry (hash,
/// name, value, links) and its share of the index, measured on x86-64 (a
/// map's slots are `HeaderMap::capacity`).
const HEADER_SLOT: usize = 120;

/// What `bytes` adds to a buffer the first time it is shared (an entry's
/// body and values are cloned into every response served from it).
const SHARED_BYTES: usize = 32;

impl Entry {
    /// A copy whose body, header values, trailers and `Vary` values sit in
    /// allocations of their own size. A response read off a connection
    /// holds slices of the connection's read buffer, which keep all of that
    /// buffer alive: a store keeping such an entry would hold several
    /// times what it counts.
    pub(crate) fn owned(&self) -> Self {
        Self {
            headers: owned_map(&self.headers),
            body: Bytes::copy_from_slice(&self.body),
            trailers: self.trailers.as_ref().map(owned_map),
            vary: self.vary.clone(),
            vary_values: owned_map(&self.vary_values),
            tags: self.tags.clone(),
            ..*self
        }
    }

    /// An estimate of the memory the entry holds, in bytes: its body,
    /// headers, trailers and tags, as a store keeps them (each in an
    /// allocation of its own size).
    pub fn weight(&self) -> usize {
        size_of::<Self>()
            + bytes(self.body.len())
            + map(&self.headers)
            + self.trailers.as_ref().map_or(0, map)
            + map(&self.vary_values)
            + self.vary.capacity() * size_of::<HeaderName>()
            + self.tags.capacity() * size_of::<String>()
            + self.tags.iter().map(String::capacity).sum::<usize>()
    }

    /// A bound on [`Entry::encode`]'s output, to size its buffer once.
    pub(super) fn encoded_len(&self) -> usize {
        fn map(m: &HeaderMap) -> usize {
            m.iter().map(|(n, v)| n.as_str().len() + v.len() + 8).sum()
        }
        64 + self.body.len()
            + map(&self.headers)
            + self.trailers.as_ref().map_or(0, map)
            + map(&self.vary_values)
            + self.vary.iter().map(|n| n.as_str().len() + 4).sum::<usize>()
    }
}

fn bytes(len: usize) -> usize {
    if len == 0 { 0 } else { len + SHARED_BYTES }
}

fn map(map: &HeaderMap) -> usize {
    map.capacity() * HEADER_SLOT
        + map
            .iter()
            // A custom name's bytes; a standard one has none, and is
            // counted as if it had (it is short).
            .map(|(name, value)| bytes(value.len()) + name.as_str().len())
            .sum::<usize>()
}

fn owned_map(map: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(map.len());
    for (name, value) in map {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::Response;

    use super::*;

    #[test]
    fn an_owned_copy_keeps_nothing_of_the_buffer_it_was_read_from() {
        // A connection's read buffer, of which the response is slices.
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut response = Response::new(buffer.slice(100..1124));
        let etag = HeaderValue::from_maybe_shared(buffer.slice(0..8)).expect("visible ASCII");
        response.headers_mut().insert("etag", etag);
        let mut entry =
            Entry::from_response(response, SystemTime::UNIX_EPOCH, Duration::ZERO, Duration::ZERO);
        entry.trailers = Some(entry.headers.clone());
        let owned = entry.owned();
        assert_eq!((&owned.body, &owned.headers), (&entry.body, &entry.headers));
        assert_eq!(owned.trailers, entry.trailers);
        assert!(!buffer.is_unique(), "the read entry holds the buffer");
        drop(entry);
        assert!(buffer.is_unique(), "the owned copy holds none of it");
        assert!(owned.weight() >= 1024 + 8, "its bytes are counted");
    }
}

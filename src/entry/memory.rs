//! What an entry holds in memory: a copy that owns its bytes, for stores
//! that keep entries, the weight they count it by, and the head its hits
//! start from.

use std::{mem::size_of, sync::OnceLock};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::Entry;
use crate::rules::status::CACHE_STATUS;

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
            ready: OnceLock::new(),
            ..*self
        }
    }

    /// The headers every hit on this entry starts from: its own, then an
    /// `Age` and a `Cache-Status` for each hit to set in place. Made once,
    /// at the first hit: building a header map name by name cost a hit as
    /// much as the rest of its response. `None` when the entry carries a
    /// `Cache-Status` of its own, which a hit's follows as another value.
    /// The entry's headers are not changed once it is served.
    pub(crate) fn ready(&self) -> Option<&HeaderMap> {
        self.ready
            .get_or_init(|| {
                if self.headers.contains_key(CACHE_STATUS) {
                    return None;
                }
                let mut head = HeaderMap::with_capacity(self.headers.len() + 2);
                head.extend(
                    self.headers
                        .iter()
                        .map(|(name, value)| (name.clone(), value.clone())),
                );
                head.insert(header::AGE, HeaderValue::from_static("0"));
                head.insert(CACHE_STATUS, HeaderValue::from_static(""));
                // A full map grows before it looks for the field an insert
                // replaces: one free slot keeps every hit's copy from it.
                head.reserve(1);
                Some(head)
            })
            .as_ref()
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
            // The head hits start from, counted whether or not one came:
            // a bound must hold before the first hit makes it.
            + (self.headers.len() + 2) * HEADER_SLOT
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
        let mut copy = owned_value(value);
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

/// `value` in an allocation of its own, or, for a value most responses
/// carry, the static one: a static value is cloned into each hit and
/// dropped again without touching a count that every core serving the
/// entry shares.
fn owned_value(value: &HeaderValue) -> HeaderValue {
    let bytes = value.as_bytes();
    common(bytes).unwrap_or_else(|| HeaderValue::from_bytes(bytes).unwrap_or_else(|_| value.clone()))
}

/// The static value spelled `bytes`, if it is a common one.
pub(super) fn common(bytes: &[u8]) -> Option<HeaderValue> {
    COMMON.iter().find(|common| common.as_bytes() == bytes).cloned()
}

/// Values most responses carry (media types, codings, `Vary` names),
/// shared by every entry that has one.
static COMMON: [HeaderValue; 16] = [
    HeaderValue::from_static("application/json"),
    HeaderValue::from_static("application/json; charset=utf-8"),
    HeaderValue::from_static("text/html"),
    HeaderValue::from_static("text/html; charset=utf-8"),
    HeaderValue::from_static("text/plain"),
    HeaderValue::from_static("text/plain; charset=utf-8"),
    HeaderValue::from_static("text/css"),
    HeaderValue::from_static("text/javascript"),
    HeaderValue::from_static("application/javascript"),
    HeaderValue::from_static("application/octet-stream"),
    HeaderValue::from_static("application/grpc"),
    HeaderValue::from_static("image/png"),
    HeaderValue::from_static("gzip"),
    HeaderValue::from_static("br"),
    HeaderValue::from_static("accept-encoding"),
    HeaderValue::from_static("bytes"),
];

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

    #[test]
    fn a_common_value_is_the_static_one_and_keeps_its_marks() {
        let mut response = Response::new(Bytes::new());
        let json = HeaderValue::from_bytes(b"application/json").expect("visible ASCII");
        response.headers_mut().insert(header::CONTENT_TYPE, json);
        let mut secret = HeaderValue::from_bytes(b"gzip").expect("visible ASCII");
        secret.set_sensitive(true);
        response.headers_mut().insert(header::CONTENT_ENCODING, secret);
        let entry = Entry::from_response(response, SystemTime::UNIX_EPOCH, Duration::ZERO, Duration::ZERO);
        let owned = entry.owned();
        let kept = &owned.headers[header::CONTENT_TYPE];
        assert_eq!(kept, "application/json");
        assert_eq!(
            kept.as_bytes().as_ptr(),
            COMMON[0].as_bytes().as_ptr(),
            "the static value"
        );
        let encoding = &owned.headers[header::CONTENT_ENCODING];
        assert_eq!(encoding, "gzip");
        assert!(encoding.is_sensitive(), "a sensitive value stays sensitive");
    }
}

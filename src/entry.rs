//! The stored response and its binary format.

use std::{
    error::Error,
    fmt,
    time::{Duration, SystemTime},
};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::{cacheable::CacheControl, policy::Lifetime};

/// The first bytes of every encoded entry: a magic and the format version.
const MAGIC: &[u8; 4] = b"TSE\x02";

/// Where the times start in the encoding (after the magic and the status),
/// and how long they are: stored, fresh, stale and error times, then the
/// rebuild time. A store can renew an entry by rewriting just these.
#[cfg_attr(
    not(feature = "redis"),
    allow(dead_code, reason = "the Redis store renews in place")
)]
pub(crate) const TIMES_AT: usize = 6;
pub(crate) const TIMES_LEN: usize = 40;

/// A stored response: status, headers, body and trailers, with the times
/// that decide whether it may be served.
///
/// Custom [`Store`](crate::Store)s keep entries as they are or as the bytes
/// of [`Entry::encode`], which [`Entry::decode`] reads back.
#[derive(Debug, Clone)]
pub struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
    /// The request headers the response varies on, and the values the request
    /// that produced it had for them.
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) vary_values: HeaderMap,
    pub(crate) stored_at: SystemTime,
    pub(crate) lifetime: Lifetime,
    /// How long the origin took to produce it (XFetch's delta).
    pub(crate) recompute: Duration,
    /// Derived from `headers`, not encoded: may it answer a request that
    /// carries `Authorization`?
    pub(crate) allows_authorized: bool,
    /// Tags to purge it by, from the layer's tag header; set by the layer,
    /// kept by stores in their tag index, not encoded.
    pub(crate) tags: Vec<String>,
}

/// Why bytes could not be read as an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a stored entry: {}", self.reason)
    }
}

impl Error for DecodeError {}

impl Entry {
    /// An entry for `response`, stored at `stored_at`, fresh for `fresh_for`
    /// and servable (stale) until `stale_for` after that; for custom stores
    /// and their tests. The layer makes its own entries.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tower_stampede::Entry;
    ///
    /// let response = http::Response::new(bytes::Bytes::from("hello"));
    /// let entry = Entry::from_response(response, SystemTime::now(), Duration::from_secs(60), Duration::ZERO);
    /// let back = Entry::decode(entry.encode()).expect("round trip");
    /// assert_eq!(back.body(), "hello");
    /// ```
    pub fn from_response(
        response: http::Response<Bytes>,
        stored_at: SystemTime,
        fresh_for: Duration,
        stale_for: Duration,
    ) -> Self {
        let (parts, body) = response.into_parts();
        let fresh_until = stored_at.checked_add(fresh_for).unwrap_or(stored_at);
        let stale_until = fresh_until.checked_add(stale_for).unwrap_or(fresh_until);
        let lifetime = Lifetime {
            fresh_until,
            stale_until,
            error_until: stale_until,
        };
        let vary = (Vec::new(), HeaderMap::new());
        Self::new(
            parts.status,
            parts.headers,
            body,
            None,
            vary,
            stored_at,
            lifetime,
            Duration::ZERO,
        )
    }

    /// Builds an entry and derives what is derived from its headers.
    #[allow(
        clippy::too_many_arguments,
        reason = "every field of the stored response; crate-internal"
    )]
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        trailers: Option<HeaderMap>,
        (vary, vary_values): (Vec<HeaderName>, HeaderMap),
        stored_at: SystemTime,
        lifetime: Lifetime,
        recompute: Duration,
    ) -> Self {
        let allows_authorized = CacheControl::parse(&headers).allows_authorized();
        Self {
            status,
            headers,
            body,
            trailers,
            vary,
            vary_values,
            stored_at,
            lifetime,
            recompute,
            allows_authorized,
            tags: Vec::new(),
        }
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers, as the origin sent them.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole response body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The response trailers, if the origin sent any.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// When the entry was stored.
    pub fn stored_at(&self) -> SystemTime {
        self.stored_at
    }

    /// When the entry stops being fresh.
    pub fn fresh_until(&self) -> SystemTime {
        self.lifetime.fresh_until
    }

    /// When the entry may no longer be served stale while it is refreshed.
    pub fn stale_until(&self) -> SystemTime {
        self.lifetime.stale_until
    }

    /// When the entry may no longer stand in for a failing origin; a store
    /// may drop it from then on, or from [`Entry::stale_until`] if later.
    pub fn error_until(&self) -> SystemTime {
        self.lifetime.error_until
    }

    /// The tags the entry can be purged by
    /// ([`StampedeLayer::invalidate_tag`](crate::StampedeLayer::invalidate_tag)).
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// An estimate of the memory the entry holds, in bytes.
    pub fn weight(&self) -> usize {
        fn map(m: &HeaderMap) -> usize {
            m.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum()
        }
        128 + self.body.len()
            + map(&self.headers)
            + self.trailers.as_ref().map_or(0, map)
            + map(&self.vary_values)
            + self.vary.iter().map(|n| n.as_str().len() + 24).sum::<usize>()
    }

    /// Encodes the entry in the versioned binary format that
    /// [`Entry::decode`] reads. The body is copied as it is, not re-encoded.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.weight());
        out.put_slice(MAGIC);
        out.put_u16(self.status.as_u16());
        out.put_slice(&self.encode_times());
        put_headers(&mut out, &self.headers);
        match &self.trailers {
            Some(trailers) => {
                out.put_u8(1);
                put_headers(&mut out, trailers);
            }
            None => out.put_u8(0),
        }
        put_len(&mut out, self.vary.len());
        for name in &self.vary {
            put_bytes(&mut out, name.as_str().as_bytes());
        }
        put_headers(&mut out, &self.vary_values);
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        out.freeze()
    }

    /// The times as [`Entry::encode`] writes them at [`TIMES_AT`].
    pub(crate) fn encode_times(&self) -> [u8; TIMES_LEN] {
        let mut out = [0; TIMES_LEN];
        let times = [
            millis(self.stored_at),
            millis(self.lifetime.fresh_until),
            millis(self.lifetime.stale_until),
            millis(self.lifetime.error_until),
            u64::try_from(self.recompute.as_micros()).unwrap_or(u64::MAX),
        ];
        for (slot, time) in out.chunks_exact_mut(8).zip(times) {
            slot.copy_from_slice(&time.to_be_bytes());
        }
        out
    }

    /// This entry with new times: the same response (the body is shared,
    /// not copied), as an origin's `304 Not Modified` renews it.
    pub(crate) fn renewed(&self, stored_at: SystemTime, lifetime: Lifetime, recompute: Duration) -> Self {
        Self {
            stored_at,
            lifetime,
            recompute,
            ..self.clone()
        }
    }

    /// Reads an entry that [`Entry::encode`] wrote. Anything else (another
    /// format, another version, a truncated or padded value, invalid header
    /// bytes) is an error, never a panic. The body shares `bytes`' memory.
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: bytes };
        if r.take(MAGIC.len())?.as_ref() != MAGIC {
            return Err(DecodeError {
                reason: "unknown magic or version",
            });
        }
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError {
            reason: "invalid status",
        })?;
        let stored_at = r.time()?;
        let fresh_until = r.time()?;
        let stale_until = r.time()?;
        let error_until = r.time()?;
        let recompute = Duration::from_micros(r.u64()?);
        let headers = r.headers()?;
        let trailers = match r.u8()? {
            0 => None,
            1 => Some(r.headers()?),
            _ => {
                return Err(DecodeError {
                    reason: "invalid trailers flag",
                });
            }
        };
        let vary_len = r.len()?;
        let mut vary = Vec::with_capacity(vary_len.min(64));
        for _ in 0..vary_len {
            vary.push(r.name()?);
        }
        let vary_values = r.headers()?;
        let body_len = usize::try_from(r.u64()?).map_err(|_| DecodeError {
            reason: "body too long",
        })?;
        let body = r.take(body_len)?;
        if !r.buf.is_empty() {
            return Err(DecodeError {
                reason: "trailing bytes",
            });
        }
        Ok(Self::new(
            status,
            headers,
            body,
            trailers,
            (vary, vary_values),
            stored_at,
            Lifetime {
                fresh_until,
                stale_until,
                error_until,
            },
            recompute,
        ))
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn put_len(out: &mut BytesMut, len: usize) {
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.put_slice(bytes);
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    put_len(out, headers.len());
    for (name, value) in headers {
        put_bytes(out, name.as_str().as_bytes());
        put_bytes(out, value.as_bytes());
    }
}

struct Reader {
    buf: Bytes,
}

const TRUNCATED: DecodeError = DecodeError { reason: "truncated" };

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(TRUNCATED);
        }
        Ok(self.buf.split_to(n))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(&self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        // Every counted item takes at least a byte: a larger count is garbage,
        // and refusing it keeps a hostile value from reserving memory.
        if len > self.buf.len() {
            return Err(TRUNCATED);
        }
        Ok(len)
    }

    fn time(&mut self) -> Result<SystemTime, DecodeError> {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(self.u64()?))
            .ok_or(DecodeError {
                reason: "invalid time",
            })
    }

    fn name(&mut self) -> Result<HeaderName, DecodeError> {
        let len = self.len()?;
        HeaderName::from_bytes(&self.take(len)?).map_err(|_| DecodeError {
            reason: "invalid header name",
        })
    }

    fn headers(&mut self) -> Result<HeaderMap, DecodeError> {
        let count = self.len()?;
        let mut map = HeaderMap::with_capacity(count.min(64));
        for _ in 0..count {
            let name = self.name()?;
            let len = self.len()?;
            let value = HeaderValue::from_maybe_shared(self.take(len)?).map_err(|_| DecodeError {
                reason: "invalid header value",
            })?;
            map.try_append(name, value).map_err(|_| DecodeError {
                reason: "too many headers",
            })?;
        }
        Ok(map)
    }
}

/// Headers that describe one hop or one response instance and must not be
/// replayed from a stored copy.
pub(crate) fn strip_unstorable_headers(headers: &mut HeaderMap) {
    for name in [header::CONNECTION, header::TRANSFER_ENCODING, header::AGE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.append(header::LINK, HeaderValue::from_static("</a>"));
        headers.append(header::LINK, HeaderValue::from_static("</b>"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let mut vary_values = HeaderMap::new();
        vary_values.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        Entry::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"{\"posts\":[1,2,3]}"),
            Some(trailers),
            (
                vec![header::ACCEPT_LANGUAGE, header::ACCEPT_ENCODING],
                vary_values,
            ),
            t0,
            Lifetime {
                fresh_until: t0 + Duration::from_secs(50),
                stale_until: t0 + Duration::from_secs(120),
                error_until: t0 + Duration::from_secs(300),
            },
            Duration::from_micros(200_123),
        )
    }

    #[test]
    fn round_trip_keeps_everything() {
        let entry = sample();
        let back = Entry::decode(entry.encode()).expect("own encoding decodes");
        assert_eq!(back.status, entry.status);
        assert_eq!(back.headers, entry.headers);
        assert_eq!(back.body, entry.body);
        assert_eq!(back.trailers, entry.trailers);
        assert_eq!(back.vary, entry.vary);
        assert_eq!(back.vary_values, entry.vary_values);
        assert_eq!(back.stored_at, entry.stored_at);
        assert_eq!(back.lifetime, entry.lifetime);
        assert_eq!(back.recompute, entry.recompute);
        assert!(back.allows_authorized);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Entry::decode(bytes.slice(..len)).is_err(), "length {len}");
        }
    }

    #[test]
    fn padding_another_version_and_garbage_are_errors() {
        let mut padded = BytesMut::from(&sample().encode()[..]);
        padded.put_u8(0);
        assert_eq!(
            Entry::decode(padded.freeze()).map(|_| ()),
            Err(DecodeError {
                reason: "trailing bytes"
            })
        );
        for version in [1, 3] {
            let mut other = BytesMut::from(&sample().encode()[..]);
            other[3] = version;
            assert!(Entry::decode(other.freeze()).is_err(), "version {version}");
        }
        assert!(Entry::decode(Bytes::from_static(b"<html>not ours</html>")).is_err());
        let huge_count = Bytes::from_static(
            b"TSE\x02\x00\xc8\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff",
        );
        assert!(Entry::decode(huge_count).is_err());
    }

    #[test]
    fn invalid_header_bytes_are_errors() {
        let bytes = sample().encode();
        let name_at = bytes
            .windows(b"content-type".len())
            .position(|w| w == b"content-type")
            .expect("header name is in the encoding");
        let mut bad = BytesMut::from(&bytes[..]);
        bad[name_at] = b' ';
        assert_eq!(
            Entry::decode(bad.freeze()).map(|_| ()),
            Err(DecodeError {
                reason: "invalid header name"
            })
        );
    }

    #[test]
    fn renewing_rewrites_only_the_times_in_place() {
        let entry = sample();
        let later = entry.stored_at + Duration::from_secs(600);
        let lifetime = Lifetime {
            fresh_until: later + Duration::from_secs(50),
            stale_until: later + Duration::from_secs(120),
            error_until: later + Duration::from_secs(300),
        };
        let renewed = entry.renewed(later, lifetime, Duration::from_millis(3));
        let mut patched = entry.encode().to_vec();
        patched[TIMES_AT..TIMES_AT + TIMES_LEN].copy_from_slice(&renewed.encode_times());
        assert_eq!(patched, renewed.encode().to_vec());
        assert_eq!(renewed.body.as_ptr(), entry.body.as_ptr(), "the body is shared");
    }

    #[test]
    fn decoded_body_shares_the_input_buffer() {
        let bytes = sample().encode();
        let back = Entry::decode(bytes.clone()).expect("decodes");
        let start = bytes.len() - back.body.len();
        assert_eq!(back.body.as_ptr(), bytes[start..].as_ptr());
    }

    #[test]
    fn weight_grows_with_the_body() {
        let mut entry = sample();
        let small = entry.weight();
        entry.body = Bytes::from(vec![0; 10_000]);
        assert!(entry.weight() >= small + 10_000 - 20);
    }
}

/// Properties over generated entries and bytes (proptest).
#[cfg(test)]
mod properties {
    use proptest::{collection::vec, prelude::*};

    use super::*;

    fn header_map() -> impl Strategy<Value = HeaderMap> {
        vec(("[a-z][a-z0-9-]{0,15}", "[ -~]{0,40}"), 0..8).prop_map(|pairs| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("token");
                map.append(name, HeaderValue::from_str(value.trim()).expect("visible ascii"));
            }
            map
        })
    }

    prop_compose! {
        fn entries()(
            status in 200u16..600,
            headers in header_map(),
            body in vec(any::<u8>(), 0..4096),
            trailers in proptest::option::of(header_map()),
            vary_values in header_map(),
            stored_ms in 0u64..4_000_000_000_000,
            fresh_ms in 0u64..10_000_000,
            stale_ms in 0u64..10_000_000,
            error_ms in 0u64..10_000_000,
            recompute_us in 0u64..100_000_000,
        ) -> Entry {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(stored_ms);
            let fresh_until = at + Duration::from_millis(fresh_ms);
            let stale_until = fresh_until + Duration::from_millis(stale_ms);
            let vary = vary_values.keys().cloned().collect();
            Entry::new(
                StatusCode::from_u16(status).expect("in range"),
                headers,
                Bytes::from(body),
                trailers,
                (vary, vary_values),
                at,
                Lifetime { fresh_until, stale_until, error_until: stale_until + Duration::from_millis(error_ms) },
                Duration::from_micros(recompute_us),
            )
        }
    }

    proptest! {
        #[test]
        fn every_entry_survives_the_round_trip(entry in entries()) {
            let back = Entry::decode(entry.encode()).expect("own encoding decodes");
            prop_assert_eq!(back.status, entry.status);
            prop_assert_eq!(&back.headers, &entry.headers);
            prop_assert_eq!(&back.body, &entry.body);
            prop_assert_eq!(&back.trailers, &entry.trailers);
            prop_assert_eq!(&back.vary, &entry.vary);
            prop_assert_eq!(&back.vary_values, &entry.vary_values);
            prop_assert_eq!(back.stored_at, entry.stored_at);
            prop_assert_eq!(back.lifetime, entry.lifetime);
            prop_assert_eq!(back.recompute, entry.recompute);
        }

        #[test]
        fn bytes_that_are_not_an_entry_are_an_error_not_a_panic(bytes in vec(any::<u8>(), 0..512)) {
            let _ = Entry::decode(Bytes::from(bytes));
        }

        #[test]
        fn a_flipped_byte_never_panics_and_a_truncation_is_an_error(
            entry in entries(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let encoded = entry.encode().to_vec();
            let i = at.index(encoded.len());
            let mut flipped = encoded.clone();
            flipped[i] ^= flip;
            let _ = Entry::decode(Bytes::from(flipped));
            prop_assert!(Entry::decode(Bytes::copy_from_slice(&encoded[..i])).is_err());
        }
    }
}

//! The stored response and its binary format.

use std::{
    error::Error,
    fmt,
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::{policy::Lifetime, rules::cache_control::CacheControl};

mod memory;

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
    /// Derived from `headers`, not encoded: may it answer a request that
    /// carries a `Cookie` the route does not account for?
    pub(crate) allows_cookie: bool,
    /// Tags to purge it by, from the layer's tag header; set by the layer,
    /// kept by stores in their tag index, not encoded.
    pub(crate) tags: Vec<String>,
    /// The head a hit answers with, made at the first hit ([`Entry::ready`]);
    /// not encoded.
    pub(super) ready: OnceLock<Option<HeaderMap>>,
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
        let cc = CacheControl::parse(&headers);
        let (allows_authorized, allows_cookie) = (cc.allows_authorized(), cc.allows_cookie());
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
            allows_cookie,
            tags: Vec::new(),
            ready: OnceLock::new(),
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

    /// Encodes the entry in the versioned binary format that
    /// [`Entry::decode`] reads. The body is copied as it is, not re-encoded.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
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

    /// This entry with new headers and times: the same body (shared, not
    /// copied), as an origin's `304 Not Modified` renews it.
    pub(crate) fn renewed(
        &self,
        headers: HeaderMap,
        stored_at: SystemTime,
        lifetime: Lifetime,
        recompute: Duration,
    ) -> Self {
        let mut renewed = Self::new(
            self.status,
            headers,
            self.body.clone(),
            self.trailers.clone(),
            (self.vary.clone(), self.vary_values.clone()),
            stored_at,
            lifetime,
            recompute,
        );
        renewed.tags.clone_from(&self.tags);
        renewed
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
            let raw = self.take(len)?;
            let value = match memory::common(&raw) {
                Some(common) => common,
                None => HeaderValue::from_maybe_shared(raw).map_err(|_| DecodeError {
                    reason: "invalid header value",
                })?,
            };
            map.try_append(name, value).map_err(|_| DecodeError {
                reason: "too many headers",
            })?;
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;

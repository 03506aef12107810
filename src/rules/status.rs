//! The `Cache-Status` response header (RFC 9211) and `Age`.

use std::{sync::OnceLock, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The `detail` of a response served because the origin failed.
pub(crate) const STALE_IF_ERROR: &str = "stale-if-error";

/// The `detail` of a response whose body was not read whole (too large,
/// too slow, broken, or past what is left of the layer's buffer budget),
/// so neither stored nor shared. `Stats::over_budget` tells the budget's
/// share apart.
pub(crate) const BODY_NOT_STORED: &str = "body-not-stored";

/// Why the request went forward to the inner service (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// The route bypasses the cache.
    Bypass,
    /// The method is not cached.
    Method,
    /// The request's own headers ruled the cache out.
    Request,
    /// Nothing usable was stored.
    Miss,
    /// A stale response was served while it is refreshed.
    Stale,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Method => "method",
            Self::Request => "request",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }

    /// The whole header value when nothing else is said, made without
    /// allocating, for the pass-through path.
    pub(crate) fn static_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Bypass => "tower-stampede; fwd=bypass",
            Self::Method => "tower-stampede; fwd=method",
            Self::Request => "tower-stampede; fwd=request",
            Self::Miss => "tower-stampede; fwd=miss",
            Self::Stale => "tower-stampede; fwd=stale",
        })
    }
}

/// This layer's member of `Cache-Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CacheStatus {
    fwd: Option<Fwd>,
    fwd_status: Option<StatusCode>,
    stored: bool,
    collapsed: bool,
    /// Seconds of freshness left; negative when served stale.
    ttl: Option<i64>,
    detail: Option<&'static str>,
}

impl CacheStatus {
    /// Served from the store; fresh for `ttl` more.
    pub(crate) fn hit(ttl: Duration) -> Self {
        Self::default().ttl(Some(ttl))
    }

    /// Served from the store `late` past its freshness, while a background
    /// refresh runs (RFC 9211 `fwd=stale` with a negative `ttl`).
    pub(crate) fn stale(late: Duration) -> Self {
        Self {
            fwd: Some(Fwd::Stale),
            ttl: Some(-i64::try_from(late.as_secs()).unwrap_or(i64::MAX)),
            ..Self::default()
        }
    }

    pub(crate) fn forward(fwd: Fwd) -> Self {
        Self {
            fwd: Some(fwd),
            ..Self::default()
        }
    }

    pub(crate) fn fwd_status(mut self, status: StatusCode) -> Self {
        self.fwd_status = Some(status);
        self
    }

    pub(crate) fn stored(mut self, stored: bool) -> Self {
        self.stored = stored;
        self
    }

    pub(crate) fn collapsed(mut self) -> Self {
        self.collapsed = true;
        self
    }

    pub(crate) fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl.map(|ttl| i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        self
    }

    /// `detail` must be an RFC 8941 token.
    pub(crate) fn detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    pub(crate) fn value(&self) -> HeaderValue {
        let Some(Ok(ttl)) = self.ttl.map(u64::try_from) else {
            return self.format();
        };
        // A plain hit, and what each request collapsed onto a stored `200`
        // gets: the members that differ by their `ttl` alone.
        // Every field named, so that a new one must say whether it counts.
        let table = match self {
            Self {
                fwd: None,
                fwd_status: None,
                stored: false,
                collapsed: false,
                ttl: _,
                detail: None,
            } => Table::Hit,
            Self {
                fwd: Some(Fwd::Miss),
                fwd_status: Some(StatusCode::OK),
                stored: false,
                collapsed: true,
                ttl: _,
                detail: None,
            } => Table::Collapsed,
            _ => return self.format(),
        };
        kept(table, ttl, || self.format())
    }

    fn format(&self) -> HeaderValue {
        // Sized for the longest member, so that it is built without
        // reallocating, and with integers written without `fmt`: this runs
        // on every hit.
        let mut out = String::with_capacity(96);
        out.push_str("tower-stampede");
        match self.fwd {
            None => out.push_str("; hit"),
            Some(fwd) => {
                out.push_str("; fwd=");
                out.push_str(fwd.as_str());
            }
        }
        let mut number = itoa::Buffer::new();
        if let Some(status) = self.fwd_status {
            out.push_str("; fwd-status=");
            out.push_str(status.as_str());
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(ttl) = self.ttl {
            out.push_str("; ttl=");
            out.push_str(number.format(ttl));
        }
        if let Some(detail) = self.detail {
            out.push_str("; detail=");
            out.push_str(detail);
        }
        HeaderValue::try_from(out).unwrap_or_else(|_| Fwd::Miss.static_value())
    }

    /// Adds this member after any the origin or an inner cache sent: each
    /// field line is one more member of the list, nearest the client last.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.append(CACHE_STATUS, self.value());
    }
}

/// Sets `Age` to the whole seconds an entry has been stored.
pub(crate) fn set_age(headers: &mut HeaderMap, age: Duration) {
    headers.insert(header::AGE, age_value(age));
}

/// The value of `Age` for an entry stored `age` ago: its whole seconds.
pub(crate) fn age_value(age: Duration) -> HeaderValue {
    let seconds = age.as_secs();
    kept(Table::Age, seconds, || HeaderValue::from(seconds))
}

/// The values kept below this many seconds: every hit carries an `Age` and
/// a `Cache-Status` with its `ttl`, and formatting them cost two
/// allocations a hit (and one for each of the requests collapsed onto a
/// miss).
const KEPT_SECONDS: usize = 1024;

#[derive(Clone, Copy)]
enum Table {
    Age,
    Hit,
    Collapsed,
}

/// Made as first needed, once for the process, and kept for its life as a
/// static would be (the table is 144 KiB of zeroed memory, its pages
/// touched as used; the text of all 3 x 1024 values, some 90 KiB): their
/// bytes are `'static`, so a clone or a drop touches no reference count,
/// where a value of its own would cost each hit two atomic operations on a
/// count that every thread's hits share.
static KEPT: [[OnceLock<HeaderValue>; KEPT_SECONDS]; 3] =
    [const { [const { OnceLock::new() }; KEPT_SECONDS] }; 3];

/// `make`'s value for `seconds`, made once below [`KEPT_SECONDS`] and
/// cloned after.
fn kept(table: Table, seconds: u64, make: impl FnOnce() -> HeaderValue) -> HeaderValue {
    let Some(slot) = usize::try_from(seconds)
        .ok()
        .and_then(|index| KEPT[table as usize].get(index))
    else {
        return make();
    };
    slot.get_or_init(|| {
        let made = make();
        match made.to_str() {
            // Leaked on purpose: the table keeps it for the process's life.
            Ok(text) => HeaderValue::from_static(Box::leak(Box::from(text))),
            Err(_) => made,
        }
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_values_are_the_values_formatted() {
        for seconds in [0, 1, 59, KEPT_SECONDS as u64 - 1, KEPT_SECONDS as u64, 86_400] {
            let ttl = Duration::from_secs(seconds);
            for _ in 0..2 {
                let mut headers = HeaderMap::new();
                set_age(&mut headers, ttl);
                assert_eq!(headers[header::AGE], seconds.to_string());
                let hit = CacheStatus::hit(ttl);
                assert_eq!(hit.value(), hit.format());
                let collapsed = CacheStatus::forward(Fwd::Miss)
                    .fwd_status(StatusCode::OK)
                    .collapsed()
                    .ttl(Some(ttl));
                assert_eq!(
                    collapsed.value(),
                    format!("tower-stampede; fwd=miss; fwd-status=200; collapsed; ttl={seconds}")
                );
                let not_found = collapsed.clone().fwd_status(StatusCode::NOT_FOUND);
                assert_eq!(not_found.value(), not_found.format());
                let early = hit.clone().detail("early-refresh");
                assert_eq!(
                    early.value(),
                    format!("tower-stampede; hit; ttl={seconds}; detail=early-refresh")
                );
            }
        }
    }

    #[test]
    fn members_follow_rfc_9211() {
        assert_eq!(
            CacheStatus::hit(Duration::from_millis(59_900)).value(),
            "tower-stampede; hit; ttl=59"
        );
        assert_eq!(
            CacheStatus::forward(Fwd::Miss)
                .fwd_status(StatusCode::OK)
                .stored(true)
                .ttl(Some(Duration::from_secs(60)))
                .value(),
            "tower-stampede; fwd=miss; fwd-status=200; stored; ttl=60"
        );
        assert_eq!(
            CacheStatus::forward(Fwd::Miss)
                .collapsed()
                .detail("origin-error")
                .value(),
            "tower-stampede; fwd=miss; collapsed; detail=origin-error"
        );
        assert_eq!(
            CacheStatus::forward(Fwd::Method).value(),
            Fwd::Method.static_value()
        );
    }

    #[test]
    fn our_member_comes_after_the_origins() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_STATUS, HeaderValue::from_static("origin-cache; hit"));
        CacheStatus::forward(Fwd::Bypass).apply(&mut headers);
        let members: Vec<_> = headers.get_all(CACHE_STATUS).iter().collect();
        assert_eq!(members, ["origin-cache; hit", "tower-stampede; fwd=bypass"]);
    }
}

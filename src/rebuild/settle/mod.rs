//! What a rebuild's origin answer becomes, decided without I/O: what the
//! leader's client gets, what the waiters get, what is written to the store
//! and whether the key passes for a while.
//!
//! | the origin answered | last good entry | leader's client | waiters | store | pass |
//! | --- | --- | --- | --- | --- | --- |
//! | an error, a 5xx, a failed gRPC call | in its error window | the last good | the last good | nothing | no |
//! | an error | none usable | the error | `502` | nothing | no |
//! | a personal response | any | the response | go forward | nothing | unless for `Authorization` |
//! | a body not read whole | any | the response | go forward | nothing | yes |
//! | `304` to the layer's validators, shareable | the one validated | it, renewed | it | its times | no |
//! | `304`, personal or no lifetime left | the one validated | it, as it was | it | nothing | no |
//! | a whole response, storable | any | it | it | all of it | no |
//! | a whole response, not storable (status, gRPC status, policy) | any | it | it | nothing | no |

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Response, StatusCode, response};
use http_body::Body;

use super::fetch::Fetched;

mod renew;

use crate::{
    body::StampedeBody,
    entry::Entry,
    flight::Outcome,
    key::variant_tag,
    policy::{Lifetime, Policy},
    response::with_status,
    rules::{
        cache_control::CacheControl,
        freshness::{Exchange, OriginFreshness},
        grpc,
        hop::strip_unstorable_headers,
        status::{BODY_NOT_STORED, CacheStatus, Fwd, STALE_IF_ERROR},
        storable::{self, Credentials, Private, Sharing},
        vary,
    },
};
use renew::renew;

/// What a rebuild knows besides the origin's answer.
pub(super) struct Context<'a, R> {
    pub(super) now: SystemTime,
    /// How long the origin took: XFetch's delta for the next rebuild.
    pub(super) took: Duration,
    pub(super) policy: &'a Policy,
    /// The entry the rebuild replaces, if it fits the request.
    pub(super) last_good: Option<&'a Arc<Entry>>,
    /// The headers of the request the origin answered, and what it carried.
    pub(super) request: &'a HeaderMap,
    pub(super) asked: Credentials,
    pub(super) tag_header: Option<&'a HeaderName>,
    /// The plain key, when the rebuilt key is one of its `Vary` variants.
    pub(super) variant_of: Option<&'a str>,
    /// Uniform in [0, 1), for the policy's jitter.
    pub(super) random: R,
}

/// What a fenced write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    /// A new response.
    Whole,
    /// The times of the stored response, which the origin said is current.
    Times,
}

/// The end of a rebuild.
pub(super) enum Settled<B: Body, E> {
    /// The origin's answer is the leader's client's alone: waiters get
    /// `outcome`, and the key passes for a while if `pass`.
    Own {
        reply: Result<Response<StampedeBody<B>>, E>,
        outcome: Outcome,
        pass: bool,
    },
    /// The origin failed and the last good entry stands in, for everyone.
    StandIn { entry: Arc<Entry>, status: CacheStatus },
    /// The body went to everyone as it came and was not kept whole.
    Streamed,
    /// An entry for everyone, written to the store when `write` says so.
    /// `status` still lacks what the write decides (`stored`, `ttl`).
    Share {
        entry: Arc<Entry>,
        write: Option<(Write, Duration)>,
        status: CacheStatus,
    },
}

/// Decides what `fetched` becomes.
pub(super) fn settle<B, E, R>(fetched: Result<Fetched<B>, E>, mut cx: Context<'_, R>) -> Settled<B, E>
where
    B: Body,
    R: FnMut() -> f64,
{
    let now = cx.now;
    if let Some(last_good) = cx.last_good.filter(|entry| entry.lifetime.serves_errors_at(now))
        && let Some(failed) = failure(&fetched)
    {
        let mut status = CacheStatus::forward(Fwd::Miss).detail(STALE_IF_ERROR);
        if let Some(failed) = failed {
            status = status.fwd_status(failed);
        }
        return Settled::StandIn {
            entry: Arc::clone(last_good),
            status,
        };
    }
    let (mut parts, data, trailers, sharing) = match fetched {
        Err(error) => {
            return Settled::Own {
                reply: Err(error),
                outcome: Outcome::Failed,
                pass: false,
            };
        }
        Ok(Fetched::Private { parts, body, reason }) => {
            let status = CacheStatus::forward(Fwd::Miss)
                .fwd_status(parts.status)
                .detail(reason.as_str());
            return Settled::Own {
                reply: Ok(with_status(
                    Response::from_parts(parts, StampedeBody::inner(body)),
                    &status,
                )),
                outcome: Outcome::Private(reason.as_str()),
                // A request's Authorization says nothing about the next
                // request: only what the response itself says makes the
                // key pass.
                pass: reason != Private::Authorization,
            };
        }
        Ok(Fetched::Partial { parts, body }) => {
            let status = CacheStatus::forward(Fwd::Miss)
                .fwd_status(parts.status)
                .detail(BODY_NOT_STORED);
            return Settled::Own {
                reply: Ok(with_status(Response::from_parts(parts, body), &status)),
                outcome: Outcome::Private(BODY_NOT_STORED),
                pass: true,
            };
        }
        Ok(Fetched::Streamed { .. }) => return Settled::Streamed,
        Ok(Fetched::NotModified { parts }) => match cx.last_good {
            Some(old) => return renew(old, &parts.headers, &mut cx),
            // Validators are only sent from a last good entry.
            None => {
                let cc = CacheControl::parse(&parts.headers);
                let sharing = storable::shareable(&parts.headers, &cc, cx.asked, cx.policy.follows_origin());
                (parts, Bytes::new(), None, sharing)
            }
        },
        Ok(Fetched::Whole {
            parts,
            data,
            trailers,
            sharing,
        }) => (parts, data, trailers, Ok(sharing)),
    };

    // Read before Age goes: it counts against the origin's freshness.
    let origin = cx.origin_freshness(&parts.headers, parts.status);
    strip_unstorable_headers(&mut parts.headers);
    let names = vary::vary_names(&parts.headers).unwrap_or_default();
    let values = vary::vary_values(&names, cx.request);
    let lifetime = cx
        .policy
        .lifetime(now, (cx.random)(), &origin)
        .and_then(|lifetime| limited(lifetime, now, sharing))
        .filter(|_| storable::status_is_storable(parts.status, cx.policy.follows_origin(), &origin))
        .filter(|_| grpc::storable(&parts.headers, trailers.as_ref()));
    let tags = entry_tags(&cx, &parts.headers);
    let mut entry = Entry::new(
        parts.status,
        parts.headers,
        data,
        trailers,
        (names, values),
        // Its age counts from when the origin made it.
        now.checked_sub(origin.age).unwrap_or(now),
        lifetime.unwrap_or(Lifetime::expired(now)),
        cx.took,
    );
    entry.tags = tags;
    Settled::Share {
        status: CacheStatus::forward(Fwd::Miss).fwd_status(entry.status),
        entry: Arc::new(entry),
        write: lifetime.map(|lifetime| (Write::Whole, cx.policy.keep_for(&lifetime, now, &origin))),
    }
}

/// The head of a response whose body streams, as waiters fit it against
/// their requests: its status and storable headers, the `Vary` names it
/// gives and the values `request` had for them; no body.
pub(super) fn head(parts: &response::Parts, request: &HeaderMap, now: SystemTime) -> Entry {
    let mut headers = parts.headers.clone();
    strip_unstorable_headers(&mut headers);
    let names = vary::vary_names(&headers).unwrap_or_default();
    let values = vary::vary_values(&names, request);
    Entry::new(
        parts.status,
        headers,
        Bytes::new(),
        None,
        (names, values),
        now,
        Lifetime::expired(now),
        Duration::ZERO,
    )
}

impl<R> Context<'_, R> {
    /// What a response of `status` with `headers`, answered now, says of
    /// its own freshness.
    fn origin_freshness(&self, headers: &HeaderMap, status: StatusCode) -> OriginFreshness {
        let exchange = Exchange {
            sent: self.now.checked_sub(self.took).unwrap_or(self.now),
            received: self.now,
        };
        OriginFreshness::at(headers, status, Some(exchange), self.policy.targeted_fields())
    }
}

/// What the policy gives a response, as far as the request it answers lets
/// it be shared: a response to credentials lives no longer than its own
/// freshness unless it said `public`; a personal one, not at all.
fn limited(lifetime: Lifetime, now: SystemTime, sharing: Result<Sharing, Private>) -> Option<Lifetime> {
    match sharing {
        Ok(Sharing::Policy) => Some(lifetime),
        Ok(Sharing::Within(fresh)) => lifetime.within(now, fresh),
        Err(_) => None,
    }
}

/// Whether a rebuild failed in the sense of RFC 5861's `stale-if-error`,
/// and with which status, if any: an error, a 5xx, or a gRPC call that
/// failed on the server's side.
fn failure<B: Body, E>(fetched: &Result<Fetched<B>, E>) -> Option<Option<StatusCode>> {
    match fetched {
        Err(_) => Some(None),
        Ok(Fetched::Whole { parts, trailers, .. }) if grpc::failed(&parts.headers, trailers.as_ref()) => {
            Some(Some(parts.status))
        }
        Ok(fetched) => {
            let status = fetched.status();
            matches!(status.as_u16(), 500 | 502 | 503 | 504).then_some(Some(status))
        }
    }
}

/// The tags an entry is stored with: those of the layer's tag header, and,
/// for a `Vary` variant, one naming its plain key, through which
/// invalidating that key reaches the variant.
fn entry_tags<R>(cx: &Context<'_, R>, headers: &HeaderMap) -> Vec<String> {
    let mut tags = tags(headers, cx.tag_header);
    tags.extend(cx.variant_of.map(variant_tag));
    tags
}

/// The tags of a response, from `name`: whitespace-separated, as in
/// `Surrogate-Key: posts post-42`.
fn tags(headers: &HeaderMap, name: Option<&HeaderName>) -> Vec<String> {
    let Some(name) = name else { return Vec::new() };
    let mut tags: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests;

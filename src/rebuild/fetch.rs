//! The origin call of a rebuild: the request sent with the validators of
//! the entry it replaces, and the answer read as far as it may be shared.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header, response};
use http_body::Body;
use tower_service::Service;

use super::stream::{self, Streamer};
use crate::{
    body::{BoxError, Budget, Collected, Held, StampedeBody, collect_within},
    entry::Entry,
    rules::{
        cache_control::CacheControl,
        grpc,
        storable::{self, Credentials, Private, Sharing},
    },
};

/// What the origin answered, read as far as it may be shared.
pub(super) enum Fetched<B: Body> {
    /// A whole response, its body read within the limits.
    Whole {
        parts: response::Parts,
        data: Bytes,
        trailers: Option<HeaderMap>,
        /// How long it may be shared, given what its request carried.
        sharing: Sharing,
    },
    /// A response for its own client only: its body is not read.
    Private {
        parts: response::Parts,
        body: B,
        reason: Private,
    },
    /// A body too large, too slow or broken: what was read, then the rest
    /// as it comes (or the error).
    Partial {
        parts: response::Parts,
        body: StampedeBody<B>,
    },
    /// The origin's `304` to the validators this layer sent.
    NotModified { parts: response::Parts },
    /// A body handed to the flight's requests as it came, not kept whole:
    /// too large, too slow, past the budget, or failed midway (its readers
    /// got the error).
    Streamed { parts: response::Parts },
}

impl<B: Body> Fetched<B> {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Self::Whole { parts, .. }
            | Self::Private { parts, .. }
            | Self::Partial { parts, .. }
            | Self::NotModified { parts }
            | Self::Streamed { parts } => parts.status,
        }
    }
}

/// How far the origin's body is read, and against what.
pub(super) struct Limits<'a> {
    /// The most bytes one body may have and still be shared.
    pub(super) bytes: usize,
    /// How long the body may take to end.
    pub(super) patience: Duration,
    /// The bytes all of the layer's flights may hold at once.
    pub(super) budget: &'a Arc<Budget>,
}

/// Calls `inner`, which is ready, with `request`, which carries `asked`
/// (`revalidates`: whether a `no-cache` answer may be shared, to be
/// validated before each reuse),
/// asking whether `last_good` is still current when it can be validated: a
/// `304` then renews it without the body travelling again. A whole body
/// comes with the budget it holds, to be dropped once it is shared.
pub(super) async fn fetch<S, ReqBody, B>(
    mut inner: S,
    mut request: Request<ReqBody>,
    last_good: Option<&Entry>,
    asked: Credentials,
    revalidates: bool,
    limits: Limits<'_>,
    streamer: &mut impl Streamer,
) -> Result<(Fetched<B>, Held), S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut validated = false;
    if let Some(old) = last_good.filter(|old| old.status == StatusCode::OK) {
        for (validator, condition) in [
            (header::ETAG, header::IF_NONE_MATCH),
            (header::LAST_MODIFIED, header::IF_MODIFIED_SINCE),
        ] {
            if let Some(value) = old.headers.get(validator) {
                request.headers_mut().insert(condition, value.clone());
                validated = true;
            }
        }
    }
    let (parts, body) = inner.call(request).await?.into_parts();
    if validated && parts.status == StatusCode::NOT_MODIFIED {
        // The answer to this layer's own question: never a client's.
        return Ok((Fetched::NotModified { parts }, Held::default()));
    }
    let cc = CacheControl::parse(&parts.headers);
    let sharing = match storable::shareable(&parts.headers, &cc, asked, revalidates) {
        Ok(sharing) => sharing,
        Err(reason) => return Ok((Fetched::Private { parts, body, reason }, Held::default())),
    };
    // A gRPC call is stored on its trailers' word, and a failure status may
    // have the last good response stand in: those are read whole first.
    let failing = matches!(parts.status.as_u16(), 500 | 502 | 503 | 504);
    if !grpc::is_grpc(&parts.headers) && !failing {
        return Ok(stream::read(parts, body, sharing, limits, streamer).await);
    }
    // A body the budget could never hold is one over the limit: not a
    // sign that the budget is spent.
    let bytes = limits.bytes.min(limits.budget.limit());
    let (collected, held) = collect_within(body, bytes, limits.patience, Some(limits.budget)).await;
    let fetched = match collected {
        Collected::Complete { data, trailers } => Fetched::Whole {
            parts,
            data,
            trailers,
            sharing,
        },
        Collected::Partial(body) => Fetched::Partial { parts, body },
    };
    Ok((fetched, held))
}

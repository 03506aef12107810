//! Reading a shareable origin body for the whole flight: what has arrived
//! at once is read first; a body that is not all there goes to every
//! request of the flight as it arrives, and is kept whole for the store
//! only while it may still be stored.

use std::{
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use bytes::Buf;
use http::{HeaderMap, response};
use http_body::Body;
use http_body_util::BodyExt;

use super::fetch::{Fetched, Limits};
use crate::{
    body::{BodyError, BoxError, Held, Reservation, Shared},
    rules::storable::Sharing,
};

/// The bytes a shared body keeps either side of its fastest reader once it
/// can no longer be stored: how far a reader may fall behind the fastest
/// before it is cut off, and how far ahead of the fastest the origin is
/// read.
pub(crate) const WINDOW: usize = 4 << 20;

/// What the flight does with a body that streams.
pub(super) trait Streamer {
    /// The body will not be all there at once: hand it to the flight's
    /// requests as it comes, with the response's head.
    /// `kept` says whether the body may still be stored.
    fn publish(&mut self, parts: &response::Parts, body: &Arc<Shared>, kept: bool);
    /// The body will not be stored: the rebuild lock is of no use to
    /// anyone waiting for a write.
    fn not_stored(&mut self);
    /// The body's first chunks are gone: a request that joined now could
    /// not read it from the start, so later requests start a flight of
    /// their own.
    fn close(&mut self);
}

/// Reads `body` for everyone. A body complete within the limits is
/// `Whole` (streamed or not); one not kept whole, or failed midway, is
/// `Streamed`, its readers having had all of it, or its error.
pub(super) async fn read<B>(
    parts: response::Parts,
    body: B,
    sharing: Sharing,
    limits: Limits<'_>,
    streamer: &mut impl Streamer,
) -> (Fetched<B>, Held)
where
    B: Body,
    B::Error: Into<BoxError>,
{
    // A body the budget could never hold is one over the limit: not a sign
    // that the budget is spent.
    let limit = limits.bytes.min(limits.budget.limit());
    let mut body = pin!(body);
    // An announced length is taken from the budget at once: the body fits
    // whole, or is not kept at all, so that flights do not each take part
    // of the budget and none finish.
    let mut held = Reservation::new(limits.budget);
    let hint = body.size_hint();
    let (fits_limit, fits_budget) = match hint.exact() {
        _ if hint.lower() > limit as u64 => (false, true),
        Some(exact) => (true, held.grow(usize::try_from(exact).unwrap_or(usize::MAX))),
        None => (true, true),
    };
    let mut flow = Flow {
        shared: Shared::new(WINDOW, Some(held)),
        streamer,
        published: false,
        keeping: true,
        closed: false,
        over_budget: !fits_budget,
    };
    if !(fits_limit && fits_budget) {
        flow.stop_keeping(&parts);
    }
    let deadline = crate::time::after(tokio::time::Instant::now(), limits.patience);
    let (mut read, mut trailers) = (0usize, None::<HeaderMap>);
    let failed = loop {
        if !flow.keeping {
            let room = flow.shared.room().await;
            flow.close_once_moved();
            if !room {
                // Nobody reads it any more, and it will not be stored: a
                // request that joins now gets an error, not a body that
                // never ends.
                flow.shared.fail(BodyError::fell_behind());
                break true;
            }
        }
        let frame = if !flow.published {
            match ready_now(body.frame()) {
                Some(frame) => frame,
                None => {
                    // Not all there: everyone gets it as it comes.
                    flow.publish(&parts);
                    continue;
                }
            }
        } else if flow.keeping {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    // Too slow to be stored: the rest only streams.
                    flow.stop_keeping(&parts);
                    continue;
                }
            }
        } else {
            body.frame().await
        };
        match frame {
            None => {
                flow.shared.complete(trailers);
                break false;
            }
            Some(Err(error)) => {
                flow.publish(&parts);
                flow.shared.fail(BodyError::inner(error));
                break true;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    read = read.saturating_add(chunk.len());
                    let fits = flow.shared.push(chunk);
                    if flow.keeping && (read > limit || !fits) {
                        flow.over_budget = read <= limit;
                        flow.stop_keeping(&parts);
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok().or(trailers),
            },
        }
    };
    match flow.shared.take_whole().filter(|_| !failed) {
        Some((data, trailers, held)) => (
            Fetched::Whole {
                parts,
                data,
                trailers,
                sharing,
            },
            Held::holding(held, flow.over_budget),
        ),
        None => {
            flow.publish(&parts);
            (Fetched::Streamed { parts }, Held::holding(None, flow.over_budget))
        }
    }
}

/// A read under way: the shared body, and what the flight was told.
struct Flow<'a, S> {
    shared: Arc<Shared>,
    streamer: &'a mut S,
    published: bool,
    keeping: bool,
    closed: bool,
    over_budget: bool,
}

impl<S: Streamer> Flow<'_, S> {
    fn publish(&mut self, parts: &response::Parts) {
        if !self.published {
            self.published = true;
            self.streamer.publish(parts, &self.shared, self.keeping);
        }
    }

    /// From now on the body only streams, to the requests reading it.
    fn stop_keeping(&mut self, parts: &response::Parts) {
        if self.keeping {
            self.keeping = false;
            self.shared.stop_keeping();
            self.streamer.not_stored();
        }
        self.publish(parts);
    }

    /// Closes the flight to new requests once the body's start is gone.
    fn close_once_moved(&mut self) {
        if !self.closed && !self.shared.replayable() {
            self.closed = true;
            self.streamer.close();
        }
    }
}

/// The future's output if it is ready without waiting.
fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

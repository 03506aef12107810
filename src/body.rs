//! The response body the layer returns, and buffering of the origin's body.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

mod budget;
mod collect;
mod error;
mod shared;

pub(crate) use budget::{Budget, Reservation};
pub(crate) use collect::{Collected, Held, collect, collect_within};
pub use error::{BodyError, BoxError};
pub(crate) use shared::Shared;

pin_project! {
    /// The body of every response that passes through the layer: the inner
    /// service's body as it is, a stored body, the body of a flight shared
    /// as it arrives, or (for a response that was read in part) the part
    /// that was read followed by the rest exactly as the inner service
    /// produces it. Its errors are [`BodyError`]s, the inner service's own
    /// error as their source.
    pub struct StampedeBody<B>
    where
        B: Body,
    {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B>
    where
        B: Body,
    {
        Inner { #[pin] body: B },
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Replay { prefix: Prefix, rest: Pin<Box<B>> },
        Failed { prefix: Prefix, error: Option<B::Error> },
        Shared { reader: shared::Reader },
    }
}

/// The frames read before a body was handed on: what was gathered, in one
/// buffer, then the frame that did not fit, if any. The buffer's share of
/// the budget is given back once it goes out, or when the body is dropped
/// unread (its client gone).
struct Prefix {
    frames: VecDeque<Frame<Bytes>>,
    held: Option<Reservation>,
}

impl Prefix {
    fn pop(&mut self) -> Option<Frame<Bytes>> {
        let frame = self.frames.pop_front()?;
        // Only the first frame, the gathered buffer, was reserved.
        self.held = None;
        Some(frame)
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl<B: Body> StampedeBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Buffered {
                data: Some(data).filter(|d| !d.is_empty()),
                trailers,
            },
        }
    }

    pub(crate) fn shared(reader: shared::Reader) -> Self {
        Self {
            kind: Kind::Shared { reader },
        }
    }

    /// Whether the body comes from a stored or collected copy.
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }
}

impl<B: Body> std::fmt::Debug for StampedeBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Buffered { .. } => "buffered",
            Kind::Replay { .. } => "replay",
            Kind::Failed { .. } => "failed",
            Kind::Shared { .. } => "shared",
        };
        f.debug_struct("StampedeBody").field("kind", &kind).finish()
    }
}

fn to_bytes<D: Buf>(mut data: D) -> Bytes {
    // Free for `Bytes`; one copy for other buffers.
    data.copy_to_bytes(data.remaining())
}

fn map_frame<D: Buf, E: Into<BoxError>>(
    frame: Option<Result<Frame<D>, E>>,
) -> Option<Result<Frame<Bytes>, BodyError>> {
    frame.map(|r| r.map(|f| f.map_data(to_bytes)).map_err(BodyError::inner))
}

impl<B> Body for StampedeBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx).map(map_frame),
            KindProj::Buffered { data, trailers } => Poll::Ready(match data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            KindProj::Replay { prefix, rest } => match prefix.pop() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => rest.as_mut().poll_frame(cx).map(map_frame),
            },
            KindProj::Failed { prefix, error } => Poll::Ready(match prefix.pop() {
                Some(frame) => Some(Ok(frame)),
                None => error.take().map(|e| Err(BodyError::inner(e))),
            }),
            KindProj::Shared { reader } => reader.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Replay { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
            Kind::Failed { prefix, error } => prefix.is_empty() && error.is_none(),
            Kind::Shared { reader } => reader.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Buffered { data, .. } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Replay { prefix, rest } => {
                let read: u64 = prefix
                    .frames
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|d| d.len() as u64)
                    .sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
            Kind::Failed { .. } => SizeHint::default(),
            Kind::Shared { reader } => reader.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests;

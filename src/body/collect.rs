//! Reading an origin's body to share it: up to a limit and a deadline, into
//! one buffer whose every allocated byte is taken from the layer's budget.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::{Budget, Kind, Prefix, Reservation, StampedeBody, to_bytes};

/// The outcome of reading an origin body up to a limit.
pub(crate) enum Collected<B: Body> {
    /// The whole body, within the limit.
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Over the limit, or failed midway: what was read, then the rest (or
    /// the error) as the origin produces it.
    Partial(StampedeBody<B>),
}

/// Reads `body` while it stays within `limit` bytes and ends within
/// `patience`; past either, what was read and the rest are handed on.
pub(crate) async fn collect<B: Body>(body: B, limit: usize, patience: Duration) -> Collected<B> {
    collect_within(body, limit, patience, None).await.0
}

/// What a read against a [`Budget`] keeps of it.
#[derive(Default)]
pub(crate) struct Held {
    /// The buffer of a complete body, given back when this is dropped (kept
    /// for that alone). A partial body carries its own, given back as it is
    /// sent.
    _reservation: Option<Reservation>,
    /// Whether the read stopped because the budget was spent.
    pub(crate) over_budget: bool,
}

impl Held {
    /// What a read says that may hold a reservation until the flight ends:
    /// `held`, and whether the budget was spent.
    pub(crate) fn holding(held: Option<Reservation>, over_budget: bool) -> Self {
        Self {
            _reservation: held,
            over_budget,
        }
    }
}

/// What was read so far, copied into one buffer of its own: the budget
/// then counts what the process holds (the buffer's capacity), and no frame
/// keeps alive the larger read buffer of the connection it came from.
struct Gathered {
    data: Vec<u8>,
    held: Option<Reservation>,
}

impl Gathered {
    /// Makes room for `more` bytes, growing to twice the size (or what is
    /// needed) but never past `limit`; false if the budget cannot take it.
    fn make_room(&mut self, more: usize, limit: usize) -> bool {
        let needed = self.data.len().saturating_add(more);
        let capacity = self.data.capacity();
        if needed <= capacity {
            return true;
        }
        let target = needed.max(capacity.saturating_mul(2)).min(limit.max(needed));
        if let Some(held) = &mut self.held
            && !held.grow(target - capacity)
        {
            return false;
        }
        self.data.reserve_exact(target - self.data.len());
        true
    }

    /// What was read, for its client: the buffer (which alone holds the
    /// budget), then the frame that did not fit and the trailers, if any.
    fn into_prefix(self, unfit: Option<Frame<Bytes>>, trailers: Option<HeaderMap>) -> Prefix {
        let mut frames = VecDeque::new();
        let mut held = None;
        if !self.data.is_empty() {
            frames.push_back(Frame::data(Bytes::from(self.data)));
            held = self.held;
        }
        frames.extend(unfit);
        frames.extend(trailers.map(Frame::trailers));
        Prefix { frames, held }
    }
}

/// As [`collect`], with what is read taken from `budget`, if any: a body
/// of announced length at once (it fits whole, or none of it is read, so
/// that flights do not each take part of the budget and none finish), any
/// other as its buffer grows. A body the budget cannot take ends the read
/// as one over the limit does; the frame that found the budget spent (or
/// went past the limit) is handed on, unreserved, after what was read.
pub(crate) async fn collect_within<B: Body>(
    body: B,
    limit: usize,
    patience: Duration,
    budget: Option<&Arc<Budget>>,
) -> (Collected<B>, Held) {
    let mut rest = Box::pin(body);
    let mut gathered = Gathered {
        data: Vec::new(),
        held: budget.map(Reservation::new),
    };
    let (mut trailers, mut unfit) = (None, None);
    let mut over_budget = false;
    let hint = rest.size_hint();
    let deadline = crate::time::after(tokio::time::Instant::now(), patience);
    let mut readable = hint.lower() <= limit as u64;
    if readable && let Some(exact) = hint.exact() {
        over_budget = !gathered.make_room(usize::try_from(exact).unwrap_or(usize::MAX), limit);
        readable = !over_budget;
    }
    if readable {
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, rest.frame()).await else {
                // A slow stream is its client's to read as it comes.
                break;
            };
            match frame {
                None => {
                    let Gathered { data, held } = gathered;
                    let complete = Collected::Complete {
                        data: Bytes::from(data),
                        trailers,
                    };
                    let held = Held {
                        _reservation: held,
                        over_budget: false,
                    };
                    return (complete, held);
                }
                Some(Err(error)) => {
                    let kind = Kind::Failed {
                        prefix: gathered.into_prefix(None, trailers),
                        error: Some(error),
                    };
                    return (Collected::Partial(StampedeBody { kind }), Held::default());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let more = chunk.remaining();
                        let within = gathered.data.len().saturating_add(more) <= limit;
                        if within && gathered.make_room(more, limit) {
                            gathered.data.put(chunk);
                        } else {
                            over_budget = within;
                            unfit = Some(Frame::data(to_bytes(chunk)));
                            break;
                        }
                    }
                    Err(frame) => trailers = frame.into_trailers().ok().or(trailers),
                },
            }
        }
    }
    let kind = Kind::Replay {
        prefix: gathered.into_prefix(unfit, trailers),
        rest,
    };
    let held = Held {
        _reservation: None,
        over_budget,
    };
    (Collected::Partial(StampedeBody { kind }), held)
}

//! One origin body read once and handed, as it arrives, to every request of
//! its flight: an append-only run of chunks, each reader at its own cursor.
//!
//! While the body may still be stored (within `max_body_bytes` and the
//! buffer budget), every chunk is kept: a request that joins late replays it
//! from the first, and the store gets it whole. Past that, a chunk is kept
//! only until every reader has it, and never more than `window` bytes
//! behind the fastest reader; the origin is read only as the fastest
//! reader takes what came. A reader that falls further behind ends
//! with a `BodyError` that says so, never with a body cut short that looks
//! whole; the others go on at their own pace.

use std::{
    collections::{BTreeMap, VecDeque},
    pin::pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;

use super::{BodyError, Reservation};

/// How long the slowest readers may keep a full window of a body that
/// cannot be stored waiting before they are cut off.
pub(crate) const STALL: Duration = Duration::from_secs(1);

/// A body shared by the requests of one flight.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the reader of the origin when the window has room again, or
    /// when the last request reading went away.
    room: Notify,
}

struct State {
    chunks: VecDeque<Bytes>,
    /// The number of the first chunk kept (those before it are gone).
    first: usize,
    /// The bytes of the chunks kept.
    kept: usize,
    /// Whether every chunk is kept, as long as the body may be stored.
    keep_all: bool,
    /// Past that, whether every chunk is still kept (from the budget) for
    /// requests that join late.
    replay: bool,
    window: usize,
    /// The cursor furthest along, as a chunk number.
    fastest: usize,
    /// How many readers are at each chunk number.
    at: BTreeMap<usize, usize>,
    readers: usize,
    end: Option<End>,
    wakers: Vec<Waker>,
    /// The budget the kept chunks are taken from, while all are kept (the
    /// whole of an announced length may have been taken at once).
    held: Option<Reservation>,
    /// All the bytes pushed.
    pushed: usize,
}

/// How the origin's body ended.
enum End {
    Complete(Option<HeaderMap>),
    Failed(BodyError),
}

impl Shared {
    /// A body whose chunks are all kept until [`Shared::stop_keeping`],
    /// taken from `held` as they come; then `window` bytes either side of
    /// the fastest reader.
    pub(crate) fn new(window: usize, held: Option<Reservation>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                first: 0,
                kept: 0,
                keep_all: true,
                replay: false,
                window: window.max(1),
                fastest: 0,
                at: BTreeMap::new(),
                readers: 0,
                end: None,
                wakers: Vec::new(),
                held,
                pushed: 0,
            }),
            room: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reader from the first chunk (the leader's, made before any chunk
    /// can be gone).
    pub(crate) fn reader(self: &Arc<Self>) -> Reader {
        let mut state = self.state();
        self.register(&mut state)
    }

    /// A reader from the first chunk, if the first chunk is still kept.
    pub(crate) fn try_reader(self: &Arc<Self>) -> Option<Reader> {
        let mut state = self.state();
        (state.first == 0).then(|| self.register(&mut state))
    }

    fn register(self: &Arc<Self>, state: &mut State) -> Reader {
        state.readers += 1;
        state.moved(None, Some(0));
        Reader {
            shared: Arc::clone(self),
            next: 0,
            trailers_sent: false,
            done: false,
        }
    }

    /// Appends a chunk from the origin. While every chunk is kept, it is
    /// taken from the budget; false if the budget cannot take it (the chunk
    /// is appended all the same, and the caller stops keeping).
    pub(crate) fn push(&self, chunk: Bytes) -> bool {
        let mut state = self.state();
        let mut fits = true;
        state.pushed = state.pushed.saturating_add(chunk.len());
        let pushed = state.pushed;
        if (state.keep_all || state.replay)
            && let Some(held) = &mut state.held
        {
            let more = pushed.saturating_sub(held.bytes());
            fits = more == 0 || held.grow(more);
        }
        if !fits && state.replay {
            state.replay = false;
            state.held = None;
        }
        state.kept += chunk.len();
        state.chunks.push_back(chunk);
        state.trim();
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        fits
    }

    /// From now on, the body will not be stored: it is kept from its first
    /// byte while the budget allows, then only what readers still need.
    pub(crate) fn stop_keeping(&self) {
        let mut state = self.state();
        state.keep_all = false;
        state.replay = state.held.is_some();
        state.trim();
    }

    /// Waits until the origin may be read further: always while every chunk
    /// is kept; else once the fastest reader has taken every chunk that
    /// came and less than a window is kept, cutting off the slowest readers
    /// if they keep a full window waiting for [`STALL`]. False when no
    /// request reads the body any more.
    pub(crate) async fn room(&self) -> bool {
        loop {
            let mut notified = pin!(self.room.notified());
            notified.as_mut().enable();
            {
                let state = self.state();
                if state.keep_all {
                    return true;
                }
                if state.readers == 0 {
                    return false;
                }
                if state.ahead() == 0 && (state.replay || state.kept < state.window) {
                    return true;
                }
            }
            if tokio::time::timeout(STALL, notified).await.is_err() {
                let mut state = self.state();
                if state.ahead() == 0 {
                    state.cut_to_window();
                }
            }
        }
    }

    /// Ends the body: complete, with its trailers, or failed.
    pub(crate) fn complete(&self, trailers: Option<HeaderMap>) {
        self.end(End::Complete(trailers));
    }

    pub(crate) fn fail(&self, error: BodyError) {
        self.end(End::Failed(error));
    }

    fn end(&self, end: End) {
        let mut state = self.state();
        state.end.get_or_insert(end);
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The whole body, when it ended complete with every chunk kept, in one
    /// buffer (a copy, unless it came in one chunk). When nobody reads it,
    /// the chunks are let go and their budget is handed over with it, to
    /// be held until the entry is stored; else readers still need them.
    pub(crate) fn take_whole(&self) -> Option<(Bytes, Option<HeaderMap>, Option<Reservation>)> {
        let mut state = self.state();
        let Some(End::Complete(trailers)) = &state.end else {
            return None;
        };
        if !state.keep_all || state.first != 0 {
            return None;
        }
        let trailers = trailers.clone();
        let data = match state.chunks.len() {
            0 => Bytes::new(),
            1 => state.chunks[0].clone(),
            _ => {
                let mut data = BytesMut::with_capacity(state.kept);
                for chunk in &state.chunks {
                    data.extend_from_slice(chunk);
                }
                data.freeze()
            }
        };
        let held = if state.readers == 0 {
            state.chunks.clear();
            state.kept = 0;
            state.held.take()
        } else {
            None
        };
        Some((data, trailers, held))
    }

    /// Whether a new reader would get the body from its first chunk.
    pub(crate) fn replayable(&self) -> bool {
        self.state().first == 0
    }

    /// How many requests read the body now.
    #[cfg(test)]
    pub(crate) fn readers(&self) -> usize {
        self.state().readers
    }
}

impl State {
    /// A reader moved from chunk `from` to chunk `to` (`None`: it came, or
    /// left).
    fn moved(&mut self, from: Option<usize>, to: Option<usize>) {
        if let Some(from) = from
            && let Some(count) = self.at.get_mut(&from)
        {
            *count -= 1;
            if *count == 0 {
                self.at.remove(&from);
            }
        }
        if let Some(to) = to {
            *self.at.entry(to).or_default() += 1;
        }
    }

    /// The bytes kept that the fastest reader has not read yet.
    fn ahead(&self) -> usize {
        let read = self.fastest.saturating_sub(self.first).min(self.chunks.len());
        self.chunks.iter().skip(read).map(Bytes::len).sum()
    }

    /// Outside keep-all and replay, drops the chunks every
    /// reader left has read.
    fn trim(&mut self) {
        if self.keep_all {
            return;
        }
        if self.replay {
            return;
        }
        // Readers already cut off hold nothing back.
        let slowest = self
            .at
            .range(self.first..)
            .next()
            .map_or(self.fastest, |(&at, _)| at);
        while self.first < slowest.min(self.fastest)
            && let Some(oldest) = self.chunks.pop_front()
        {
            self.kept -= oldest.len();
            self.first += 1;
        }
    }

    /// Drops the oldest chunks until less than a window is kept: the
    /// readers still there are cut off.
    fn cut_to_window(&mut self) {
        self.replay = false;
        self.held = None;
        while self.kept >= self.window
            && let Some(oldest) = self.chunks.pop_front()
        {
            self.kept -= oldest.len();
            self.first += 1;
        }
    }
}

/// One request's cursor in a [`Shared`] body.
pub(crate) struct Reader {
    shared: Arc<Shared>,
    next: usize,
    trailers_sent: bool,
    done: bool,
}

impl Reader {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut state = self.shared.state();
        if self.next < state.first {
            self.done = true;
            state.moved(Some(self.next), None);
            return Poll::Ready(Some(Err(BodyError::fell_behind())));
        }
        if let Some(chunk) = state.chunks.get(self.next - state.first).cloned() {
            state.moved(Some(self.next), Some(self.next + 1));
            self.next += 1;
            state.fastest = state.fastest.max(self.next);
            state.trim();
            drop(state);
            self.shared.room.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let ended = match &state.end {
            Some(End::Complete(trailers)) => Some(Ok(trailers.clone())),
            Some(End::Failed(error)) => Some(Err(error.clone())),
            None => None,
        };
        match ended {
            Some(ended) => {
                self.done = true;
                state.moved(Some(self.next), None);
                Poll::Ready(match ended {
                    Ok(trailers) => {
                        let trailers = (!self.trailers_sent).then_some(trailers).flatten();
                        self.trailers_sent = true;
                        trailers.map(|t| Ok(Frame::trailers(t)))
                    }
                    Err(error) => Some(Err(error)),
                })
            }
            None => {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.done
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        state.readers -= 1;
        if !self.done {
            state.moved(Some(self.next), None);
            state.trim();
        }
        drop(state);
        self.shared.room.notify_one();
    }
}

#[cfg(test)]
mod tests;

//! Unit tests of `shared`: readers at their own pace, the window, failure.

use std::{error::Error, time::Duration};

use bytes::Bytes;

use super::*;
use crate::body::Budget;

fn chunk(i: u8, len: usize) -> Bytes {
    Bytes::from(vec![i; len])
}

/// The next frame of `reader`, if one is there without waiting.
fn next(reader: &mut Reader) -> Option<Option<Result<Frame<Bytes>, BodyError>>> {
    let waker = Waker::noop();
    match reader.poll_frame(&mut Context::from_waker(waker)) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

fn data(frame: Option<Option<Result<Frame<Bytes>, BodyError>>>) -> Bytes {
    frame
        .expect("ready")
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data")
}

#[test]
fn every_reader_gets_every_chunk_at_its_own_pace_and_a_late_one_replays() {
    let shared = Shared::new(1024, None);
    let mut fast = shared.reader();
    shared.push(chunk(1, 10));
    assert_eq!(data(next(&mut fast)), chunk(1, 10));
    assert!(next(&mut fast).is_none(), "nothing more yet: it waits");
    shared.push(chunk(2, 10));
    let mut late = shared.reader();
    assert_eq!(data(next(&mut late)), chunk(1, 10), "from the first chunk");
    assert_eq!(data(next(&mut late)), chunk(2, 10));
    assert_eq!(data(next(&mut fast)), chunk(2, 10));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("valid"));
    shared.complete(Some(trailers.clone()));
    for reader in [&mut fast, &mut late] {
        let frame = next(reader).expect("ready").expect("trailers").expect("no error");
        assert_eq!(frame.into_trailers().expect("trailers"), trailers);
        assert!(matches!(next(reader), Some(None)), "then the end");
    }
    let (whole, _, _) = shared.take_whole().expect("kept whole");
    assert_eq!(whole, [chunk(1, 10), chunk(2, 10)].concat());
}

#[test]
fn a_failure_reaches_every_reader_as_an_error_after_what_came() {
    let shared = Shared::new(1024, None);
    let (mut a, mut b) = (shared.reader(), shared.reader());
    shared.push(chunk(1, 10));
    shared.fail(BodyError::inner("connection reset"));
    for reader in [&mut a, &mut b] {
        assert_eq!(data(next(reader)), chunk(1, 10));
        let error = next(reader)
            .expect("ready")
            .expect("a frame")
            .expect_err("an error");
        assert!(!error.is_fell_behind());
        assert_eq!(
            error.source().expect("the origin's").to_string(),
            "connection reset"
        );
        assert!(matches!(next(reader), Some(None)));
    }
    assert!(shared.take_whole().is_none(), "a failed body is never whole");
}

#[tokio::test(start_paused = true)]
async fn past_keeping_a_reader_that_keeps_a_full_window_waiting_is_cut_off() {
    let shared = Shared::new(20, None);
    let (mut fast, mut slow) = (shared.reader(), shared.reader());
    shared.stop_keeping();
    let kept = |shared: &Shared| {
        let state = shared.state();
        (state.first, state.kept)
    };
    for i in 0..2 {
        assert!(shared.room().await);
        shared.push(chunk(i, 10));
        assert_eq!(data(next(&mut fast)), chunk(i, 10));
    }
    assert_eq!(kept(&shared), (0, 20), "kept for the slow one");
    let start = tokio::time::Instant::now();
    assert!(shared.room().await, "room, once the slow one is cut off");
    assert_eq!(start.elapsed(), STALL, "after the slow one had its chance");
    assert_eq!(kept(&shared), (1, 10), "less than a window kept");
    let error = next(&mut slow)
        .expect("ready")
        .expect("a frame")
        .expect_err("cut off");
    assert!(error.is_fell_behind());
    assert!(matches!(next(&mut slow), Some(None)), "and nothing after");
    assert!(shared.take_whole().is_none(), "not kept whole");
    shared.push(chunk(2, 10));
    assert_eq!(data(next(&mut fast)), chunk(2, 10), "the fast one goes on");
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_catches_up_in_time_is_not_cut_off() {
    let shared = Shared::new(20, None);
    let (mut fast, mut slow) = (shared.reader(), shared.reader());
    shared.stop_keeping();
    for i in 0..2 {
        shared.push(chunk(i, 10));
        assert_eq!(data(next(&mut fast)), chunk(i, 10));
    }
    let room = tokio::spawn({
        let shared = Arc::clone(&shared);
        async move { shared.room().await }
    });
    tokio::time::sleep(STALL / 2).await;
    assert_eq!(data(next(&mut slow)), chunk(0, 10));
    assert!(room.await.expect("no panic"));
    assert_eq!(data(next(&mut slow)), chunk(1, 10), "all of it");
}

#[tokio::test(start_paused = true)]
async fn past_keeping_the_origin_is_read_as_fast_as_the_fastest_reader_takes_it() {
    let shared = Shared::new(20, None);
    let mut reader = shared.reader();
    shared.stop_keeping();
    assert!(shared.room().await, "nothing waiting to be read");
    shared.push(chunk(1, 10));
    let waits = tokio::time::timeout(Duration::from_secs(1), shared.room()).await;
    assert!(waits.is_err(), "no room until the reader takes it");
    let room = tokio::spawn({
        let shared = Arc::clone(&shared);
        async move { shared.room().await }
    });
    assert_eq!(data(next(&mut reader)), chunk(1, 10));
    assert!(room.await.expect("no panic"), "room again");
    assert_eq!(shared.state().kept, 0, "read by every reader: gone");
    drop(reader);
    assert_eq!(shared.readers(), 0);
    assert!(!shared.room().await, "nobody reads: no reason to go on");
}

#[test]
fn kept_chunks_are_taken_from_the_budget_until_it_is_spent() {
    let budget = Budget::new(25);
    let shared = Shared::new(1024, Some(Reservation::new(&budget)));
    assert!(shared.push(chunk(1, 10)));
    assert!(shared.push(chunk(2, 10)));
    assert!(!shared.push(chunk(3, 10)), "past 25");
    assert_eq!(budget.used(), 20);
    shared.stop_keeping();
    assert_eq!(
        budget.used(),
        20,
        "kept for late readers while the budget has room"
    );
    let budget = Budget::new(25);
    let shared = Shared::new(15, Some(Reservation::new(&budget)));
    shared.stop_keeping();
    let mut late = None;
    for i in 0..2 {
        shared.push(chunk(i, 10));
        late.get_or_insert_with(|| shared.try_reader().expect("from the start"));
    }
    assert_eq!(budget.used(), 20, "past the window, while the budget has room");
    assert!(shared.try_reader().is_some(), "still from the start");
    shared.push(chunk(2, 10));
    assert_eq!(budget.used(), 0, "past the budget: given back");
    let mut late = late.expect("a reader");
    for i in 0..3 {
        assert_eq!(data(next(&mut late)), chunk(i, 10));
    }
    assert!(
        shared.try_reader().is_none(),
        "read by all: a reader now would miss the start"
    );
}

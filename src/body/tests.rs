//! Reading origin bodies up to a limit, and replaying what was read.

use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody};

use super::*;

type Frames = Vec<Result<Frame<Bytes>, &'static str>>;

const PATIENCE: Duration = Duration::from_secs(30);

fn stream(frames: Frames) -> StreamBody<futures_util::stream::Iter<<Frames as IntoIterator>::IntoIter>> {
    StreamBody::new(futures_util::stream::iter(frames))
}

fn data(s: &'static str) -> Result<Frame<Bytes>, &'static str> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

/// The body's bytes, trailers and error, if any, as the innermost error's
/// message (the origin's, which a `BodyError` carries as its source).
async fn read_all<B>(body: B) -> (Vec<u8>, Option<HeaderMap>, Option<String>)
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + 'static,
{
    let mut body = Box::pin(body);
    let (mut out, mut trailers) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(d) => out.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Err(e) => {
                let mut root: &dyn std::error::Error = &e;
                while let Some(source) = root.source() {
                    root = source;
                }
                return (out, trailers, Some(root.to_string()));
            }
        }
    }
    (out, trailers, None)
}

#[tokio::test]
async fn a_body_within_the_limit_is_collected_whole_with_its_trailers() {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = stream(vec![
        data("hello "),
        data("world"),
        Ok(Frame::trailers(t.clone())),
    ]);
    let Collected::Complete { data, trailers } = collect(body, 11, PATIENCE).await else {
        panic!("11 bytes fit an 11-byte limit");
    };
    assert_eq!(&data[..], b"hello world");
    assert_eq!(trailers, Some(t.clone()));
    let (bytes, replayed, _) = read_all(StampedeBody::<Full<Bytes>>::buffered(data, trailers)).await;
    assert_eq!((&bytes[..], replayed), (&b"hello world"[..], Some(t)));
}

#[tokio::test]
async fn a_body_over_the_limit_is_replayed_untouched() {
    let body = stream(vec![data("hello "), data("world"), data("!")]);
    let Collected::Partial(partial) = collect(body, 8, PATIENCE).await else {
        panic!("12 bytes do not fit 8");
    };
    let (bytes, _, error) = read_all(partial).await;
    assert_eq!(&bytes[..], b"hello world!");
    assert_eq!(error, None);
}

#[tokio::test]
async fn a_body_whose_length_is_known_to_be_too_large_is_not_read() {
    let body = Full::new(Bytes::from_static(b"0123456789"));
    let Collected::Partial(partial) = collect(body, 4, PATIENCE).await else {
        panic!("10 bytes do not fit 4");
    };
    let hint = partial.size_hint();
    assert_eq!((hint.lower(), hint.upper()), (10, Some(10)));
    let (bytes, _, error) = read_all(partial).await;
    assert_eq!((&bytes[..], error), (&b"0123456789"[..], None));
}

#[tokio::test]
async fn a_body_that_fails_midway_gives_what_was_read_then_the_error() {
    let body = stream(vec![data("part"), Err("connection reset"), data("never")]);
    let Collected::Partial(partial) = collect(body, 1024, PATIENCE).await else {
        panic!("a failed body is not complete");
    };
    let (bytes, _, error) = read_all(partial).await;
    assert_eq!(
        (&bytes[..], error),
        (&b"part"[..], Some("connection reset".to_owned()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_patience_is_handed_on_as_it_comes() {
    use futures_util::StreamExt;
    let slow =
        futures_util::stream::iter(vec![(0, "first "), (60, "and last")]).then(|(wait, text)| async move {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            Ok::<_, &'static str>(Frame::data(Bytes::from_static(text.as_bytes())))
        });
    let start = tokio::time::Instant::now();
    let Collected::Partial(partial) = collect(StreamBody::new(slow), 1024, Duration::from_secs(1)).await
    else {
        panic!("a minute is past a second's patience");
    };
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let (bytes, _, error) = read_all(partial).await;
    assert_eq!((&bytes[..], error), (&b"first and last"[..], None));
}

#[tokio::test]
async fn an_empty_body_is_complete_and_ends_at_once() {
    let Collected::Complete { data, trailers } = collect(Full::new(Bytes::new()), 0, PATIENCE).await else {
        panic!("nothing fits any limit");
    };
    let body = StampedeBody::<Full<Bytes>>::buffered(data, trailers);
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
}

#[tokio::test]
async fn a_complete_body_holds_its_buffer_in_the_budget_until_it_is_let_go() {
    let budget = Budget::new(100);
    let body = stream(vec![data("hello "), data("world")]);
    let (collected, held) = collect_within(body, 1024, PATIENCE, Some(&budget)).await;
    let Collected::Complete { data, .. } = collected else {
        panic!("11 bytes fit both bounds");
    };
    assert_eq!((&data[..], held.over_budget), (&b"hello world"[..], false));
    assert_eq!(budget.used(), 12, "its buffer, grown to twice its first chunk");
    drop(held);
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn the_buffer_never_grows_past_the_limit() {
    let budget = Budget::new(100);
    let body = stream(vec![data("hello "), data("worl")]);
    let (collected, _held) = collect_within(body, 10, PATIENCE, Some(&budget)).await;
    assert!(matches!(collected, Collected::Complete { .. }));
    assert_eq!(budget.used(), 10, "not 12");
}

#[tokio::test]
async fn a_body_the_budget_cannot_take_is_handed_on_whole() {
    let budget = Budget::new(8);
    let mut other = Reservation::new(&budget);
    assert!(other.grow(2));
    let body = stream(vec![data("hello "), data("world"), data("!")]);
    let (collected, held) = collect_within(body, 1024, PATIENCE, Some(&budget)).await;
    let Collected::Partial(partial) = collected else {
        panic!("a buffer of 12 does not fit the 6 left");
    };
    assert!(held.over_budget);
    drop(held);
    assert_eq!(budget.used(), 2 + 6, "what was read first is still held");
    let (bytes, _, error) = read_all(partial).await;
    assert_eq!((&bytes[..], error), (&b"hello world!"[..], None));
    assert_eq!(budget.used(), 2, "sent, so given back");
}

#[tokio::test]
async fn what_was_read_is_given_back_once_it_is_sent() {
    let budget = Budget::new(100);
    let body = stream(vec![data("hello "), data("world"), data("!"), data("?")]);
    let (collected, held) = collect_within(body, 12, PATIENCE, Some(&budget)).await;
    let Collected::Partial(partial) = collected else {
        panic!("13 bytes are over 12");
    };
    assert!(!held.over_budget, "over the limit, not the budget");
    assert_eq!(budget.used(), 12, "the frame past the limit is not gathered");
    let mut partial = Box::pin(partial);
    let first = partial
        .frame()
        .await
        .and_then(Result::ok)
        .and_then(|f| f.into_data().ok());
    assert_eq!(
        first.as_deref(),
        Some(&b"hello world!"[..]),
        "gathered in one buffer"
    );
    assert_eq!(budget.used(), 0);
    let (rest, _, error) = read_all(partial).await;
    assert_eq!((&rest[..], error), (&b"?"[..], None));
}

#[tokio::test]
async fn a_body_dropped_unsent_gives_back_what_it_held() {
    let budget = Budget::new(100);
    let body = stream(vec![data("hello "), data("world"), data("!")]);
    let (collected, _held) = collect_within(body, 8, PATIENCE, Some(&budget)).await;
    let Collected::Partial(partial) = collected else {
        panic!("12 bytes are over 8");
    };
    assert_eq!(budget.used(), 6);
    drop(partial);
    assert_eq!(budget.used(), 0, "its client gone, nothing is kept");
}

#[tokio::test]
async fn a_broken_body_keeps_its_share_only_until_dropped() {
    let budget = Budget::new(100);
    let body = stream(vec![data("part"), Err("connection reset")]);
    let (collected, _held) = collect_within(body, 1024, PATIENCE, Some(&budget)).await;
    let Collected::Partial(partial) = collected else {
        panic!("a failed body is not complete");
    };
    assert_eq!(budget.used(), 4);
    drop(partial);
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn a_body_of_announced_length_is_reserved_whole_or_not_read_at_all() {
    let budget = Budget::new(16);
    let ten = |text: &'static [u8]| Full::new(Bytes::from_static(text));
    let (collected, held) = collect_within(ten(b"0123456789"), 1024, PATIENCE, Some(&budget)).await;
    assert!(matches!(collected, Collected::Complete { .. }) && !held.over_budget);
    assert_eq!(budget.used(), 10);

    let (collected, second) = collect_within(ten(b"abcdefghij"), 1024, PATIENCE, Some(&budget)).await;
    let Collected::Partial(partial) = collected else {
        panic!("10 bytes do not fit the 6 left");
    };
    assert!(second.over_budget);
    assert_eq!(budget.used(), 10, "nothing of the second body was taken");
    assert_eq!(partial.size_hint().exact(), Some(10), "nor read");
    let (bytes, _, error) = read_all(partial).await;
    assert_eq!((&bytes[..], error), (&b"abcdefghij"[..], None));
    drop(held);
    assert_eq!(budget.used(), 0);
}

//! The bytes a layer's flights buffer together stay within its budget
//! (`StampedeLayer::max_buffered_bytes`), whether their clients read or
//! left at once, and no client loses a byte to it. Holds, in
//! `src/docs/guarantees.md`, the buffering part of
//! `#what-a-memory-store-keeps-is-what-it-counts`.
//!
//! What the process holds of the origin's bodies is measured without
//! trusting the layer's own accounting, two ways added together: the
//! origin's chunks count themselves while they are alive
//! (`Bytes::from_owner`; each is a view of one static buffer, so they cost
//! no memory of their own), and this test binary's global allocator counts
//! whatever copies are made of them. Each body stops one chunk short of its
//! end at a gate the test opens, which holds every flight at the point where
//! it has buffered the most: the measure is taken there. The tests take
//! turns, so that the allocator counts one test at a time.
//!
//! Nothing here waits on a timer: the runtime's clock is real, and the
//! layer's only timer (`max_body_wait`, 30 s) never fires.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use cap::Cap;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, StreamBody, combinators::UnsyncBoxBody};
use tokio::sync::{Semaphore, watch};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_stampede::{MemoryStore, StampedeLayer};

#[global_allocator]
static ALLOCATED: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// One test at a time, for the allocator's count.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a flight may hold besides the bytes of its body: its tasks, its
/// request and response, and the one chunk a flight cut off by the budget
/// holds beside it on the way to its client.
const PER_FLIGHT: usize = 64 * 1024;

/// One chunk as an origin's connection would deliver it.
const CHUNK: usize = 16 * 1024;

static DOTS: [u8; CHUNK] = [b'.'; CHUNK];

/// What the origin's bodies hold alive, and its gate.
struct Lab {
    live: AtomicUsize,
    /// Chunks per body, the announced length (if any) aside.
    chunks: usize,
    sized: bool,
    gate: watch::Sender<bool>,
    /// A permit for each body that reached the gate or was dropped first.
    settled: Semaphore,
    /// A permit for each origin call.
    called: Semaphore,
    calls: AtomicUsize,
}

impl Lab {
    fn new(chunks: usize, sized: bool) -> Arc<Self> {
        Arc::new(Self {
            live: AtomicUsize::new(0),
            chunks,
            sized,
            gate: watch::channel(false).0,
            settled: Semaphore::new(0),
            called: Semaphore::new(0),
            calls: AtomicUsize::new(0),
        })
    }

    /// The bytes of the origin's chunks alive now, and of every copy made
    /// since the allocator counted `before`.
    fn held(&self, before: usize) -> usize {
        self.live.load(Ordering::SeqCst) + ALLOCATED.allocated().saturating_sub(before)
    }

    fn chunk(self: &Arc<Self>) -> Bytes {
        self.live.fetch_add(CHUNK, Ordering::SeqCst);
        Bytes::from_owner(Counted(Arc::clone(self)))
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Waits until `n` bodies reached the gate or were dropped before it.
    async fn settled(&self, n: usize) {
        let n = u32::try_from(n).expect("a few bodies");
        self.settled.acquire_many(n).await.expect("open").forget();
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The length of each of its bodies.
    fn len(&self, key: &str) -> usize {
        head(key).len() + self.chunks * CHUNK + tail(key).len()
    }

    async fn called(&self, n: usize) {
        let n = u32::try_from(n).expect("a few calls");
        self.called.acquire_many(n).await.expect("open").forget();
    }
}

/// A chunk of the origin's, counted while any view of it is alive.
struct Counted(Arc<Lab>);

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &DOTS
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.live.fetch_sub(CHUNK, Ordering::SeqCst);
    }
}

/// Adds a permit to `settled` once: at the gate, or when dropped before it.
struct Settle(Option<Arc<Lab>>);

impl Settle {
    fn fire(&mut self) {
        if let Some(lab) = self.0.take() {
            lab.settled.add_permits(1);
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.fire();
    }
}

type OriginBody = UnsyncBoxBody<Bytes, Infallible>;

fn head(key: &str) -> String {
    format!("{key}:")
}

fn tail(key: &str) -> String {
    format!(":{key}")
}

/// The body of `key`: its name, `lab.chunks` counted chunks, the last one
/// behind the gate, and its name again.
fn body(key: String, lab: &Arc<Lab>) -> OriginBody {
    let len = lab.len(&key) as u64;
    let settle = Settle(Some(Arc::clone(lab)));
    let state = (0, Arc::clone(lab), settle, lab.gate.subscribe());
    let frames = futures_util::stream::unfold(state, move |(step, lab, mut settle, mut gate)| {
        let key = key.clone();
        async move {
            let data = match step {
                0 => Bytes::from(head(&key)),
                n if n < lab.chunks => lab.chunk(),
                n if n == lab.chunks => {
                    settle.fire();
                    gate.wait_for(|open| *open)
                        .await
                        .expect("the lab outlives its bodies");
                    lab.chunk()
                }
                n if n == lab.chunks + 1 => Bytes::from(tail(&key)),
                _ => return None,
            };
            Some((Ok(Frame::data(data)), (step + 1, lab, settle, gate)))
        }
    });
    let stream = StreamBody::new(frames);
    if lab.sized {
        Announced {
            inner: Box::pin(stream),
            left: len,
        }
        .boxed_unsync()
    } else {
        stream.boxed_unsync()
    }
}

/// A body that says its length, as one with `Content-Length` does.
struct Announced<B> {
    inner: std::pin::Pin<Box<B>>,
    left: u64,
}

impl<B: Body<Data = Bytes>> Body for Announced<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            let len = frame.data_ref().map_or(0, Bytes::len) as u64;
            self.left = self.left.saturating_sub(len);
        }
        polled
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// An origin whose path is the key of the body it answers, cacheable.
fn origin(
    lab: &Arc<Lab>,
) -> impl Service<Request<Empty<Bytes>>, Response = Response<OriginBody>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    let lab = Arc::clone(lab);
    routed(move |_| Arc::clone(&lab))
}

/// As [`origin`], each path answered from the lab `lab_of` it.
fn routed(
    lab_of: impl Fn(&str) -> Arc<Lab> + Clone + Send + 'static,
) -> impl Service<Request<Empty<Bytes>>, Response = Response<OriginBody>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |request: Request<Empty<Bytes>>| {
        let key = request.uri().path().to_owned();
        let lab = lab_of(&key);
        async move {
            lab.calls.fetch_add(1, Ordering::SeqCst);
            lab.called.add_permits(1);
            let response = Response::builder()
                .header("cache-control", "public, max-age=60")
                .body(body(key, &lab))
                .expect("valid response");
            Ok::<_, Infallible>(response)
        }
    })
}

fn get(key: &str) -> Request<Empty<Bytes>> {
    Request::get(key).body(Empty::new()).expect("valid request")
}

/// What a client got: its `Cache-Status`, and whether the body was whole
/// (its length, the key's name at both ends, dots between). Each chunk is
/// let go as soon as it is checked, as a client writing to its socket would.
async fn read<S, B>(service: S, key: String, chunks: usize) -> (String, bool)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes, Error: std::fmt::Debug>,
{
    let response = service.oneshot(get(&key)).await.expect("infallible");
    let status = response.headers()["cache-status"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let (head, tail) = (head(&key).into_bytes(), tail(&key).into_bytes());
    let len = head.len() + chunks * CHUNK + tail.len();
    let mut body = std::pin::pin!(response.into_body());
    let mut at = 0;
    let mut whole = true;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.expect("the origin's body does not fail").into_data() else {
            continue;
        };
        for (i, byte) in (at..).zip(data.iter()) {
            let expected = match i {
                i if i < head.len() => head[i],
                i if i >= len - tail.len() && i < len => tail[i - (len - tail.len())],
                _ => b'.',
            };
            whole &= *byte == expected;
        }
        at += data.len();
    }
    (status, whole && at == len)
}

/// What `keys` flights `held` at once stays within the default budget
/// (64 MiB), give or take `PER_FLIGHT` each.
fn within_the_default_budget(held: usize, keys: usize, whose: &str) {
    let bound = 64 * 1024 * 1024 + keys * PER_FLIGHT;
    assert!(
        held <= bound,
        "the flights held {} KiB at once{whose}; the budget allows {} KiB",
        held / 1024,
        bound / 1024
    );
}

/// The attack of issue 22 on a layer with its defaults (8 MiB bodies, a
/// 64 MiB budget): 32 distinct 4 MiB responses at once. What the flights
/// hold together stays within the budget, give or take `PER_FLIGHT` each;
/// and every client reads its body whole.
#[tokio::test]
async fn distinct_large_responses_buffer_no_more_than_the_default_budget_together() {
    const KEYS: usize = 32;
    let _turn = TURN.lock().await;
    let lab = Lab::new(4 * 1024 * 1024 / CHUNK, false);
    let layer = StampedeLayer::new(MemoryStore::new());
    let service = layer.layer(origin(&lab));
    let before = ALLOCATED.allocated();

    let clients: Vec<_> = (0..KEYS)
        .map(|i| tokio::spawn(read(service.clone(), format!("/large/{i}"), lab.chunks)))
        .collect();
    lab.settled(KEYS).await;
    let held = lab.held(before);
    lab.open();
    for client in clients {
        let (status, whole) = client.await.expect("client does not panic");
        assert!(whole, "a body arrived cut or mixed up ({status})");
    }

    within_the_default_budget(held, KEYS, "");
}

/// The same attack, each client gone as soon as its request reached the
/// origin: flights go on for the store, within the budget.
#[tokio::test]
async fn clients_that_leave_at_once_leave_no_more_than_the_default_budget_buffered() {
    const KEYS: usize = 32;
    let _turn = TURN.lock().await;
    let lab = Lab::new(4 * 1024 * 1024 / CHUNK, false);
    let layer = StampedeLayer::new(MemoryStore::new());
    let service = layer.layer(origin(&lab));
    let before = ALLOCATED.allocated();

    let clients: Vec<_> = (0..KEYS)
        .map(|i| tokio::spawn(service.clone().oneshot(get(&format!("/large/{i}")))))
        .collect();
    lab.called(KEYS).await;
    for client in clients {
        client.abort();
        // A response that came before the abort is dropped unread.
        drop(client.await);
    }
    lab.settled(KEYS).await;
    let held = lab.held(before);
    lab.open();

    within_the_default_budget(held, KEYS, " for clients that had left");
}

/// A body the budget cannot take streams whole to its client and its
/// waiter from one origin call, marked `body-not-stored` and counted; the
/// key does not pass, and once the budget has room again the key is
/// stored.
#[tokio::test]
async fn over_the_budget_a_response_streams_to_its_waiters_and_the_key_does_not_pass() {
    const BUDGET: usize = 64 * 1024;
    let _turn = TURN.lock().await;
    // Announced lengths are reserved whole: the holder takes all but
    // 16 KiB at once, and keeps it while it waits at its gate.
    let holder = Lab::new(3, true);
    let large = Lab::new(3, false);
    large.open();
    let layer = StampedeLayer::new(MemoryStore::new()).max_buffered_bytes(BUDGET);
    let service = layer.layer(routed({
        let (holder, large) = (Arc::clone(&holder), Arc::clone(&large));
        move |key| Arc::clone(if key == "/held" { &holder } else { &large })
    }));
    let held = tokio::spawn(read(service.clone(), "/held".to_owned(), holder.chunks));
    holder.settled(1).await;
    assert_eq!(layer.buffered_bytes(), holder.len("/held"));
    assert!(
        BUDGET - holder.len("/held") < CHUNK,
        "a chunk of /large no longer fits"
    );

    let (leader, waiter) = tokio::join!(
        read(service.clone(), "/large".to_owned(), large.chunks),
        read(service.clone(), "/large".to_owned(), large.chunks),
    );
    let not_stored = "tower-stampede; fwd=miss; fwd-status=200; detail=body-not-stored";
    assert_eq!(leader, (not_stored.to_owned(), true));
    let collapsed = "tower-stampede; fwd=miss; fwd-status=200; collapsed; detail=body-not-stored";
    assert_eq!(waiter, (collapsed.to_owned(), true));
    assert_eq!(large.calls(), 1, "the waiter read the leader's body as it came");
    assert_eq!(layer.stats().over_budget, 1);

    let again = read(service.clone(), "/large".to_owned(), large.chunks).await;
    assert_eq!(
        again,
        (not_stored.to_owned(), true),
        "a flight again, not hit-for-pass"
    );
    assert_eq!((large.calls(), layer.stats().over_budget), (2, 2));

    holder.open();
    // Its body streamed (it waited at the gate): its head could not say
    // whether it would be stored. It was.
    let (status, whole) = held.await.expect("client does not panic");
    assert!(whole && !status.contains("detail"), "{status}");
    assert_eq!(
        layer.buffered_bytes(),
        0,
        "its flight over, the holder gave its bytes back"
    );
    let (status, _) = read(service.clone(), "/held".to_owned(), holder.chunks).await;
    assert!(status.contains("; hit"), "{status}");
    let (status, whole) = read(service.clone(), "/large".to_owned(), large.chunks).await;
    assert!(whole && status.contains("; stored"), "{status}");
    let (status, whole) = read(service, "/large".to_owned(), large.chunks).await;
    assert!(whole && status.contains("; hit"), "{status}");
    assert_eq!(large.calls(), 3);
}

/// Flights whose clients left at once go on for the store as far as the
/// budget lets them: those it holds whole are stored and answer the next
/// requests; the others were dropped with their clients and are fetched
/// again; every byte is given back.
#[tokio::test]
async fn flights_that_fit_the_budget_are_stored_though_their_clients_left() {
    const KEYS: usize = 16;
    const BUDGET: usize = 1024 * 1024;
    let _turn = TURN.lock().await;
    let lab = Lab::new(16, true);
    let layer = StampedeLayer::new(MemoryStore::new()).max_buffered_bytes(BUDGET);
    let service = layer.layer(origin(&lab));
    let before = ALLOCATED.allocated();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("/k{i:02}")).collect();
    let fit = BUDGET / lab.len(&keys[0]);
    assert!(fit < KEYS);

    let clients: Vec<_> = keys
        .iter()
        .map(|key| tokio::spawn(service.clone().oneshot(get(key))))
        .collect();
    lab.called(KEYS).await;
    for client in clients {
        client.abort();
        drop(client.await);
    }
    lab.settled(KEYS).await;
    let held = lab.held(before);
    assert!(held <= BUDGET + KEYS * PER_FLIGHT, "held {held} bytes");
    assert_eq!(layer.stats().over_budget as usize, KEYS - fit);
    lab.open();

    let mut kept = 0;
    for key in &keys {
        let (status, whole) = read(service.clone(), key.clone(), lab.chunks).await;
        assert!(whole, "{key}: {status}");
        if status.contains("; hit") || status.contains("; collapsed") {
            kept += 1;
        }
    }
    assert_eq!(kept, fit);
    assert_eq!(lab.calls(), KEYS + (KEYS - fit));
    assert_eq!(layer.buffered_bytes(), 0);
}

/// A body larger than the whole budget could never be stored: it is one
/// over `max_body_bytes`, not a sign of a spent budget; it streams, and,
/// being merely large, does not make the key pass.
#[tokio::test]
async fn a_body_larger_than_the_whole_budget_is_one_over_max_body_bytes() {
    let _turn = TURN.lock().await;
    let lab = Lab::new(2, false);
    lab.open();
    let layer = StampedeLayer::new(MemoryStore::new()).max_buffered_bytes(CHUNK);
    let service = layer.layer(origin(&lab));

    let (status, whole) = read(service.clone(), "/k".to_owned(), lab.chunks).await;
    assert!(whole);
    assert_eq!(
        status,
        "tower-stampede; fwd=miss; fwd-status=200; detail=body-not-stored"
    );
    assert_eq!(layer.stats().over_budget, 0);
    let (status, whole) = read(service, "/k".to_owned(), lab.chunks).await;
    assert!(whole);
    assert_eq!(
        status, "tower-stampede; fwd=miss; fwd-status=200; detail=body-not-stored",
        "a flight again, not hit-for-pass"
    );
}

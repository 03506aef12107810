//! A flight's body streams to every request collapsed onto it as it
//! arrives, from a real HTTP origin: an axum server on a loopback port,
//! reached through hyper's pooled client, as the `proxy` example does. The
//! origin sends its body in chunks the test releases one gate at a time, so
//! that "before the end" is an order of events, not a time.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    response::IntoResponse,
    routing,
};
use bytes::Bytes;
use common::within;
use http::{Request, Response, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_stampede::{MemoryStore, StampedeLayer, Store};

const CHUNK: usize = 64 * 1024;

/// The origin: `/body/{chunks}` answers `chunks` chunks of `CHUNK` bytes
/// (chunk `i` all bytes `i`), with `Content-Length`, each released by the
/// gate reaching its number; `/broken/{chunks}` breaks its connection after
/// that many.
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    /// How many chunks may be sent.
    gate: watch::Sender<usize>,
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Lets `n` chunks go in all.
    fn release(&self, n: usize) {
        self.gate.send_replace(n);
    }
}

fn chunk(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

fn expected(chunks: usize) -> Vec<u8> {
    (0..chunks).flat_map(|i| chunk(i).to_vec()).collect()
}

async fn body(State(origin): State<Origin>, Path(chunks): Path<usize>) -> impl IntoResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    let gate = origin.gate.subscribe();
    let frames = futures_util::stream::unfold((0, gate), move |(i, mut gate)| async move {
        if i == chunks {
            return None;
        }
        gate.wait_for(|open| *open > i).await.ok()?;
        Some((Ok::<_, Infallible>(chunk(i)), (i + 1, gate)))
    });
    (
        [
            (header::CONTENT_LENGTH, (chunks * CHUNK).to_string()),
            (header::CACHE_CONTROL, "max-age=60".to_owned()),
        ],
        Body::from_stream(frames),
    )
}

async fn broken(State(origin): State<Origin>, Path(chunks): Path<usize>) -> impl IntoResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    let gate = origin.gate.subscribe();
    let frames = futures_util::stream::unfold((0, gate), move |(i, mut gate)| async move {
        gate.wait_for(|open| *open > i).await.ok()?;
        let frame = if i < chunks {
            Ok(chunk(i))
        } else {
            Err(std::io::Error::other("the origin broke"))
        };
        Some((frame, (i + 1, gate)))
    });
    Body::from_stream(frames)
}

async fn serve(origin: Origin) -> SocketAddr {
    let app = Router::new()
        .route("/body/{chunks}", routing::get(body))
        .route("/broken/{chunks}", routing::get(broken))
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// The layer in front of the origin, over hyper's pooled client.
/// The layered service the tests call.
trait Proxied:
    Service<
        Request<Empty<Bytes>>,
        Response = Response<tower_stampede::StampedeBody<Incoming>>,
        Error = hyper_util::client::legacy::Error,
        Future: Send,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Proxied for S where
    S: Service<
            Request<Empty<Bytes>>,
            Response = Response<tower_stampede::StampedeBody<Incoming>>,
            Error = hyper_util::client::legacy::Error,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

async fn proxy(layer: &StampedeLayer<MemoryStore>) -> (Origin, impl Proxied) {
    let origin = Origin {
        calls: Arc::default(),
        gate: watch::Sender::new(0),
    };
    let address = serve(origin.clone()).await;
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let upstream = service_fn(move |mut request: Request<Empty<Bytes>>| {
        let client = client.clone();
        let path = request.uri().path().to_owned();
        *request.uri_mut() = Uri::try_from(format!("http://{address}{path}")).expect("valid");
        async move { client.request(request).await }
    });
    (origin, layer.layer(upstream))
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header(header::HOST, "origin.test")
        .body(Empty::new())
        .expect("valid")
}

/// A response's `Cache-Status`, and its body as a stream of frames.
struct Reading<B> {
    status: String,
    body: std::pin::Pin<Box<B>>,
    /// Bytes read past what [`Reading::take`] asked for.
    over: Vec<u8>,
}

impl<B: http_body::Body<Data = Bytes>> Reading<B> {
    fn of(response: Response<B>) -> Self {
        let status = response.headers()["cache-status"]
            .to_str()
            .expect("ascii")
            .to_owned();
        Self {
            status,
            body: Box::pin(response.into_body()),
            over: Vec::new(),
        }
    }

    /// The next `len` bytes (frames cut where they come), or fewer if the
    /// body ends, or its error.
    async fn take(&mut self, len: usize) -> Result<Vec<u8>, B::Error> {
        let mut bytes = std::mem::take(&mut self.over);
        while bytes.len() < len {
            match self.next_frame().await? {
                Some(data) => bytes.extend_from_slice(&data),
                None => break,
            }
        }
        if bytes.len() > len {
            self.over = bytes.split_off(len);
        }
        Ok(bytes)
    }

    /// The next data, or the body's end (`Ok(None)`) or error.
    async fn next_frame(&mut self) -> Result<Option<Bytes>, B::Error> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(error)) => return Err(error),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The rest of the body: its bytes, and its error if it failed.
    async fn rest(&mut self) -> (Vec<u8>, Option<B::Error>) {
        let mut bytes = std::mem::take(&mut self.over);
        loop {
            match self.next_frame().await {
                Ok(Some(data)) => bytes.extend_from_slice(&data),
                Ok(None) => return (bytes, None),
                Err(error) => return (bytes, Some(error)),
            }
        }
    }
}

/// `n` requests for `path`, each in its own task, once all but the first
/// wait on its flight: their heads.
async fn collapsed<S>(
    layer: &StampedeLayer<MemoryStore>,
    service: &S,
    n: usize,
    path: &str,
) -> Vec<Reading<tower_stampede::StampedeBody<Incoming>>>
where
    S: Proxied,
{
    let coalesced = layer.stats().coalesced;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (service, request) = (service.clone(), get(path));
            tokio::spawn(
                async move { Reading::of(service.oneshot(request).await.expect("the origin answers")) },
            )
        })
        .collect();
    within("every request joined the flight", async {
        while layer.stats().coalesced < coalesced + n as u64 - 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let mut heads = Vec::new();
    for task in tasks {
        heads.push(within("a head", task).await.expect("no panic"));
    }
    heads
}

/// Whether the layer's store holds an entry for `path`.
async fn stored(layer: &StampedeLayer<MemoryStore>, path: &str) -> bool {
    let key = format!("GET origin.test{path}");
    layer
        .store()
        .get(&key)
        .await
        .expect("the store answers")
        .is_some()
}

/// The leader's reading first, then the waiters'.
fn leader_first<B>(mut readings: Vec<Reading<B>>) -> Vec<Reading<B>> {
    readings.sort_by_key(|r| r.status.contains("collapsed"));
    assert!(
        !readings[0].status.contains("collapsed"),
        "{}",
        readings[0].status
    );
    assert!(readings[1..].iter().all(|r| r.status.contains("collapsed")));
    readings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_first_byte_when_the_leader_does() {
    let layer = StampedeLayer::new(MemoryStore::new());
    let (origin, service) = proxy(&layer).await;
    let mut readings = leader_first(collapsed(&layer, &service, 10, "/body/4").await);

    // One chunk out of four sent: everyone has it before the rest exists.
    origin.release(1);
    for reading in &mut readings {
        let first = within("the first chunk", reading.take(CHUNK))
            .await
            .expect("no error");
        assert!(first == chunk(0), "the first chunk: {} bytes", first.len());
    }
    origin.release(4);
    for reading in &mut readings {
        let (rest, error) = within("the rest", reading.rest()).await;
        assert!(error.is_none());
        assert!(rest == expected(4)[CHUNK..], "the rest: {} bytes", rest.len());
    }
    assert_eq!(origin.calls(), 1);
    let again = Reading::of(service.clone().oneshot(get("/body/4")).await.expect("answers"));
    assert!(again.status.contains("hit"), "stored whole: {}", again.status);
    assert!(
        stored(&layer, "/body/4").await,
        "the key the other tests look for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_to_store_streams_to_200_requests_from_one_call() {
    const CHUNKS: usize = 320; // 20 MiB, over the default 8 MiB.
    let layer = StampedeLayer::new(MemoryStore::new());
    let (origin, service) = proxy(&layer).await;
    let readings = collapsed(&layer, &service, 200, &format!("/body/{CHUNKS}")).await;
    let tasks: Vec<_> = readings
        .into_iter()
        .enumerate()
        .map(|(n, mut reading)| {
            tokio::spawn(async move {
                let (mut at, mut whole) = (0, true);
                while let Some(data) = reading.next_frame().await.expect("no error") {
                    // Every byte for some, the ends of each frame for all:
                    // 200 x 20 MiB is a lot to compare.
                    let expected = |i: usize| ((i / CHUNK) % 251) as u8;
                    whole &= if n % 50 == 0 {
                        data.iter().enumerate().all(|(i, &b)| b == expected(at + i))
                    } else {
                        data[0] == expected(at) && data[data.len() - 1] == expected(at + data.len() - 1)
                    };
                    at += data.len();
                }
                (reading.status, whole && at == CHUNKS * CHUNK)
            })
        })
        .collect();
    origin.release(CHUNKS);
    for task in tasks {
        let (status, whole) = within("a whole body", task).await.expect("no panic");
        assert!(whole, "{status}");
        assert!(status.ends_with("detail=body-not-stored"), "{status}");
    }
    assert_eq!(origin.calls(), 1, "200 requests, one origin call");
    let again = Reading::of(
        service
            .oneshot(get(&format!("/body/{CHUNKS}")))
            .await
            .expect("answers"),
    );
    assert!(
        !again.status.contains("hit") && !again.status.contains("hit-for-pass"),
        "not stored, and no pass: {}",
        again.status
    );
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_midway_ends_every_waiter_s_body_with_an_error() {
    let layer = StampedeLayer::new(MemoryStore::new());
    let (origin, service) = proxy(&layer).await;
    let mut readings = collapsed(&layer, &service, 10, "/broken/2").await;
    origin.release(2);
    for reading in &mut readings {
        for i in 0..2 {
            let data = within("a chunk before the break", reading.take(CHUNK))
                .await
                .expect("no error yet");
            assert!(data == chunk(i), "chunk {i}");
        }
    }
    origin.release(3);
    for reading in &mut readings {
        let (bytes, error) = within("the break", reading.rest()).await;
        assert!(bytes.is_empty(), "{} bytes after the break", bytes.len());
        assert!(
            error.is_some(),
            "never a body that looks whole: {}",
            reading.status
        );
    }
    assert_eq!(origin.calls(), 1);
    assert!(!stored(&layer, "/broken/2").await, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_waiter_delays_neither_the_others_nor_the_store() {
    const CHUNKS: usize = 64; // 4 MiB: stored.
    let layer = StampedeLayer::new(MemoryStore::new());
    let (origin, service) = proxy(&layer).await;
    let path = format!("/body/{CHUNKS}");
    let mut readings = leader_first(collapsed(&layer, &service, 10, &path).await);
    origin.release(CHUNKS);
    let mut stalled = readings.pop().expect("a waiter");
    let first = within("its first chunk", stalled.take(CHUNK))
        .await
        .expect("no error");
    assert!(first == chunk(0), "the first chunk: {} bytes", first.len());
    // It reads no further for now; the others read to the end.
    for mut reading in readings {
        let (bytes, error) = within("the whole body", reading.rest()).await;
        assert!(error.is_none());
        assert!(bytes == expected(CHUNKS), "{} bytes", bytes.len());
    }
    within("the entry is stored", async {
        loop {
            let again = Reading::of(service.clone().oneshot(get(&path)).await.expect("answers"));
            if again.status.contains("hit") {
                break;
            }
            // Not yet written: the flight's own write follows the body's
            // end, not the stalled reader.
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (rest, error) = within("the stalled one, at last", stalled.rest()).await;
    assert!(error.is_none());
    assert!(rest == expected(CHUNKS)[CHUNK..], "{} bytes", rest.len());
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_joins_late_replays_the_body_from_its_first_byte() {
    let layer = StampedeLayer::new(MemoryStore::new());
    let (origin, service) = proxy(&layer).await;
    let mut leader = collapsed(&layer, &service, 1, "/body/4").await.remove(0);
    origin.release(2);
    for i in 0..2 {
        let data = within("a chunk", leader.take(CHUNK)).await.expect("no error");
        assert!(data == chunk(i), "chunk {i}");
    }
    let mut late = Reading::of(
        within("the late head", service.clone().oneshot(get("/body/4")))
            .await
            .expect("answers"),
    );
    assert!(
        late.status.contains("collapsed"),
        "it joined the flight: {}",
        late.status
    );
    origin.release(4);
    let (bytes, error) = within("the late one's body", late.rest()).await;
    assert!(error.is_none());
    assert!(bytes == expected(4), "from the first byte: {} bytes", bytes.len());
    let (rest, _) = within("the leader's rest", leader.rest()).await;
    assert!(rest == expected(4)[2 * CHUNK..], "{} bytes", rest.len());
    assert_eq!(origin.calls(), 1);
}

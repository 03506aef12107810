//! `POST` requests cached as reads (gRPC unary calls, GraphQL queries): the
//! body is read, up to a limit, for its digest to join the key, and handed
//! back to the inner service unchanged.

use std::{fmt, future::Future, marker::PhantomData, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header::HeaderName};
use http_body::Body;
use sha2::{Digest, Sha256};

use super::{forward::forward, lookup::lookup};
use crate::{
    body::{Collected, StampedeBody, collect},
    plan::{Job, Read},
    rebuild::{Origin, SendBody},
    rules::status::{CacheStatus, Fwd},
    shared::Shared,
    store::Store,
};

/// The default of a layer: request bodies are never read, and `POST`
/// requests are never cached.
///
/// [`StampedeLayer::replay_requests`](crate::StampedeLayer::replay_requests)
/// replaces it with a [`Replay`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

/// How a layer that reads request bodies hands each one back to the inner
/// service: a function from the body as the layer read it (a
/// [`StampedeBody`] that yields the same frames the client sent) to the
/// inner service's body type. Made by
/// [`StampedeLayer::replay_requests`](crate::StampedeLayer::replay_requests).
pub struct Replay<F, B> {
    rebuild: Arc<F>,
    _body: PhantomData<fn(B) -> B>,
}

impl<F, B> Replay<F, B> {
    pub(crate) fn new(rebuild: F) -> Self {
        Self {
            rebuild: Arc::new(rebuild),
            _body: PhantomData,
        }
    }
}

impl<F, B> Clone for Replay<F, B> {
    fn clone(&self) -> Self {
        Self {
            rebuild: Arc::clone(&self.rebuild),
            _body: PhantomData,
        }
    }
}

impl<F, B> fmt::Debug for Replay<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay").finish_non_exhaustive()
    }
}

/// What the service needs of [`NoReplay`] and [`Replay`]. Public in a
/// private module: it bounds the service's `Service` impl, and no one
/// outside can implement or call it.
#[allow(unreachable_pub)]
pub trait Reader<B>: Clone + Send + Sync + 'static {
    /// Whether `POST` requests may be read at all.
    const READS: bool;

    /// Reads `body` while it stays within `limit` bytes and ends within
    /// `patience`. Returns the body for the inner service, and the whole
    /// body if it was read whole.
    fn read(
        &self,
        body: B,
        limit: usize,
        patience: Duration,
    ) -> impl Future<Output = (B, Option<Bytes>)> + Send;
}

impl<B: Send + 'static> Reader<B> for NoReplay {
    const READS: bool = false;

    fn read(&self, body: B, _: usize, _: Duration) -> impl Future<Output = (B, Option<Bytes>)> + Send {
        std::future::ready((body, None))
    }
}

impl<F, B> Reader<B> for Replay<F, B>
where
    F: Fn(StampedeBody<B>) -> B + Send + Sync + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    const READS: bool = true;

    fn read(
        &self,
        body: B,
        limit: usize,
        patience: Duration,
    ) -> impl Future<Output = (B, Option<Bytes>)> + Send {
        let rebuild = Arc::clone(&self.rebuild);
        async move {
            match collect(body, limit, patience).await {
                Collected::Complete { data, trailers } => (
                    rebuild(StampedeBody::buffered(data.clone(), trailers)),
                    Some(data),
                ),
                Collected::Partial(body) => (rebuild(body), None),
            }
        }
    }
}

/// The flow of a `POST` cached as a read, planned as `read`: its body is
/// read, for its digest to complete the key of `read.target`, and handed
/// back unchanged; a body that
/// cannot be read whole within the limits goes to the inner service as it
/// comes.
pub(crate) async fn post_read<S, St, R, ReqBody, B>(
    shared: Arc<Shared<St>>,
    replay: R,
    inner: S,
    request: Request<ReqBody>,
    read: Read,
) -> Result<Response<StampedeBody<B>>, S::Error>
where
    S: Origin<ReqBody, B> + Clone,
    St: Store,
    R: Reader<ReqBody>,
    ReqBody: Send + 'static,
    B: SendBody,
{
    let (parts, body) = request.into_parts();
    let (limit, patience) = (shared.config.max_request_bytes, shared.config.max_body_wait);
    let (body, whole) = replay.read(body, limit, patience).await;
    let request = Request::from_parts(parts, body);
    let Read {
        target,
        policy,
        credentials,
        head,
    } = read;
    match whole.and_then(|whole| read_key(target, request.headers(), &whole)) {
        Some(key) => {
            let (headers, varies) = (request.headers(), &shared.state.varies);
            let job = Job::new(varies, key, headers, policy, credentials, head);
            lookup(shared, inner, request, job, None).await
        }
        None => {
            shared.state.counters.bypassed.incr();
            let status = CacheStatus::forward(Fwd::Request).detail("body-not-read");
            forward(&shared, inner, request, status).await
        }
    }
}

/// Request headers that change what a body means or which representation
/// answers it; gRPC servers do not say `Vary`, so a read's key names them.
const READ_KEY_HEADERS: [HeaderName; 4] = [
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    HeaderName::from_static("grpc-encoding"),
    HeaderName::from_static("grpc-accept-encoding"),
];

/// The key of a read: the key of its target (`POST host/path`, with what
/// the route's key function adds), the headers above, and the SHA-256 of
/// its body. A digest that can be collided at will would let one client
/// choose the answer another gets, hence a cryptographic one. `None` (the
/// request goes uncached) for a header value that is not visible ASCII.
pub(crate) fn read_key(mut key: String, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    for name in &READ_KEY_HEADERS {
        for value in headers.get_all(name) {
            key.push(' ');
            key.push_str(name.as_str());
            key.push('=');
            key.push_str(value.to_str().ok()?);
        }
    }
    key.push_str(" body=");
    for byte in Sha256::digest(body) {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    Some(key)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn grpc() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers
    }

    #[test]
    fn the_key_names_the_body_by_its_digest() {
        let key = read_key("POST api/pkg.Svc/Get".into(), &grpc(), b"abc").expect("key");
        // SHA-256("abc"), as published in FIPS 180-2.
        assert_eq!(
            key,
            "POST api/pkg.Svc/Get content-type=application/grpc \
             body=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let other = read_key("POST api/pkg.Svc/Get".into(), &grpc(), b"abd").expect("key");
        assert_ne!(key, other);
    }

    #[test]
    fn encodings_are_part_of_the_key() {
        let plain = read_key("k".into(), &grpc(), b"m");
        let mut gzip = grpc();
        gzip.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
        let gzip = read_key("k".into(), &gzip, b"m");
        assert_ne!(plain, gzip);
        let mut web = HeaderMap::new();
        web.insert("content-type", HeaderValue::from_static("application/grpc-web"));
        assert_ne!(plain, read_key("k".into(), &web, b"m"));
    }

    #[test]
    fn an_opaque_header_leaves_the_request_uncached() {
        let mut headers = grpc();
        headers.insert(
            "grpc-encoding",
            HeaderValue::from_bytes(b"\xffgzip").expect("opaque is valid"),
        );
        assert_eq!(read_key("k".into(), &headers, b"m"), None);
    }

    type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, crate::BoxError>;

    fn replay() -> Replay<impl Fn(StampedeBody<Boxed>) -> Boxed + Send + Sync, Boxed> {
        Replay::new(|body: StampedeBody<Boxed>| body.map_err(crate::BoxError::from).boxed_unsync())
    }

    #[tokio::test]
    async fn a_whole_body_is_handed_back_unchanged() {
        let body = Full::new(Bytes::from_static(b"hello"))
            .map_err(crate::BoxError::from)
            .boxed_unsync();
        let (body, whole) = replay().read(body, 16, Duration::from_secs(1)).await;
        assert_eq!(whole.as_deref(), Some(&b"hello"[..]));
        let replayed = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&replayed[..], b"hello");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_handed_back_whole_but_not_digested() {
        let chunks = ["0123", "4567", "89ab", "cdef"].map(|c| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(c.as_bytes())))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks))
            .map_err(crate::BoxError::from)
            .boxed_unsync();
        let (body, whole) = replay().read(body, 6, Duration::from_secs(1)).await;
        assert_eq!(whole, None);
        let replayed = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&replayed[..], b"0123456789abcdef");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_end_in_time_streams_on() {
        use futures_util::StreamExt;
        let first = Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"first")));
        let stalled = futures_util::stream::iter([first]).chain(futures_util::stream::pending());
        let body = StreamBody::new(stalled)
            .map_err(crate::BoxError::from)
            .boxed_unsync();
        let (mut body, whole) = replay().read(body, 1024, Duration::from_secs(30)).await;
        assert_eq!(whole, None, "not read whole: not keyed, not cached");
        let frame = body.frame().await.expect("a frame").expect("infallible");
        assert_eq!(
            frame.into_data().ok().as_deref(),
            Some(&b"first"[..]),
            "what was read comes first"
        );
    }

    #[tokio::test]
    async fn no_replay_reads_nothing() {
        let (body, whole) = NoReplay.read("untouched", 1024, Duration::from_secs(1)).await;
        assert_eq!((body, whole), ("untouched", None));
    }
}

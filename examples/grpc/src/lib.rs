//! The gRPC service that this package's example (`src/main.rs`) and tests
//! put behind tower-stampede's layer: `posts.Posts/Popular`, a slow unary read that counts its
//! calls, and `posts.Posts/Watch`, a server stream that waits for a gate
//! between its messages.
//!
//! protoc comes from the `protoc-bin-vendored` crate (see `build.rs`).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, metadata::MetadataMap};

/// The generated messages, client and server.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("posts");
}

use pb::{PopularReply, PopularRequest, Post, posts_server::PostsServer};

/// The full path of the unary method, as the layer's routes name it.
pub const POPULAR: &str = "/posts.Posts/Popular";
/// The full path of the server-streaming method.
pub const WATCH: &str = "/posts.Posts/Watch";

/// The service: cheap to clone, clones share their counters.
#[derive(Clone)]
pub struct Demo {
    shared: Arc<Shared>,
}

struct Shared {
    delay: Duration,
    popular_calls: AtomicUsize,
    watch_calls: AtomicUsize,
    /// One permit per message a `Watch` stream may send after its first.
    gate: Semaphore,
}

impl Demo {
    /// A service whose `Popular` takes `delay`.
    pub fn new(delay: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                delay,
                popular_calls: AtomicUsize::new(0),
                watch_calls: AtomicUsize::new(0),
                gate: Semaphore::new(0),
            }),
        }
    }

    /// How many `Popular` calls reached the service.
    pub fn popular_calls(&self) -> usize {
        self.shared.popular_calls.load(Ordering::SeqCst)
    }

    /// How many `Watch` calls reached the service.
    pub fn watch_calls(&self) -> usize {
        self.shared.watch_calls.load(Ordering::SeqCst)
    }

    /// Lets `Watch` streams send `messages` more messages.
    pub fn open_gate(&self, messages: usize) {
        self.shared.gate.add_permits(messages);
    }

    /// The tonic server of this service.
    pub fn server(&self) -> PostsServer<Self> {
        PostsServer::new(self.clone())
    }
}

/// The answer to `request` (with the `x-tenant` metadata it came with):
/// different for every region, limit and tenant.
pub fn expected_reply(request: &PopularRequest, tenant: Option<&str>) -> PopularReply {
    let tenant = tenant.unwrap_or("public");
    PopularReply {
        posts: (0..request.limit)
            .map(|rank| Post {
                id: format!("{}-{rank}", request.region),
                title: format!("{tenant}: post {rank} of {}", request.region),
                views: 1_000_000 / u64::from(rank + 1),
            })
            .collect(),
    }
}

fn tenant(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("x-tenant").and_then(|v| v.to_str().ok())
}

fn answer(request: &tonic::Request<PopularRequest>) -> Result<PopularReply, Status> {
    let message = request.get_ref();
    match message.region.as_str() {
        "missing" => Err(Status::not_found("no posts for region missing")),
        "down" => Err(Status::unavailable("the posts database is down")),
        _ => Ok(expected_reply(message, tenant(request.metadata()))),
    }
}

#[tonic::async_trait]
impl pb::posts_server::Posts for Demo {
    async fn popular(
        &self,
        request: tonic::Request<PopularRequest>,
    ) -> Result<tonic::Response<PopularReply>, Status> {
        self.shared.popular_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.shared.delay).await;
        let mut response = tonic::Response::new(answer(&request)?);
        // Tags, for purging what a cache holds of a region.
        let tags = format!("posts region-{}", request.get_ref().region);
        if let Ok(tags) = tags.parse() {
            response.metadata_mut().insert("surrogate-key", tags);
        }
        Ok(response)
    }

    type WatchStream = ReceiverStream<Result<PopularReply, Status>>;

    async fn watch(
        &self,
        request: tonic::Request<PopularRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        self.shared.watch_calls.fetch_add(1, Ordering::SeqCst);
        let reply = answer(&request)?;
        let (tx, rx) = mpsc::channel(1);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            // The first message now, each next one when the gate lets it.
            for _ in 0..3 {
                if tx.send(Ok(reply.clone())).await.is_err() {
                    return;
                }
                match shared.gate.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

/// A tower layer that adds the trailer `x-origin-calls` (how many
/// `Popular` calls the service had made when the response ended) to every
/// response that has trailers: a custom trailer that a cache must keep.
#[derive(Clone)]
pub struct OriginTrailerLayer {
    demo: Demo,
}

impl OriginTrailerLayer {
    /// The layer, counting `demo`'s calls.
    pub fn new(demo: &Demo) -> Self {
        Self { demo: demo.clone() }
    }
}

impl<S> tower_layer::Layer<S> for OriginTrailerLayer {
    type Service = OriginTrailer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginTrailer {
            inner,
            demo: self.demo.clone(),
        }
    }
}

/// The service of [`OriginTrailerLayer`].
#[derive(Clone)]
pub struct OriginTrailer<S> {
    inner: S,
    demo: Demo,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for OriginTrailer<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<WithTrailer<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(request);
        let demo = self.demo.clone();
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| WithTrailer { body, demo }))
        })
    }
}

pin_project! {
    /// A body whose trailers gain `x-origin-calls`.
    pub struct WithTrailer<B> {
        #[pin]
        body: B,
        demo: Demo,
    }
}

impl<B: Body> Body for WithTrailer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let calls = this.demo.popular_calls();
        this.body.poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        trailers.insert("x-origin-calls", HeaderValue::from(calls));
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

//! What the benches share: a 1 KiB origin, its request, and reading a
//! response whole.
#![allow(dead_code, reason = "each bench uses a part")]

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Service, ServiceExt, service_fn};

/// An origin that answers every request at once with 1 KiB of JSON.
pub(crate) fn origin()
-> impl Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let body = Bytes::from(vec![b'x'; 1024]);
    service_fn(move |_: Request<Empty<Bytes>>| {
        let body = body.clone();
        async move {
            let mut response = Response::new(Full::new(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(response)
        }
    })
}

/// A GET of the hot key.
pub(crate) fn request() -> Request<Empty<Bytes>> {
    Request::get("/api/popular-posts")
        .header(http::header::HOST, "bench.local")
        .body(Empty::new())
        .expect("valid request")
}

/// One request through `service`, readied first, its body read whole.
pub(crate) async fn read<S, B>(service: &mut S) -> Bytes
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .expect("infallible")
        .call(request())
        .await
        .expect("infallible");
    body(response).await
}

/// Reads a response's body whole.
pub(crate) async fn body<B>(response: Response<B>) -> Bytes
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    response
        .into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes()
}

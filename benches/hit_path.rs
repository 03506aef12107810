//! Run with: `cargo bench --bench hit_path`
//!
//! The cost of a cache hit: the bare inner service against the same service
//! behind the layer with a warm memory store, both answering a 1 KiB body
//! that the caller reads whole.
#![allow(missing_docs, reason = "criterion_group! makes an undocumented public fn")]

use std::{convert::Infallible, hint::black_box};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_stampede::{MemoryStore, StampedeLayer};

fn origin()
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

fn request() -> Request<Empty<Bytes>> {
    Request::get("/api/popular-posts")
        .header(http::header::HOST, "bench.local")
        .body(Empty::new())
        .expect("valid request")
}

async fn read<S, B>(service: &mut S) -> Bytes
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
    response
        .into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes()
}

fn hit_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("hit_path");

    let mut bare = origin();
    group.bench_function("bare_service", |b| {
        b.to_async(&runtime).iter(|| {
            let mut bare = bare.clone();
            async move { black_box(read(&mut bare).await) }
        })
    });
    let _ = runtime.block_on(read(&mut bare));

    let layer = StampedeLayer::new(MemoryStore::new());
    let mut cached = layer.layer(origin());
    runtime.block_on(read(&mut cached));
    group.bench_function("memory_store_hit", |b| {
        b.to_async(&runtime).iter(|| {
            let mut cached = cached.clone();
            async move { black_box(read(&mut cached).await) }
        })
    });
    assert_eq!(layer.stats().origin_calls, 1, "every measured request was a hit");
    group.finish();
}

criterion_group!(benches, hit_path);
criterion_main!(benches);

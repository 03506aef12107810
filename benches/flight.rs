//! Run with: `cargo bench -p benches --bench flight`
//!
//! One flight on a cold key with 1, 100 and 10 000 concurrent requests: the
//! origin answers at once, so what is measured is the cost of leading,
//! parking and waking the waiters (and of the requests themselves).
#![allow(missing_docs, reason = "criterion_group! makes an undocumented public fn")]

mod support;

use std::{convert::Infallible, hint::black_box};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use tower::{Layer, ServiceExt, service_fn};
use tower_stampede::{MemoryStore, StampedeLayer};

async fn one_flight(requests: usize) {
    let body = Bytes::from(vec![b'x'; 1024]);
    let origin = service_fn(move |_: Request<Empty<Bytes>>| {
        let body = body.clone();
        async move {
            // Let every request join before the answer lands.
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        }
    });
    let layer = StampedeLayer::new(MemoryStore::new());
    let service = layer.layer(origin);
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let request = Request::get("/hot").body(Empty::new()).expect("valid");
                support::body(service.oneshot(request).await.expect("infallible")).await
            })
        })
        .collect();
    for task in tasks {
        black_box(task.await.expect("no panic"));
    }
    let stats = layer.stats();
    assert_eq!(stats.origin_calls, 1);
    assert_eq!(
        stats.coalesced as usize,
        requests - 1,
        "every other request waited"
    );
}

fn flight(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("flight");
    for requests in [1, 100, 10_000] {
        group.throughput(Throughput::Elements(requests as u64));
        group.bench_with_input(BenchmarkId::from_parameter(requests), &requests, |b, &n| {
            b.to_async(&runtime).iter(|| one_flight(n))
        });
    }
    group.finish();
}

criterion_group!(benches, flight);
criterion_main!(benches);

//! The memory store keeps what it counts: entries built by the layer from
//! responses read off a real hyper connection hold no more memory than the
//! store's weighted size says (within 1.25x), counted by a global allocator
//! of this test binary's own.

use std::{
    alloc::System,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use axum::{Router, extract::Path, routing::get};
use cap::Cap;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

#[global_allocator]
static ALLOCATED: Cap<System> = Cap::new(System, usize::MAX);

/// A 1 KiB page with the headers a typical handler sends.
async fn page(Path(name): Path<String>) -> impl axum::response::IntoResponse {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::ETAG, format!("\"{name}-{serial}\"")),
            (
                header::HeaderName::from_static("x-request-id"),
                format!("req-{serial:08}"),
            ),
        ],
        format!("{name:<1024}"),
    )
}

async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("bound");
    let app = Router::new().route("/{name}", get(page));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("origin serves") });
    address
}

#[tokio::test(flavor = "current_thread")]
async fn stored_entries_hold_no_more_than_their_weight() {
    let address = origin().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let upstream = service_fn(move |request: Request<Empty<bytes::Bytes>>| client.request(request));
    let store = MemoryStore::with_max_bytes(256 * 1024 * 1024);
    let layer = StampedeLayer::new(store.clone()).policy(Policy::ttl(Duration::from_secs(600)));
    let mut service = layer.layer(upstream);
    let mut fetch = async |name: String| {
        let request = Request::get(format!("http://{address}/{name}"))
            .body(Empty::new())
            .expect("valid request");
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request)
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("whole body")
            .to_bytes();
        assert_eq!(body.len(), 1024);
    };

    // Warm up the connection, its buffers and the runtime.
    for i in 0..200 {
        fetch(format!("warm-{i}")).await;
    }
    let (weight_before, allocated_before) = (store.used_bytes(), ALLOCATED.allocated());

    const ENTRIES: usize = 4000;
    for i in 0..ENTRIES {
        fetch(format!("page-{i}")).await;
    }
    let weight = store.used_bytes() - weight_before;
    let allocated = ALLOCATED.allocated().saturating_sub(allocated_before);
    let entries = store.entry_count();
    eprintln!(
        "{ENTRIES} entries: allocated {allocated} bytes ({} per entry), weighed {weight} ({} per entry), ratio {:.2}",
        allocated / ENTRIES,
        weight / ENTRIES as u64,
        allocated as f64 / weight as f64
    );
    assert_eq!(entries, 4200, "every response was stored");
    assert!(
        allocated as f64 <= weight as f64 * 1.25,
        "the store holds {allocated} bytes but counts {weight}"
    );
    assert!(
        allocated as f64 >= weight as f64 * 0.5,
        "the store counts {weight} bytes but holds {allocated}: the bound wastes memory"
    );
}

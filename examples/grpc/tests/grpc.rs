//! tonic unary calls behind the layer, over loopback with a real tonic
//! client and server: collapsed, keyed by their message and the metadata the
//! route names, stored with their trailers only when they succeed; streams
//! and oversized requests pass through.

#[path = "../../../tests/common/redis_server.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the library's tests, which use more of it"
)]
mod redis_server;

use std::{net::SocketAddr, time::Duration};

use example_grpc::{
    Demo, OriginTrailerLayer, POPULAR, expected_reply,
    pb::{PopularReply, PopularRequest, posts_client::PostsClient},
};
use futures_util::future::join_all;
use tonic::{Code, transport::Channel};
use tower_stampede::{DefaultKey, MemoryStore, Policy, Replay, StampedeBody, StampedeLayer, Store};

type Replayer = fn(StampedeBody<tonic::body::Body>) -> tonic::body::Body;
type GrpcLayer<St> = StampedeLayer<St, Replay<Replayer, tonic::body::Body>>;

/// The origin's latency: long enough for concurrent calls to collapse.
const DELAY: Duration = Duration::from_millis(200);
/// A bound on waits for what must arrive, so that a broken layer fails the
/// test instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

/// A layer that caches `Popular` for a minute.
fn layer<St: Store>(store: St) -> GrpcLayer<St> {
    StampedeLayer::new(store)
        .replay_requests(tonic::body::Body::new as Replayer)
        .route(POPULAR, Policy::ttl(Duration::from_secs(60)))
        .cache_posts(POPULAR)
}

/// Serves `demo` behind `layer` (and the layer that adds the
/// `x-origin-calls` trailer) on a loopback port.
async fn serve<St: Store>(layer: GrpcLayer<St>, demo: &Demo) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(1024)
        .layer(layer)
        .layer(OriginTrailerLayer::new(demo))
        .add_service(demo.server())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    addr
}

async fn client(addr: SocketAddr) -> PostsClient<Channel> {
    // One service name for every replica, as behind a load balancer: the
    // authority is part of the key.
    let endpoint = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .origin(http::Uri::from_static("http://posts.test"));
    PostsClient::new(endpoint.connect().await.expect("connect"))
}

fn request(region: &str, limit: u32) -> PopularRequest {
    PopularRequest {
        limit,
        region: region.to_owned(),
        padding: Vec::new(),
    }
}

/// One call's outcome: the reply or the status, and the metadata (headers
/// and, for a unary call, trailers) it came with.
struct Call {
    result: Result<PopularReply, Status>,
    metadata: tonic::metadata::MetadataMap,
}

#[derive(Debug, PartialEq)]
struct Status {
    code: Code,
    message: String,
}

impl Call {
    fn meta(&self, name: &str) -> Option<&str> {
        self.metadata.get(name).and_then(|v| v.to_str().ok())
    }

    fn cache_status(&self) -> &str {
        self.meta("cache-status").unwrap_or("")
    }

    fn reply(&self) -> &PopularReply {
        match &self.result {
            Ok(reply) => reply,
            Err(status) => panic!("the call failed: {status:?}"),
        }
    }
}

async fn call(client: &PostsClient<Channel>, message: PopularRequest, tenant: Option<&str>) -> Call {
    let mut request = tonic::Request::new(message);
    if let Some(tenant) = tenant {
        request
            .metadata_mut()
            .insert("x-tenant", tenant.parse().expect("ascii"));
    }
    match tokio::time::timeout(BOUND, client.clone().popular(request)).await {
        Ok(Ok(response)) => Call {
            metadata: response.metadata().clone(),
            result: Ok(response.into_inner()),
        },
        Ok(Err(status)) => Call {
            metadata: status.metadata().clone(),
            result: Err(Status {
                code: status.code(),
                message: status.message().to_owned(),
            }),
        },
        Err(_) => panic!("no answer within {BOUND:?}"),
    }
}

async fn concurrently(client: &PostsClient<Channel>, n: usize, message: &PopularRequest) -> Vec<Call> {
    join_all((0..n).map(|_| call(client, message.clone(), None))).await
}

#[tokio::test]
async fn collapsed_unary_calls_make_one_origin_call() {
    let demo = Demo::new(DELAY);
    let client = client(serve(layer(MemoryStore::new()), &demo).await).await;
    let message = request("eu", 5);
    let calls = concurrently(&client, 100, &message).await;

    assert_eq!(demo.popular_calls(), 1, "one origin call for 100 identical calls");
    let expected = expected_reply(&message, None);
    for call in &calls {
        assert_eq!(call.reply(), &expected, "every client decodes the same message");
    }
    let stored = calls
        .iter()
        .filter(|c| c.cache_status().contains("stored"))
        .count();
    // On a busy machine a call may start only after the leader's answer
    // landed: then it is a hit. Either way it made no origin call.
    let collapsed_or_hit = calls
        .iter()
        .filter(|c| c.cache_status().contains("collapsed") || c.cache_status().contains("hit"))
        .count();
    assert_eq!(
        (stored, collapsed_or_hit),
        (1, 99),
        "one leader stored, the rest waited on it or came after"
    );
}

#[tokio::test]
async fn trailers_are_intact_on_hits() {
    let demo = Demo::new(DELAY);
    let client = client(serve(layer(MemoryStore::new()), &demo).await).await;
    let first = call(&client, request("eu", 3), None).await;
    assert_eq!(first.meta("x-origin-calls"), Some("1"), "the origin's trailer");
    // Another key moves the origin's count on: a hit that still says 1 was
    // replayed from the store, trailer and all.
    call(&client, request("us", 3), None).await;
    assert_eq!(demo.popular_calls(), 2);

    let hit = call(&client, request("eu", 3), None).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.reply(), first.reply());
    assert_eq!(hit.meta("x-origin-calls"), Some("1"), "the stored custom trailer");
    assert_eq!(demo.popular_calls(), 2, "the hit made no call");
}

#[tokio::test]
async fn trailers_are_stored_exactly() {
    // Below tonic, where trailers are not merged into metadata: the hit's
    // trailer block is the origin's, byte for byte.
    let demo = Demo::new(Duration::ZERO);
    let addr = serve(layer(MemoryStore::new()), &demo).await;
    let body = encode(&request("eu", 2));
    let miss = raw_call(addr, body.clone()).await;
    let hit = raw_call(addr, body).await;
    assert_eq!(
        miss.trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(hit.trailers, miss.trailers, "trailers replayed exactly");
    assert_eq!(hit.data, miss.data);
    assert!(hit.cache_status.contains("hit"), "{}", hit.cache_status);
    assert_eq!(demo.popular_calls(), 1);
}

#[tokio::test]
async fn error_statuses_are_not_stored() {
    // The collapsed count needs every call of a wave to start while the
    // first is at the origin: a second, five times the usual delay.
    let demo = Demo::new(5 * DELAY);
    let client = client(serve(layer(MemoryStore::new()), &demo).await).await;
    for (region, code, message) in [
        ("missing", Code::NotFound, "no posts for region missing"),
        ("down", Code::Unavailable, "the posts database is down"),
    ] {
        let before = demo.popular_calls();
        let expected = Status {
            code,
            message: message.to_owned(),
        };
        // Collapsed callers share the one failed call's status...
        let wave = concurrently(&client, 20, &request(region, 1)).await;
        for call in &wave {
            assert_eq!(call.result.as_ref().err(), Some(&expected), "{region}");
        }
        assert_eq!(demo.popular_calls(), before + 1, "{region}: collapsed");
        // ...which is not stored: the next call asks again.
        let again = call(&client, request(region, 1), None).await;
        assert_eq!(again.result.err(), Some(expected), "{region}");
        assert_eq!(demo.popular_calls(), before + 2, "{region}: not stored");
    }
}

#[tokio::test]
async fn different_messages_are_different_keys() {
    let demo = Demo::new(Duration::ZERO);
    let client = client(serve(layer(MemoryStore::new()), &demo).await).await;
    let messages = [request("eu", 3), request("eu", 4), request("us", 3)];
    for round in 0..2 {
        for message in &messages {
            let call = call(&client, message.clone(), None).await;
            assert_eq!(call.reply(), &expected_reply(message, None), "round {round}");
        }
        assert_eq!(demo.popular_calls(), 3, "one call per message, then hits");
    }
}

#[tokio::test]
async fn metadata_named_by_the_route_is_part_of_the_key() {
    let demo = Demo::new(Duration::ZERO);
    let layer = layer(MemoryStore::new()).route_key(POPULAR, DefaultKey::new().with_header("x-tenant"));
    let client = client(serve(layer, &demo).await).await;
    let message = request("eu", 2);
    for tenant in ["acme", "globex", "acme", "globex"] {
        let call = call(&client, message.clone(), Some(tenant)).await;
        assert_eq!(call.reply(), &expected_reply(&message, Some(tenant)), "{tenant}");
    }
    assert_eq!(demo.popular_calls(), 2, "one call per tenant");

    // Metadata the route does not name does not split the key.
    let mut traced = tonic::Request::new(message.clone());
    traced
        .metadata_mut()
        .insert("x-request-id", "42".parse().expect("ascii"));
    client.clone().popular(traced).await.expect("ok");
    call(&client, message, None).await;
    assert_eq!(demo.popular_calls(), 3, "the tenant-less call once, then a hit");
}

#[tokio::test]
async fn calls_are_purged_by_the_tags_of_their_metadata() {
    let demo = Demo::new(Duration::ZERO);
    let layer = layer(MemoryStore::new());
    let client = client(serve(layer.clone(), &demo).await).await;
    for region in ["eu", "us"] {
        call(&client, request(region, 2), None).await;
    }
    assert_eq!(layer.invalidate_tag("region-eu").await.expect("purged"), 1);
    let eu = call(&client, request("eu", 2), None).await;
    let us = call(&client, request("us", 2), None).await;
    assert!(
        eu.cache_status().contains("stored"),
        "purged: {}",
        eu.cache_status()
    );
    assert!(us.cache_status().contains("hit"), "kept: {}", us.cache_status());
    assert_eq!(demo.popular_calls(), 3);
}

#[tokio::test]
async fn a_server_streaming_method_passes_through_untouched() {
    let demo = Demo::new(Duration::ZERO);
    let client = client(serve(layer(MemoryStore::new()), &demo).await).await;
    for round in 1..=2 {
        let response = client.clone().watch(request("eu", 1)).await.expect("stream");
        assert_eq!(
            response
                .metadata()
                .get("cache-status")
                .and_then(|v| v.to_str().ok()),
            Some("tower-stampede; fwd=method")
        );
        let mut stream = response.into_inner();
        // The first message arrives while the server holds the second back:
        // nothing between them buffers the stream.
        let first = tokio::time::timeout(BOUND, stream.message()).await;
        assert_eq!(
            first
                .expect("the first message, before the stream ends")
                .expect("ok"),
            Some(expected_reply(&request("eu", 1), None))
        );
        demo.open_gate(3);
        let mut rest = 0;
        while let Some(message) = tokio::time::timeout(BOUND, stream.message())
            .await
            .expect("the stream goes on")
            .expect("ok")
        {
            assert_eq!(message, expected_reply(&request("eu", 1), None));
            rest += 1;
        }
        assert_eq!(rest, 2);
        assert_eq!(demo.watch_calls(), round, "every stream reaches the service");
    }
}

#[tokio::test]
async fn a_request_body_over_the_limit_passes_through() {
    let demo = Demo::new(Duration::ZERO);
    let client = client(serve(layer(MemoryStore::new()).max_request_bytes(1024), &demo).await).await;
    let mut large = request("eu", 2);
    large.padding = vec![7; 4096];
    for round in 1..=2 {
        let call = call(&client, large.clone(), None).await;
        // The service decoded the whole message: the body reached it unchanged.
        assert_eq!(call.reply(), &expected_reply(&large, None));
        assert!(
            call.cache_status().contains("body-not-read"),
            "{}",
            call.cache_status()
        );
        assert_eq!(demo.popular_calls(), round, "not cached");
    }
    let mut small = request("eu", 2);
    small.padding = vec![7; 512];
    call(&client, small.clone(), None).await;
    call(&client, small, None).await;
    assert_eq!(demo.popular_calls(), 3, "under the limit, cached");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn replicas_share_one_call_through_redis() {
    use redis_server::RedisServer;
    use tower_stampede::RedisStore;

    let redis = RedisServer::start();
    let demo = Demo::new(DELAY);
    // A healthy store, even on a busy machine: a timed-out store call would
    // rightly leave each replica to coalesce on its own.
    let patience = Duration::from_secs(2);
    let store = || {
        RedisStore::from_url(redis.url())
            .expect("valid url")
            .timeout(patience)
    };
    let (store_a, store_b) = (store(), store());
    // Connected up front, so that no first call goes without the lock.
    store_a.connect().await.expect("redis is up");
    store_b.connect().await.expect("redis is up");
    let a = client(serve(layer(store_a).store_timeout(patience), &demo).await).await;
    let b = client(serve(layer(store_b).store_timeout(patience), &demo).await).await;
    let message = request("eu", 4);
    let (on_a, on_b) = tokio::join!(concurrently(&a, 50, &message), concurrently(&b, 50, &message));
    assert_eq!(demo.popular_calls(), 1, "one origin call across two replicas");
    let expected = expected_reply(&message, None);
    for call in on_a.iter().chain(&on_b) {
        assert_eq!(call.reply(), &expected);
    }
    // A hit read back from Redis keeps its trailers.
    let hit = call(&b, message, None).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.meta("x-origin-calls"), Some("1"));
}

/// The gRPC framing of one uncompressed message.
fn encode(message: &PopularRequest) -> bytes::Bytes {
    use prost::Message;
    let payload = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(&payload);
    framed.into()
}

struct Raw {
    data: bytes::Bytes,
    trailers: http::HeaderMap,
    cache_status: String,
}

/// A unary call made with hyper's HTTP/2 client, to see the trailers as
/// they travel.
async fn raw_call(addr: SocketAddr, body: bytes::Bytes) -> Raw {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}{POPULAR}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(body))
        .expect("valid");
    let response = sender.send_request(request).await.expect("response");
    let cache_status = response.headers()["cache-status"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    Raw {
        data: collected.to_bytes(),
        trailers,
        cache_status,
    }
}

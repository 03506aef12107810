//! Run with: `cargo run --release --manifest-path bench/peers/Cargo.toml --bin tower-http-cache-proxy -- --upstream http://127.0.0.1:8081`
//!
//! A peer for bench/compare.sh: tower-http-cache 0.6's `CacheLayer` on its
//! default in-memory backend (`InMemoryBackend`, on moka), set up as its
//! README's quick start does (`CacheLayer::builder(InMemoryBackend::new(10_000))`,
//! 10 000 entries), with a `ttl` of 60 s and the other settings left at the
//! crate's defaults: GET and HEAD; statuses 200, 203, 300, 301 and 404 (other
//! 4xx for 5 s); `no-store`, `no-cache` and `private` in a request's or an
//! answer's `Cache-Control` respected; no stale window; bodies over 1 MiB
//! and some content types (`application/octet-stream`, PDF, video, ...)
//! streamed through, not kept.
//!
//! Its stampede protection needs no option: the README lists it among the
//! layer's features ("deduplicates concurrent misses"), and the layer
//! always holds a lock per key while one request fetches, the others
//! waiting on it and reading what it stored. The key is the crate's
//! default, the path with its query: no method (GET and HEAD share it) and
//! no `Host`.
//!
//! The quick start's other values are left out, being one service's
//! choices rather than defaults: its `min_body_size(Some(1024))` alone would
//! keep none of the benchmark origin's answers (about 0.7 KiB).
//!
//! `tower-http-cache-proxy --upstream URL [--listen ADDR]`; the first line
//! printed is `listening on http://ADDR`.

use std::time::Duration;

use axum::{body::Body, http::Request};
use peers::Upstream;
use tower::Layer;
use tower_http_cache::prelude::{CacheLayer, InMemoryBackend};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match peers::parse_args("tower-http-cache-proxy") {
        Ok(args) => args,
        Err(message) => return peers::exit(Err(message)),
    };
    let layer = CacheLayer::builder(InMemoryBackend::new(10_000))
        .ttl(Duration::from_secs(60))
        .build();
    let upstream = Upstream::new(args.upstream.clone());
    let service = layer.layer(tower::service_fn(move |request: Request<Body>| {
        let upstream = upstream.clone();
        async move { Ok::<_, std::convert::Infallible>(upstream.forward(request).await) }
    }));
    peers::exit(peers::serve(&args, service).await)
}

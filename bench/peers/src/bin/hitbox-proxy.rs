//! Run with: `cargo run --release --manifest-path bench/peers/Cargo.toml --bin hitbox-proxy -- --upstream http://127.0.0.1:8081`
//!
//! A peer for bench/compare.sh: hitbox 0.2's tower layer (hitbox-tower
//! 0.2's `Cache`) on its in-memory backend (hitbox-moka 0.2's
//! `MokaBackend`), set up as the crates' docs show: `Cache::builder()`
//! with a backend and a `Config` of request predicate, response predicate,
//! key extractor and policy.
//!
//! - Request predicate: GET, and no `Cache-Control: no-cache` (the
//!   hitbox-http README's example of skipping the cache).
//! - Response predicate: status 200 (the same README's).
//! - Key: the method, the whole path (`/{path}*`), every query parameter
//!   and `Host` (a proxy's key; the docs' examples name route parameters).
//! - Policy: `ttl` 60 s, and `concurrency` 1 with a
//!   `BroadcastConcurrencyManager`: the dogpile prevention the docs offer
//!   ("one request fetches, others wait"), off unless both are set.
//! - Backend: at most 64 MiB (`max_bytes`), values in `BincodeFormat`,
//!   which hitbox-moka's README marks as recommended (its default is JSON).
//!
//! `hitbox-proxy --upstream URL [--listen ADDR]`; the first line printed is
//! `listening on http://ADDR`.

use std::time::Duration;

use axum::{
    body::Body,
    http::{self, Request, header},
};
use hitbox::{
    Config,
    concurrency::BroadcastConcurrencyManager,
    policy::{ConcurrencyLimit, PolicyConfig},
    predicate::PredicateExt,
};
use hitbox_backend::format::BincodeFormat;
use hitbox_http::{
    BufferedBody,
    extractors::{
        Method,
        header::HeaderExtractor,
        path::PathExtractor,
        query::{NameSelector, Query, ValueExtractor},
    },
    predicates::{
        NeutralRequestPredicate,
        header::{Header, Operation},
        request::MethodPredicate,
        response::StatusCode,
    },
};
use hitbox_moka::MokaBackend;
use hitbox_tower::Cache;
use peers::Upstream;
use tower::Layer;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match peers::parse_args("hitbox-proxy") {
        Ok(args) => args,
        Err(message) => return peers::exit(Err(message)),
    };
    let Some(one) = ConcurrencyLimit::new(1) else {
        return peers::exit(Err("a concurrency of 1 is out of hitbox's range".into()));
    };
    let no_cache = Header::new(Operation::Contains(header::CACHE_CONTROL, "no-cache".into()));
    let key = Method::new().path("/{path}*");
    let key = Query::new_with(
        key,
        NameSelector::Starts(String::new()),
        ValueExtractor::Full,
        Vec::new(),
    );
    let config = Config::builder()
        .request_predicate(
            NeutralRequestPredicate::new()
                .method(http::Method::GET)
                .and(no_cache.not()),
        )
        .response_predicate(StatusCode::new(http::StatusCode::OK))
        .extractor(key.header(header::HOST.as_str().to_owned()))
        .policy(
            PolicyConfig::builder()
                .ttl(Duration::from_secs(60))
                .concurrency(one)
                .build(),
        )
        .build();
    let backend = MokaBackend::builder()
        .max_bytes(64 << 20)
        .value_format(BincodeFormat)
        .build();
    let layer = Cache::builder()
        .backend(backend)
        .config(config)
        .concurrency_manager(BroadcastConcurrencyManager::new())
        .build();
    let upstream = Upstream::new(args.upstream.clone());
    let service = layer.layer(tower::service_fn(move |request: Request<BufferedBody<Body>>| {
        let upstream = upstream.clone();
        async move { Ok::<_, std::convert::Infallible>(upstream.forward(request.map(Body::new)).await) }
    }));
    peers::exit(peers::serve(&args, service).await)
}

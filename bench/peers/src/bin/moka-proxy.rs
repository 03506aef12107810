//! Run with: `cargo run --release --manifest-path bench/peers/Cargo.toml --bin moka-proxy -- --upstream http://127.0.0.1:8081`
//!
//! A peer for bench/compare.sh: the caching proxy a user would write by
//! hand on moka 0.12's `future::Cache`, with no caching crate for HTTP.
//! Cacheable GET answers are kept whole (status, headers, body) under
//! method, `Host` and URI, for 60 s (`time_to_live`), in at most 64 MiB
//! weighed by body and key length. Misses are filled with
//! `try_get_with`, which moka documents as running one initializer for
//! concurrent calls on one key while the others wait for its value: a
//! stampede is one upstream call. An answer that is not kept (not `200`,
//! `Set-Cookie`, `Cache-Control: no-store` or `private`, or a body that
//! failed) is handed to the waiters of that load as it is, and the next
//! request loads again.
//!
//! `moka-proxy --upstream URL [--listen ADDR]`; the first line printed is
//! `listening on http://ADDR`.

use std::sync::Arc;
use std::time::Duration;

use axum::{
    body::Body,
    http::{HeaderMap, Method, Request, Response, StatusCode, header},
};
use bytes::Bytes;
use http_body_util::BodyExt;
use moka::future::Cache;
use peers::{Upstream, UpstreamBody, full, status};

/// An answer as it is kept: whole.
struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Stored {
    fn response(&self) -> Response<UpstreamBody> {
        let mut response = Response::new(full(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }

    /// Whether a shared cache may keep it, in a hand-written proxy's terms.
    fn cacheable(&self) -> bool {
        let mut cache_control = self
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim);
        self.status == StatusCode::OK
            && !self.headers.contains_key(header::SET_COOKIE)
            && !cache_control.any(|directive| {
                directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("private")
            })
    }
}

/// Ok: kept and shared; Err: shared with this load's waiters only.
async fn load(upstream: Upstream, request: Request<Body>) -> Result<Arc<Stored>, Stored> {
    let (parts, body) = upstream.forward(request).await.into_parts();
    let Ok(body) = body.collect().await.map(|collected| collected.to_bytes()) else {
        return Err(Stored {
            status: StatusCode::BAD_GATEWAY,
            headers: status(StatusCode::BAD_GATEWAY).headers().clone(),
            body: Bytes::new(),
        });
    };
    let stored = Stored {
        status: parts.status,
        headers: parts.headers,
        body,
    };
    if stored.cacheable() {
        Ok(Arc::new(stored))
    } else {
        Err(stored)
    }
}

async fn handle(
    cache: Cache<String, Arc<Stored>>,
    upstream: Upstream,
    request: Request<Body>,
) -> Response<UpstreamBody> {
    if request.method() != Method::GET {
        return upstream.forward(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("");
    let key = format!("GET {host} {}", request.uri());
    match cache.try_get_with(key, load(upstream, request)).await {
        Ok(stored) => stored.response(),
        Err(passed) => passed.response(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match peers::parse_args("moka-proxy") {
        Ok(args) => args,
        Err(message) => return peers::exit(Err(message)),
    };
    let cache: Cache<String, Arc<Stored>> = Cache::builder()
        .time_to_live(Duration::from_secs(60))
        .weigher(|key: &String, stored: &Arc<Stored>| {
            u32::try_from(key.len() + stored.body.len()).unwrap_or(u32::MAX)
        })
        .max_capacity(64 << 20)
        .build();
    let upstream = Upstream::new(args.upstream.clone());
    let service = tower::service_fn(move |request: Request<Body>| {
        let (cache, upstream) = (cache.clone(), upstream.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(cache, upstream, request).await) }
    });
    peers::exit(peers::serve(&args, service).await)
}

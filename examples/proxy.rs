//! Run with: `cargo run --release --example proxy -- --upstream http://127.0.0.1:8081`
//! (or `-- --config examples/proxy.toml`)
//!
//! A caching reverse proxy: the layer in front of a pooled keep-alive hyper
//! client, so that a cache stampede on any URL of the upstream becomes one
//! upstream request. It is what the benchmark puts beside nginx and Varnish,
//! and a sidecar users can run as it is.
//!
//! ```text
//! proxy --config FILE [--upstream URL] [--listen ADDR]
//! proxy --upstream URL [--listen ADDR] [--policy origin:1d|ttl:60s|xfetch:60s|swr:50s,120s] [--redis URL]
//!       [--near-cache 64MiB] [--max-bytes 128MiB] [--max-buffered-bytes 64MiB] [--report-every 10s]
//! ```
//!
//! - `--config FILE`: the upstream, the listen address, the store and the
//!   layer's settings with a policy per route, from a TOML file
//!   (`examples/proxy.toml` is one, commented); `--upstream` and
//!   `--listen` replace the file's, the other flags are the file's to set.
//! - `--listen ADDR`: where to serve (default `127.0.0.1:8080`; port 0
//!   picks one). The first line printed is `listening on http://ADDR`.
//! - `--upstream URL`: the origin, `http://host:port` (TLS to the upstream is
//!   left to a sidecar's own network).
//! - `--policy`: `origin:1d` (the default: freshness as the upstream's
//!   headers say, RFC 9111, for a day at most; `Policy::origin`), or an
//!   operator's policy that ignores them: `ttl:60s`, `xfetch:60s`, or
//!   `swr:50s,120s` (fresh 50 s, then stale while one refresh runs, gone at
//!   120 s). Durations take `ms`, `s`, `m`, `h` or `d`.
//! - `--redis URL`: share the cache and the rebuild lock with every other
//!   proxy on that Redis; without it, the memory store.
//! - `--near-cache SIZE`: with `--redis`, keep up to SIZE of what this
//!   proxy reads from Redis in its own memory, dropped as Redis reports
//!   writes (`RedisStore::near_cache`); hits then make no round trip.
//! - `--max-bytes SIZE`: the memory store's bound (default `128MiB`; `KiB`,
//!   `MiB`, `GiB` or bytes); with `--redis`, the bound of what the proxy
//!   keeps on its own while Redis fails (default `32MiB`).
//! - `--max-buffered-bytes SIZE`: the bytes of response bodies the layer's
//!   flights may buffer at once (the layer's default, `64MiB`, unless set).
//! - `--report-every 10s`: a line on stderr that often with resident
//!   memory, live tasks, flights in progress, bytes they buffer and the
//!   counters (soak runs).
//!
//! Requests keep their method, path, query, headers (hop-by-hop ones
//! dropped, `Host` kept: it is part of the cache key) and body. An upstream
//! that cannot be reached answers `502`. `RUST_LOG=tower_stampede=debug`
//! shows the layer's decisions.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Request, Response, StatusCode, Uri, header},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;
use tower::Layer;
use tower_stampede::{
    Config, MemoryStore, Policy, RedisStore, StampedeLayer, Store,
    config::{from_toml, parse_duration, parse_size},
};
use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    prelude::*,
};

const USAGE: &str = "usage: proxy --config FILE [--upstream URL] [--listen ADDR]\n       proxy --upstream URL [--listen ADDR] [--policy origin:1d|ttl:60s|xfetch:60s|swr:50s,120s] \
     [--redis URL] [--near-cache 64MiB] [--max-bytes 128MiB] [--max-buffered-bytes 64MiB] [--report-every 10s]";

pub(crate) struct Args {
    listen: SocketAddr,
    upstream: Uri,
    /// The layer's settings: the file's `[cache]`, or what the flags set.
    cache: Config,
    redis: Option<String>,
    near_cache: Option<u64>,
    max_bytes: Option<u64>,
    report_every: Option<Duration>,
}

/// The file `--config` names (examples/proxy.toml is one, with comments).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    upstream: Option<String>,
    listen: Option<SocketAddr>,
    #[serde(default, with = "tower_stampede::config::duration")]
    report_every: Option<Duration>,
    #[serde(default)]
    store: StoreFile,
    /// Every field of `tower_stampede::Config`.
    #[serde(default)]
    cache: Config,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    redis: Option<String>,
    #[serde(default, with = "tower_stampede::config::size")]
    near_cache: Option<u64>,
    #[serde(default, with = "tower_stampede::config::size")]
    max_bytes: Option<u64>,
}

fn policy(text: &str) -> Result<Policy, String> {
    match text.split_once(':') {
        Some(("origin" | "http", max)) => Ok(Policy::origin(parse_duration(max)?)),
        Some(("ttl", ttl)) => Ok(Policy::ttl(parse_duration(ttl)?)),
        Some(("xfetch", ttl)) => Ok(Policy::xfetch(parse_duration(ttl)?)),
        Some(("swr", windows)) => {
            let (fresh, gone) = windows
                .split_once(',')
                .ok_or("swr takes two durations: swr:FRESH,GONE")?;
            Ok(Policy::stale_while_revalidate(
                parse_duration(fresh)?,
                parse_duration(gone)?,
            ))
        }
        _ => Err(format!(
            "unknown policy {text:?}: origin:1d, ttl:60s, xfetch:60s or swr:50s,120s"
        )),
    }
}

fn upstream(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| format!("--upstream: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("--upstream takes http://host:port, not {uri}"));
    }
    Ok(uri)
}

/// The proxy's settings from its command line (without the program's
/// name): from the flags, or from the file `--config` names, whose
/// `upstream` and `listen` the flags may replace.
pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let (mut listen, mut upstream_flag, mut config) = (None, None, None);
    let mut flags = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        upstream: Uri::default(),
        cache: Config::default(),
        redis: None,
        near_cache: None,
        max_bytes: None,
        report_every: None,
    };
    flags.cache.policy = Some(Policy::origin(Duration::from_secs(24 * 60 * 60)));
    // The first flag that the file sets instead, when there is one.
    let mut file_flag = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse().map_err(|e| format!("--listen: {e}"))?),
            "--upstream" => upstream_flag = Some(upstream(&value()?)?),
            "--config" => config = Some(value()?),
            "--policy" => flags.cache.policy = Some(policy(&value()?)?),
            "--redis" => flags.redis = Some(value()?),
            "--report-every" => flags.report_every = Some(parse_duration(&value()?)?),
            "--max-bytes" => flags.max_bytes = Some(parse_size(&value()?)?),
            "--near-cache" => flags.near_cache = Some(parse_size(&value()?)?),
            "--max-buffered-bytes" => flags.cache.max_buffered_bytes = Some(parse_size(&value()?)?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        if !matches!(flag.as_str(), "--listen" | "--upstream" | "--config") {
            file_flag.get_or_insert(flag);
        }
    }
    let mut args = match config {
        None => flags,
        Some(path) => {
            if let Some(flag) = file_flag {
                return Err(format!("{flag} is set in the file that --config names"));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
            let file: File = from_toml(&text).map_err(|e| format!("{path}: {e}"))?;
            Args {
                listen: file.listen.unwrap_or(flags.listen),
                upstream: file
                    .upstream
                    .as_deref()
                    .map(upstream)
                    .transpose()?
                    .unwrap_or_default(),
                cache: file.cache,
                redis: file.store.redis,
                near_cache: file.store.near_cache,
                max_bytes: file.store.max_bytes,
                report_every: file.report_every,
            }
        }
    };
    args.listen = listen.unwrap_or(args.listen);
    args.upstream = upstream_flag.unwrap_or(args.upstream);
    if args.upstream.authority().is_none() {
        return Err(format!(
            "--upstream (or the file's `upstream`) is required\n{USAGE}"
        ));
    }
    Ok(args)
}

/// The layer on the Redis at `url`, with a near cache if asked for, once
/// Redis answers.
async fn redis_layer(url: &str, args: &Args) -> Result<StampedeLayer<RedisStore>, String> {
    let mut store = RedisStore::from_url(url).map_err(|e| format!("--redis {url}: {e}"))?;
    if let Some(bytes) = args.near_cache {
        store = store.near_cache(bytes);
    }
    store
        .connect()
        .await
        .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
    let mut layer = StampedeLayer::from_config(store, &args.cache).map_err(|e| e.to_string())?;
    if let (Some(bytes), None) = (args.max_bytes, args.cache.fallback_max_bytes) {
        layer = layer.fallback_max_bytes(bytes);
    }
    Ok(layer)
}

/// The layer on a memory store of `--max-bytes` (128 MiB unless set).
pub(crate) fn memory_layer(args: &Args) -> Result<StampedeLayer<MemoryStore>, String> {
    let store = MemoryStore::with_max_bytes(args.max_bytes.unwrap_or(128 << 20));
    StampedeLayer::from_config(store, &args.cache).map_err(|e| e.to_string())
}

/// Headers that belong to one connection (RFC 9110 section 7.6.1), not to
/// the request a proxy forwards.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut header::HeaderMap) {
    // So are the fields `Connection` names.
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| name.trim().parse().ok())
        .collect();
    for name in named.iter().map(header::HeaderName::as_str).chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// The inner service: the request, sent on to `upstream` over pooled
/// keep-alive connections.
#[derive(Clone)]
struct Upstream {
    // Behind an `Arc`: every request clones the service (axum's router,
    // the layer's readied-service swap), and a client is some 350 bytes.
    inner: Arc<(Client<HttpConnector, Body>, Uri)>,
}

impl Upstream {
    fn new(base: Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Self {
            inner: Arc::new((client, base)),
        }
    }

    async fn forward(self, mut request: Request<Body>) -> Response<Body> {
        let (client, base) = &*self.inner;
        let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let target = format!(
            "{}://{}{path}",
            base.scheme_str().unwrap_or("http"),
            base.authority().map_or("", |a| a.as_str())
        );
        match target.parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return status(StatusCode::BAD_REQUEST),
        }
        strip_hop_by_hop(request.headers_mut());
        match client.request(request).await {
            Ok(response) => {
                let mut response = response.map(Body::new);
                strip_hop_by_hop(response.headers_mut());
                response
            }
            Err(error) => {
                tracing::warn!(%error, "upstream unreachable");
                status(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

async fn run<St: Store>(layer: StampedeLayer<St>, args: Args) -> Result<(), String> {
    let (addr, serving) = serve(layer, args).await?;
    println!("listening on http://{addr}");
    serving.await
}

/// How many connections the kernel may hold for `accept`: a stampede is a
/// thousand clients connecting in the same millisecond, and with the
/// default of 128 (what `TcpListener::bind` asks for) the kernel drops
/// their SYNs, which come back a second later as a retransmit and land in
/// the tail. nginx asks for 511 by default; the host's `somaxconn` caps it.
const BACKLOG: u32 = 4096;

/// A listener on `addr` with a backlog of [`BACKLOG`].
fn listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The proxy bound to `args.listen`: its address, and the future that
/// serves until ctrl-c, then prints the counters.
pub(crate) async fn serve<St: Store>(
    layer: StampedeLayer<St>,
    args: Args,
) -> Result<(SocketAddr, impl Future<Output = Result<(), String>>), String> {
    let upstream = Upstream::new(args.upstream.clone());
    let proxy = layer.layer(tower::service_fn(move |request: Request<Body>| {
        let upstream = upstream.clone();
        async move { Ok::<_, std::convert::Infallible>(upstream.forward(request).await) }
    }));
    let listener = listener(args.listen).map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(upstream = %args.upstream, "proxying");
    if let Some(every) = args.report_every {
        tokio::spawn(report(layer.clone(), every));
    }
    let serving = async move {
        axum::serve(listener, Router::new().fallback_service(proxy))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())?;
        let stats = layer.stats();
        println!(
            "requests {}, hits {}, stale hits {}, coalesced {}, upstream calls {}, over budget {}, store errors {}",
            stats.requests,
            stats.hits,
            stats.stale_hits,
            stats.coalesced,
            stats.origin_calls,
            stats.over_budget,
            stats.store_errors
        );
        Ok(())
    };
    Ok((addr, serving))
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// Open file descriptors: the listener, Redis and the connections.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// A line on stderr every `every`: memory, tasks, open descriptors (each
/// connection holds one and a task), flights and counters, for soak runs.
async fn report<St: Store>(layer: StampedeLayer<St>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let stats = layer.stats();
        eprintln!(
            "report rss_kib={} tasks={} fds={} in_flight={} buffered_bytes={} requests={} hits={} upstream_calls={} over_budget={} store_errors={}",
            rss_kib(),
            tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            open_fds(),
            layer.in_flight(),
            layer.buffered_bytes(),
            stats.requests,
            stats.hits,
            stats.origin_calls,
            stats.over_budget,
            stats.store_errors
        );
    }
}

/// What `RUST_LOG` asks for, as `target=level` directives (tracing-subscriber's
/// `Targets`, which needs no regex engine, unlike `EnvFilter`); `default`
/// when it is unset or unreadable.
fn log_filter(default: LevelFilter) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(default))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(log_filter(LevelFilter::ERROR))
        .init();
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(args) => match &args.redis {
            Some(url) => match redis_layer(url, &args).await {
                Ok(layer) => run(layer, args).await,
                Err(message) => Err(message),
            },
            None => match memory_layer(&args) {
                Ok(layer) => run(layer, args).await,
                Err(message) => Err(message),
            },
        },
        Err(message) => Err(message),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!(policy("ttl:60s"), Ok(Policy::ttl(Duration::from_secs(60))));
        assert_eq!(policy("origin:1h"), Ok(Policy::origin(Duration::from_secs(3600))));
        assert_eq!(policy("http:1h"), policy("origin:1h"));
        assert_eq!(
            policy("swr:50s,120s"),
            Ok(Policy::stale_while_revalidate(
                Duration::from_secs(50),
                Duration::from_secs(120)
            ))
        );
        assert!(policy("swr:50s").is_err());
        assert!(policy("lru:1s").is_err());
    }
}

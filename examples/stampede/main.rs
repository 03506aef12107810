//! Run with: `cargo run --release --example stampede`
//!
//! A cache stampede, with and without the layer. An axum server on loopback
//! stands for a service whose hot endpoint runs a 200 ms query; N clients
//! (default 1000, `--requests N`) ask for it at the same instant, over real
//! HTTP, at a cold key. Without the layer every one of them runs the query;
//! with it, one does and the others wait for its answer.
//!
//! With `--redis URL` the layer uses the Redis store, and `--replicas R`
//! (default 1) serves the cached side from R servers, each with its own layer,
//! `RedisStore` and flight table, as R processes would be: the requests are
//! spread over them and the Redis rebuild lock keeps it to one query.
//!
//! ```text
//! cargo run --release --example stampede -- --redis redis://127.0.0.1:6379 --replicas 4
//! ```
//!
//! The last line is `origin calls: <with> of <N> requests (without the layer:
//! <without>)`; the exit status is non-zero if the layer let more than one
//! call through. A store call that takes longer than `--store-timeout MS`
//! (default: the layer's 250 and the Redis store's 200) counts as a store failure, after which each replica
//! coalesces on its own: an unoptimised build serving 1000 connections on
//! two cores can starve the store's replies that long, so CI's debug-build
//! smoke run gives the store more time.
//!
//! `RUST_LOG=tower_stampede=debug` logs what the layer decides, store
//! failures included.
//!
//! `--policy ttl|xfetch|swr|all` switches to steady load instead: `--rate R`
//! requests a second (default 200) at the hot key for `--duration D` seconds
//! (default 10), entries fresh for `--ttl T` seconds (default 2), and a table
//! of origin calls, requests that waited on the origin, and latency per
//! policy (see `steady.rs`).

mod steady;

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, routing::get};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::{net::TcpListener, sync::Barrier};
use tower_stampede::{MemoryStore, Policy, RedisStore, StampedeLayer, Stats};
use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    prelude::*,
};

/// How long the "database query" takes.
const QUERY_TIME: Duration = Duration::from_millis(200);

/// The slow query behind `/api/popular-posts`; counts its runs.
async fn popular_posts(State(queries): State<Arc<AtomicUsize>>) -> &'static str {
    queries.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(QUERY_TIME).await;
    r#"[{"id":1,"title":"Cache stampedes, explained","views":48213}]"#
}

type HttpClient = Client<HttpConnector, Empty<bytes::Bytes>>;

fn client(connections: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http()
}

/// One GET, timed until its whole body has arrived: the latency and the
/// response's `Cache-Status`, or `None` if it failed.
async fn send_one(client: HttpClient, uri: http::Uri) -> Option<(Duration, String)> {
    // Replicas behind a load balancer see the service's one host name,
    // whichever port they listen on; it is part of the cache key.
    let request = http::Request::get(uri)
        .header(http::header::HOST, "api.example")
        .body(Empty::new())
        .ok()?;
    let sent = Instant::now();
    let response = client.request(request).await.ok()?;
    let ok = response.status().is_success();
    let status = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    response.into_body().collect().await.ok()?;
    ok.then(|| (sent.elapsed(), status))
}

fn uris(addrs: &[SocketAddr]) -> Vec<http::Uri> {
    addrs
        .iter()
        .map(|addr| {
            format!("http://{addr}/api/popular-posts")
                .parse()
                .expect("loopback URI")
        })
        .collect()
}

struct Run {
    origin_calls: usize,
    latencies: Vec<Duration>,
    failed: usize,
}

/// Serves `app` on a free loopback port.
async fn serve(app: Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Sends `requests` GETs at once, spread over `addrs` and released together.
async fn stampede(addrs: &[SocketAddr], requests: usize, queries: &AtomicUsize) -> Run {
    queries.store(0, Ordering::SeqCst);
    let (client, uris) = (client(requests), uris(addrs));
    let start = Arc::new(Barrier::new(requests));
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let (client, uri, start) = (client.clone(), uris[i % uris.len()].clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                send_one(client, uri).await
            })
        })
        .collect();
    let mut run = Run {
        origin_calls: 0,
        latencies: Vec::with_capacity(requests),
        failed: 0,
    };
    for task in tasks {
        match task.await.ok().flatten() {
            Some((latency, _)) => run.latencies.push(latency),
            None => run.failed += 1,
        }
    }
    run.origin_calls = queries.load(Ordering::SeqCst);
    run.latencies.sort();
    run
}

fn percentile(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let at = sorted[rank.clamp(1, sorted.len()) - 1];
    format!("{:.1} ms", at.as_secs_f64() * 1000.0)
}

struct Args {
    requests: usize,
    redis: Option<String>,
    replicas: usize,
    /// Both the layer's store timeout and the Redis command timeout; the
    /// libraries' defaults when not given.
    store_timeout: Option<Duration>,
    steady: Option<steady::Load>,
}

const USAGE: &str = "usage: stampede [--requests N] [--redis URL] [--replicas R]
       stampede --policy ttl|xfetch|swr|all [--rate R] [--duration D] [--ttl T] [--redis URL] [--replicas R]
  --requests N   concurrent requests of the stampede (default 1000)
  --redis URL    use the Redis store at URL instead of the memory store
  --replicas R   serve the cached side from R layers, each with its own store handle (default 1)
  --store-timeout MS  bound on each store call and Redis command (default: the layer's 250, the store's 200)
  --policy P     steady load instead of a stampede, under policy P (or all three)
  --rate R       steady load: requests per second (default 200)
  --duration D   steady load: seconds (default 10)
  --ttl T        steady load: seconds an entry stays fresh (default 2)";

fn positive(flag: &str, value: Option<String>) -> Result<usize, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a number"))?;
    value
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{flag} takes a positive number, not {value:?}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        requests: 1000,
        redis: None,
        replicas: 1,
        store_timeout: None,
        steady: None,
    };
    let mut load = steady::Load::default();
    let mut steady = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => parsed.requests = positive("--requests", args.next())?,
            "--replicas" => parsed.replicas = positive("--replicas", args.next())?,
            "--redis" => parsed.redis = Some(args.next().ok_or("--redis needs a URL")?),
            "--store-timeout" => {
                let ms = positive("--store-timeout", args.next())?;
                parsed.store_timeout = Some(Duration::from_millis(ms as u64));
            }
            "--policy" => {
                load.policies = steady::parse_policies(&args.next().ok_or("--policy needs a name")?)?;
                steady = true;
            }
            "--rate" => load.rate = positive("--rate", args.next())?,
            "--duration" => load.duration = Duration::from_secs(positive("--duration", args.next())? as u64),
            "--ttl" => load.ttl = Duration::from_secs(positive("--ttl", args.next())? as u64),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    parsed.steady = steady.then_some(load);
    Ok(parsed)
}

/// The cached side: one server per replica, each behind its own layer with
/// `policy`, on a key prefix of its own so the key starts cold.
async fn serve_replicas(
    app: &Router,
    args: &Args,
    policy: &Policy,
) -> Result<(Vec<SocketAddr>, Vec<StampedeHandle>), String> {
    let prefix = format!(
        "stampede-demo:{}:{}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let mut addrs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..args.replicas {
        let handle = match &args.redis {
            Some(url) => {
                let mut store = RedisStore::from_url(url)
                    .map_err(|e| format!("--redis {url}: {e}"))?
                    .prefix(prefix.clone());
                if let Some(timeout) = args.store_timeout {
                    store = store.timeout(timeout);
                }
                store
                    .connect()
                    .await
                    .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
                let mut layer = StampedeLayer::new(store).policy(policy.clone());
                if let Some(timeout) = args.store_timeout {
                    layer = layer.store_timeout(timeout);
                }
                StampedeHandle::Redis(layer)
            }
            None => StampedeHandle::Memory(StampedeLayer::new(MemoryStore::new()).policy(policy.clone())),
        };
        let app = match &handle {
            StampedeHandle::Redis(layer) => app.clone().layer(layer.clone()),
            StampedeHandle::Memory(layer) => app.clone().layer(layer.clone()),
        };
        addrs.push(
            serve(app)
                .await
                .map_err(|e| format!("cannot listen on loopback: {e}"))?,
        );
        handles.push(handle);
    }
    Ok((addrs, handles))
}

enum StampedeHandle {
    Memory(StampedeLayer<MemoryStore>),
    Redis(StampedeLayer<RedisStore>),
}

impl StampedeHandle {
    fn stats(&self) -> Stats {
        match self {
            Self::Memory(layer) => layer.stats(),
            Self::Redis(layer) => layer.stats(),
        }
    }
}

fn store_name(args: &Args) -> String {
    let store = if args.redis.is_some() { "redis" } else { "memory" };
    format!("{store}, {} replica(s)", args.replicas)
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
async fn main() -> ExitCode {
    // `RUST_LOG=tower_stampede=debug` shows the layer's decisions.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(log_filter(LevelFilter::ERROR))
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let queries = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/api/popular-posts", get(popular_posts))
        .with_state(Arc::clone(&queries));
    let result = match &args.steady {
        Some(load) => steady::run(&app, &args, load, &queries).await,
        None => run_stampede(&app, &args, &queries).await,
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_stampede(app: &Router, args: &Args, queries: &AtomicUsize) -> Result<ExitCode, String> {
    let requests = args.requests;
    let bare = serve(app.clone())
        .await
        .map_err(|e| format!("cannot listen on loopback: {e}"))?;
    let (cached, replicas) = serve_replicas(app, args, &Policy::ttl(Duration::from_secs(60))).await?;

    let without = stampede(&[bare], requests, queries).await;
    let with = stampede(&cached, requests, queries).await;

    println!(
        "{:<14} {:>8} {:>13} {:>8} {:>8} {:>8} {:>7}",
        "mode", "requests", "origin calls", "p50", "p99", "max", "failed"
    );
    for (mode, run) in [("without layer", &without), ("with layer", &with)] {
        println!(
            "{:<14} {:>8} {:>13} {:>8} {:>8} {:>8} {:>7}",
            mode,
            requests,
            run.origin_calls,
            percentile(&run.latencies, 50.0),
            percentile(&run.latencies, 99.0),
            percentile(&run.latencies, 100.0),
            run.failed,
        );
    }
    let (collapsed, hits, store_errors) = replicas
        .iter()
        .map(StampedeHandle::stats)
        .fold((0, 0, 0), |acc, s| {
            (acc.0 + s.coalesced, acc.1 + s.hits, acc.2 + s.store_errors)
        });
    println!(
        "layer ({}): {collapsed} collapsed onto a leader, {hits} served from the store, {store_errors} store errors",
        store_name(args)
    );
    println!(
        "origin calls: {} of {requests} requests (without the layer: {})",
        with.origin_calls, without.origin_calls
    );
    Ok(if with.origin_calls > 1 || with.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

//! Run with: `cargo run --release --example stampede`
//!
//! A cache stampede, with and without the layer. An axum server on loopback
//! stands for a service whose hot endpoint runs a 200 ms query; N clients
//! (default 1000, `--requests N`) ask for it at the same instant, over real
//! HTTP, at a cold key. Without the layer every one of them runs the query;
//! with it, one does and the others wait for its answer.
//!
//! The last line is `origin calls: <with> of <N> requests (without the layer:
//! <without>)`; the exit status is non-zero if the layer let more than one
//! call through.

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
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{net::TcpListener, sync::Barrier};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

/// How long the "database query" takes.
const QUERY_TIME: Duration = Duration::from_millis(200);

/// The slow query behind `/api/popular-posts`; counts its runs.
async fn popular_posts(State(queries): State<Arc<AtomicUsize>>) -> &'static str {
    queries.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(QUERY_TIME).await;
    r#"[{"id":1,"title":"Cache stampedes, explained","views":48213}]"#
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

/// Sends `requests` GETs at once, released together, and times each one
/// until its whole body has arrived.
async fn stampede(addr: SocketAddr, requests: usize, queries: &AtomicUsize) -> Run {
    queries.store(0, Ordering::SeqCst);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(requests)
        .build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{addr}/api/popular-posts")
        .parse()
        .expect("loopback URI");
    let start = Arc::new(Barrier::new(requests));
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let (client, uri, start) = (client.clone(), uri.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                let sent = Instant::now();
                let response = client.get(uri).await.ok()?;
                let ok = response.status().is_success();
                response.into_body().collect().await.ok()?;
                ok.then(|| sent.elapsed())
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
            Some(latency) => run.latencies.push(latency),
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
    format!("{} ms", at.as_millis())
}

fn parse_requests() -> Result<usize, String> {
    let mut args = std::env::args().skip(1);
    let mut requests = 1000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => {
                let value = args.next().ok_or("--requests needs a number")?;
                requests = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--requests takes a positive number, not {value:?}"))?;
            }
            "-h" | "--help" => {
                return Err("usage: stampede [--requests N]   (default 1000)".into());
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(requests)
}

#[tokio::main]
async fn main() -> ExitCode {
    let requests = match parse_requests() {
        Ok(n) => n,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let queries = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/api/popular-posts", get(popular_posts))
        .with_state(Arc::clone(&queries));
    let layer = StampedeLayer::new(MemoryStore::new()).policy(Policy::ttl(Duration::from_secs(60)));

    let (bare, cached) = match tokio::try_join!(serve(app.clone()), serve(app.layer(layer.clone()))) {
        Ok(addrs) => addrs,
        Err(error) => {
            eprintln!("cannot listen on loopback: {error}");
            return ExitCode::FAILURE;
        }
    };

    let without = stampede(bare, requests, &queries).await;
    let with = stampede(cached, requests, &queries).await;

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
    let stats = layer.stats();
    println!(
        "layer: {} collapsed onto the leader, {} served from the store",
        stats.coalesced, stats.hits
    );
    println!(
        "origin calls: {} of {requests} requests (without the layer: {})",
        with.origin_calls, without.origin_calls
    );
    if with.origin_calls > 1 || with.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

//! Run with: `cargo run --release -p example-grpc`
//!
//! A tonic server whose unary method `posts.Posts/Popular` takes 200 ms and
//! counts its calls, behind the layer; 500 concurrent identical calls from a
//! tonic client over loopback. The layer lets one through: the rest wait on
//! it and decode the same reply, trailers included.
//!
//! Options: `--calls N` (default 500), `--delay-ms N` (default 200).
//! protoc comes from the `protoc-bin-vendored` crate (see
//! `build.rs`); nothing else to install.

use std::{
    collections::BTreeMap,
    error::Error,
    time::{Duration, Instant},
};

use example_grpc::{
    Demo, POPULAR, expected_reply,
    pb::{PopularRequest, posts_client::PostsClient},
};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

struct Args {
    calls: usize,
    delay: Duration,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        calls: 500,
        delay: Duration::from_millis(200),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--calls" => args.calls = value()?.parse().map_err(|e| format!("--calls: {e}"))?,
            "--delay-ms" => {
                let ms = value()?.parse().map_err(|e| format!("--delay-ms: {e}"))?;
                args.delay = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown option {other}; try --calls N --delay-ms N")),
        }
    }
    Ok(args)
}

/// One call as its client saw it.
struct Outcome {
    latency: Duration,
    cache_status: String,
    same_reply: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let Args { calls, delay } = args()?;
    let demo = Demo::new(delay);
    let layer = StampedeLayer::new(MemoryStore::new())
        // How the layer hands a request body it has read back to tonic.
        .replay_requests(tonic::body::Body::new)
        .route(POPULAR, Policy::ttl(Duration::from_secs(60)))
        .cache_posts(POPULAR);
    let stats = layer.clone();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        // Every call on its own HTTP/2 stream at once.
        .max_concurrent_streams(u32::try_from(calls).unwrap_or(u32::MAX))
        .layer(layer)
        .add_service(demo.server())
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);

    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let client = PostsClient::new(channel);
    let message = PopularRequest {
        limit: 10,
        region: "eu".into(),
        padding: Vec::new(),
    };
    let expected = expected_reply(&message, None);

    let started = Instant::now();
    let mut wave = JoinSet::new();
    for _ in 0..calls {
        let (mut client, message, expected) = (client.clone(), message.clone(), expected.clone());
        wave.spawn(async move {
            let sent = Instant::now();
            let response = client.popular(message).await?;
            let latency = sent.elapsed();
            let text = |name| {
                response
                    .metadata()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            Ok::<_, tonic::Status>(Outcome {
                latency,
                cache_status: text("cache-status"),
                same_reply: response.get_ref() == &expected,
            })
        });
    }
    let mut outcomes = Vec::with_capacity(calls);
    let mut failed = 0;
    while let Some(joined) = wave.join_next().await {
        match joined? {
            Ok(outcome) => outcomes.push(outcome),
            Err(status) => {
                failed += 1;
                eprintln!("call failed: {status}");
            }
        }
    }
    let wall = started.elapsed();

    let mut groups: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    for outcome in &outcomes {
        groups
            .entry(kind(&outcome.cache_status))
            .or_default()
            .push(outcome.latency);
    }
    println!(
        "tonic unary {POPULAR}: {calls} concurrent identical calls over one HTTP/2 connection, \
         origin takes {} ms",
        delay.as_millis()
    );
    println!();
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>9}",
        "answered as", "calls", "p50 ms", "p99 ms", "max ms"
    );
    for (kind, latencies) in &mut groups {
        row(kind, latencies);
    }
    let mut all: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    row("all", &mut all);
    println!();
    let same = outcomes.iter().filter(|o| o.same_reply).count();
    let stats = stats.stats();
    println!("identical decoded replies: {same} of {calls}");
    println!("failed calls (grpc-status other than 0): {failed}");
    println!("collapsed onto the leader: {}", stats.coalesced);
    println!("wall time: {} ms", wall.as_millis());
    println!("origin calls: {} of {calls} requests", demo.popular_calls());
    if demo.popular_calls() != 1 || failed > 0 || same != calls {
        std::process::exit(1);
    }
    Ok(())
}

/// What `Cache-Status` says of a call, in a word or two.
fn kind(cache_status: &str) -> &'static str {
    if cache_status.contains("collapsed") {
        "waited on the leader"
    } else if cache_status.contains("stored") {
        "leader (origin call, stored)"
    } else if cache_status.contains("hit") {
        "hit"
    } else {
        "forwarded"
    }
}

fn row(kind: &str, latencies: &mut [Duration]) {
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{kind:<28} {:>6} {:>9.1} {:>9.1} {:>9.1}",
        latencies.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

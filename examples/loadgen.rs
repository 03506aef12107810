//! Run with: `cargo run --release --example loadgen -- --url http://127.0.0.1:8080/api/popular-posts`
//!
//! A stampede on one URL: `--requests N` (default 1000) requests on their
//! own connections, released together once every one is connected, then a
//! report: statuses, latency p50 / p99 / max, and `Cache-Status` kinds.
//! `--expect-origin-calls N --calls-url URL` checks an origin's call
//! counter (the `origin` example's `/calls`) afterwards, and the exit status
//! says whether it held.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::Barrier, time::Instant};

struct Args {
    url: hyper::Uri,
    requests: usize,
    expect: Option<(u64, hyper::Uri)>,
}

fn parse_args() -> Result<Args, String> {
    let (mut url, mut requests, mut expected, mut calls_url) = (None, 1000, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(value.parse().map_err(|e| format!("--url: {e}"))?),
            "--requests" => requests = value.parse().map_err(|e| format!("--requests: {e}"))?,
            "--expect-origin-calls" => expected = Some(value.parse().map_err(|e| format!("{flag}: {e}"))?),
            "--calls-url" => calls_url = Some(value.parse().map_err(|e| format!("--calls-url: {e}"))?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let expect = match (expected, calls_url) {
        (Some(n), Some(url)) => Some((n, url)),
        (None, None) => None,
        _ => return Err("--expect-origin-calls and --calls-url go together".into()),
    };
    Ok(Args {
        url: url.ok_or("--url is required")?,
        requests,
        expect,
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A connection of its own to `url`'s host, and the GET to send on it.
async fn connect(url: &hyper::Uri) -> Result<(Sender, hyper::Request<Empty<Bytes>>), String> {
    let authority = url.authority().ok_or("the url has no host")?.clone();
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::get(url.path_and_query().map_or("/", |pq| pq.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    Ok((sender, request))
}

/// One GET on a connection of its own, sent when `start` opens.
async fn one(url: hyper::Uri, start: Arc<Barrier>) -> Result<(u16, String, Duration), String> {
    let connected = connect(&url).await;
    // Every task reaches the barrier, connected or not, or none would pass.
    start.wait().await;
    let (mut sender, request) = connected?;
    let sent = Instant::now();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .map_or("-".to_owned(), kind);
    response.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, cache, sent.elapsed()))
}

/// A `Cache-Status` in a word.
fn kind(value: &str) -> String {
    [
        "hit",
        "collapsed",
        "stored",
        "fwd=stale",
        "fwd=miss",
        "fwd=bypass",
    ]
    .into_iter()
    .find(|k| value.contains(k))
    .unwrap_or("other")
    .to_owned()
}

async fn get_text(url: &hyper::Uri) -> Result<String, String> {
    let (mut sender, request) = connect(url).await?;
    let body = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?
        .into_body();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let start = Arc::new(Barrier::new(args.requests));
    let tasks: Vec<_> = (0..args.requests)
        .map(|_| tokio::spawn(one(args.url.clone(), Arc::clone(&start))))
        .collect();
    let (mut latencies, mut statuses, mut kinds, mut failed) =
        (Vec::new(), BTreeMap::new(), BTreeMap::new(), 0);
    for task in tasks {
        match task.await? {
            Ok((status, kind, latency)) => {
                *statuses.entry(status).or_insert(0) += 1;
                *kinds.entry(kind).or_insert(0) += 1;
                latencies.push(latency);
            }
            Err(error) => {
                failed += 1;
                eprintln!("request failed: {error}");
            }
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!("{} requests released together at {}", args.requests, args.url);
    println!("statuses: {statuses:?}; failed: {failed}; cache-status: {kinds:?}");
    if !latencies.is_empty() {
        println!(
            "latency ms: p50 {:.1}, p99 {:.1}, max {:.1}",
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0))
        );
    }
    if let Some((expected, calls_url)) = &args.expect {
        let calls: u64 = get_text(calls_url).await?.parse()?;
        println!("origin calls: {calls} of {} requests", args.requests);
        if calls != *expected || failed > 0 {
            std::process::exit(1);
        }
    } else if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
